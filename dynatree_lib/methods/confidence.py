"""DynaTree phase 4: a tree shaped by confidence and by what a level costs on this machine, learned while decoding.

The research's phases fix the depth (base_depth, extended to max_depth only for near-certain paths). With a cheap
draft that is the wrong trade: on predictable text the draft is right twenty tokens in a row, and a depth cap of 8
throws most of that away, while on hard text even depth 5 drafts tokens nobody will accept. Phase 4 asks, level by
level, whether drafting another level pays for itself:

    a node's worth     q = min(1, alpha * P(path))       P: the draft's cumulative probability of the node's path;
                                                          alpha: how well that probability predicts acceptance
    keep a child       if q(child) >= rate * verify_per_node       the tokens the verify time it adds could earn
    draft a level      if pbar * sum q(frontier) >= rate * draft_per_level

where `rate` is the tokens per second decoding achieves now, `draft_per_level` and `verify_per_node` the seconds a
draft level and a verified node cost, and `pbar` the draft's typical top-1 probability (a child's worth is its
parent's times that). So the tree is a long chain while the draft is sure (one child, high q, cheap levels) and
widens where it is unsure (phase 1's branch rule: min_branch children above high_conf, max_branch below low_conf),
and both limits move with the hardware: a draft level that costs 0.7 of a target step (a bf16 draft on this CPU)
needs far more confidence than one that costs 0.14 (an int4 draft). Every quantity is a running average over the
rounds of this generation (the first round, where the draft reads the whole prompt, is left out), starting from
priors that suit a cheap draft; `depth_limit` is only a hard cap (32 by default).

Nothing here changes what is committed: the target verifies whatever tree is drafted, so output stays exact.
When sampling, the costs and the rate stay at their priors (only alpha and pbar, which depend on the models alone,
are learned), so that a seed still reproduces a run: wall-clock times must not decide which draws are made.
Each round's trace adds `alpha`, `rate_x_level` (rate * draft_per_level, in tokens) and `node_floor`
(rate * verify_per_node).
"""
from __future__ import annotations

import math
import time

import torch

from ..core.draft import select_children
from .base import TreePolicy

_EMA = 0.2  # weight of the newest round in every running average
_PRIOR_LEVEL_TOKENS = 0.4  # rate * draft_per_level before anything is measured (an int4 draft on a CPU)
_PRIOR_NODE_FLOOR = 0.04  # rate * verify_per_node before anything is measured
_NODE_SLOPE = 0.03  # prior: verify seconds per extra node, as a fraction of a one-token verify
_LEVEL_MARGIN = 1.0  # a level must be expected to add this many times its cost in tokens
_ALPHA_RANGE = (0.25, 1.5)
_FLOOR_RANGE = (0.005, 0.5)


def _ema(old: float | None, new: float) -> float:
    return new if old is None else (1 - _EMA) * old + _EMA * new


class _Line:
    """y = a + b x by exponentially weighted least squares; until the x seen spread enough to fit a slope, the
    slope is `prior` times the mean y (a node costs that fraction of a one-token verify)."""

    def __init__(self, prior: float):
        self.prior = prior
        self.mx = self.my = self.mxx = self.mxy = None

    def add(self, x: float, y: float) -> None:
        self.mx, self.my = _ema(self.mx, x), _ema(self.my, y)
        self.mxx, self.mxy = _ema(self.mxx, x * x), _ema(self.mxy, x * y)

    def slope(self) -> float | None:
        if self.mx is None:
            return None
        var = self.mxx - self.mx**2
        fitted = (self.mxy - self.mx * self.my) / var if var > 4.0 else None  # x spread over a few nodes at least
        prior = self.prior * self.my / (1 + self.prior * self.mx)
        return prior if fitted is None else max(fitted, 0.25 * prior)


class Shaped:
    """One generation's phase-4 state: running costs, rate and calibration, and this round's bookkeeping."""

    def __init__(self, method, branches):
        self.method = method
        self.branches = branches  # phase 1's rule: children per node from its top-1 probability
        self.alpha, self.pbar = 1.0, 0.8
        self.level_s = self.rate = None
        self.verify = _Line(_NODE_SLOPE)  # verify seconds = intercept + slope * nodes, fitted as the rounds come
        self.rounds = 0
        self.timed = True  # False while sampling: decisions may depend on the models only, never on the clock
        self.path_mass = 0.0  # sum over this round's drafted nodes of P(path): the predicted accepted length
        self.top1: list[float] = []
        # Between two expand calls of a round lies exactly one level's draft forward (and its bookkeeping): the
        # marginal cost of a level. A round's draft_s / depth would also spread the root's forward, which reads the
        # tokens the draft has not seen yet, over the levels, and so make a shallow tree look costly per level.
        self.last_expand: float | None = None
        self.level_times: list[float] = []

    # --- the decisions -----------------------------------------------------------------------------------------
    def level_tokens(self) -> float:
        """rate * draft_per_level: the tokens another level must be expected to add to pay for itself."""
        if self.rate is None or self.level_s is None:
            return _PRIOR_LEVEL_TOKENS
        return self.rate * self.level_s

    def node_floor(self) -> float:
        """rate * verify_per_node: the least worth of a node that is worth verifying."""
        if self.rate is None or self.verify.slope() is None:
            return _PRIOR_NODE_FLOOR
        return min(max(self.rate * self.verify.slope(), _FLOOR_RANGE[0]), _FLOOR_RANGE[1])

    def worth(self, cum_logp: torch.Tensor) -> torch.Tensor:
        return (self.alpha * cum_logp.exp()).clamp(max=1.0)

    def expand(self, tree, frontier, cand_logp, cand_tokens):
        m = self.method
        top1 = cand_logp[:, 0].exp().float()
        self.top1.extend(top1.tolist())  # .tolist() waits for the level's forward, on a GPU too
        now = time.perf_counter()
        if self.last_expand is not None:
            self.level_times.append(now - self.last_expand)
        self.last_expand = now
        allowed = self.branches(top1)
        keep = torch.arange(cand_logp.shape[1], device=allowed.device) < allowed.unsqueeze(1)
        keep &= self.worth(tree.cum_logp[frontier].unsqueeze(1) + cand_logp) >= self.node_floor()
        parents, tokens, logp = select_children(tree, frontier, cand_logp, cand_tokens, keep,
                                                max_nodes=m.max_nodes if m.node_budget else None)
        self.path_mass += float((tree.cum_logp[parents] + logp).exp().sum())
        return parents, tokens, logp

    def select_frontier(self, tree, nodes):
        m = self.method
        if m.node_budget and tree.num_draft >= m.max_nodes:
            return nodes[:0]
        q = self.worth(tree.cum_logp[nodes])
        alive = q * self.pbar >= self.node_floor()  # a node whose best child cannot pass the floor stays a leaf
        if float(q[alive].sum()) * self.pbar < _LEVEL_MARGIN * self.level_tokens():
            return nodes[:0]
        return nodes[alive]

    # --- learning ----------------------------------------------------------------------------------------------
    def summary(self) -> dict:
        return {"final_alpha": self.alpha, "final_level_tokens": self.level_tokens(),
                "final_node_floor": self.node_floor()}

    def on_round(self, record: dict) -> None:
        record.update(alpha=self.alpha, rate_x_level=self.level_tokens(), node_floor=self.node_floor())
        mass, top1, levels = self.path_mass, self.top1, self.level_times
        self.path_mass, self.top1, self.level_times, self.last_expand = 0.0, [], [], None
        self.rounds += 1
        if self.rounds == 1:
            return  # the draft read the whole prompt this round: its time says nothing about a level
        if self.timed and record["round_s"] > 0:
            self.rate = _ema(self.rate, record["committed"] / record["round_s"])
        if self.timed:
            self.verify.add(record["nodes"], record["verify_s"])
            for seconds in levels:
                self.level_s = _ema(self.level_s, seconds)
        if top1:
            self.pbar = _ema(self.pbar, sum(top1) / len(top1))
        if mass > 0 and not math.isnan(mass):
            # accepted length = sum over drafted nodes of P(accepted); the draft's own probability predicts it as
            # `mass`: alpha scales it to what the target actually accepts
            ratio = min(max(record["accepted"] / mass, _ALPHA_RANGE[0]), _ALPHA_RANGE[1])
            self.alpha = min(max(_ema(self.alpha, ratio), _ALPHA_RANGE[0]), _ALPHA_RANGE[1])


class ShapedPolicy(TreePolicy):
    """Phase 4's TreePolicy: before each round it tells the state whether the run samples (see the docstring)."""

    def __init__(self, shaped: Shaped, width: int, depth: int):
        super().__init__(shaped.expand, width, depth, shaped.select_frontier, shaped.on_round,
                         branches=shaped.branches)
        self.shaped = shaped

    def draft_round(self, run, state, max_depth: int):
        self.shaped.timed = run.sampling is None
        return super().draft_round(run, state, max_depth)
