"""Hardware-aware tree sizing: measure what forwards cost on this machine, then size every round's tree for speed.

A bigger tree commits more tokens per round, but it also costs more: one draft forward per level, and a verify
forward whose cost is flat while the hardware is under-used and then grows with the node count. Where the knee lies
depends on the machine, not on the acceptance rate, so no single FixedTree is best everywhere (Sequoia's argument).
planning.calibrate measures both cost curves once per machine and model pair; this module keeps running acceptance
statistics and picks each round's tree to maximise expected committed tokens per second. A plain target step (no
draft at all) is one of the candidates, so when drafts keep failing the method falls back to autoregressive decoding
by itself.

What notebook 09 builds on (the first five lines are planning.calibrate's, the last methods.hardware's):

    measure_costs(pair, *, nodes, prefix_len, repeats) -> Costs      time the forwards on this machine
    forward_costs(model, nodes, prefix_len, repeats), monotone(times) the timing loop and its noise repair
    load_or_measure_costs(pair, *, ..., cache_dir, refresh) -> Costs the same, cached on disk and in-process
    calibration_key(pair, ...), calibration_path(key)                what a calibration is cached under
    Costs                                                            .verify(n), .draft(n), .frame(), .to_dict()
    interpolate(xs, ys, x)                                           piecewise-linear cost curve
    fixed_widths(depth, branch, budget), tree_shapes(...)            the candidate trees, as nodes per level
    rank_accept_prior(p, max_depth, max_branch)                      a simple acceptance model (also the prior)
    expected_tokens(widths, rank_accept)                             E[committed tokens] of one tree shape
    Planner(costs, ...).best(rank_accept, ...) -> RoundPlan, plan_round() the size/depth decision
    Acceptance, rank_observations(tree, path_tokens)                 the running acceptance statistics
    HardwareAware                                                    the decoding method that uses all of it

Cost model. `n` counts the tokens of one forward, so a tree of n nodes includes its root and a plain target step
is t_verify(1). A round drafting a tree with `w_d` nodes at level d = 1..D costs

    draft  = t_draft(1) + sum_{d=1}^{D-1} t_draft(w_d)     (the root's forward, then every level but the last;
                                                             the deepest level is never fed to the draft)
    verify = t_verify(1 + sum_d w_d)

Sequoia writes this as depth * t_draft + t_verify(n); counting the frontier width per level matters on a CPU,
where a draft forward over 32 nodes is not free. Measured medians are made non-decreasing in n (`monotone`) and
joined piecewise linearly; past the last point the last segment's slope continues (never downwards). The draft's
catch-up after plain steps (it must then read the tokens it skipped) is a one-off that any later round would pay
too, so the planner leaves it out.

Acceptance model. r[d, j] = P(the target's token at level d is the draft's j-th ranked candidate | the path was
accepted down to level d-1), for d <= max_depth, j <= max_branch. Each verified round tells, for every level its
accepted path reached, which of the accepted parent's k children matched (or none): an observation of r[d, 1..k]
that does not depend on the outcome (k was fixed before verifying), so ranks the tree did not draft are simply not
updated. Counts are discounted (`decay` per observation, an exponential moving average) and shrunk towards a prior
worth `prior_weight` observations: r[d] = (hits[d] + w r[d-1]) / (trials[d] + w), where the first level's prior is
r[0, j] = p (1 - p)^(j - 1). Shrinking each level towards the one above lets levels share strength, and a level the
trees have not reached yet (after a run of plain steps, probes are shallow) inherits the acceptance of the levels
that have been seen, rather than staying at a fixed guess that could keep the planner shallow forever. A level with c
children per accepted parent (fractional where the node budget cuts a level: c = w_d / w_{d-1}) is accepted with
probability a_d(c) = r[d, 1] + ... + r[d, floor c] + frac(c) r[d, floor c + 1], and

    E[committed] = 1 + sum_{d=1}^{D} prod_{i<=d} a_i(c_i)       (the bonus token always comes)

This treats levels as independent given acceptance and, where the budget cuts a level, the accepted parent as an
average node of its level (the budget keeps the likeliest children, so the estimate is conservative there).

Choosing. The candidates are FixedTree shapes (depth <= max_depth, branch <= max_branch, node budgets 2^k - 1, 2^k
and max_nodes) and the plain step; the highest E[committed] / seconds wins, the plain step on ties. HardwareAware
scales the calibrated costs by running averages of measured / predicted seconds, so the load of the moment and the
per-round Python work count too. A plain step teaches nothing about the draft, so after `probe_every` of them in a
row the best tree is drafted once anyway: at worst one round in probe_every + 1 is a losing tree. For a static
method, `methods.hardware.as_method(plan_round(costs, rank_accept_prior(p)))` is the FixedTree this machine favours at acceptance
p; FixedTree and DynaTree themselves do not consult the planner.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .calibrate import Costs

# ---------------------------------------------------------------------------------------------------------------------
# Planner


def fixed_widths(depth: int, branch: int, budget: int) -> tuple[int, ...]:
    """Nodes per level of FixedTree(depth, branch, threshold=0, max_nodes=budget): full levels until the budget
    runs out (the last level keeps what fits, fixed_expand keeping its likeliest children)."""
    widths, total, prev = [], 0, 1
    for _ in range(depth):
        width = min(prev * branch, budget - total)
        if width <= 0:
            break
        widths.append(width)
        total, prev = total + width, width
    return tuple(widths)


@dataclass(frozen=True)
class Shape:
    """A candidate tree: drafted as FixedTree(depth, branch, max_nodes=nodes) with `widths` nodes per level."""

    depth: int
    branch: int
    nodes: int
    widths: tuple[int, ...]


def draft_seconds(costs: Costs, widths) -> float:
    """Draft seconds of a tree with `widths` nodes per level: the root's forward, then one forward per level but the
    last (the deepest level is verified, never fed to the draft)."""
    return costs.draft(1) + sum(costs.draft(w) for w in widths[:-1])


def tree_shapes(max_depth: int = 8, max_branch: int = 3, max_nodes: int = 64) -> list[Shape]:
    """The distinct FixedTree shapes with depth <= max_depth, branch <= max_branch and a node budget in
    {2^k - 1, 2^k} or max_nodes (tree sizes 2^k and 2^k + 1 with the root, either side of hardware knees)."""
    budgets = sorted({b for k in range(max_nodes.bit_length() + 1) for b in (2**k - 1, 2**k)} | {max_nodes})
    shapes: dict[tuple, Shape] = {}
    for branch in range(1, max_branch + 1):
        for depth in range(1, max_depth + 1):
            for budget in budgets:
                if 1 <= budget <= max_nodes:
                    widths = fixed_widths(depth, branch, budget)
                    shapes.setdefault(widths, Shape(len(widths), branch, sum(widths), widths))
    return list(shapes.values())


def rank_accept_prior(p: float, max_depth: int = 8, max_branch: int = 3) -> np.ndarray:
    """r[d, j] = p (1 - p)^j (j from 0): every level alike, each further candidate right with probability p when
    the ones before it were wrong. The planner's prior, and a one-number acceptance model for what-if plots."""
    return np.tile(p * (1 - p) ** np.arange(max_branch), (max_depth, 1)).astype(float)


def _children(widths) -> np.ndarray:
    """Children per accepted parent at each level: w_d / w_{d-1} (w_0 = 1 root)."""
    prev = np.concatenate([[1.0], np.asarray(widths[:-1], dtype=float)])
    return np.asarray(widths, dtype=float) / prev


def _expected(children: np.ndarray, rank_accept: np.ndarray) -> np.ndarray:
    """E[committed] for rows of children-per-level (S, D) (0 past a shape's depth) under r (>= D, B)."""
    depth = children.shape[1]
    r = np.asarray(rank_accept, dtype=float)[:depth]
    padded = np.zeros((depth, r.shape[1] + 2))
    padded[:, 1:-1] = r
    cum = np.cumsum(padded, axis=1)  # cum[d, j] = r[d, 1] + ... + r[d, j]
    whole = np.floor(children).astype(int)
    levels = np.arange(depth)
    accept = cum[levels, whole] + (children - whole) * padded[levels, whole + 1]
    return 1.0 + np.cumprod(np.clip(accept, 0.0, 1.0), axis=1).sum(axis=1)


def expected_tokens(widths, rank_accept) -> float:
    """Expected committed tokens (accepted + bonus) of a tree with `widths` nodes per level (module docstring)."""
    if not widths:
        return 1.0
    r = np.asarray(rank_accept, dtype=float)
    if r.ndim != 2 or r.shape[0] < len(widths) or r.shape[1] < max(_children(widths)):
        raise ValueError(f"rank_accept of shape {r.shape} does not cover {len(widths)} levels of these widths")
    return float(_expected(_children(widths)[None, :], r)[0])


@dataclass(frozen=True)
class RoundPlan:
    """One round's choice. depth 0 is a plain target step. `draft_cost`/`verify_cost` are the calibrated seconds;
    `expected_s` adds the running cost corrections; `ar_tps`/`tree_tps` are the two alternatives' expected rates
    (tree_tps: the best tree's, nan when no tree was allowed)."""

    depth: int
    branch: int
    nodes: int
    widths: tuple[int, ...]
    expected_tokens: float
    expected_s: float
    expected_tps: float
    ar_tps: float
    tree_tps: float
    draft_cost: float = 0.0
    verify_cost: float = 0.0


class Planner:
    """Scores every candidate shape under given costs; `best` picks the highest expected tokens per second.
    Shapes and their calibrated costs are computed once; a round only re-scores E[committed] (vectorised)."""

    def __init__(self, costs: Costs, max_depth: int = 8, max_branch: int = 3, max_nodes: int = 64):
        self.max_depth, self.max_branch = max_depth, max_branch
        self.shapes = tree_shapes(max_depth, max_branch, max_nodes)
        self.children = np.zeros((len(self.shapes), max_depth))
        for s, shape in enumerate(self.shapes):
            self.children[s, : shape.depth] = _children(shape.widths)
        self.depths = np.array([s.depth for s in self.shapes])
        self.draft_cost = np.array([draft_seconds(costs, s.widths) for s in self.shapes])
        self.verify_cost = np.array([costs.verify(1 + s.nodes) for s in self.shapes])
        self.ar_cost = costs.verify(1)

    def best(self, rank_accept, *, max_depth: int | None = None, allow_ar: bool = True, draft_scale: float = 1.0,
             verify_scale: float = 1.0, overhead_s: float = 0.0) -> RoundPlan:
        """The plan maximising E[committed] / seconds. `rank_accept` is r[d, j] (max_depth x max_branch); shapes
        deeper than `max_depth` are excluded; costs are scaled by the running corrections plus a per-round
        overhead. A tree must beat the plain step strictly (ties go to the cheaper, simpler step)."""
        r = np.asarray(rank_accept, dtype=float)
        if r.shape != (self.max_depth, self.max_branch):
            raise ValueError(f"rank_accept must have shape {(self.max_depth, self.max_branch)}, got {r.shape}")
        ar_s = verify_scale * self.ar_cost + overhead_s
        ar_tps = 1.0 / ar_s if ar_s > 0 else math.inf
        allowed = self.depths <= (self.max_depth if max_depth is None else max_depth)
        if not allowed.any():
            return RoundPlan(0, 0, 0, (), 1.0, ar_s, ar_tps, ar_tps, math.nan, 0.0, self.ar_cost)
        expected = _expected(self.children, r)
        seconds = draft_scale * self.draft_cost + verify_scale * self.verify_cost + overhead_s
        tps = np.where(allowed, expected / np.maximum(seconds, 1e-12), -np.inf)
        i = int(np.argmax(tps))
        if allow_ar and tps[i] <= ar_tps:
            return RoundPlan(0, 0, 0, (), 1.0, ar_s, ar_tps, ar_tps, float(tps[i]), 0.0, self.ar_cost)
        s = self.shapes[i]
        return RoundPlan(s.depth, s.branch, s.nodes, s.widths, float(expected[i]), float(seconds[i]), float(tps[i]),
                    ar_tps, float(tps[i]), float(self.draft_cost[i]), float(self.verify_cost[i]))


def plan_round(costs: Costs, rank_accept, *, max_depth: int = 8, max_branch: int = 3, max_nodes: int = 64,
               allow_ar: bool = True) -> RoundPlan:
    """One-off planning (builds a Planner): e.g. `as_method(plan_round(costs, rank_accept_prior(0.7)))` sizes a
    static FixedTree for this machine from an acceptance guess."""
    return Planner(costs, max_depth, max_branch, max_nodes).best(rank_accept, allow_ar=allow_ar)


def plan_table(costs: Costs, accept_grid, *, max_depth: int = 8, max_branch: int = 3,
               max_nodes: int = 64) -> pd.DataFrame:
    """What the planner picks under `costs` for each one-number acceptance p in `accept_grid`
    (`rank_accept_prior`): shape, E[tokens/round], round time, expected tok/s and speedup over AR. One row per p."""
    planner = Planner(costs, max_depth, max_branch, max_nodes)
    rows = []
    for p in accept_grid:
        best = planner.best(rank_accept_prior(p, max_depth, max_branch))
        rows.append({"p": p, "depth": best.depth, "branch": best.branch, "nodes": best.nodes, "widths": best.widths,
                     "E[tokens/round]": best.expected_tokens, "round ms": 1e3 * best.expected_s,
                     "expected tok/s": best.expected_tps, "expected speedup over AR": best.expected_tps / best.ar_tps})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------------
# Running acceptance statistics


def rank_observations(tree, path_tokens) -> list[tuple[int, int, int]]:
    """(level, children, matched rank or 0) for every level the accepted path reached in a verified `tree`, where
    `path_tokens` are the accepted draft tokens (the committed tokens minus the bonus). Siblings are in the draft's
    rank order (fixed_expand keeps candidates best first), so a child's position is its rank."""
    parents = tree.parents.tolist()
    tokens = tree.tokens.tolist()
    children: dict[int, list[int]] = {}
    for node in range(1, len(parents)):
        children.setdefault(parents[node], []).append(node)
    observations, node = [], 0
    for level in range(1, len(path_tokens) + 2):
        kids = children.get(node, [])
        if not kids:
            break
        if level > len(path_tokens):
            observations.append((level, len(kids), 0))  # the accepted leaf had children: none matched
            break
        rank = next((j for j, kid in enumerate(kids, 1) if tokens[kid] == path_tokens[level - 1]), 0)
        observations.append((level, len(kids), rank))
        if rank == 0:
            break  # not a path of this tree (cannot happen for a verified round)
        node = kids[rank - 1]
    return observations


class Acceptance:
    """Discounted per-level, per-rank acceptance counts shrunk towards a prior (module docstring)."""

    def __init__(self, max_depth: int = 8, max_branch: int = 3, prior: float = 0.5, prior_weight: float = 2.0,
                 decay: float = 0.9):
        self.hits = np.zeros((max_depth, max_branch))
        self.trials = np.zeros((max_depth, max_branch))
        self.prior = rank_accept_prior(prior, max_depth, max_branch)
        self.prior_weight, self.decay = prior_weight, decay

    def update(self, observations) -> None:
        for level, k, rank in observations:
            if level > self.hits.shape[0]:
                continue
            d, k = level - 1, min(k, self.hits.shape[1])
            self.hits[d, :k] *= self.decay
            self.trials[d, :k] *= self.decay
            self.trials[d, :k] += 1
            if 1 <= rank <= k:
                self.hits[d, rank - 1] += 1

    def rank_accept(self) -> np.ndarray:
        w = self.prior_weight
        r = np.empty_like(self.hits)
        prior = self.prior[0]
        for d in range(len(r)):  # each level shrinks towards the level above: a level never reached inherits it
            r[d] = prior = (self.hits[d] + w * prior) / (self.trials[d] + w)
        return r
