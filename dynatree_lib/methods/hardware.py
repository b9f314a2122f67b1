"""Hardware-aware trees, from this machine's calibrated cost curves (planning.calibrate), in two classes:

    HardwareAware   DynaTree's confidence-and-cost shaped tree (methods.confidence), priced from the first round
                    with this machine's curves instead of priors (it was HardwareAware(shapes="confidence"))
    PlannedTree     each round, the uniform FixedTree shape (or plain target step) with the most expected committed
                    tokens per second, planned before drafting from running acceptance statistics (planning.planner;
                    it was HardwareAware(shapes="fixed"))

Calibration: the first generate of a process calls `load_or_measure_costs` for its pair (seconds on a CPU; free once
cached on disk) and keeps the curves in memory for later calls. That time is left out of the generation's wall time
and TTFT and reported as stats["calibration_s"].
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..core.checks import _check_bool, _check_draft_options, _check_int, _check_prob
from ..core.draft import DraftState
from ..core.loop import Run
from ..core.method import Drafter
from ..planning.calibrate import Costs, calibration_nodes, load_or_measure_costs
from ..planning.planner import Acceptance, Planner, RoundPlan, rank_accept_prior, rank_observations
from .base import Autoregressive, FixedTree, Speculative, retired
from .adaptive import branches
from .confidence import DynaTree, Shaped, ShapedDrafter

# ---------------------------------------------------------------------------------------------------------------------
# The methods


def as_method(plan: RoundPlan, threshold: float = 0.0):
    """A plan as a static method: FixedTree of its shape, or Autoregressive for depth 0 (a plain step)."""
    if plan.depth == 0:
        return Autoregressive()
    return FixedTree(depth=plan.depth, branch=plan.branch, threshold=threshold, max_nodes=plan.nodes)


def calibrated_costs(method, run: Run) -> Costs:
    """This machine's cost curves for the run's pair (measured once per process and pair, then cached); the time it
    took is stats["calibration_s"] and stays out of the generation's wall time and TTFT."""
    started = time.perf_counter()
    costs = load_or_measure_costs(run.pair, nodes=calibration_nodes(method.max_nodes))
    run.extra["calibration_s"] = time.perf_counter() - started
    run.start = run.clock()  # calibration is a one-off per process and pair, not decoding: keep it out of the timings
    return costs


# HardwareAware(shapes=...) held both algorithms: shapes="fixed" is PlannedTree now, and the planner's settings are
# accepted by HardwareAware with a DeprecationWarning and ignored (the confidence-shaped tree never read them).
_PLANNER_ONLY = ("shapes", "threshold", "warmup_rounds", "probe_every", "prior_accept", "prior_weight", "decay",
                 "adapt_costs")


def _fixed_shapes(params: dict) -> bool:
    shapes = params.get("shapes", "confidence")
    if shapes not in ("fixed", "confidence"):
        raise ValueError(f"shapes must be 'fixed' (PlannedTree) or 'confidence' (HardwareAware), got {shapes!r}")
    return shapes == "fixed"


@retired(lambda params: ("PlannedTree", ("shapes",)) if _fixed_shapes(params) else ("HardwareAware", _PLANNER_ONLY))
@dataclass(frozen=True)
class HardwareAware(Speculative):
    """DynaTree's confidence-and-cost shaped tree (depth <= max_depth, children per node <= max_branch by DynaTree's
    1/2/3 rule, nodes <= max_nodes), whose cost lines start from this machine's calibrated curves (and its rate from
    the planner's expected rate at the prior acceptance) rather than from priors suited to one draft.
    `allow_ar=False` always drafts the root, its children never cut by the node floor (the ablation).
    Why it beats the planner of fixed shapes: in the planner benchmark (data/results/planner.csv, six held-out
    prompts of three kinds, int4 draft, one process) it was faster than PlannedTree on every prompt and closest to
    the best other policy per prompt (the hardware chapter computes both from the rows).

    `HardwareAware(shapes="fixed", ...)` still works, with a DeprecationWarning: it returns PlannedTree(...)."""

    max_depth: int = 32
    max_branch: int = 3
    max_nodes: int = 64
    allow_ar: bool = True
    draft_bits: int | None = None  # 8 or 4: an int8/int4 weight copy of the draft, calibrated as its own model
    draft_vocab: int | None = None  # K: the draft scores only the K most frequent tokens (calibrated as its own)

    def __post_init__(self):
        _check_draft_options(self.draft_bits, self.draft_vocab)
        for name in ("max_depth", "max_branch", "max_nodes"):
            _check_int(name, getattr(self, name), 1)
        _check_bool("allow_ar", self.allow_ar)

    def drafter(self, run: Run) -> ShapedDrafter:
        return ShapedDrafter(_Calibrated(self, calibrated_costs(self, run)), run, self.max_branch, self.max_depth)


@dataclass(frozen=True)
class PlannedTree(Speculative):
    """Each round, the FixedTree shape (depth <= max_depth, branch <= max_branch, nodes <= max_nodes) or plain target
    step with the most expected committed tokens per second on this machine, chosen before drafting from running
    per-level acceptance statistics and the calibrated cost curves. `threshold` prunes like FixedTree's (0: shapes
    exactly as planned). The first `warmup_rounds` rounds always draft, to learn; after `probe_every` plain steps
    in a row the best tree is drafted once anyway, so a draft that starts agreeing again is noticed.
    `prior_accept`, `prior_weight` and `decay` set the acceptance estimator; `adapt_costs` scales the calibrated
    draft and verify costs by running averages of measured / predicted seconds (load, Python overhead) and adds the
    measured commit time to every candidate; `allow_ar=False` removes the plain step (always draft: the ablation).
    Each round's trace adds plan_depth (0: plain step), plan_branch, plan_nodes, plan_expected_tokens,
    plan_expected_tps, plan_ar_tps, plan_tree_tps and plan_reason ("warmup", "plan", "probe"; "last" when only one
    token remained and nothing was planned)."""

    max_depth: int = 8
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

    def __post_init__(self):
        _check_draft_options(self.draft_bits, self.draft_vocab)
        for name in ("max_depth", "max_branch", "max_nodes", "probe_every"):
            _check_int(name, getattr(self, name), 1)
        _check_int("warmup_rounds", self.warmup_rounds, 0)
        _check_prob("threshold", self.threshold)
        _check_prob("prior_accept", self.prior_accept)
        for name in ("prior_weight", "decay"):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            if not ok or (name == "decay" and value > 1):
                bound = "in (0, 1]" if name == "decay" else "> 0"
                raise ValueError(f"{name} must be a number {bound}, got {value!r}")
        for name in ("adapt_costs", "allow_ar"):
            _check_bool(name, getattr(self, name))

    def drafter(self, run: Run) -> "_Sizing":
        return _Sizing(self, calibrated_costs(self, run), run)


_CLIP = (0.2, 5.0)  # one round's measured/predicted cost ratio is clipped: a scheduler hiccup must not flip plans
_COST_RATE = 0.1  # weight of the newest round in the running cost corrections


class _Sizing(Drafter):
    """One generation's planner state: statistics, cost corrections, and the plan of the round in flight."""

    def __init__(self, method: PlannedTree, costs: Costs, run: Run):
        m = self.method = method
        self.planner = Planner(costs, m.max_depth, m.max_branch, m.max_nodes)
        self.acceptance = Acceptance(m.max_depth, m.max_branch, m.prior_accept, m.prior_weight, m.decay)
        self.draft_scale = self.verify_scale = 1.0
        self.overhead_s = 0.0
        self.rounds = self.ar_streak = self.ar_rounds = self.probe_rounds = 0
        self.plan, self.reason, self.tree, self.run, self.catch_up = None, "", None, run, False

    def choose(self, max_depth: int) -> tuple[RoundPlan, str]:
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

    def propose(self, state: DraftState, max_depth: int):
        self.plan, self.reason = self.choose(max_depth)
        self.tree = None
        if self.plan.depth == 0:
            return None
        self.catch_up = len(state.pending) > 2  # the draft reads a backlog first: this round's draft time is atypical
        drafted = as_method(self.plan, self.method.threshold).drafter(self.run).propose(state, self.plan.depth)
        self.tree = drafted.tree
        return drafted

    def notes(self) -> dict:
        plan = self.plan
        if plan is None:  # speculate skipped drafting: one token was left
            return dict(plan_depth=0, plan_branch=0, plan_nodes=0, plan_expected_tokens=1.0,
                        plan_expected_tps=math.nan, plan_ar_tps=math.nan, plan_tree_tps=math.nan, plan_reason="last")
        return dict(plan_depth=plan.depth, plan_branch=plan.branch, plan_nodes=plan.nodes,
                    plan_expected_tokens=plan.expected_tokens, plan_expected_tps=plan.expected_tps,
                    plan_ar_tps=plan.ar_tps, plan_tree_tps=plan.tree_tps, plan_reason=self.reason)

    def learn(self, record: dict) -> None:
        plan, self.plan = self.plan, None
        self.rounds += 1
        if plan is None:
            return
        self.ar_rounds += plan.depth == 0
        self.probe_rounds += self.reason == "probe"
        if self.method.adapt_costs:
            self._adapt(plan, record)
        if self.tree is not None and not self.run.finished:  # a finished run's tail may be cut: nothing to learn
            committed = self.run.tokens[len(self.run.tokens) - record["committed"]:]
            self.acceptance.update(rank_observations(self.tree, committed[:-1]))

    def _adapt(self, plan: RoundPlan, record: dict) -> None:
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
    """DynaTree's confidence-shaped tree, priced from the start with this machine's cost curves."""

    def __init__(self, method: HardwareAware, costs: Costs):
        b = method.max_branch  # DynaTree's branch rule (1 / 2 / 3 children by confidence), capped at max_branch
        tree = DynaTree(max_depth=method.max_depth, min_branch=1, default_branch=min(2, b), max_branch=b,
                        max_nodes=method.max_nodes, staged=False)
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
