"""KV-cache bookkeeping on transformers' DynamicCache: length, crop, and keeping only the committed tree path.

Verification appends the keys/values of every tree node; afterwards only the accepted path may stay. Rather than
recomputing anything, the accepted slots are moved down to sit right after the prefix and the rest is cut off.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache


def new_cache(model) -> DynamicCache:
    return DynamicCache(config=model.config)


def cache_len(cache: DynamicCache) -> int:
    return cache.get_seq_length()


def crop(cache: DynamicCache, length: int) -> None:
    for layer in cache.layers:
        if layer.is_initialized:
            layer.keys = layer.keys[..., :length, :]
            layer.values = layer.values[..., :length, :]


def keep(cache: DynamicCache, start: int, slots: list[int]) -> None:
    """Keep cache positions `slots` (absolute, increasing, all >= start) packed at `start`, drop everything after.

    Positions before `start` are untouched. A contiguous run already in place (a chain, or the first branch of a
    tree) costs only the crop.
    """
    if slots == list(range(start, start + len(slots))):
        crop(cache, start + len(slots))
        return
    index = torch.tensor(slots, dtype=torch.long, device=cache.layers[0].keys.device)
    end = start + len(slots)
    for layer in cache.layers:
        if layer.is_initialized:
            layer.keys[..., start:end, :] = layer.keys.index_select(-2, index)
            layer.values[..., start:end, :] = layer.values.index_select(-2, index)
    crop(cache, end)
