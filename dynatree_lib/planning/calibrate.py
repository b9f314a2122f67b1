"""Cost curves: what one forward of the target (verify) and of the draft (one level) costs on this machine, as a
function of the tree size; measured once per machine and model pair and cached as JSON with provenance.

See planner.py for how the curves are used."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core import kvcache
from ..core.forward import clock, forward
from ..core.mask import tree_attention_mask, tree_position_ids
from ..core.tree import from_parents
from ..core.checks import _check_int
from ..models.embedded import cache_root
from ..models.provenance import cpu_model, write_atomic
from ..models.quant import native_bf16_matmul

DEFAULT_NODES = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_CONTEXTS = (128, 512, 1024, 2048)  # cached tokens: a short prompt .. a long prompt plus a long run
MAX_AGE_DAYS = 30.0  # a machine's software and firmware change: re-measure a calibration older than this
CALIBRATION_FORMAT = 1  # bump when what is measured changes, so old calibrations are not reused


# ---------------------------------------------------------------------------------------------------------------------
# Cost curves


def interpolate(xs, ys, x):
    """Piecewise-linear y(x) through the points (xs increasing), at a number (a float back) or at every point of an
    array (an array back: the predictions price every AR step of a sweep's rows): below xs[0] the first value, past
    xs[-1] the last segment's slope continued (clamped at 0, so timing noise never makes a bigger forward look
    cheaper). np.interp (flat past both ends), the last segment continued past xs[-1]."""
    points = np.asarray(x, dtype=float)
    xs, ys = [float(v) for v in xs], [float(v) for v in ys]
    out = np.interp(points, xs, ys)
    if len(xs) > 1:
        slope = max((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), 0.0)
        out = np.where(points > xs[-1], ys[-1] + slope * (points - xs[-1]), out)
    return float(out) if out.ndim == 0 else out


def _check_nodes(nodes) -> tuple[int, ...]:
    nodes = tuple(nodes)
    if not nodes or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in nodes) or any(
        a >= b for a, b in zip(nodes, nodes[1:])
    ):
        raise ValueError(f"nodes must be a non-empty increasing sequence of integers >= 1, got {nodes!r}")
    return nodes


@dataclass(frozen=True)
class Costs:
    """Measured seconds of one target forward (`verify_s`) and one draft forward (`draft_s`, None without a draft)
    over `nodes[i]` tree tokens on top of a cached prefix; `info` is the provenance."""

    nodes: tuple[int, ...]
    verify_s: tuple[float, ...]
    draft_s: tuple[float, ...] | None = None
    info: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "nodes", _check_nodes(self.nodes))
        for name in ("verify_s", "draft_s"):
            values = getattr(self, name)
            if values is None and name == "draft_s":
                continue
            values = tuple(float(v) for v in values)
            if len(values) != len(self.nodes) or not all(v >= 0 and math.isfinite(v) for v in values):
                raise ValueError(f"{name} must hold one finite time >= 0 per node count, got {values!r}")
            object.__setattr__(self, name, values)

    def verify(self, n: float) -> float:
        """Seconds of one target forward over a tree of `n` nodes (root included)."""
        return interpolate(self.nodes, self.verify_s, n)

    def draft(self, n: float) -> float:
        """Seconds of one draft forward over a frontier of `n` nodes."""
        if self.draft_s is None:
            raise ValueError("these costs were measured without a draft model")
        return interpolate(self.nodes, self.draft_s, n)

    def frame(self):
        import pandas as pd

        frame = pd.DataFrame({"nodes": self.nodes, "verify_s": self.verify_s})
        if self.draft_s is not None:
            frame["draft_s"] = self.draft_s
            frame["draft_over_verify"] = frame["draft_s"] / frame["verify_s"]
        return frame

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Costs":
        return cls(data["nodes"], data["verify_s"], data.get("draft_s"), data.get("info") or {})


def _heap_tree(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Ancestors and depths of an n-node binary tree (parent of i is (i-1)//2). The mask is dense whatever the
    shape, so any shape of n nodes costs the same; a bushy one keeps positions within prefix + log2(n)."""
    tree = from_parents([0] * n, [-1] + [(i - 1) // 2 for i in range(1, n)])
    return tree.ancestors.to(device), tree.depth.to(device)


@torch.inference_mode()
def tree_inputs(model, prefix_len: int, nodes, generator):
    """A cache of `prefix_len` random tokens and, for every n in `nodes`, the (tokens, positions, tree mask) of n
    random tree tokens on it (a heap-shaped tree): what the cost curves and `bench.profile` time a forward over."""
    device = model.device
    vocab = model.get_output_embeddings().weight.shape[0]
    cache = kvcache.new_cache(model)
    forward(model, torch.randint(vocab, (1, prefix_len), generator=generator).to(device), cache, logits_to_keep=1)
    inputs = {}
    for n in nodes:
        ancestors, depth = _heap_tree(n, device)
        inputs[n] = (torch.randint(vocab, (1, n), generator=generator).to(device),
                     tree_position_ids(depth, prefix_len), tree_attention_mask(ancestors, prefix_len, model.dtype))
    return cache, inputs


def timed_forward(model, cache, prefix_len: int, tree_input) -> float:
    """Seconds of one forward of `model` over `tree_input` (tokens, positions, tree mask: `tree_inputs`) on `cache`,
    which is cropped back to its `prefix_len` tokens afterwards, so every forward starts from the same prefix."""
    tokens, positions, mask = tree_input
    t0 = clock(model.device)
    forward(model, tokens, cache, positions, mask)
    seconds = clock(model.device) - t0
    kvcache.crop(cache, prefix_len)
    return seconds


@torch.inference_mode()
def _time_forwards(model, prefixes, nodes, repeats: int, seed: int) -> dict:
    """Median seconds of one forward of `model` over n tree tokens (tree mask, all logits, as verify and each draft
    level compute them) on a cache of c random tokens, {(c, n): seconds} for every c in `prefixes` and n in `nodes`,
    after one warm-up pass. Each pass times every (c, n) once, so a stall of a shared machine spoils one sample of
    several sizes rather than every sample of one size."""
    generator = torch.Generator().manual_seed(seed)
    caches, inputs = [], {}
    for c in prefixes:
        cache, per_size = tree_inputs(model, c, nodes, generator)
        caches.append(cache)
        inputs.update({(c, n): tensors for n, tensors in per_size.items()})
    samples = {key: [] for key in inputs}
    for _ in range(repeats + 1):
        for c, cache in zip(prefixes, caches):
            for n in nodes:
                samples[c, n].append(timed_forward(model, cache, c, inputs[c, n]))
    return {key: statistics.median(times[1:]) for key, times in samples.items()}


def forward_costs(model, nodes=DEFAULT_NODES, prefix_len: int = 128, repeats: int = 3, seed: int = 0):
    """Median seconds of one forward of `model` over n tree tokens on a cache of `prefix_len` random tokens, for
    every n in `nodes` (`_time_forwards`)."""
    med = _time_forwards(model, [prefix_len], nodes, repeats, seed)
    return tuple(med[prefix_len, n] for n in nodes)


def context_scale(model, contexts=DEFAULT_CONTEXTS, nodes=(1, 8), repeats: int = 5, seed: int = 0) -> dict:
    """How much one forward of `model` slows as its cache grows: for each context c (cached tokens before the
    forward), the median over `nodes` of (median seconds over n tree tokens on c cached tokens) / (the same on
    contexts[0]). The curves are measured on one short cache; a long prompt or a long run reads a longer one (an AR
    step on this CPU costs about a quarter more on 1024 cached tokens than on 128). Every pass times every context
    (a shared machine's drift spreads over all of them), after a warm-up pass. Contexts past the model's positions
    are left out. Returns {"contexts": [...], "scale": [1.0, ...], "nodes": [...], "repeats": repeats}."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    contexts = [c for c in contexts if limit is None or c + max(nodes) <= limit]
    if not contexts:
        raise ValueError(f"no context fits the model's {limit} positions")
    med = _time_forwards(model, contexts, nodes, repeats, seed)
    scale = [statistics.median(med[c, n] / med[contexts[0], n] for n in nodes) for c in contexts]
    return {"contexts": list(contexts), "scale": scale, "nodes": list(nodes), "repeats": repeats}


def monotone(times) -> tuple[float, ...]:
    """Each time lowered to the smallest time of any larger size. A forward over more tokens is never cheaper, and
    contention only ever adds time, so a point above a later one is noise (a stall), not a property of the model."""
    return tuple(float(t) for t in np.minimum.accumulate(np.asarray(times, dtype=float)[::-1])[::-1])


def measure_costs(pair, *, nodes=DEFAULT_NODES, prefix_len: int = 128, repeats: int = 3) -> Costs:
    """Time the target's verify forward and the draft's level forward for every tree size in `nodes` on this
    machine (median of `repeats` after a warm-up pass; made non-decreasing in n by `monotone`, the raw medians are
    kept in info). Returns Costs with provenance (date, versions, CPU/GPU, threads, load average before and after:
    on a shared machine the numbers are only as good as the load allowed)."""
    from ..models.provenance import provenance

    nodes = _check_nodes(nodes)
    _check_int("prefix_len", prefix_len, 1)
    _check_int("repeats", repeats, 1)
    for role, model in (("target", pair.target), ("draft", pair.draft)):
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if model is not None and context is not None and prefix_len + nodes[-1] > context:
            raise ValueError(f"prefix_len ({prefix_len}) + the largest of nodes ({nodes[-1]}) exceeds the {role}'s "
                             f"context of {context} tokens")
    load_before = os.getloadavg()
    started = time.perf_counter()
    raw_verify = forward_costs(pair.target, nodes, prefix_len, repeats)
    if pair.draft is None:
        raw_draft = None
    elif pair.draft is pair.target:
        raw_draft = raw_verify  # the same model: the same forward
    else:
        raw_draft = forward_costs(pair.draft, nodes, prefix_len, repeats)
    info = provenance(pair, {"nodes": list(nodes), "prefix_len": prefix_len, "repeats": repeats})
    info.update(loadavg_before=list(load_before), loadavg_after=list(os.getloadavg()), cpu_count=os.cpu_count(),
                measure_s=time.perf_counter() - started, raw_verify_s=list(raw_verify),
                raw_draft_s=None if raw_draft is None else list(raw_draft))
    return Costs(nodes, monotone(raw_verify), None if raw_draft is None else monotone(raw_draft), info)


# ---------------------------------------------------------------------------------------------------------------------
# Calibration cache: <cache_root>/costs/<hash>.json, one per model pair, dtype, device, threads and settings


def model_identity(model) -> dict:
    """What a forward's cost depends on: architecture (config hash), dtype and module types (a quantized draft has
    the same config but other modules); weights do not matter, so a perturbed copy shares its calibration."""
    config = model.config
    modules = ",".join(sorted({type(m).__name__ for m in model.modules()}))
    identity = {
        "name_or_path": str(getattr(config, "name_or_path", "") or ""),
        "config_sha1": hashlib.sha1(config.to_json_string(use_diff=False).encode()).hexdigest()[:12],
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "modules_sha1": hashlib.sha1(modules.encode()).hexdigest()[:12],
    }
    trimmed = getattr(model, "kept_ids", None)  # an output layer of K rows (models/vocab.py) costs less
    if trimmed is not None:
        identity["draft_vocab"] = len(trimmed)
    return identity


def calibration_key(pair, nodes=DEFAULT_NODES, prefix_len: int = 128, repeats: int = 3) -> dict:
    device = pair.device
    # One CPU model name covers machines with and without bf16 arithmetic, whose forwards grow with the rows very
    # differently: the capability is part of the hardware a calibration belongs to.
    hardware = (torch.cuda.get_device_name(device) if device.type == "cuda" else
                f"{cpu_model()} ({'with' if native_bf16_matmul() else 'without'} bf16 arithmetic)")
    return {
        "format": CALIBRATION_FORMAT,
        "target": model_identity(pair.target),
        "draft": None if pair.draft is None else model_identity(pair.draft),
        "device": str(device),
        "hardware": hardware,
        "torch_threads": torch.get_num_threads(),
        "nodes": list(nodes),
        "prefix_len": prefix_len,
        "repeats": repeats,
    }


def calibration_path(key: dict, cache_dir=None) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root(cache_dir) / "costs" / f"{digest}.json"


_CALIBRATIONS: dict[str, Costs] = {}  # in-process: a process pays for a calibration at most once


def stale_reason(costs: Costs, max_age_days: float = MAX_AGE_DAYS) -> str | None:
    """Why a stored calibration should not be trusted any more, or None: older than `max_age_days`, measured
    while the machine was busy (1-minute load average above the calibration's own threads + 1: another process
    shared the cores, so every time in it is too long), or on another CPU. A calibration without a date or a load counts as stale."""
    info = costs.info or {}
    try:
        measured = dt.datetime.fromisoformat(info["date_utc"])
        load = float(info["loadavg_before"][0])
        threads = int(info.get("torch_threads") or 1)
    except (KeyError, TypeError, ValueError, IndexError):
        return "no date or load recorded"
    age_days = (dt.datetime.now(dt.timezone.utc) - measured).total_seconds() / 86400
    if age_days > max_age_days:
        return f"{age_days:.1f} days old (limit {max_age_days:g})"
    if load > threads + 1:
        return f"measured under load (1-minute load average {load:.1f} with {threads} threads)"
    here = cpu_model()
    if info.get("cpu") and info["cpu"] != here:  # the cache outlives a sitting; the machine under it may change
        return f"measured on another CPU ({info['cpu']}, this one is {here})"
    return None


def load_or_measure_costs(pair, *, nodes=DEFAULT_NODES, prefix_len: int = 128, repeats: int = 3, cache_dir=None,
                          refresh: bool = False, max_age_days: float = MAX_AGE_DAYS) -> Costs:
    """The pair's Costs on this machine: from this process's memory, else from the JSON cache
    (`calibration_path`, under $DYNATREE_CACHE) unless `stale_reason` finds it too old or taken under load, else
    measured (`measure_costs`) and saved. `refresh` re-measures. A re-measurement that is itself taken under load
    is used (it is the best there is) but stays stale, so the next process measures again."""
    nodes = _check_nodes(nodes)
    key = calibration_key(pair, nodes, prefix_len, repeats)
    path = calibration_path(key, cache_dir)
    if not refresh:
        if str(path) in _CALIBRATIONS:
            return _CALIBRATIONS[str(path)]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["key"] == key:
                costs = Costs.from_dict(data["costs"])
                if stale_reason(costs, max_age_days) is None:
                    _CALIBRATIONS[str(path)] = costs
                    return costs
        except (OSError, ValueError, KeyError, TypeError):
            pass  # missing or unreadable: measure again
    costs = measure_costs(pair, nodes=nodes, prefix_len=prefix_len, repeats=repeats)
    write_atomic(path, json.dumps({"key": key, "costs": costs.to_dict()}, indent=1, default=str))
    _CALIBRATIONS[str(path)] = costs
    return costs


def calibration_nodes(max_nodes: int) -> tuple[int, ...]:
    """DEFAULT_NODES, plus powers of two up to the first >= max_nodes when a bigger budget is allowed."""
    nodes = list(DEFAULT_NODES)
    while nodes[-1] < max_nodes:
        nodes.append(nodes[-1] * 2)
    return tuple(nodes)
