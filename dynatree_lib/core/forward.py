"""One model forward on a KV cache, with explicit positions and an optional 4D tree mask: the call that prefill,
drafting, verification and calibration all make."""
from __future__ import annotations

import time

import torch


def forward(model, input_ids, cache, position_ids=None, attention_mask=None, logits_to_keep=0):
    return model(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=attention_mask,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=logits_to_keep,
    ).logits[0]


def clock(device=None) -> float:
    """perf_counter after the device's queued work has finished: on CUDA a kernel launch returns at once, so an
    unsynchronised clock would time the launch, not the work."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
