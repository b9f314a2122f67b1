"""KV-cache bookkeeping on transformers' DynamicCache: length, crop, and keeping only the committed tree path.

Verification appends the keys/values of every tree node; afterwards only the accepted path may stay. Rather than
recomputing anything, the accepted slots are moved down to sit right after the prefix and the rest is cut off.

Sliding-window layers (Mistral, Gemma 2/3: DynamicSlidingWindowLayer) keep their own length (`cumulative_length`,
what get_seq_length reports) and drop keys that fall out of the window, counting rejected tree nodes too. Here they
keep every key and report the full length, like full-attention layers, and their length follows every crop: what a
query sees is left to the attention mask (the model's own, built from config.sliding_window, for the prefill and
Autoregressive steps, which stay exact at any length). The tree mask knows no window, so tree methods are exact only
while the whole sequence fits in it; `core.loop.check_inputs` refuses longer ones (see `sliding_window`).
"""
from __future__ import annotations

import torch
from transformers import DynamicCache


def new_cache(model) -> DynamicCache:
    cache = DynamicCache(config=model.config)
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False):
            layer.sliding_window = _KEEP_ALL  # keep every key, report full mask sizes (the mask applies the window)
            layer._sliding_window_tensor = torch.tensor(_KEEP_ALL, dtype=torch.long)
    return cache


_KEEP_ALL = 2**40


def sliding_window(model) -> int | None:
    """The smallest sliding window among the model's cache layers; None when every layer attends to everything."""
    windows = [layer.sliding_window for layer in DynamicCache(config=model.config).layers
               if getattr(layer, "is_sliding", False)]
    return min(windows) if windows else None


def cache_len(cache: DynamicCache) -> int:
    return cache.get_seq_length()


def crop(cache: DynamicCache, length: int) -> None:
    for layer in cache.layers:
        if layer.is_initialized:
            layer.keys = layer.keys[..., :length, :]
            layer.values = layer.values[..., :length, :]
            if hasattr(layer, "cumulative_length"):  # a sliding-window layer's own length (its get_seq_length)
                layer.cumulative_length = layer.keys.shape[-2]


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
