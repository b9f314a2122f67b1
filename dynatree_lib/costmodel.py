"""Hardware-aware tree sizing: measure what forwards cost on this machine, then size every round's tree for speed.

A bigger tree commits more tokens per round, but it also costs more: one draft forward per level, and a verify
forward whose cost is flat while the hardware is under-used and then grows with the node count. Where the knee lies
depends on the machine, not on the acceptance rate, so no single FixedTree is best everywhere (Sequoia's argument).
This module measures both cost curves once per machine and model pair, keeps running acceptance statistics, and
picks each round's tree to maximise expected committed tokens per second. A plain target step (no draft at all) is
one of the candidates, so when drafts keep failing the method falls back to autoregressive decoding by itself.

Public API (notebook 09 builds on these):

    measure_costs(pair, *, nodes, prefix_len, repeats) -> Costs      time the forwards on this machine
    forward_costs(model, nodes, prefix_len, repeats), monotone(times) the timing loop and its noise repair
    load_or_measure_costs(pair, *, ..., cache_dir, refresh) -> Costs the same, cached on disk and in-process
    calibration_key(pair, ...), calibration_path(key)                what a calibration is cached under
    Costs                                                            .verify(n), .draft(n), .frame(), .to_dict()
    interpolate(xs, ys, x)                                           piecewise-linear cost curve
    fixed_widths(depth, branch, budget), tree_shapes(...)            the candidate trees, as nodes per level
    rank_accept_prior(p, max_depth, max_branch)                      a simple acceptance model (also the prior)
    expected_tokens(widths, rank_accept)                             E[committed tokens] of one tree shape
    Planner(costs, ...).best(rank_accept, ...) -> Plan, plan_round() the size/depth decision
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
method, `plan_round(costs, rank_accept_prior(p)).fixed_tree()` is the FixedTree this machine favours at acceptance
p; FixedTree and DynaTree themselves do not consult the planner.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import kvcache
from .decoding import Run, decode, speculate
from .draft import DraftState, draft_tree, fixed_expand, forward
from .mask import tree_attention_mask, tree_position_ids
from .methods import Autoregressive, FixedTree, _check_draft_bits, _check_int, _check_prob
from .models import cache_root

DEFAULT_NODES = (1, 2, 4, 8, 16, 32, 64)
CALIBRATION_FORMAT = 1  # bump when what is measured changes, so old calibrations are not reused


# ---------------------------------------------------------------------------------------------------------------------
# Cost curves


def interpolate(xs, ys, x: float) -> float:
    """Piecewise-linear y(x) through the points (xs increasing): below xs[0] the first value, past xs[-1] the last
    segment's slope continued (clamped at 0, so timing noise never makes a bigger forward look cheaper)."""
    if len(xs) == 1 or x <= xs[0]:
        return float(ys[0])
    i = bisect.bisect_left(xs, x)
    if i == len(xs):
        slope = max((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), 0.0)
        return float(ys[-1] + slope * (x - xs[-1]))
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(y0 + (y1 - y0) * (x - x0) / (x1 - x0))


def _check_nodes(nodes) -> tuple[int, ...]:
    nodes = tuple(nodes)
    if not nodes or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in nodes) or any(
        a >= b for a, b in zip(nodes, nodes[1:])
    ):
        raise ValueError(f"nodes must be a non-empty increasing sequence of integers >= 1, got {nodes!r}")
    return nodes


@dataclass(frozen=True)
class Costs:
    """Measured seconds of one target forward (`verify_s`) and one draft forward (`draft_s`, None without a draft)
    over `nodes[i]` tree tokens on top of a cached prefix; `info` is the provenance."""

    nodes: tuple[int, ...]
    verify_s: tuple[float, ...]
    draft_s: tuple[float, ...] | None = None
    info: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "nodes", _check_nodes(self.nodes))
        for name in ("verify_s", "draft_s"):
            values = getattr(self, name)
            if values is None and name == "draft_s":
                continue
            values = tuple(float(v) for v in values)
            if len(values) != len(self.nodes) or not all(v >= 0 and math.isfinite(v) for v in values):
                raise ValueError(f"{name} must hold one finite time >= 0 per node count, got {values!r}")
            object.__setattr__(self, name, values)

    def verify(self, n: float) -> float:
        """Seconds of one target forward over a tree of `n` nodes (root included)."""
        return interpolate(self.nodes, self.verify_s, n)

    def draft(self, n: float) -> float:
        """Seconds of one draft forward over a frontier of `n` nodes."""
        if self.draft_s is None:
            raise ValueError("these costs were measured without a draft model")
        return interpolate(self.nodes, self.draft_s, n)

    def frame(self):
        import pandas as pd

        frame = pd.DataFrame({"nodes": self.nodes, "verify_s": self.verify_s})
        if self.draft_s is not None:
            frame["draft_s"] = self.draft_s
            frame["draft_over_verify"] = frame["draft_s"] / frame["verify_s"]
        return frame

    def to_dict(self) -> dict:
        return {"nodes": list(self.nodes), "verify_s": list(self.verify_s),
                "draft_s": None if self.draft_s is None else list(self.draft_s), "info": self.info}

    @classmethod
    def from_dict(cls, data: dict) -> "Costs":
        return cls(tuple(data["nodes"]), tuple(data["verify_s"]),
                   None if data.get("draft_s") is None else tuple(data["draft_s"]), data.get("info") or {})


def _clock(device) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _heap_tree(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Ancestors and depths of an n-node binary tree (parent of i is (i-1)//2). The mask is dense whatever the
    shape, so any shape of n nodes costs the same; a bushy one keeps positions within prefix + log2(n)."""
    ancestors = torch.eye(n, dtype=torch.bool)
    depth = torch.zeros(n, dtype=torch.long)
    for i in range(1, n):
        ancestors[i] |= ancestors[(i - 1) // 2]
        depth[i] = depth[(i - 1) // 2] + 1
    return ancestors.to(device), depth.to(device)


@torch.inference_mode()
def forward_costs(model, nodes=DEFAULT_NODES, prefix_len: int = 128, repeats: int = 3, seed: int = 0):
    """Median seconds of one forward of `model` over n tree tokens (tree mask, all logits, as verify and each draft
    level compute them) on a cache of `prefix_len` random tokens, for every n in `nodes`, after one warm-up pass.
    Each pass times every size once, so a stall of a shared machine spoils one sample of several sizes rather than
    every sample of one size."""
    device = model.device
    vocab = model.get_output_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(seed)
    cache = kvcache.new_cache(model)
    prefix = torch.randint(vocab, (1, prefix_len), generator=generator).to(device)
    forward(model, prefix, cache, logits_to_keep=1)
    inputs = []
    for n in nodes:
        ancestors, depth = _heap_tree(n, device)
        tokens = torch.randint(vocab, (1, n), generator=generator).to(device)
        inputs.append((tokens, tree_position_ids(depth, prefix_len), tree_attention_mask(ancestors, prefix_len,
                                                                                          model.dtype)))
    samples = [[] for _ in nodes]
    for _ in range(repeats + 1):
        for times, (tokens, positions, mask) in zip(samples, inputs):
            t0 = _clock(device)
            forward(model, tokens, cache, positions, mask)
            times.append(_clock(device) - t0)
            kvcache.crop(cache, prefix_len)  # every forward starts from the same prefix
    return tuple(statistics.median(times[1:]) for times in samples)


def monotone(times) -> tuple[float, ...]:
    """Each time lowered to the smallest time of any larger size. A forward over more tokens is never cheaper, and
    contention only ever adds time, so a point above a later one is noise (a stall), not a property of the model."""
    out = list(times)
    for i in range(len(out) - 2, -1, -1):
        out[i] = min(out[i], out[i + 1])
    return tuple(out)


def measure_costs(pair, *, nodes=DEFAULT_NODES, prefix_len: int = 128, repeats: int = 3) -> Costs:
    """Time the target's verify forward and the draft's level forward for every tree size in `nodes` on this
    machine (median of `repeats` after a warm-up pass; made non-decreasing in n by `monotone`, the raw medians are
    kept in info). Returns Costs with provenance (date, versions, CPU/GPU, threads, load average before and after:
    on a shared machine the numbers are only as good as the load allowed)."""
    from .provenance import provenance

    nodes = _check_nodes(nodes)
    _check_int("prefix_len", prefix_len, 1)
    _check_int("repeats", repeats, 1)
    for role, model in (("target", pair.target), ("draft", pair.draft)):
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if model is not None and context is not None and prefix_len + nodes[-1] > context:
            raise ValueError(f"prefix_len ({prefix_len}) + the largest of nodes ({nodes[-1]}) exceeds the {role}'s "
                             f"context of {context} tokens")
    load_before = os.getloadavg()
    started = time.perf_counter()
    raw_verify = forward_costs(pair.target, nodes, prefix_len, repeats)
    if pair.draft is None:
        raw_draft = None
    elif pair.draft is pair.target:
        raw_draft = raw_verify  # the same model: the same forward
    else:
        raw_draft = forward_costs(pair.draft, nodes, prefix_len, repeats)
    info = provenance(pair, {"nodes": list(nodes), "prefix_len": prefix_len, "repeats": repeats})
    info.update(loadavg_before=list(load_before), loadavg_after=list(os.getloadavg()), cpu_count=os.cpu_count(),
                measure_s=time.perf_counter() - started, raw_verify_s=list(raw_verify),
                raw_draft_s=None if raw_draft is None else list(raw_draft))
    return Costs(nodes, monotone(raw_verify), None if raw_draft is None else monotone(raw_draft), info)


# ---------------------------------------------------------------------------------------------------------------------
# Calibration cache: <cache_root>/costs/<hash>.json, one per model pair, dtype, device, threads and settings


def model_identity(model) -> dict:
    """What a forward's cost depends on: architecture (config hash), dtype and module types (a quantized draft has
    the same config but other modules); weights do not matter, so a perturbed copy shares its calibration."""
    config = model.config
    modules = ",".join(sorted({type(m).__name__ for m in model.modules()}))
    return {
        "name_or_path": str(getattr(config, "name_or_path", "") or ""),
        "config_sha1": hashlib.sha1(config.to_json_string(use_diff=False).encode()).hexdigest()[:12],
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "modules_sha1": hashlib.sha1(modules.encode()).hexdigest()[:12],
    }


def calibration_key(pair, nodes=DEFAULT_NODES, prefix_len: int = 128, repeats: int = 3) -> dict:
    from .provenance import cpu_model

    device = pair.device
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return {
        "format": CALIBRATION_FORMAT,
        "target": model_identity(pair.target),
        "draft": None if pair.draft is None else model_identity(pair.draft),
        "device": str(device),
        "hardware": hardware,
        "torch_threads": torch.get_num_threads(),
        "nodes": list(nodes),
        "prefix_len": prefix_len,
        "repeats": repeats,
    }


def calibration_path(key: dict, cache_dir=None) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root(cache_dir) / "costs" / f"{digest}.json"


_CALIBRATIONS: dict[str, Costs] = {}  # in-process: a process pays for a calibration at most once


def load_or_measure_costs(pair, *, nodes=DEFAULT_NODES, prefix_len: int = 128, repeats: int = 3, cache_dir=None,
                          refresh: bool = False) -> Costs:
    """The pair's Costs on this machine: from this process's memory, else from the JSON cache
    (`calibration_path`, under $DYNATREE_CACHE), else measured (`measure_costs`) and saved. `refresh` re-measures."""
    nodes = _check_nodes(nodes)
    key = calibration_key(pair, nodes, prefix_len, repeats)
    path = calibration_path(key, cache_dir)
    if not refresh:
        if str(path) in _CALIBRATIONS:
            return _CALIBRATIONS[str(path)]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["key"] == key:
                costs = _CALIBRATIONS[str(path)] = Costs.from_dict(data["costs"])
                return costs
        except (OSError, ValueError, KeyError, TypeError):
            pass  # missing or unreadable: measure again
    costs = measure_costs(pair, nodes=nodes, prefix_len=prefix_len, repeats=repeats)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key, "costs": costs.to_dict()}, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one, never half of one
    _CALIBRATIONS[str(path)] = costs
    return costs


def calibration_nodes(max_nodes: int) -> tuple[int, ...]:
    """DEFAULT_NODES, plus powers of two up to the first >= max_nodes when a bigger budget is allowed."""
    nodes = list(DEFAULT_NODES)
    while nodes[-1] < max_nodes:
        nodes.append(nodes[-1] * 2)
    return tuple(nodes)


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
class Plan:
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

    def fixed_tree(self, threshold: float = 0.0):
        """This plan as a static method: FixedTree of this shape, or Autoregressive for depth 0."""
        if self.depth == 0:
            return Autoregressive()
        return FixedTree(depth=self.depth, branch=self.branch, threshold=threshold, max_nodes=self.nodes)


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
        self.draft_cost = np.array([costs.draft(1) + sum(costs.draft(w) for w in s.widths[:-1]) for s in self.shapes])
        self.verify_cost = np.array([costs.verify(1 + s.nodes) for s in self.shapes])
        self.ar_cost = costs.verify(1)

    def best(self, rank_accept, *, max_depth: int | None = None, allow_ar: bool = True, draft_scale: float = 1.0,
             verify_scale: float = 1.0, overhead_s: float = 0.0) -> Plan:
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
            return Plan(0, 0, 0, (), 1.0, ar_s, ar_tps, ar_tps, math.nan, 0.0, self.ar_cost)
        expected = _expected(self.children, r)
        seconds = draft_scale * self.draft_cost + verify_scale * self.verify_cost + overhead_s
        tps = np.where(allowed, expected / np.maximum(seconds, 1e-12), -np.inf)
        i = int(np.argmax(tps))
        if allow_ar and tps[i] <= ar_tps:
            return Plan(0, 0, 0, (), 1.0, ar_s, ar_tps, ar_tps, float(tps[i]), 0.0, self.ar_cost)
        s = self.shapes[i]
        return Plan(s.depth, s.branch, s.nodes, s.widths, float(expected[i]), float(seconds[i]), float(tps[i]),
                    ar_tps, float(tps[i]), float(self.draft_cost[i]), float(self.verify_cost[i]))


def plan_round(costs: Costs, rank_accept, *, max_depth: int = 8, max_branch: int = 3, max_nodes: int = 64,
               allow_ar: bool = True) -> Plan:
    """One-off planning (builds a Planner): e.g. `plan_round(costs, rank_accept_prior(0.7)).fixed_tree()` sizes a
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


# ---------------------------------------------------------------------------------------------------------------------
# The method


@dataclass(frozen=True)
class HardwareAware:
    """Each round, the tree (FixedTree shape with depth <= max_depth, branch <= max_branch, nodes <= max_nodes) or
    plain target step with the most expected committed tokens per second, from this machine's cost curves and the
    running acceptance statistics (module docstring). `threshold` prunes like FixedTree's (0: shapes exactly as
    planned). The first `warmup_rounds` rounds always draft, to learn; after `probe_every` plain steps in a row the
    best tree is drafted once anyway, so a draft that starts agreeing again is noticed. `prior_accept`,
    `prior_weight` and `decay` set the acceptance estimator; `adapt_costs` scales the calibrated draft and verify
    costs by running averages of measured / predicted seconds (load, Python overhead) and adds the measured commit
    time to every candidate; `allow_ar=False` removes the plain step (always draft: the ablation).

    Calibration: the first generate of a process calls `load_or_measure_costs` for its pair (seconds on a CPU; free
    once cached on disk) and keeps the curves in memory for later calls. That time is left out of the generation's
    wall time and TTFT and reported as stats["calibration_s"]. Each round's trace adds plan_depth (0: plain step),
    plan_branch, plan_nodes, plan_expected_tokens, plan_expected_tps, plan_ar_tps, plan_tree_tps and plan_reason
    ("warmup", "plan", "probe"; "last" when only one token remained and nothing was planned).
    """

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
    name = "HardwareAware"
    needs_draft = True

    def __post_init__(self):
        _check_draft_bits(self.draft_bits)
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
                if f.name in always or (f.name != "draft_bits" and getattr(self, f.name) != f.default)]
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


@decode.register
def _(method: HardwareAware, run: Run) -> None:
    started = time.perf_counter()
    costs = load_or_measure_costs(run.pair, nodes=calibration_nodes(method.max_nodes))
    run.extra["calibration_s"] = time.perf_counter() - started
    run.start = run.clock()  # calibration is a one-off per process and pair, not decoding: keep it out of the timings
    sizing = _Sizing(method, costs)
    speculate(run, sizing.draft_round, sizing.on_round)
    run.extra.update(sizing.summary())
