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
Each round's trace adds `alpha`, `rate_x_level` (rate * draft_per_level, in tokens) and `node_floor`
(rate * verify_per_node).
"""
from __future__ import annotations

import math

import torch

from ..core.draft import select_children

_EMA = 0.2  # weight of the newest round in every running average
_PRIOR_LEVEL_TOKENS = 0.4  # rate * draft_per_level before anything is measured (an int4 draft on a CPU)
_PRIOR_NODE_FLOOR = 0.04  # rate * verify_per_node before anything is measured
_NODE_SLOPE = 0.025  # verify seconds per extra node, as a fraction of a one-token verify (CPU: 1.0 -> 1.4 at 16)
_ALPHA_RANGE = (0.25, 1.5)
_FLOOR_RANGE = (0.005, 0.5)


def _ema(old: float | None, new: float) -> float:
    return new if old is None else (1 - _EMA) * old + _EMA * new


class Shaped:
    """One generation's phase-4 state: running costs, rate and calibration, and this round's bookkeeping."""

    def __init__(self, method, branches):
        self.method = method
        self.branches = branches  # phase 1's rule: children per node from its top-1 probability
        self.alpha, self.pbar = 1.0, 0.8
        self.level_s = self.verify1_s = self.rate = None
        self.rounds = 0
        self.path_mass = 0.0  # sum over this round's drafted nodes of P(path): the predicted accepted length
        self.top1: list[float] = []

    # --- the decisions -----------------------------------------------------------------------------------------
    def level_tokens(self) -> float:
        """rate * draft_per_level: the tokens another level must be expected to add to pay for itself."""
        if self.rate is None or self.level_s is None:
            return _PRIOR_LEVEL_TOKENS
        return self.rate * self.level_s

    def node_floor(self) -> float:
        """rate * verify_per_node: the least worth of a node that is worth verifying."""
        if self.rate is None or self.verify1_s is None:
            return _PRIOR_NODE_FLOOR
        return min(max(self.rate * _NODE_SLOPE * self.verify1_s, _FLOOR_RANGE[0]), _FLOOR_RANGE[1])

    def worth(self, cum_logp: torch.Tensor) -> torch.Tensor:
        return (self.alpha * cum_logp.exp()).clamp(max=1.0)

    def expand(self, tree, frontier, cand_logp, cand_tokens):
        m = self.method
        top1 = cand_logp[:, 0].exp()
        self.top1.extend(top1.tolist())
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
        if float(q[alive].sum()) * self.pbar < self.level_tokens():
            return nodes[:0]
        return nodes[alive]

    # --- learning ----------------------------------------------------------------------------------------------
    def summary(self) -> dict:
        return {"final_alpha": self.alpha, "final_level_tokens": self.level_tokens(),
                "final_node_floor": self.node_floor()}

    def on_round(self, record: dict) -> None:
        record.update(alpha=self.alpha, rate_x_level=self.level_tokens(), node_floor=self.node_floor())
        mass, top1 = self.path_mass, self.top1
        self.path_mass, self.top1 = 0.0, []
        self.rounds += 1
        if self.rounds == 1:
            return  # the draft read the whole prompt this round: its time says nothing about a level
        if record["round_s"] > 0:
            self.rate = _ema(self.rate, record["committed"] / record["round_s"])
        self.verify1_s = _ema(self.verify1_s, record["verify_s"] / (1 + _NODE_SLOPE * record["nodes"]))
        if record["depth"] > 0:
            self.level_s = _ema(self.level_s, record["draft_s"] / record["depth"])
        if top1:
            self.pbar = _ema(self.pbar, sum(top1) / len(top1))
        if mass > 0 and not math.isnan(mass):
            # accepted length = sum over drafted nodes of P(accepted); the draft's own probability predicts it as
            # `mass`: alpha scales it to what the target actually accepts
            ratio = min(max(record["accepted"] / mass, _ALPHA_RANGE[0]), _ALPHA_RANGE[1])
            self.alpha = min(max(_ema(self.alpha, ratio), _ALPHA_RANGE[0]), _ALPHA_RANGE[1])
