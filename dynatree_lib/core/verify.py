"""Parallel verification: one target forward over the whole tree, then greedy acceptance of the longest path."""
from __future__ import annotations

import torch

from . import kvcache
from .forward import forward
from .mask import tree_attention_mask, tree_position_ids
from .tree import Tree


@torch.no_grad()
def verify(model, cache, tree: Tree, positions: torch.Tensor | None = None, visible: torch.Tensor | None = None,
           prefix_visible: torch.Tensor | None = None) -> torch.Tensor:
    """The target's logits at every tree node (n, vocab): row i predicts the token that follows node i. Each node
    sits at the cache length plus its depth and sees the cache and its ancestors; a windowed target
    (streaming.WindowedTarget) gives its own `positions` (n,) and what each node sees (mask.tree_attention_mask)."""
    prefix = kvcache.cache_len(cache)
    mask = tree_attention_mask(tree.ancestors if visible is None else visible, prefix, model.dtype, prefix_visible)
    positions = tree_position_ids(tree.depth, prefix) if positions is None else positions.unsqueeze(0)
    return forward(model, tree.tokens.unsqueeze(0), cache, positions, mask)


def accept_greedy(tree: Tree, target_next: torch.Tensor) -> tuple[list[int], int]:
    """The deepest node whose every ancestor's token equals the target's argmax at its parent.

    Returns the accepted path (node indices from the root) and the bonus token: the target's argmax after the last
    accepted node. Committing path tokens plus the bonus reproduces target-only greedy decoding exactly.
    """
    match = tree.tokens == target_next[tree.parents.clamp(min=0)]
    match[0] = True
    ok = ~(tree.ancestors & ~match).any(dim=1)
    best = int(torch.argmax(tree.depth * ok))  # depth ties among ok nodes only happen for duplicate siblings
    path = tree.path(best)
    return path, int(target_next[best])


def commit_target(cache, prefix: int, path: list[int]) -> None:
    """Keep the root and accepted nodes (at cache slots prefix + node) and drop the rejected ones."""
    kvcache.keep(cache, prefix, [prefix + node for node in path])
