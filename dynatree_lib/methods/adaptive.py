"""AdaptiveTree: the research's confidence-aware adaptive tree (DynaTree phases 1-3), in three cumulative phases.

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
The state lives in the generation (one `AdaptiveDrafter` per generate call), never in the frozen method. A phase
reads only its own settings and those of the phases before it: a later phase's setting given to an earlier phase
is refused (it would change nothing).

Every phase keeps FixedTree's cumulative-probability pruning (`threshold`, off with pruning=False) and node budget
(`max_nodes`, off with node_budget=False). Each round's decisions are in the trace: `high_conf` (the value this
round drafted with), `conf_high`/`conf_mid`/`conf_low` (frontier nodes per confidence class), `stopped` (nodes left
unexpanded by the phase-2 rules) and `extended` (nodes expanded past base_depth).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..core.checks import _check_bool, _check_draft_options, _check_int, _check_prob
from ..core.draft import select_children
from ..core.loop import Run
from .base import TreeDrafter, Speculative

_TRACE_KEYS = ("conf_high", "conf_mid", "conf_low", "stopped", "extended")
# the settings each phase adds (phase 1 reads none of them)
PHASE_FIELDS = {2: ("stop_threshold", "extend_threshold", "max_depth"),
                3: ("learning_rate", "target_acceptance", "window")}


@dataclass(frozen=True)
class AdaptiveTree(Speculative):
    """The research's confidence-aware adaptive tree: `phase` 1 (adaptive branching), 2 (+ dynamic depth) or 3
    (+ historical adjustment of high_conf; the research's best setting and the default), with the research's
    defaults (module docstring). `pruning` / `node_budget` are the ablation switches for the threshold pruning and
    the max_nodes cap. It was `DynaTree(phase=1..3)`; `DynaTree()` is now the confidence-and-cost shaped tree
    (methods/confidence.py)."""

    phase: int = 3
    high_conf: float = 0.9
    low_conf: float = 0.4
    min_branch: int = 1
    default_branch: int = 2
    max_branch: int = 3
    base_depth: int = 5
    max_depth: int = 8  # phases 2-3: the depth a near-certain path may extend to
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

    def __post_init__(self):
        _check_draft_options(self.draft_bits, self.draft_vocab)
        if self.phase not in (1, 2, 3) or isinstance(self.phase, bool):
            raise ValueError(f"phase must be 1, 2 or 3, got {self.phase!r} (the confidence-and-cost shaped tree, "
                             f"once phase 4, is DynaTree())")
        defaults = {f.name: f.default for f in fields(self)}
        for phase, names in PHASE_FIELDS.items():
            unread = [n for n in names if self.phase < phase and getattr(self, n) != defaults[n]]
            if unread:
                raise ValueError(f"{', '.join(unread)} {'is' if len(unread) == 1 else 'are'} read from phase "
                                 f"{phase} on; phase {self.phase} would ignore {'it' if len(unread) == 1 else 'them'}")
        check_branch_rule(self)
        for name in ("stop_threshold", "extend_threshold", "target_acceptance"):
            _check_prob(name, getattr(self, name), allow_one=True)
        lr = self.learning_rate
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not 0 <= lr <= 1:
            raise ValueError(f"learning_rate must be a number in [0, 1], got {lr!r}")
        for name in ("base_depth", "max_depth", "window"):
            _check_int(name, getattr(self, name), 1)
        if self.base_depth > self.max_depth and self.phase >= 2:
            raise ValueError(f"base_depth ({self.base_depth}) must not exceed max_depth ({self.max_depth})")
        _check_prob("threshold", self.threshold)
        for name in ("pruning", "node_budget"):
            _check_bool(name, getattr(self, name))

    def drafter(self, run: Run) -> "AdaptiveDrafter":
        return AdaptiveDrafter(self, run)


def check_branch_rule(method) -> None:
    """The settings of phase 1's branch rule, shared by AdaptiveTree and DynaTree: probabilities in order, branch
    counts in order."""
    for name in ("high_conf", "low_conf"):
        _check_prob(name, getattr(method, name), allow_one=True)
    if method.low_conf > method.high_conf:
        raise ValueError(f"low_conf ({method.low_conf}) must not exceed high_conf ({method.high_conf})")
    for name in ("min_branch", "default_branch", "max_branch", "max_nodes"):
        _check_int(name, getattr(method, name), 1)
    if not method.min_branch <= method.default_branch <= method.max_branch:
        raise ValueError(
            f"need min_branch <= default_branch <= max_branch, got min_branch={method.min_branch}, "
            f"default_branch={method.default_branch}, max_branch={method.max_branch}"
        )


def branches(p: torch.Tensor, high_conf: float, method) -> torch.Tensor:
    """Phase 1: children per node from the draft's top-1 probability `p` at the node."""
    b = torch.full_like(p, method.default_branch, dtype=torch.long)
    b[p > high_conf] = method.min_branch
    b[p < method.low_conf] = method.max_branch  # low_conf <= high_conf: the two classes never overlap
    return b


def branch_children(tree, frontier, cand_logp, cand_tokens, allowed: torch.Tensor, method, threshold: float = 0.0,
                    keep: torch.Tensor | None = None) -> tuple:
    """The children phase 1's rule lets in, shared by AdaptiveTree and DynaTree: the first `allowed[i]` candidates of
    frontier node i (where `keep` is True too), chosen by select_children under `threshold` and the method's node
    budget (max_nodes; none with node_budget=False)."""
    ranked = torch.arange(cand_logp.shape[1], device=allowed.device) < allowed.unsqueeze(1)
    return select_children(tree, frontier, cand_logp, cand_tokens, ranked if keep is None else ranked & keep,
                           threshold=threshold, max_nodes=method.max_nodes if method.node_budget else None)


def budget_spent(tree, method) -> bool:
    """The tree holds the method's max_nodes already: feeding another level would be wasted draft compute."""
    return method.node_budget and tree.num_draft >= method.max_nodes


def expandable(tree, nodes: torch.Tensor, method: AdaptiveTree) -> torch.Tensor:
    """Phase 2: the `nodes` that may get children (see the module docstring); phase 1 expands up to base_depth."""
    depth = tree.depth[nodes]
    if method.phase == 1:
        return nodes[depth < method.base_depth]
    cum = tree.cum_logp[nodes].exp()
    deep_ok = (depth < method.base_depth) | (cum > method.extend_threshold)
    return nodes[(cum >= method.stop_threshold) & deep_ok & (depth < method.max_depth)]


def adjust(high_conf: float, acceptance: float, method: AdaptiveTree) -> float:
    """Phase 3: one learning-rate step of high_conf, down below the target acceptance, up above it."""
    if acceptance < method.target_acceptance:
        high_conf -= method.learning_rate
    elif acceptance > method.target_acceptance:
        high_conf += method.learning_rate
    return min(max(high_conf, method.low_conf), 1.0)


class AdaptiveDrafter(TreeDrafter):
    """One generation's adaptive state: the current high_conf, recent acceptances and this round's decisions."""

    def __init__(self, method: AdaptiveTree, run: Run):
        super().__init__(run, self.expand, method.max_branch,
                         method.base_depth if method.phase == 1 else method.max_depth, self.select_frontier,
                         branches=lambda p: branches(p, self.high_conf, method),
                         threshold=method.threshold if method.pruning else 0.0)
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
        return branch_children(tree, frontier, cand_logp, cand_tokens, b, m, m.threshold if m.pruning else 0.0)

    def select_frontier(self, tree, nodes):
        m = self.method
        if budget_spent(tree, m):
            return nodes[:0]
        chosen = expandable(tree, nodes, m)
        if m.phase >= 2:
            # Nodes below max_depth that the phase-2 rules leave as leaves (the depth cap itself is not a decision).
            self.counts["stopped"] += int((tree.depth[nodes] < m.max_depth).sum()) - len(chosen)
        return chosen

    def summary(self) -> dict:
        return {"final_high_conf": self.high_conf}

    def notes(self) -> dict:
        return {"high_conf": self.high_conf, **self.counts}  # high_conf: the value this round was drafted with

    def learn(self, record: dict) -> None:
        self.counts = dict.fromkeys(_TRACE_KEYS, 0)
        if self.method.phase < 3 or record["depth"] == 0:
            return  # a round without a tree says nothing about acceptance
        self.acceptances = (self.acceptances + [record["accepted"] / record["depth"]])[-self.method.window:]
        self.high_conf = adjust(self.high_conf, sum(self.acceptances) / len(self.acceptances), self.method)
