"""N-gram drafts: continuations copied from earlier occurrences of the context's last tokens (prompt lookup).

Text repeats itself (code, quotes, names, lists), and a repeat is free to propose: find the most recent earlier
occurrence of the context's last n tokens and propose what followed it. No draft model, no draft forward. The
proposals are plain chains grafted onto a tree (alone for PromptLookup, beside the draft model's tree for
HybridTree); n-gram nodes are never fed to a draft model, so the draft cache stays consistent.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.checks import _check_int
from ..core.draft import DraftState, Drafted, reorder
from ..core.loop import Run
from ..core.method import Drafter
from ..core.tree import Tree, add_level, root
from .adaptive import AdaptiveTree
from .base import FixedTree, Linear, Speculative, renamed
from .confidence import DynaTree
from .topn import TopNTree


def _check_lookup(method) -> None:
    _check_int("max_ngram", method.max_ngram, 1)
    _check_int("k", method.k, 1)
    _check_int("branches", method.branches, 1)


@renamed(num_tokens="k")
@dataclass(frozen=True)
class PromptLookup(Speculative):
    """Drafts copied from n-gram matches in the context (prompt + generated so far), no draft model.

    For n from `max_ngram` down to 1, the most recent earlier occurrences of the context's last n tokens propose the
    `k` tokens that followed them (see `lookup`; `k` was `num_tokens`); the first `branches` distinct proposals form
    the tree (1: a chain, more: extra branches that share common prefixes). No match: the round is a plain target
    step.
    Each round's trace adds `ngram` (length of the matched n-gram, 0: none) and `ngram_nodes` (tree nodes).
    """

    max_ngram: int = 3
    k: int = 8
    branches: int = 1
    needs_draft = False

    def __post_init__(self):
        _check_lookup(self)

    def drafter(self, run: Run) -> "_Lookup":
        return _Lookup(self, run)


_TREE_METHODS = (Linear, FixedTree, DynaTree, AdaptiveTree, TopNTree)


@renamed(num_tokens="k")
@dataclass(frozen=True)
class HybridTree(Speculative):
    """The draft model's tree (`tree`: Linear, FixedTree, DynaTree, AdaptiveTree or TopNTree) plus prompt-lookup
    chains as extra branches from the root. A chain that starts like an existing path follows it and only adds the
    nodes that differ; n-gram nodes come on top of the tree's node budget (at most branches * k; `k` was
    `num_tokens`), with draft log-prob 0.
    Each round's trace adds `ngram` (length of the matched n-gram, 0: none) and `ngram_nodes` (nodes it added)."""

    tree: object = field(default_factory=FixedTree)
    max_ngram: int = 3
    k: int = 8
    branches: int = 1

    def __post_init__(self):
        if not isinstance(self.tree, _TREE_METHODS):
            kinds = ", ".join(k.__name__ for k in _TREE_METHODS)
            raise ValueError(f"tree must be one of {kinds}, got {self.tree!r}")
        _check_lookup(self)

    @property
    def draft_bits(self):
        return self.tree.draft_bits

    @property
    def draft_vocab(self):
        return self.tree.draft_vocab

    @property
    def draft_context(self):
        return self.tree.draft_context

    def drafter(self, run: Run) -> "_Lookup":
        return _Lookup(self, run, self.tree.drafter(run))


def lookup(context: list[int], max_ngram: int, num_tokens: int, branches: int = 1) -> tuple[list[list[int]], int]:
    """Up to `branches` distinct `num_tokens`-long continuations of the context's last tokens, and the n-gram length
    that found the first (0: none). Longer n-grams first; for each n, the most recent occurrence first.

    A continuation that reaches the end of the context keeps copying from itself (an overlapping copy, as in LZ77):
    in a loop of period d the most recent match sits d tokens back, and the loop is what it proposes.
    """
    ids = torch.tensor(context, dtype=torch.long)
    size = len(context)
    chains: list[list[int]] = []
    found = 0
    for n in range(min(max_ngram, size - 1), 0, -1):
        windows = ids[: size - 1].unfold(0, n, 1)  # starts 0..size-1-n: each is followed by at least one token
        starts = torch.nonzero((windows == ids[size - n:]).all(dim=1)).flatten().flip(0).tolist()
        for start in starts:
            chain: list[int] = []
            for pos in range(start + n, start + n + num_tokens):
                chain.append(context[pos] if pos < size else chain[pos - size])
            if chain in chains:
                continue
            chains.append(chain)
            found = found or n
            if len(chains) == branches:
                return chains, found
    return chains, found


def graft(tree: Tree, chains: list[list[int]]) -> tuple[Tree, int]:
    """Add token chains below the root, following existing nodes where the tokens agree (a trie merge).

    New nodes are appended one chain position at a time, so parents precede children but the result need not be
    in depth order (see `draft.reorder`). Returns the grown tree and the number of nodes added (draft log-prob 0).
    """
    tokens, parents = tree.tokens.tolist(), tree.parents.tolist()
    child = {(p, t): i for i, (p, t) in enumerate(zip(parents, tokens)) if i > 0}
    cursor = [0] * len(chains)
    size = start = len(tokens)
    for k in range(max((len(c) for c in chains), default=0)):
        new_parents, new_tokens = [], []
        for c, chain in enumerate(chains):
            if k >= len(chain):
                continue
            key = (cursor[c], chain[k])
            if key not in child:
                child[key] = size + len(new_tokens)
                new_parents.append(cursor[c])
                new_tokens.append(chain[k])
            cursor[c] = child[key]
        if new_tokens:
            device = tree.tokens.device
            tree = add_level(tree, torch.tensor(new_parents, device=device), torch.tensor(new_tokens, device=device),
                             torch.zeros(len(new_tokens), device=device))
            size += len(new_tokens)
    return tree, size - start


def _context(run: Run) -> list[int]:
    return run.prompt_ids + run.tokens  # the last token is this round's root


class _Lookup(Drafter):
    """One generation's n-gram drafter, optionally on top of a model drafter; records what it found per round."""

    def __init__(self, method, run: Run, model: Drafter | None = None):
        self.method, self.run, self.model = method, run, model
        self.found = self.added = 0

    def propose(self, state: DraftState, max_depth: int):
        m, run = self.method, self.run
        drafted = self.model.propose(state, max_depth) if self.model is not None else None
        chains, self.found = lookup(_context(run), m.max_ngram, min(m.k, max_depth), m.branches)
        if drafted is None:
            if not chains:
                return None
            tree, self.added = graft(root(run.tokens[-1], device=run.pair.target.device), chains)
            return Drafted(tree=tree, base=0, fed=[], forwards=0)  # chains grow level by level: already BFS
        tree, self.added = graft(drafted.tree, chains)
        if not self.added:
            return drafted
        order = torch.sort(tree.depth, stable=True).indices.tolist()  # back to BFS order: parents before children
        return reorder(drafted, tree, order)

    def notes(self) -> dict:
        # ngram: length of the matched n-gram (0: none); ngram_nodes: nodes the lookup added to the tree
        return {**(self.model.notes() if self.model is not None else {}), "ngram": self.found,
                "ngram_nodes": self.added}

    def learn(self, record: dict) -> None:
        if self.model is not None:
            self.model.learn(record)
        self.found = self.added = 0

    def summary(self) -> dict:
        return self.model.summary() if self.model is not None else {}
