"""Tree attention: every node attends to the committed prefix and to its own ancestors (and itself), nothing else.

Masks are additive float tensors of shape (1, 1, queries, keys) in the model's dtype: 0 where attention is allowed,
the dtype's minimum where it is blocked. transformers passes a 4D mask through unchanged to eager, SDPA and
flex-free attention paths alike, and an additive mask means the same thing to all of them.
"""
from __future__ import annotations

import torch


def tree_attention_mask(
    tree_visible: torch.Tensor, prefix_len: int, dtype: torch.dtype, prefix_visible: torch.Tensor | None = None
) -> torch.Tensor:
    """`tree_visible[q, k]`: may query node q see tree key k. The `prefix_len` cached keys before them are visible
    to every query, unless `prefix_visible` (q, prefix_len) bool says otherwise (a sliding-window cache)."""
    q, k = tree_visible.shape
    mask = torch.zeros(1, 1, q, prefix_len + k, dtype=dtype, device=tree_visible.device)
    mask[0, 0, :, prefix_len:].masked_fill_(~tree_visible, torch.finfo(dtype).min)
    if prefix_visible is not None:
        mask[0, 0, :, :prefix_len].masked_fill_(~prefix_visible, torch.finfo(dtype).min)
    return mask


def tree_position_ids(depth: torch.Tensor, prefix_len: int) -> torch.Tensor:
    """A node's position is the prefix length plus its depth: siblings share a position, as they would in a chain."""
    return (depth + prefix_len).unsqueeze(0)
