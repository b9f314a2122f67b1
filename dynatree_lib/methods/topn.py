"""Best-first trees: keep the globally most probable draft nodes (EAGLE-2 / OPT-Tree style), one forward per level.

A fixed tree spends its budget evenly; a best-first tree spends it where the draft's cumulative probability (its own
estimate of the chance a path is accepted) is highest, so a confident chain can run deep while unsure spots stay
shallow.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.checks import _check_draft_options, _check_int
from ..core.draft import DraftState, draft_tree, reorder, select_children
from ..core.loop import Run
from ..core.method import Drafter
from .base import Speculative, renamed


@renamed(nodes="max_nodes")
@dataclass(frozen=True)
class TopNTree(Speculative):
    """Best-first tree of at most `max_nodes` draft nodes, `max_depth` levels, `topk` children per expanded node.

    The exact rule, one draft forward per level:
    1. Candidates: the draft's top-`topk` continuations of the root; then, each level, the top-`topk` continuations
       of every frontier node.
    2. Frontier (the nodes fed to the draft, whose children become the next level's candidates): among the newest
       level's candidates, those still inside the global top-`max_nodes` of all candidates so far by cumulative draft
       log-probability, and of these the `topk` best. A candidate outside the global top-`max_nodes` can never enter the
       final tree, nor can any descendant (a child's cumulative log-prob never exceeds its parent's), so it is not fed.
    3. After `max_depth` levels (or an empty frontier) the verified tree is the global top-`max_nodes` candidates by
       cumulative log-prob over all levels, ties to the earlier node; that set contains every member's parent.
    """

    max_nodes: int = 32  # was `nodes`
    max_depth: int = 8
    topk: int = 8
    draft_bits: int | None = None  # 8 or 4: an int8/int4 weight copy of the draft
    draft_vocab: int | None = None  # K: the draft scores only the K most frequent tokens (models/vocab.py)

    def __post_init__(self):
        _check_draft_options(self.draft_bits, self.draft_vocab)
        _check_int("max_nodes", self.max_nodes, 1)
        _check_int("max_depth", self.max_depth, 1)
        _check_int("topk", self.topk, 1)

    def drafter(self, run: Run) -> "_BestFirst":
        return _BestFirst(self, run)


def best_nodes(tree, n: int) -> torch.Tensor:
    """The non-root nodes among the `n` highest cumulative log-probs (ties to the earlier node), in index order."""
    order = torch.sort(-tree.cum_logp[1:], stable=True).indices[:n] + 1
    return order.sort().values


class _BestFirst(Drafter):
    def __init__(self, method: TopNTree, run: Run):
        self.method, self.run = method, run
        self.candidates = 0

    def select_frontier(self, tree, new_nodes):
        m = self.method
        alive = new_nodes[torch.isin(new_nodes, best_nodes(tree, m.max_nodes))]
        top = torch.sort(-tree.cum_logp[alive], stable=True).indices[: m.topk]
        return alive[top].sort().values

    def propose(self, state: DraftState, max_depth: int):
        m = self.method
        drafted = draft_tree(self.run.pair.draft, state, select_children, m.topk, min(m.max_depth, max_depth),
                             self.select_frontier)
        self.candidates = drafted.tree.num_draft
        if drafted.tree.num_draft <= m.max_nodes:
            return drafted
        keep = [0] + best_nodes(drafted.tree, m.max_nodes).tolist()
        return reorder(drafted, drafted.tree, keep)

    def notes(self) -> dict:
        return {"candidates": self.candidates}  # drafted before the global top-N selection

    def learn(self, record: dict) -> None:
        self.candidates = 0
