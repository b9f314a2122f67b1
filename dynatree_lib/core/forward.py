"""One model forward on a KV cache, with explicit positions and an optional 4D tree mask: the call that prefill,
drafting, verification and calibration all make."""
from __future__ import annotations

import time
import weakref
from collections import OrderedDict

import torch
from torch.utils.hooks import RemovableHandle

from ..models import fused


def kept_positions(logits_to_keep, input_ids):
    """transformers' `logits_to_keep` for `input_ids`, the last positions given by index rather than by count. A
    count makes transformers slice the hidden states, the kept positions keep the whole sequence's stride, and
    torch's bf16 linear on CPU then takes a path some 40x slower (Qwen2.5-1.5B's output layer over one position:
    1.1 s against 28 ms), paid by every prefill and every draft forward over pending tokens. Indexing copies them
    into a fresh tensor: the same values, so the same logits."""
    n = input_ids.shape[-1]
    if isinstance(logits_to_keep, int) and 0 < logits_to_keep < n:
        return torch.arange(n - logits_to_keep, n, device=input_ids.device)
    return logits_to_keep


# Per model, the (pre, post) hooks that must also see the forwards that do not go through the module's __call__ (the
# fused ones), called as a module's forward hooks with kwargs are: core.timing.ForwardTimer counts and times them.
_WATCHERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def watch(model, pre, post) -> RemovableHandle:
    """Let `pre(model, args, kwargs)` and `post(model, args, kwargs, output)` also see `model`'s fused forwards;
    returns torch's hook handle, whose remove() stops it."""
    hooks = _WATCHERS.setdefault(model, OrderedDict())  # the handle holds a weak reference: a plain dict takes none
    handle = RemovableHandle(hooks)
    hooks[handle.id] = (pre, post)
    return handle


def forward(model, input_ids, cache, position_ids=None, attention_mask=None, logits_to_keep=0):
    logits_to_keep = kept_positions(logits_to_keep, input_ids)
    if fused.runs(model, input_ids, attention_mask):  # an int4 model's level or step: the same logits, fewer calls
        kwargs = {"input_ids": input_ids, "past_key_values": cache}
        hooks = list(_WATCHERS.get(model, {}).values())
        for pre, _ in hooks:
            pre(model, (), kwargs)
        logits = fused.forward(model, input_ids, cache, position_ids, attention_mask, logits_to_keep)
        for _, post in reversed(hooks):
            post(model, (), kwargs, logits)
        return logits
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
