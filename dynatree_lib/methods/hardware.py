"""HardwareAware: each round, the tree (or plain target step) with the most expected committed tokens per second on
this machine, from calibrated cost curves (planning.calibrate). shapes="confidence" (the default) lets the draft's
own probabilities shape the tree while it is drafted (methods.confidence, DynaTree's phase 4), priced from the start
with this machine's curves instead of priors; shapes="fixed" plans a uniform FixedTree shape before drafting, from
running acceptance statistics (planning.planner)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields

from ..core.draft import DraftState, draft_tree, fixed_expand
from ..core.loop import Run, decode, speculate
from ..planning.calibrate import Costs, calibration_nodes, load_or_measure_costs
from ..planning.planner import Acceptance, Plan, Planner, rank_accept_prior, rank_observations
from .adaptive import DynaTree, branches
from .base import Autoregressive, FixedTree, _check_draft_options, _check_int, _check_prob
from .confidence import Shaped, ShapedPolicy

# ---------------------------------------------------------------------------------------------------------------------
# The method


def as_method(plan: Plan, threshold: float = 0.0):
    """A plan as a static method: FixedTree of its shape, or Autoregressive for depth 0 (a plain step)."""
    if plan.depth == 0:
        return Autoregressive()
    return FixedTree(depth=plan.depth, branch=plan.branch, threshold=threshold, max_nodes=plan.nodes)


@dataclass(frozen=True)
class HardwareAware:
    """Each round, the tree (depth <= max_depth, branch <= max_branch, nodes <= max_nodes) or plain target step with
    the most expected committed tokens per second, from this machine's cost curves (module docstring).

    shapes="confidence" (the default): the tree grows while the draft's calibrated confidence pays for each level
    and node at this machine's prices, as in DynaTree's phase 4, whose cost lines start from the calibrated curves
    (and its rate from the planner's expected rate at the prior acceptance) rather than from priors suited to one
    draft; max_depth defaults to 32. Why it is the default: in the planner benchmark (data/results/planner.csv, six
    held-out prompts of three kinds, int4 draft, one process) it was faster than the fixed-shape planner on every
    prompt and closest to the best other policy per prompt (the hardware chapter computes both from the rows).
    The settings of the fixed planner below (threshold, warmup_rounds, probe_every, prior_*, decay, adapt_costs)
    are unused there; allow_ar=False always drafts the root.

    shapes="fixed" (the planner of uniform shapes): a FixedTree shape chosen before drafting from running
    per-level acceptance statistics; max_depth defaults to 8. `threshold` prunes like FixedTree's (0: shapes
    exactly as planned). The first `warmup_rounds` rounds always draft, to learn; after `probe_every` plain steps
    in a row the best tree is drafted once anyway, so a draft that starts agreeing again is noticed.
    `prior_accept`, `prior_weight` and `decay` set the acceptance estimator; `adapt_costs` scales the calibrated
    draft and verify costs by running averages of measured / predicted seconds (load, Python overhead) and adds the
    measured commit time to every candidate; `allow_ar=False` removes the plain step (always draft: the ablation).
    Each round's trace adds plan_depth (0: plain step), plan_branch, plan_nodes, plan_expected_tokens,
    plan_expected_tps, plan_ar_tps, plan_tree_tps and plan_reason ("warmup", "plan", "probe"; "last" when only one
    token remained and nothing was planned).

    Calibration: the first generate of a process calls `load_or_measure_costs` for its pair (seconds on a CPU; free
    once cached on disk) and keeps the curves in memory for later calls. That time is left out of the generation's
    wall time and TTFT and reported as stats["calibration_s"].
    """

    max_depth: int | None = None  # None: 32 for shapes="confidence", 8 for shapes="fixed"
    max_branch: int = 3
    max_nodes: int = 64
    threshold: float = 0.0
    warmup_rounds: int = 2
    probe_every: int = 16
    prior_accept: float = 0.5
    prior_weight: float = 2.0
    decay: float = 0.9
    adapt_costs: bool = True
    allow_ar: bool = True
    draft_bits: int | None = None  # 8 or 4: an int8/int4 weight copy of the draft, calibrated as its own model
    draft_vocab: int | None = None  # K: the draft scores only the K most frequent tokens (calibrated as its own)
    shapes: str = "confidence"  # or "fixed" (class docstring)
    name = "HardwareAware"
    needs_draft = True

    def __post_init__(self):
        _check_draft_options(self.draft_bits, self.draft_vocab)
        if self.shapes not in ("fixed", "confidence"):
            raise ValueError(f"shapes must be 'fixed' or 'confidence', got {self.shapes!r}")
        if self.max_depth is None:
            object.__setattr__(self, "max_depth", 32 if self.shapes == "confidence" else 8)
        for name in ("max_depth", "max_branch", "max_nodes", "probe_every"):
            _check_int(name, getattr(self, name), 1)
        _check_int("warmup_rounds", self.warmup_rounds, 0)
        _check_prob("threshold", self.threshold)
        _check_prob("prior_accept", self.prior_accept)
        for name, low_open in (("prior_weight", True), ("decay", True)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            if not ok or (name == "decay" and value > 1):
                bound = "in (0, 1]" if name == "decay" else "> 0"
                raise ValueError(f"{name} must be a number {bound}, got {value!r}")
        for name in ("adapt_costs", "allow_ar"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def label(self) -> str:
        """The size limits, then every other setting that differs from its default (parses back with
        bench.parse_method; methods.label appends draft_bits)."""
        always = ("max_depth", "max_branch", "max_nodes")
        args = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                if f.name in always or (f.name not in ("draft_bits", "draft_vocab") and getattr(self, f.name) != f.default)]
        return f"HardwareAware({','.join(args)})"


_CLIP = (0.2, 5.0)  # one round's measured/predicted cost ratio is clipped: a scheduler hiccup must not flip plans
_COST_RATE = 0.1  # weight of the newest round in the running cost corrections


class _Sizing:
    """One generation's planner state: statistics, cost corrections, and the plan of the round in flight."""

    def __init__(self, method: HardwareAware, costs: Costs):
        m = self.method = method
        self.planner = Planner(costs, m.max_depth, m.max_branch, m.max_nodes)
        self.acceptance = Acceptance(m.max_depth, m.max_branch, m.prior_accept, m.prior_weight, m.decay)
        self.draft_scale = self.verify_scale = 1.0
        self.overhead_s = 0.0
        self.rounds = self.ar_streak = self.ar_rounds = self.probe_rounds = 0
        self.plan, self.reason, self.tree, self.run, self.catch_up = None, "", None, None, False
        self.expanders = {}

    def choose(self, max_depth: int) -> tuple[Plan, str]:
        m = self.method
        warmup = self.rounds < m.warmup_rounds
        scales = dict(draft_scale=self.draft_scale, verify_scale=self.verify_scale, overhead_s=self.overhead_s)
        r = self.acceptance.rank_accept()
        plan = self.planner.best(r, max_depth=max_depth, allow_ar=m.allow_ar and not warmup, **scales)
        reason = "warmup" if warmup else "plan"
        if plan.depth == 0 and not math.isnan(plan.tree_tps):  # a plain step chosen over an allowed tree
            if self.ar_streak >= m.probe_every:
                plan, reason = self.planner.best(r, max_depth=max_depth, allow_ar=False, **scales), "probe"
        self.ar_streak = self.ar_streak + 1 if plan.depth == 0 else 0
        return plan, reason

    def draft_round(self, run: Run, state: DraftState, max_depth: int):
        self.run = run
        self.plan, self.reason = self.choose(max_depth)
        self.tree = None
        if self.plan.depth == 0:
            return None
        self.catch_up = len(state.pending) > 2  # the draft reads a backlog first: this round's draft time is atypical
        key = (self.plan.branch, self.plan.nodes)
        if key not in self.expanders:
            self.expanders[key] = fixed_expand(self.plan.branch, self.method.threshold, self.plan.nodes)
        drafted = draft_tree(run.pair.draft, state, self.expanders[key], self.plan.branch, self.plan.depth)
        self.tree = drafted.tree
        return drafted

    def on_round(self, record: dict) -> None:
        plan, self.plan = self.plan, None
        self.rounds += 1
        if plan is None:  # speculate skipped drafting: one token was left
            record.update(plan_depth=0, plan_branch=0, plan_nodes=0, plan_expected_tokens=1.0,
                          plan_expected_tps=math.nan, plan_ar_tps=math.nan, plan_tree_tps=math.nan, plan_reason="last")
            return
        record.update(plan_depth=plan.depth, plan_branch=plan.branch, plan_nodes=plan.nodes,
                      plan_expected_tokens=plan.expected_tokens, plan_expected_tps=plan.expected_tps,
                      plan_ar_tps=plan.ar_tps, plan_tree_tps=plan.tree_tps, plan_reason=self.reason)
        self.ar_rounds += plan.depth == 0
        self.probe_rounds += self.reason == "probe"
        if self.method.adapt_costs:
            self._adapt(plan, record)
        if self.tree is not None and not self.run.finished:  # a finished run's tail may be cut: nothing to learn
            committed = self.run.tokens[len(self.run.tokens) - record["committed"]:]
            self.acceptance.update(rank_observations(self.tree, committed[:-1]))

    def _adapt(self, plan: Plan, record: dict) -> None:
        def ema(old, measured, predicted):
            ratio = min(max(measured / predicted, _CLIP[0]), _CLIP[1]) if predicted > 0 else old
            return (1 - _COST_RATE) * old + _COST_RATE * ratio

        self.verify_scale = ema(self.verify_scale, record["verify_s"], plan.verify_cost)
        if plan.depth > 0 and not self.catch_up:
            self.draft_scale = ema(self.draft_scale, record["draft_s"], plan.draft_cost)
        self.overhead_s = (1 - _COST_RATE) * self.overhead_s + _COST_RATE * record["commit_s"]

    def summary(self) -> dict:
        return {"ar_rounds": self.ar_rounds, "probe_rounds": self.probe_rounds,
                "draft_cost_scale": self.draft_scale, "verify_cost_scale": self.verify_scale}


class _Calibrated(Shaped):
    """Phase 4's confidence-shaped tree, priced from the start with this machine's cost curves."""

    def __init__(self, method: HardwareAware, costs: Costs):
        b = method.max_branch  # DynaTree's branch rule (1 / 2 / 3 children by confidence), capped at max_branch
        tree = DynaTree(max_depth=method.max_depth, min_branch=1, default_branch=min(2, b), max_branch=b,
                        max_nodes=method.max_nodes)
        super().__init__(tree, lambda p: branches(p, tree.high_conf, tree))
        planner = Planner(costs, min(method.max_depth, 8), method.max_branch, method.max_nodes)
        prior = planner.best(rank_accept_prior(self.abar, planner.max_depth, method.max_branch))
        self.seed(costs, prior.expected_tps)
        self.allow_ar = method.allow_ar

    # allow_ar=False, the ablation: the root is always drafted, its children never cut by the node floor
    def select_frontier(self, tree, nodes):
        chosen = super().select_frontier(tree, nodes)
        return nodes if not self.allow_ar and tree.num_draft == 0 and len(chosen) == 0 else chosen

    def child_floor(self, tree) -> float:
        return 0.0 if not self.allow_ar and tree.num_draft == 0 else super().child_floor(tree)


@decode.register
def _(method: HardwareAware, run: Run) -> None:
    started = time.perf_counter()
    costs = load_or_measure_costs(run.pair, nodes=calibration_nodes(method.max_nodes))
    run.extra["calibration_s"] = time.perf_counter() - started
    run.start = run.clock()  # calibration is a one-off per process and pair, not decoding: keep it out of the timings
    if method.shapes == "confidence":
        state = _Calibrated(method, costs)
        drafter = ShapedPolicy(state, method.max_branch, method.max_depth)
    else:
        state = drafter = _Sizing(method, costs)
    speculate(run, drafter.draft_round, drafter.on_round)
    run.extra.update(state.summary())
