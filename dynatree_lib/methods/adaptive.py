"""DynaTree: the research's confidence-aware adaptive tree, in three cumulative phases.

Phase 1 (adaptive branching): a frontier node gets min/default/max_branch children from the draft's top-1
probability p at that node (the max of its next-token distribution): p > high_conf -> min_branch, p < low_conf ->
max_branch, otherwise default_branch. Depth is base_depth.

Phase 2 (dynamic depth) adds: a node whose cumulative draft probability is below stop_threshold gets no children;
past base_depth a node gets children only while its cumulative probability exceeds extend_threshold, up to max_depth.
The research brief calls both quantities "p"; for depth it is the path's cumulative probability, as in the research's
own code (`_should_expand`), which is known before the node is fed to the draft, so a node that stays a leaf is
never fed (no wasted draft compute).

Phase 3 (historical adjustment) adds: after each round, high_conf moves by learning_rate: down when the mean
acceptance of the last `window` rounds is below target_acceptance, up when above (clamped to [low_conf, 1]).
Acceptance is the research's tree acceptance: accepted path depth / tree depth of the round. (The direction is the
research brief's; the research's public code, cny123222/DynaTree AdaptiveV3, moved high_conf the other way and also
adjusted base_depth.)
The state lives in the generation (one `_Adaptive` per generate call), never in the frozen method.

Every phase keeps FixedTree's cumulative-probability pruning (`threshold`, off with pruning=False) and node budget
(`max_nodes`, off with node_budget=False). Each round's decisions are in the trace: `high_conf` (the value this
round drafted with), `conf_high`/`conf_mid`/`conf_low` (frontier nodes per confidence class), `stopped` (nodes left
unexpanded by the phase-2 rules) and `extended` (nodes expanded past base_depth).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..core.draft import select_children
from .confidence import Shaped, ShapedPolicy
from .base import TreePolicy, _check_draft_options, _check_int, _check_prob, policy, speculative

_TRACE_KEYS = ("conf_high", "conf_mid", "conf_low", "stopped", "extended")


@speculative
@dataclass(frozen=True)
class DynaTree:
    """Confidence-aware adaptive tree. `phase` 1, 2 or 3 switches the research's cumulative phases on (with the
    research's defaults: `DynaTree(phase=3)` is the research's best setting); `pruning` / `node_budget` are the
    ablation switches for the threshold pruning and the max_nodes cap.

    The default, phase 4 (methods/confidence.py), keeps phase 1's branch rule (min_branch children where the
    draft's top-1 probability is above high_conf, max_branch below low_conf) but lets confidence and cost set the
    depth: a level is drafted while the tokens it is expected to add beat what its draft time would earn at the
    current rate, a node is kept while its calibrated path probability beats the time it adds to the verification
    and to the next draft level; both learned per generation. max_depth is then only a hard cap (default 32; 8 for
    phases 1-3, the research's), base_depth and the phase 2/3 thresholds are unused. Why it is the default: in the
    speed table (benchmarks/goal.py, stored in data/results/speed.csv; prompts of three kinds that tuning never saw)
    it is faster than the research's phase 3 and than transformers' assisted generation given the same draft on the
    median prompt, with the int4 draft and with the bf16 draft; only the hardware-aware planner (HardwareAware, which
    grows this tree from the machine's calibrated costs) is level with it there, within one run's noise.
    At 128 tokens no method of this library reaches the issue's 3x target on this CPU; the benchmarks chapter
    shows which measured costs stop it."""

    phase: int = 4
    high_conf: float = 0.9
    low_conf: float = 0.4
    min_branch: int = 1
    default_branch: int = 2
    max_branch: int = 3
    base_depth: int = 5
    max_depth: int | None = None  # None: 8 for phases 1-3 (the research's), 32 for phase 4
    stop_threshold: float = 0.1
    extend_threshold: float = 0.95
    learning_rate: float = 0.01
    target_acceptance: float = 0.85
    window: int = 10  # phase 3: rounds in the running acceptance mean
    max_nodes: int = 128
    threshold: float = 0.03
    pruning: bool = True
    node_budget: bool = True
    draft_bits: int | None = None  # 8 or 4: an int8/int4 weight copy of the draft
    draft_vocab: int | None = None  # K: the draft scores only the K most frequent tokens (models/vocab.py)
    name = "DynaTree"
    needs_draft = True

    def __post_init__(self):
        _check_draft_options(self.draft_bits, self.draft_vocab)
        if self.phase not in (1, 2, 3, 4) or isinstance(self.phase, bool):
            raise ValueError(f"phase must be 1, 2, 3 or 4, got {self.phase!r}")
        if self.max_depth is None:
            object.__setattr__(self, "max_depth", 32 if self.phase == 4 else 8)
        for name in ("high_conf", "low_conf", "stop_threshold", "extend_threshold", "target_acceptance"):
            _check_prob(name, getattr(self, name), allow_one=True)
        lr = self.learning_rate
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not 0 <= lr <= 1:
            raise ValueError(f"learning_rate must be a number in [0, 1], got {lr!r}")
        if self.low_conf > self.high_conf:
            raise ValueError(f"low_conf ({self.low_conf}) must not exceed high_conf ({self.high_conf})")
        for name in ("min_branch", "default_branch", "max_branch", "base_depth", "max_depth", "window", "max_nodes"):
            _check_int(name, getattr(self, name), 1)
        if not self.min_branch <= self.default_branch <= self.max_branch:
            raise ValueError(
                f"need min_branch <= default_branch <= max_branch, got min_branch={self.min_branch}, "
                f"default_branch={self.default_branch}, max_branch={self.max_branch}"
            )
        if self.base_depth > self.max_depth and self.phase != 4:
            raise ValueError(f"base_depth ({self.base_depth}) must not exceed max_depth ({self.max_depth})")
        _check_prob("threshold", self.threshold)
        for name in ("pruning", "node_budget"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def label(self) -> str:
        depth = {1: f"D={self.base_depth}", 4: f"D<={self.max_depth}"}.get(self.phase,
                                                                         f"D={self.base_depth}..{self.max_depth}")
        ablation = ("" if self.pruning else ",noprune") + ("" if self.node_budget else ",nobudget")
        # every other setting that differs from its default, so that two different methods never share a label
        shown = {"phase", "base_depth", "max_depth", "min_branch", "default_branch", "max_branch", "high_conf",
                 "low_conf", "pruning", "node_budget", "draft_bits", "draft_vocab"}
        if self.phase == 4:
            shown.discard("base_depth")  # phase 4 does not show it in D<=..., so a non-default one goes here
        rest = "".join(f",{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                       if f.name not in shown and getattr(self, f.name) != f.default)
        return (f"DynaTree-P{self.phase}({depth},B={self.min_branch}/{self.default_branch}/{self.max_branch},"
                f"conf={self.high_conf:g}/{self.low_conf:g}{ablation}{rest})")


def branches(p: torch.Tensor, high_conf: float, method: DynaTree) -> torch.Tensor:
    """Phase 1: children per node from the draft's top-1 probability `p` at the node."""
    b = torch.full_like(p, method.default_branch, dtype=torch.long)
    b[p > high_conf] = method.min_branch
    b[p < method.low_conf] = method.max_branch  # low_conf <= high_conf: the two classes never overlap
    return b


def expandable(tree, nodes: torch.Tensor, method: DynaTree) -> torch.Tensor:
    """Phase 2: the `nodes` that may get children (see the module docstring); phase 1 expands up to base_depth."""
    depth = tree.depth[nodes]
    if method.phase == 1:
        return nodes[depth < method.base_depth]
    cum = tree.cum_logp[nodes].exp()
    deep_ok = (depth < method.base_depth) | (cum > method.extend_threshold)
    return nodes[(cum >= method.stop_threshold) & deep_ok & (depth < method.max_depth)]


def adjust(high_conf: float, acceptance: float, method: DynaTree) -> float:
    """Phase 3: one learning-rate step of high_conf, down below the target acceptance, up above it."""
    if acceptance < method.target_acceptance:
        high_conf -= method.learning_rate
    elif acceptance > method.target_acceptance:
        high_conf += method.learning_rate
    return min(max(high_conf, method.low_conf), 1.0)


class _Adaptive:
    """One generation's adaptive state: the current high_conf, recent acceptances and this round's decisions."""

    def __init__(self, method: DynaTree):
        self.method = method
        self.high_conf = method.high_conf
        self.acceptances: list[float] = []
        self.counts = dict.fromkeys(_TRACE_KEYS, 0)

    def expand(self, tree, frontier, cand_logp, cand_tokens):
        m = self.method
        p = cand_logp[:, 0].exp()
        b = branches(p, self.high_conf, m)
        high, low = int((p > self.high_conf).sum()), int((p < m.low_conf).sum())
        self.counts["conf_high"] += high
        self.counts["conf_low"] += low
        self.counts["conf_mid"] += len(p) - high - low
        self.counts["extended"] += int((tree.depth[frontier] >= m.base_depth).sum())
        keep = torch.arange(cand_logp.shape[1], device=b.device) < b.unsqueeze(1)
        return select_children(tree, frontier, cand_logp, cand_tokens, keep,
                               threshold=m.threshold if m.pruning else 0.0,
                               max_nodes=m.max_nodes if m.node_budget else None)

    def select_frontier(self, tree, nodes):
        m = self.method
        if m.node_budget and tree.num_draft >= m.max_nodes:
            return nodes[:0]  # no room for children: feeding the level would be wasted draft compute
        chosen = expandable(tree, nodes, m)
        if m.phase >= 2:
            # Nodes below max_depth that the phase-2 rules leave as leaves (the depth cap itself is not a decision).
            self.counts["stopped"] += int((tree.depth[nodes] < m.max_depth).sum()) - len(chosen)
        return chosen

    def summary(self) -> dict:
        return {"final_high_conf": self.high_conf}

    def on_round(self, record: dict) -> None:
        record["high_conf"] = self.high_conf  # the value this round was drafted with
        record.update(self.counts)
        self.counts = dict.fromkeys(_TRACE_KEYS, 0)
        if self.method.phase < 3 or record["depth"] == 0:
            return  # a round without a tree says nothing about acceptance
        self.acceptances = (self.acceptances + [record["accepted"] / record["depth"]])[-self.method.window:]
        self.high_conf = adjust(self.high_conf, sum(self.acceptances) / len(self.acceptances), self.method)


@policy.register
def _(method: DynaTree) -> TreePolicy:
    if method.phase == 4:
        return ShapedPolicy(Shaped(method, lambda p: branches(p, method.high_conf, method)), method.max_branch,
                            method.max_depth)
    state = _Adaptive(method)
    return TreePolicy(state.expand, method.max_branch, method.base_depth if method.phase == 1 else method.max_depth,
                      state.select_frontier, state.on_round, branches=lambda p: branches(p, state.high_conf, method),
                      threshold=method.threshold if method.pruning else 0.0)
