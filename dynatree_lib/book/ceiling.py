"""How fast speculative decoding can get on this machine: the speedup ceiling that measured costs and acceptance set.

A round drafts d levels and verifies the drafted nodes in one target forward. In units of one AR step (a target
forward for one token, measured in the same process):

    round cost     verify_base + verify_per_node * nodes + draft_level * d
    chain tokens   (1 - a**(d + 1)) / (1 - a)        a chain of d drafted tokens, each accepted with probability a
                                                     given its parent was (the verify adds one token of its own)

so a chain's speedup is tokens / cost, best at some depth. Real acceptance is not constant (long runs of sure
tokens, then a hard one), so a depth that follows confidence beats the best fixed chain of the same average
acceptance; but no schedule, chain or tree, passes the bound that the costs alone set: a round that commits t
tokens drafted at least t - 1 levels and verified as many nodes, so

    speedup < max(1 / verify_base, 1 / (verify_per_node + draft_level))

even if every draft token were accepted. A tree raises the acceptance per level (a second child catches some of
the first child's misses) at the price of more verified nodes; it does not change the costs. Everything outside
the forwards (commit, bookkeeping, the draft's prompt prefill) is left out, which makes all of this optimistic.

`measured_costs` fits the three costs to stored benchmark rows (per run, in AR steps of the same prompt);
`chain_acceptance` reads a fixed-depth chain's per-token acceptance from its tokens per round; `ceiling_table`
says, per kind of text, what a fixed-depth chain reaches at that acceptance, the bound, and what acceptance, or what
draft cost, a target speedup would need.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .tables import text_kind

MAX_DEPTH = 64


@dataclass(frozen=True)
class RoundCosts:
    """A round's forward costs in AR steps (one target forward for one token = 1)."""

    verify_base: float  # a verify forward of the tree's root alone
    verify_per_node: float  # each drafted node it also verifies
    draft_level: float  # one draft forward (one level of the tree)

    def __post_init__(self):
        for name in ("verify_base", "verify_per_node", "draft_level"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite cost >= 0 (in AR steps), got {value!r}")
        if self.verify_base <= 0:
            raise ValueError(f"verify_base must be > 0: a round always verifies, got {self.verify_base!r}")


def _in_ar_steps(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with rounds, and each run's verify seconds per round, nodes per round and seconds per draft forward over
    the AR step of the same prompt and length (AR's verify seconds per round)."""
    runs = df[df["rounds"] > 0].copy()
    ar = runs[runs["method"] == "AR"]
    if ar.empty:
        raise ValueError("no AR rows: costs are measured in AR steps of the same prompt")
    step = (ar["verify_s"] / ar["rounds"]).groupby([ar["prompt_id"], ar["max_new_tokens"]]).median()
    runs["ar_step_s"] = [step.get((p, n), np.nan) for p, n in zip(runs["prompt_id"], runs["max_new_tokens"])]
    runs["verify_steps"] = runs["verify_s"] / runs["rounds"] / runs["ar_step_s"]
    runs["nodes"] = runs["drafted_nodes"] / runs["rounds"]
    forwards = runs["draft_forwards"].where(runs["draft_forwards"] > 0)
    runs["draft_level_steps"] = runs["draft_forward_s"] / forwards / runs["ar_step_s"]
    return runs


def measured_costs(df: pd.DataFrame, draft_method: str) -> RoundCosts:
    """The costs of a round, fitted to stored rows: verify_base and verify_per_node by least squares over every
    run that verified drafted nodes (nodes per round against verify AR steps per round; the target is the same
    whichever draft fed it), draft_level as the median seconds per draft forward of `draft_method`'s runs (which
    fixes the draft: its bits and vocabulary)."""
    runs = _in_ar_steps(df)
    trees = runs[(runs["nodes"] > 0) & runs["verify_steps"].notna()]
    if trees["nodes"].nunique() < 2:
        raise ValueError("fitting the verify cost needs runs at two or more tree sizes")
    slope, base = np.polyfit(trees["nodes"], trees["verify_steps"], 1)
    level = runs.loc[runs["method"] == draft_method, "draft_level_steps"].dropna()
    if level.empty:
        raise ValueError(f"no runs of {draft_method!r} with draft forwards: the draft's cost is unknown")
    return RoundCosts(float(base), float(max(slope, 0.0)), float(level.median()))


def bound(costs: RoundCosts) -> float:
    """The speedup no drafting schedule passes at these costs, every draft token accepted or not."""
    return max(1 / costs.verify_base, 1 / (costs.verify_per_node + costs.draft_level))


def chain_tokens(acceptance, depth):
    """Expected tokens a round commits with a chain of `depth` drafted tokens, each accepted with probability
    `acceptance` given its parent was (the target's own next token included)."""
    a, d = np.asarray(acceptance, dtype=float), np.asarray(depth, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        tokens = (1 - a ** (d + 1)) / (1 - a)
    return np.where(a >= 1, d + 1, tokens)


def chain_speedup(acceptance, depth, costs: RoundCosts):
    """A chain's speedup over AR: tokens per round over the round's cost in AR steps."""
    d = np.asarray(depth, dtype=float)
    return chain_tokens(acceptance, d) / (costs.verify_base + (costs.verify_per_node + costs.draft_level) * d)


def chain_ceiling(acceptance: float, costs: RoundCosts, max_depth: int = MAX_DEPTH) -> tuple[float, int]:
    """The best speedup a chain reaches at this acceptance, and the depth (1..max_depth) where it does."""
    depths = np.arange(1, max_depth + 1)
    speedups = chain_speedup(acceptance, depths, costs)
    best = int(np.argmax(speedups))
    return float(speedups[best]), int(depths[best])


def _solve(f, lo: float, hi: float, target: float, increasing: bool = True, steps: int = 60) -> float:
    """The x in [lo, hi] where the monotone f(x) reaches target (bisection); nan when it never does."""
    f_lo, f_hi = f(lo), f(hi)
    if (increasing and not f_lo <= target <= f_hi) or (not increasing and not f_hi <= target <= f_lo):
        return float("nan")
    for _ in range(steps):
        mid = (lo + hi) / 2
        if (f(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def chain_acceptance(tokens_per_round: float, depth: int) -> float:
    """The per-token acceptance at which a chain of `depth` drafted tokens commits `tokens_per_round` on average."""
    if not 1 <= tokens_per_round <= depth + 1:
        raise ValueError(f"a depth-{depth} chain commits 1..{depth + 1} tokens per round, got {tokens_per_round!r}")
    return _solve(lambda a: float(chain_tokens(a, depth)), 0.0, 1.0, tokens_per_round)


def acceptance_for(speedup: float, costs: RoundCosts, max_depth: int = MAX_DEPTH) -> float:
    """The least per-token acceptance at which a chain (at its best depth) reaches `speedup`; nan if none can."""
    return _solve(lambda a: chain_ceiling(a, costs, max_depth)[0], 0.0, 1.0, speedup)


def draft_level_for(speedup: float, acceptance: float, costs: RoundCosts, max_depth: int = MAX_DEPTH) -> float:
    """The largest draft cost per level (AR steps) at which a chain of this acceptance reaches `speedup`, the verify
    costs unchanged; nan if even a free draft cannot."""
    def ceiling(level: float) -> float:
        return chain_ceiling(acceptance, RoundCosts(costs.verify_base, costs.verify_per_node, level), max_depth)[0]
    return _solve(ceiling, 0.0, max(costs.draft_level, 1.0), speedup, increasing=False)


def ceiling_table(df: pd.DataFrame, chain: str, depth: int, draft_method: str | None = None,
                  target: float = 3.0, beside: str | None = None) -> pd.DataFrame:
    """Per kind of text (and all prompts): the per-token acceptance of `chain` (a fixed chain of `depth` drafted
    tokens, e.g. Linear(K=5)), the best speedup a fixed chain of that acceptance reaches at the measured costs
    (`chain_best`, at `best_depth`), the `bound` no schedule passes, the acceptance a chain needs for `target`, and the draft cost per level that would give `target` at
    the measured acceptance. Costs from `measured_costs(df, draft_method or chain)`; the measured speedup of the chain
    beside them (which also pays everything the model leaves out), and of method `beside` when given."""
    costs = measured_costs(df, draft_method or chain)
    rows = df[df["method"] == chain].copy()
    if rows.empty:
        raise ValueError(f"no rows of {chain!r}")
    rows["kind"] = rows["prompt_id"].map(text_kind)
    other = df[df["method"] == beside].assign(kind=lambda d: d["prompt_id"].map(text_kind)) if beside else None
    if beside and other.empty:
        raise ValueError(f"no rows of {beside!r}")
    groups = [(kind, g) for kind, g in rows.groupby("kind", sort=True)] + [("all", rows)]
    out = []
    for kind, g in groups:
        acceptance = chain_acceptance(float(g["tokens_per_round"].median()), depth)
        ceiling, best_depth = chain_ceiling(acceptance, costs)
        out.append({"kind": kind, "prompts": g["prompt_id"].nunique(), "acceptance": acceptance,
                    "measured_speedup": float(g["speedup"].median()), "chain_best": ceiling, "best_depth": best_depth,
                    "bound": bound(costs),
                    f"acceptance_for_{target:g}x": acceptance_for(target, costs),
                    f"draft_level_for_{target:g}x": draft_level_for(target, acceptance, costs),
                    "draft_level": costs.draft_level, "verify_base": costs.verify_base,
                    "verify_per_node": costs.verify_per_node})
        if beside:
            mine = other if kind == "all" else other[other["kind"] == kind]
            out[-1][f"{beside} speedup"] = float(mine["speedup"].median())
    return pd.DataFrame(out)


def ceiling_shown(limits: pd.DataFrame, beside: str, target: float = 3.0) -> pd.DataFrame:
    """`ceiling_table`'s rows as a page shows them: the columns a reader needs, in words."""
    return limits.rename(columns={
        "kind": "Text", "acceptance": "Acceptance", "measured_speedup": "Chain, measured",
        f"{beside} speedup": "DynaTree, measured", "chain_best": "Chain best",
        f"acceptance_for_{target:g}x": f"Acceptance for {target:g}x",
        f"draft_level_for_{target:g}x": f"Level for {target:g}x",
    })[["Text", "Acceptance", "Chain, measured", "DynaTree, measured", "Chain best", f"Acceptance for {target:g}x",
        f"Level for {target:g}x"]]


def ceiling_numbers(limits: pd.DataFrame, target: float = 3.0) -> dict:
    """The costs and bounds over all prompts (c_* keys, for glue), what `target` would need, and how many times
    cheaper than today's the draft level would have to be."""
    c = limits.set_index("kind").loc["all"]
    need = float(c[f"draft_level_for_{target:g}x"])
    return {**{f"c_{k}": float(c[k]) for k in ("verify_base", "verify_per_node", "draft_level", "bound", "acceptance")},
            "need_acceptance": float(c[f"acceptance_for_{target:g}x"]), "need_level": need,
            "level_ratio": float(c["draft_level"]) / need}
