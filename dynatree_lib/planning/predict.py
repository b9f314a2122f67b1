"""Predicted speed: the wall time of a replayed run from cost curves, and how far such predictions are from timings.

A run's rounds (from `bench.replay`, or any objects with the same fields) say exactly which forwards the run makes;
a calibration says what each costs on some machine:

    draft    = t_draft(root_tokens) + sum_{w in fed} t_draft(w)   per drafting round: the draft's first forward (the
                                                                  pending tokens plus the root; the prompt in round
                                                                  1), then one forward per level but the last
    verify   = t_verify(1 + nodes)                                per round: one target forward over the tree
    overhead = round_s + node_s * nodes                           per round: everything that is not a forward (tree
                                                                  and mask building, argmax, cache surgery, Python)
    tree run = t_verify(prompt) + sum over rounds of the three    (the target's prefill is the same in AR)
    AR run   = t_verify(prompt) + (n - 1) (t_verify(1) + step_s)
    speedup  = AR run / tree run

Every forward is multiplied by how much slower it runs inside a real run than in the curves' isolation, measured by
`measure_overheads`: AR's steps by `forward_scale` (an AR step's forward over the curve's 1-token verify), the
prefill and a policy's forwards by `run_scales` (the tree runs' target and draft forwards over what the curves
price for the same forwards; on this CPU one-token steps lose more inside a run than bigger forwards do); and, when
the calibration has context curves (calibrate.context_scale, per model), by how much more a forward costs on the
cache it reads (prompt + tokens committed before it) than on the cache the AR run of `measure_overheads` read.

This is planner.py's cost model, counted per round instead of expected. The per-round overheads are measured on
the same machine as the curves (`measure_overheads`: wall time minus the time inside model forwards, fitted
linearly in tree size over a few timed runs). Curves are measured on a cache of `prefix_len` tokens; a long run
reads a longer cache, which only the context curves see (without them a long prompt's runs are predicted too fast).

A `Calibration` (costs + overheads + provenance) is JSON, so a calibration measured on another machine
(scripts/calibrate_costs.py) predicts that machine's speedups from the acceptance replayed here: every such number
is a prediction and is labelled "predicted" with the calibration's hardware.
"""
from __future__ import annotations

import functools
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..models.provenance import write_atomic
from .calibrate import Costs, interpolate

# ---------------------------------------------------------------------------------------------------------------------
# Calibration: cost curves plus per-round overheads, with provenance


@dataclass(frozen=True)
class Overheads:
    """Seconds outside model forwards: per speculative round (`round_s` + `node_s` per draft node) and per AR step."""

    round_s: float = 0.0
    node_s: float = 0.0
    step_s: float = 0.0
    info: dict = field(default_factory=dict, compare=False, repr=False)

    def round(self, nodes: int) -> float:
        return self.round_s + self.node_s * nodes

    def to_dict(self) -> dict:
        return {"round_s": self.round_s, "node_s": self.node_s, "step_s": self.step_s, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict) -> "Overheads":
        return cls(float(d["round_s"]), float(d["node_s"]), float(d["step_s"]), d.get("info") or {})


@dataclass(frozen=True)
class Calibration:
    costs: Costs
    overheads: Overheads = Overheads()
    info: dict = field(default_factory=dict, compare=False, repr=False)
    context: dict = field(default_factory=dict, compare=False, repr=False)  # {"target"/"draft": context_scale(...)}

    def context_factors(self, role: str, contexts) -> np.ndarray:
        """A forward's cost (`role` "target" or "draft") on caches of `contexts` tokens over its cost on the cache
        the AR run of `measure_overheads` read (info "ar_context"), where forward_scale was measured; piecewise
        linear between the measured contexts, the last slope continued past them. 1.0 without a context curve."""
        c = np.asarray(contexts, dtype=float)
        curve = self.context.get(role)
        if not curve or len(curve["contexts"]) < 2:
            return np.ones_like(c)
        xs, ys = curve["contexts"], curve["scale"]
        ref = float(self.overheads.info.get("ar_context") or xs[0])
        return interpolate(xs, ys, c) / interpolate(xs, ys, ref)

    @property
    def forward_scale(self) -> float:
        """How much longer a forward takes inside a real run than on the calibration's fixed cache: the AR step's
        forward seconds measured by `measure_overheads` over the curve's 1-token verify (1.0 when not measured).
        A growing cache, the allocator and the CPU's state between steps are in a run and not in the curves."""
        ar = self.overheads.info.get("ar_forward_s")
        base = self.costs.verify(1)
        return float(ar) / base if ar and base > 0 else 1.0

    @functools.cached_property
    def run_scales(self) -> dict:
        """Per role ("target", "draft"): the seconds of that model's forwards inside the calibration's tree runs
        (`measure_overheads`) over what the curves price for the same forwards (tokens fed, on the cache read).
        A policy's forwards are priced with it; AR's one-token steps keep `forward_scale`, which is larger on
        this CPU. A role not measured (calibrations before the field) falls back to `forward_scale`."""
        out = {}
        for role, curve in (("target", self.costs.verify), ("draft", self.costs.draft)):
            seen = [f for f in self.overheads.info.get("forwards") or () if f[0] == role]
            factors = self.context_factors(role, [f[2] for f in seen])
            priced = sum(curve(f[1]) * k for f, k in zip(seen, factors))
            out[role] = sum(f[3] for f in seen) / priced if priced > 0 else self.forward_scale
        return out

    @property
    def hardware(self) -> str:
        info = {**self.costs.info, **self.info}
        return str(info.get("hardware") or info.get("gpu_name") or info.get("cpu") or info.get("device_name") or "?")

    def to_dict(self) -> dict:
        return {"format": 1, "costs": self.costs.to_dict(), "overheads": self.overheads.to_dict(), "info": self.info,
                "context": self.context}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        overheads = Overheads.from_dict(d["overheads"]) if d.get("overheads") else Overheads()
        return cls(Costs.from_dict(d["costs"]), overheads, d.get("info") or {}, d.get("context") or {})

    def save(self, path) -> Path:
        return write_atomic(path, json.dumps(self.to_dict(), indent=1, default=str) + "\n")

    @classmethod
    def load(cls, path) -> "Calibration":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------------------------------------------------
# Prediction


def round_seconds(r, costs: Costs, overheads: Overheads = Overheads(), scale: float = 1.0,
                  draft_scale: float | None = None) -> dict:
    """Predicted seconds of one round, by part. `r` has draft (bool), root_tokens, fed (widths) and nodes;
    `scale` multiplies every forward (Calibration.forward_scale), `draft_scale` the draft's instead when given."""
    draft = (costs.draft(r.root_tokens) + sum(costs.draft(w) for w in r.fed)) if r.draft else 0.0
    draft_scale = scale if draft_scale is None else draft_scale
    return {"draft_s": draft_scale * draft, "verify_s": scale * costs.verify(1 + r.nodes),
            "overhead_s": overheads.round(r.nodes)}


def predict_ar(calibration: Calibration, prompt_tokens: int, n: int) -> float:
    """Predicted wall seconds of AR: the prefill, then n - 1 one-token forwards on caches of prompt_tokens ..
    prompt_tokens + n - 2 tokens, each with the per-step overhead."""
    costs, over, scale = calibration.costs, calibration.overheads, calibration.forward_scale
    steps = calibration.context_factors("target", prompt_tokens + np.arange(max(n - 1, 0))).sum()
    prefill = calibration.run_scales["target"] * costs.verify(prompt_tokens)  # the same forward as a policy's
    return prefill + scale * costs.verify(1) * float(steps) + (n - 1) * over.step_s


def predict_run(rounds, calibration: Calibration, prompt_tokens: int, n: int) -> dict:
    """Predicted wall seconds of a run (its rounds), of AR on the same prompt and length, and the speedup."""
    parts = {"draft_s": 0.0, "verify_s": 0.0, "overhead_s": 0.0}
    scale = calibration.run_scales  # computed once per calibration, not per run
    contexts = [prompt_tokens + getattr(r, "start", 0) for r in rounds]  # the cache each round's forwards read
    target, draft = (scale[role] * calibration.context_factors(role, contexts) for role in ("target", "draft"))
    for r, t, d in zip(rounds, target, draft):
        for k, v in round_seconds(r, calibration.costs, calibration.overheads, t, d).items():
            parts[k] += v
    prefill = scale["target"] * calibration.costs.verify(prompt_tokens)
    wall = prefill + sum(parts.values())
    ar = predict_ar(calibration, prompt_tokens, n)
    return {"predicted_wall_s": wall, "predicted_ar_wall_s": ar, "predicted_speedup": ar / wall if wall > 0 else
            math.nan, "predicted_prefill_s": prefill, **{f"predicted_{k}": v for k, v in parts.items()}}


def calibration_columns(calibration: Calibration) -> dict:
    """Provenance columns for every predicted row: what the numbers are, and whose hardware they describe."""
    info = {**calibration.costs.info, **calibration.info}
    return {"measurement": "predicted", "calibration_hardware": calibration.hardware,
            "calibration_date": info.get("date_utc") or info.get("date") or "",
            "calibration_threads": info.get("torch_threads", ""), "calibration_dtype": info.get("dtype", "")}


# ---------------------------------------------------------------------------------------------------------------------
# Validation against timed runs


def validate(predicted, measured):
    """Predicted against directly timed runs: one row per (method, prompt_id, max_new_tokens) found in both.

    `predicted`: rows with method, prompt_id, max_new_tokens, predicted_wall_s, predicted_ar_wall_s,
    predicted_speedup; `measured`: rows from bench.run_benchmark (wall_s, ar_wall_s, speedup; repeats are
    combined by median). Errors are relative: predicted / measured - 1. Returns a tidy pandas DataFrame."""
    keys = ["method", "prompt_id", "max_new_tokens"]
    m = measured[measured["method"] != "AR"] if "method" in measured else measured
    m = (m.assign(prompt_id=m["prompt_id"].astype(str))
         .groupby(keys, as_index=False)[["wall_s", "ar_wall_s", "speedup"]].median())
    cols = keys + ["predicted_wall_s", "predicted_ar_wall_s", "predicted_speedup"]
    p = predicted[cols].assign(prompt_id=predicted["prompt_id"].astype(str))
    df = p.merge(m, on=keys, how="inner")
    df["error_wall"] = df["predicted_wall_s"] / df["wall_s"] - 1
    df["error_ar_wall"] = df["predicted_ar_wall_s"] / df["ar_wall_s"] - 1
    df["error_speedup"] = df["predicted_speedup"] / df["speedup"] - 1
    df["abs_error_speedup"] = df["error_speedup"].abs()
    return df.reset_index(drop=True)


def error_summary(validation) -> dict:
    """The error distribution in a few numbers: pairs, median/p90/max |speedup error|, median signed errors."""
    if len(validation) == 0:
        return {"pairs": 0}
    e = validation["abs_error_speedup"]
    return {"pairs": int(len(validation)), "median_abs_error_speedup": float(e.median()),
            "p90_abs_error_speedup": float(e.quantile(0.9)), "max_abs_error_speedup": float(e.max()),
            "median_error_speedup": float(validation["error_speedup"].median()),
            "median_error_wall": float(validation["error_wall"].median()),
            "median_error_ar_wall": float(validation["error_ar_wall"].median())}


# ---------------------------------------------------------------------------------------------------------------------
# Measuring the overheads


def measure_overheads(pair, methods, prompt_ids, n: int = 64, repeats: int = 3) -> Overheads:
    """Per-round and per-step seconds outside forwards on this machine: `methods` (tree methods of several sizes:
    a least-squares line in nodes per round; AR is added for step_s) generate `n` tokens from `prompt_ids`,
    `repeats` times after one warm-up, and the time outside model forwards is divided by the rounds (AR is
    recognised by its name "AR": planning does not import the methods). AR's forward seconds per step go to
    info["ar_forward_s"] (Calibration.forward_scale)."""
    from ..core import loop
    from ..core.timing import ForwardTimer

    forwards = []  # the tree runs' forwards: what `Calibration.run_scales` prices against the curves

    def outside(method):
        running = loop.running_pair(pair, method)
        loop.generate(pair, prompt_ids, method, min(n, 16), stop_at_eos=False)  # warm-up
        samples = []
        for _ in range(repeats):
            with ForwardTimer(running, log=True) as fs:
                out = loop.generate(pair, prompt_ids, method, n, stop_at_eos=False)
            if method is not ar:
                forwards.extend(fs.forwards)
            rounds = max(len(out.trace), 1)
            # per AR step (the trace leaves the prefill out): its forward seconds, the prefill (TTFT) taken off
            samples.append(((out.stats["wall_s"] - fs.total) / rounds, out.stats["drafted_nodes"] / rounds,
                            (fs.total - out.stats.get("ttft_s", 0.0)) / rounds))
        return tuple(statistics.median(s[i] for s in samples) for i in range(3))

    ar = next((m for m in methods if type(m).__name__ == "Autoregressive"), None)
    trees = [m for m in methods if m is not ar]
    step_s, _, ar_forward_s = outside(ar) if ar is not None else (0.0, 0.0, None)
    ar_context = len(prompt_ids) + (n - 1) / 2  # the mean cache an AR step of those runs read
    points = [outside(m)[:2] for m in trees]
    if not points:
        return Overheads(0.0, 0.0, step_s, {"n": n, "repeats": repeats, "ar_forward_s": ar_forward_s,
                                            "ar_context": ar_context})
    xs, ys = [p[1] for p in points], [p[0] for p in points]
    slope = max(statistics.linear_regression(xs, ys).slope, 0.0) if max(xs) > min(xs) else 0.0
    intercept = max(statistics.fmean(ys) - slope * statistics.fmean(xs), 0.0)
    info = {"n": n, "repeats": repeats, "ar_forward_s": ar_forward_s, "ar_context": ar_context,
            "points": [{"nodes_per_round": x, "outside_s_per_round": y} for x, y in zip(xs, ys)],
            "forwards": [list(f) for f in forwards]}
    return Overheads(intercept, slope, max(step_s, 0.0), info)
