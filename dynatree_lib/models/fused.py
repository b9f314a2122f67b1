"""An int4 model's forward in fewer calls: transformers' Qwen2/LLaMA decoder written out op for op, with the query,
key and value projections one int4 kernel call and the MLP's gate and up projections another.

Why: a draft level on a CPU is one forward of the draft over a handful of rows, and at that size the forward is
mostly fixed costs. Profiled (the embedded int4 draft, 4 rows under a tree mask over a 320-token cache, 2 cores):
the int4 kernel is two thirds of it, 169 calls a forward; the rest is some 2,000 small ops and transformers' per-
module machinery. Concatenating the projections that read the same input cuts the kernel calls to 97, and the
attention reads the key/value heads in place (SDPA's `enable_gqa`) instead of copying them once per query head.

Same numbers: the int4 kernel computes each output column from its own packed row, scales and zero points, so one
call over the concatenated rows gives each projection's columns exactly; every other op is transformers' own, in its
order (tests/test_fused.py compares the logits bit for bit with the model's own forward, float32 and bf16). The
draft's numbers only ever move acceptance in any case: the target verifies every token.
"""
from __future__ import annotations

import functools
import weakref
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .quant import Int4Linear

ARCHS = ("qwen2", "llama")  # decoders of this shape: pre-norm RMSNorm, rotary q/k, SwiGLU MLP
_FUSED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> per layer, its two _Fused


class _Fused(NamedTuple):
    """Projections that read the same input, as one int4 layer, and the output size of each."""
    layer: Int4Linear
    sizes: list[int]


def fusable(model) -> bool:
    """Whether `model` can run fused: a Qwen2/LLaMA decoder on SDPA attention, no sliding-window layers, whose
    q/k/v and gate/up projections are int4 layers of one group size (models.quant.quantize_draft), each a whole
    number of the kernel's packing blocks."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in ARCHS or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return False
    layers = getattr(getattr(model, "model", None), "layers", ())
    return len(layers) > 0 and all(_same_kind(_groups(layer)) for layer in layers)


def fuse(model) -> bool:
    """Fuse `model`'s projections (see the module docstring) and run its forwards through `forward` from now on;
    returns False, changing nothing, where it is not `fusable`. The projections stay usable as they were (their
    packed weights become views into the fused ones), so transformers' own forward keeps working on the model."""
    if not fusable(model):
        return False
    _FUSED[model] = [tuple(_concatenate(group) for group in _groups(layer)) for layer in model.model.layers]
    return True


def runs(model, input_ids, attention_mask) -> bool:
    """Whether `forward` takes this call: a fused model, given a 4D mask or a single row (a causal mask over more
    rows is transformers' to build: the prompt's prefill, a round's pending tokens)."""
    return model in _FUSED and (attention_mask is not None or input_ids.shape[-1] == 1)


def _groups(layer):
    attention, mlp = layer.self_attn, layer.mlp
    return (attention.q_proj, attention.k_proj, attention.v_proj), (mlp.gate_proj, mlp.up_proj)


def _same_kind(groups) -> bool:
    layers = [layer for group in groups for layer in group]
    return all(isinstance(layer, Int4Linear) and _packs_by_rows(layer.out_features) for layer in layers) and len(
        {(layer.in_features, layer.group_size, layer.dense_rows, layer.dense is None) for layer in layers}) == 1


@functools.lru_cache(maxsize=None)
def _packs_by_rows(rows: int) -> bool:
    """Whether the kernel's packed layout of `rows` output channels followed by others is their two layouts one
    after the other: it packs output channels in blocks (64 in torch 2.13), so a projection whose size is not a
    whole number of blocks cannot be concatenated packed. Asked of the kernel itself, on random codes."""
    codes = torch.randint(0, 16, (rows + 64, 64), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    pack = torch.ops.aten._convert_weight_to_int4pack_for_cpu
    return torch.equal(pack(codes, 2), torch.cat([pack(codes[:rows], 2), pack(codes[rows:], 2)]))


def _concatenate(layers) -> _Fused:
    """One Int4Linear computing `layers` side by side; each layer's packed (and dense) weights become views into its
    rows, so the fused copy costs only the concatenated scales."""
    first = layers[0]
    packed = torch.cat([layer.weight for layer in layers])
    dense = None if first.dense is None else torch.cat([layer.dense for layer in layers])
    row = 0
    for layer in layers:
        rows = slice(row, row + layer.out_features)
        layer.weight = packed[rows]
        if dense is not None:
            layer.dense = dense[rows]
        row += layer.out_features
    scales = torch.cat([layer.scales_and_zeros for layer in layers], dim=1)
    bias = None if first.bias is None else torch.cat([layer.bias for layer in layers])
    fused = Int4Linear(packed, scales, bias, first.in_features, row, first.group_size, dense, first.dense_rows)
    return _Fused(fused, [layer.out_features for layer in layers])


def _rms_norm(x, norm):
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * x.to(dtype)


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _attention(attention, q, k, v, mask):
    """transformers' SDPA attention: one query row under a mask packs the query heads onto their key/value head
    (its pack_gqa); otherwise SDPA reads the shared key/value heads itself (the same sums as repeat_kv's copies)."""
    rows, groups = q.shape[2], attention.num_key_value_groups
    if groups > 1 and rows == 1 and mask is not None:
        q = q.reshape(1, q.shape[1] // groups, groups, q.shape[-1])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attention.scaling)
        return out.reshape(1, -1, 1, v.shape[-1]).transpose(1, 2).reshape(1, 1, -1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attention.scaling, enable_gqa=groups > 1)
    return out.transpose(1, 2).reshape(1, rows, -1)


@torch.no_grad()
def forward(model, input_ids, cache, position_ids, attention_mask, logits_to_keep):
    """The logits of one batch-1 forward of a fused model (`runs` says which calls), as core.forward returns them."""
    inner, n = model.model, input_ids.shape[-1]
    if position_ids is None:
        position_ids = torch.arange(n, device=input_ids.device).unsqueeze(0) + cache.get_seq_length()
    hidden = inner.embed_tokens(input_ids)
    cos, sin = (t.unsqueeze(1) for t in inner.rotary_emb(hidden, position_ids))
    for i, (layer, (qkv, gate_up)) in enumerate(zip(inner.layers, _FUSED[model])):
        attention, mlp = layer.self_attn, layer.mlp
        shape = (1, n, -1, attention.head_dim)
        q, k, v = (t.reshape(shape).transpose(1, 2)
                   for t in qkv.layer(_rms_norm(hidden, layer.input_layernorm)).split(qkv.sizes, dim=-1))
        k, v = cache.update(_rotate(k, cos, sin), v, i)
        hidden = hidden + attention.o_proj(_attention(attention, _rotate(q, cos, sin), k, v, attention_mask))
        gate, up = gate_up.layer(_rms_norm(hidden, layer.post_attention_layernorm)).split(gate_up.sizes, dim=-1)
        hidden = hidden + mlp.down_proj(mlp.act_fn(gate) * up)
    hidden = _rms_norm(hidden, inner.norm)
    if isinstance(logits_to_keep, int):
        hidden = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
    else:
        hidden = hidden[:, logits_to_keep]
    return model.lm_head(hidden)[0]
