"""The draft token tree as flat tensors in BFS order.

Node 0 is the root: the last committed token, which neither model has processed yet. Every other node is a draft
token. Because nodes are appended level by level, a parent always has a smaller index than its children, so the
ancestor matrix can be grown one level at a time from the parents' rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tree:
    tokens: torch.Tensor  # (n,) long
    parents: torch.Tensor  # (n,) long, -1 for the root
    depth: torch.Tensor  # (n,) long, 0 for the root
    logp: torch.Tensor  # (n,) float32: draft log-prob of the node given its ancestors (0 at the root)
    cum_logp: torch.Tensor  # (n,) float32: sum of logp along the path from the root
    ancestors: torch.Tensor  # (n, n) bool: ancestors[i, j] is True when j is i or an ancestor of i

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def num_draft(self) -> int:
        return len(self) - 1

    @property
    def max_depth(self) -> int:
        return int(self.depth.max())  # not depth[-1]: from_parents only puts parents before children, not BFS

    def path(self, node: int) -> list[int]:
        """Node indices from the root down to `node` (inclusive)."""
        return torch.nonzero(self.ancestors[node]).flatten().tolist()  # ancestors have smaller indices


def root(token: int, device="cpu") -> Tree:
    return Tree(
        tokens=torch.tensor([token], dtype=torch.long, device=device),
        parents=torch.tensor([-1], dtype=torch.long, device=device),
        depth=torch.zeros(1, dtype=torch.long, device=device),
        logp=torch.zeros(1, dtype=torch.float32, device=device),
        cum_logp=torch.zeros(1, dtype=torch.float32, device=device),
        ancestors=torch.ones(1, 1, dtype=torch.bool, device=device),
    )


def add_level(tree: Tree, parents: torch.Tensor, tokens: torch.Tensor, logp: torch.Tensor) -> Tree:
    """Append children (one entry per child, `parents` index existing nodes) and return the grown tree."""
    n, m = len(tree), parents.shape[0]
    logp = logp.float()
    anc = torch.zeros(n + m, n + m, dtype=torch.bool, device=tree.tokens.device)
    anc[:n, :n] = tree.ancestors
    anc[n:, :n] = tree.ancestors[parents]
    anc[n:, n:].fill_diagonal_(True)
    return Tree(
        tokens=torch.cat([tree.tokens, tokens]),
        parents=torch.cat([tree.parents, parents]),
        depth=torch.cat([tree.depth, tree.depth[parents] + 1]),
        logp=torch.cat([tree.logp, logp]),
        cum_logp=torch.cat([tree.cum_logp, tree.cum_logp[parents] + logp]),
        ancestors=anc,
    )


def from_parents(tokens, parents) -> Tree:
    """Build a tree from plain lists (parents[0] == -1, every parent before its children, not necessarily BFS order);
    draft log-probs are zero. For tests and figures."""
    if len(tokens) != len(parents) or not tokens or parents[0] != -1:
        raise ValueError("need equally long tokens/parents lists with parents[0] == -1 (the root)")
    tree = root(tokens[0])
    for i, p in enumerate(parents[1:], start=1):
        if not 0 <= p < i:
            raise ValueError(f"parent of node {i} must be an earlier node, got {p}")
        tree = add_level(tree, torch.tensor([p]), torch.tensor([tokens[i]]), torch.zeros(1))
    return tree


def brute_force_ancestors(parents) -> torch.Tensor:
    """The ancestor relation by walking parent pointers, node by node: (n, n) bool, [i, j] True when j is i or an
    ancestor of i. Deliberately naive (no BFS-order assumption), as an independent check of `Tree.ancestors`."""
    parents = [int(p) for p in parents]
    n = len(parents)
    anc = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        j, steps = i, 0
        while j != -1:
            if not -1 <= parents[j] < n or steps > n:
                raise ValueError(f"parents does not describe a tree: node {j} has parent {parents[j]}")
            anc[i, j] = True
            j, steps = parents[j], steps + 1
    return anc
