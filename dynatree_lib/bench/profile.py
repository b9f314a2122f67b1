"""Where one forward's time goes: the weight matmuls, attention, every other tensor op, and what no op accounts for.

A draft level and a verify forward are timed as the calibration times them (`planning.calibrate`: n tree tokens
under the tree mask on a cache of random tokens) while torch's profiler records each op's own CPU time. The weight
matmuls are the floor a faster kernel or a smaller model lowers; the rest (norms, rotary embeddings, the cache's
concatenations, dtype casts, the framework's Python between ops) is what fusing ops, a preallocated cache or
torch.compile could remove. Shares are of the profiled wall time. The profiler's own bookkeeping (microseconds per
op, a few ms per forward of a 24-layer model) lands in the small parts, so each size also gets a split free of it:
`matmul_ms`, every linear layer of the model called alone on inputs of the forward's shape (the weight matmuls'
floor), beside `wall_ms`, the whole forward timed without the profiler.
"""
from __future__ import annotations

import statistics

import pandas as pd
import torch

from ..core.forward import clock
from ..planning.calibrate import timed_forward, tree_inputs

PARTS = ("weight matmuls", "attention", "other ops", "outside ops")


def op_part(name: str) -> str:
    """The part of a forward an op's own time belongs to (`PARTS`, bar "outside ops")."""
    if name.startswith("aten::_weight_int") or name in ("aten::mm", "aten::addmm"):
        return "weight matmuls"  # quantized kernels, and the dense GEMMs every nn.Linear lowers to
    if "scaled_dot_product" in name or name == "aten::bmm":
        return "attention"
    return "other ops"


def _linears(model):
    from ..models.quant import Int4Linear, Int8Linear

    return [m for m in model.modules() if isinstance(m, (torch.nn.Linear, Int4Linear, Int8Linear))]


def matmul_seconds(model, n: int, repeats: int = 10) -> float:
    """Median seconds of calling every linear layer of `model` once on n rows of its input width: what a forward over
    n tokens (all logits kept) spends in weight matmuls when nothing else runs."""
    device, dtype = model.device, model.dtype
    layers = _linears(model)
    inputs = [torch.randn(1, n, layer.in_features, dtype=dtype, device=device) for layer in layers]

    def once():
        t0 = clock(device)
        for layer, x in zip(layers, inputs):
            layer(x)
        return clock(device) - t0

    once()
    return statistics.median(once() for _ in range(repeats))


@torch.inference_mode()
def forward_profile(model, nodes=(1, 4, 16), prefix_len: int = 128, repeats: int = 10, seed: int = 0):
    """Milliseconds per forward of `model` over n tree tokens on a `prefix_len`-token cache, split into `PARTS`,
    for each n in `nodes`: a tidy frame (nodes, part, ms, share, wall_ms, matmul_ms). "outside ops" is the profiled
    wall time that no op's own time covers (Python and dispatch between ops). Every forward starts from the same
    cache."""
    from torch.profiler import ProfilerActivity, profile

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    cache, inputs = tree_inputs(model, prefix_len, nodes, torch.Generator().manual_seed(seed))

    def run(n):
        return timed_forward(model, cache, prefix_len, inputs[n])

    rows = []
    for n in nodes:
        run(n)  # warm-up
        wall = statistics.median(run(n) for _ in range(repeats))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            profiled = sum(run(n) for _ in range(repeats)) / repeats
        ms = dict.fromkeys(PARTS, 0.0)
        for event in prof.key_averages():
            ms[op_part(event.key)] += event.self_cpu_time_total / 1e3 / repeats
        ops = sum(ms.values())
        ms["outside ops"] = max(profiled * 1e3 - ops, 0.0)
        total = sum(ms.values())
        floor = matmul_seconds(model, n, repeats)
        rows += [{"nodes": n, "part": part, "ms": ms[part], "share": ms[part] / total, "wall_ms": wall * 1e3,
                  "matmul_ms": floor * 1e3} for part in PARTS]
    return pd.DataFrame(rows)


def profile_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, nodes) of stored `forward_profile` rows: each part's share of the profiled forward, the
    profiled and unprofiled milliseconds, the linear layers alone, and the share of the unprofiled forward outside
    them (1 - matmul_ms / wall_ms)."""
    keys = [k for k in ("model", "nodes") if k in df.columns]
    share = df.pivot_table(index=keys, columns="part", values="share", aggfunc="first")[list(PARTS)]
    out = share.rename(columns=lambda p: f"{p} %") * 100
    out["profiled ms"] = df.groupby(keys)["ms"].sum()
    out["wall ms"] = df.groupby(keys)["wall_ms"].first()
    out["matmuls alone ms"] = df.groupby(keys)["matmul_ms"].first()
    out["outside matmuls %"] = 100 * (1 - out["matmuls alone ms"] / out["wall ms"])
    return out.round(1)
