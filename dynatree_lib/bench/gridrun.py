"""Running the grid (bench.grid) on Ray, and turning stored units into the tidy table.

    run_grid(...)   the whole pipeline, as benchmarks/grid.py runs it:
                    1. target units, then replay units, in parallel (one Ray worker per core, 1 torch thread each)
                    2. timed work, one unit at a time per node ("timing_slot"): the calibration of each draft (unless
                       one is given, e.g. from another machine), then the timed validation runs
                    3. evaluate: every grid policy x length replayed from the stored units, with predicted speed
    execute(...)    run units as Ray tasks: skip stored keys, record failures, tqdm progress
    evaluate(...)   stored units -> DataFrame (cheap arithmetic; no model)
"""
from __future__ import annotations

import dataclasses
import os
import random
import sys
from pathlib import Path

import pandas as pd

from ..core.loop import encode, round_stats
from ..methods.base import FixedTree, label
from ..models.provenance import provenance, write_table
from .grid import (DRAFT_BITS, LENGTHS, Unit, _calibrate, _pair, _target_then_replay, grid_methods, guarded,
                   load_replay, record_error, replay_batch_of, run_targets, run_timed)
from .replay import SupersetSpec, params_of, replay_grid
from .storage import distinct


def init_ray(address: str | None = None, workers: int | None = None) -> bool:
    """Start (or join, with `address`) a Ray cluster; True when this call started it. A local cluster gets one
    CPU per worker and one "timing_slot"; its workers see this process's import path."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return True
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    ray.init(num_cpus=workers or os.cpu_count() or 1, resources={"timing_slot": 1}, include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}})
    return True


def execute(jobs, root, *, timing: bool = False, progress: bool = True, desc: str = "units",
            stop_after: int | None = None) -> list[dict]:
    """Run `jobs` [(fn, unit, args, kwargs)] as Ray tasks (guarded: stored keys skipped, failures recorded in
    <root>/errors/ and returned with status "error"). `timing`: each task needs the node's timing_slot.
    `stop_after` k: behave as if interrupted (Ctrl-C) after k finished tasks (for tests): the rest is cancelled."""
    import ray
    from tqdm.auto import tqdm

    results = [{"key": u.key, "kind": u.kind, "status": "skipped"} for _, u, _, _ in jobs if u.path(root).exists()]
    todo = [j for j in jobs if not j[1].path(root).exists()]
    options = {"num_cpus": 1, "max_retries": 0}
    if timing:
        options["resources"] = {"timing_slot": 1}
    task = ray.remote(guarded).options(**options)
    refs = {task.remote(fn, unit, str(root), *args, **kwargs): unit for fn, unit, args, kwargs in todo}
    bar = tqdm(total=len(jobs), initial=len(results), desc=desc, unit="unit", disable=not progress)
    finished = 0
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            unit = refs.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as e:  # noqa: BLE001 - a worker that died (memory, signal): record it, go on
                result = record_error(unit, root, e)
            results.append(result)
            bar.update(1)
            bar.set_postfix_str(f"{sum(r['status'] == 'error' for r in results)} errors", refresh=False)
            finished += 1
            if stop_after is not None and finished >= stop_after and refs:
                raise KeyboardInterrupt(f"stopped after {finished} units")
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        _remove_partial_writes(root, refs)
        raise
    finally:
        bar.close()
    return results


def _remove_partial_writes(root, cancelled: dict) -> None:
    """A task killed by a forced cancel can die between writing its temporary file and renaming it into place (an
    atomic write never leaves a half unit, but can leave its .tmp): once the cancelled tasks {ref: unit} are gone,
    remove their temporary files, and only theirs (another sweep may be writing to the same root)."""
    import ray

    try:
        ray.wait(list(cancelled), num_returns=len(cancelled), timeout=10)
    except Exception:  # noqa: BLE001 - cancelled refs raise on wait in some Ray versions; the cleanup still runs
        pass
    for unit in cancelled.values():
        own = [unit.path(root), unit.error_path(root)]
        if unit.kind == "replay":  # a replay task writes its target first when none is stored
            own.append(unit.target_unit().path(root))
        for path in own:
            for tmp in path.parent.glob(f".{path.name}.*.tmp"):
                tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation: stored units -> one tidy table


def _with_bits(method, draft: str):
    bits = DRAFT_BITS[draft]
    return dataclasses.replace(method, draft_bits=bits) if bits else method


def _shape(method) -> dict:
    branch, threshold, max_nodes, depth = params_of(method)
    return {"depth": depth, "branch": branch, "threshold": threshold, "max_nodes": max_nodes}


def evaluate_unit(path, methods, lengths, calibrations: dict | None = None) -> list[dict]:
    """Rows for every method and length (<= the unit's) of one stored replay unit."""
    from ..planning.predict import calibration_columns, predict_run

    replay = load_replay(path)
    unit = replay.meta["unit"]
    lengths = [n for n in lengths if n <= unit["max_new_tokens"]]
    runs = replay_grid(replay, methods, lengths)
    calib = (calibrations or {}).get(unit["draft"])
    rows = []
    for m in methods:
        for n in lengths:
            rounds = runs[(label(m), n)]
            row = {"experiment": "grid", "pair": unit["pair"], "draft": unit["draft"], "prompt_id": unit["prompt_id"],
                   "prompt_tokens": len(replay.prompt_ids), "method": label(_with_bits(m, unit["draft"])),
                   "method_type": type(m).__name__, **_shape(m), "max_new_tokens": n,
                   **round_stats([r.record() for r in rounds]), "measurement": "replayed",
                   "unit_date_utc": replay.meta.get("date_utc"), "unit_git_commit": replay.meta.get("git_commit"),
                   "dtype": replay.meta.get("dtype")}
            if calib is not None:
                row.update(predict_run(rounds, calib, len(replay.prompt_ids), n))
                row.update(calibration_columns(calib))
                row["speedup"] = row["predicted_speedup"]
            rows.append(row)
    return rows


def evaluate(root, methods=None, lengths=LENGTHS, calibrations: dict | None = None, parallel: bool = False):
    """All stored replay units under `root` -> one tidy DataFrame (a row per unit x method x length)."""
    methods = methods or grid_methods()
    paths = sorted((Path(root) / "units").glob("*.pt"))
    if parallel and paths:
        import ray

        task = ray.remote(evaluate_unit).options(num_cpus=1)
        parts = ray.get([task.remote(str(p), methods, list(lengths), calibrations) for p in paths])
    else:
        parts = [evaluate_unit(p, methods, lengths, calibrations) for p in paths]
    return pd.DataFrame([row for part in parts for row in part])


# ---------------------------------------------------------------------------------------------------------------------
# The pipeline


def plan_units(pair: str, prompts, drafts, max_new_tokens: int):
    targets = [Unit("target", pair, pid, max_new_tokens, prompt=p) for pid, p in prompts]
    replays = [Unit("replay", pair, pid, max_new_tokens, draft=d, prompt=p) for d in drafts for pid, p in prompts]
    return targets, replays


def validation_units(pair: str, prompts, drafts, methods, k: int, length: int, seed: int = 0) -> list[Unit]:
    """k (policy, prompt) pairs to time (policies seeded), spread evenly over the prompts in their order (so every kind
    of text in a mixed list is timed, not only the first k prompts) and alternating between the drafts."""
    rng = random.Random(seed)
    trees = [m for m in methods if isinstance(m, FixedTree)] or list(methods)
    units = []
    for i in range(k):
        pid, prompt = prompts[(i * len(prompts)) // k % len(prompts)]
        draft = drafts[i % len(drafts)]
        m = _with_bits(rng.choice(trees), draft)
        units.append(Unit("timed", pair, pid, length, draft=draft, method=label(m), prompt=prompt))
    return units


def run_grid(pair: str, prompts, *, root, loader, drafts=("base", "int4"), lengths=LENGTHS, methods=None,
          spec: SupersetSpec | None = None, address=None, workers=None, validate: int = 0, validate_length: int = 200,
          calibrations: dict | None = None, calibrate: bool = True, repeats: int = 1, out=None, progress=True,
          stop_after=None, target_batch: int = 1, replay_batch: int | dict = 1) -> dict:
    """The whole grid for one pair: replay units (parallel), calibration and timed validation (one per node),
    then the table (`out`, default <root>/grid.csv) and, with `validate`, <root>/grid_validation.csv.
    `target_batch` prompts' target continuations are decoded as one batch (a Ray task), `replay_batch` starts'
    supersets are drafted together (bench.supersets; a number, or {draft: number}). `stop_after` (tests): interrupt
    the replay phase after that many units."""
    from ..planning.predict import Calibration

    methods, spec, root = methods or grid_methods(), spec or SupersetSpec(), Path(root)
    prompts = [(str(pid), p) for pid, p in prompts]
    started = init_ray(address, workers)
    try:
        targets, replays = plan_units(pair, prompts, drafts, max(lengths))
        groups = [targets[i: i + target_batch] for i in range(0, len(targets), max(target_batch, 1))]
        report = {"target": execute([(run_targets, g[-1], (loader, g), {}) for g in groups], root,
                                    progress=progress, desc="target")}
        report["replay"] = execute([(_target_then_replay, u, (loader, spec, methods, list(lengths),
                                                              replay_batch_of(replay_batch, u.draft)), {})
                                    for u in replays], root, progress=progress, desc="replay", stop_after=stop_after)
        calibrations = dict(calibrations or {})
        if calibrate:
            todo = [d for d in drafts if d not in calibrations]
            cal_units = [Unit("calibration", pair, "calibration", 64, draft=d) for d in todo]
            ids = run_target_ids(prompts[0][1], root, loader, pair)
            report["calibration"] = execute([(_calibrate, u, (loader, ids), {"threads": None}) for u in cal_units],
                                            root, timing=True, progress=progress, desc="calibration")
            for u in cal_units:
                if u.path(root).exists():
                    calibrations[u.draft] = Calibration.load(u.path(root))
        timed = validation_units(pair, prompts, list(drafts), methods, validate, validate_length) if validate else []
        if timed:
            report["timed"] = execute([(run_timed, u, (loader,), {"repeats": repeats, "threads": None})
                                       for u in timed], root, timing=True, progress=progress, desc="timed")
        df = evaluate(root, methods, lengths, calibrations, parallel=True)
        params = {"pair": pair, "drafts": list(drafts), "lengths": list(lengths), "spec": spec.to_dict(),
                  "prompts": [pid for pid, _ in prompts], "target_batch": target_batch, "replay_batch": replay_batch}
        session = provenance(None, params)  # the models ran in the workers: the dtype comes from the rows
        report["table"] = str(write_table(df, out or root / "grid.csv", session)) if len(df) else None
        if calibrations and len(df):
            report.update(write_validation(root, df, params, timed or None))
        return report
    finally:
        if started:
            import ray

            ray.shutdown()


def write_validation(root, df: pd.DataFrame, params: dict, units=None) -> dict:
    """<root>/grid_validation.csv: the predictions in `df` beside the timed runs of `units`, or of every timed unit
    stored under `root` (a sweep that times nothing new checks its table against the runs timed before)."""
    from ..planning.predict import error_summary, validate

    timed = timed_rows(root, units)
    v = validate(df, timed) if len(timed) else pd.DataFrame()
    if v.empty:
        return {}
    session = {**provenance(None, params), "dtype": ", ".join(distinct(timed, "dtype")) or None}  # as timed
    return {"validation_table": str(write_table(v, Path(root) / "grid_validation.csv", session)),
            "validation": error_summary(v)}


def timed_rows(root, units=None) -> pd.DataFrame:
    """The rows (AR and the policy, as bench.run_benchmark wrote them) of the given timed units, or of every timed
    unit stored under `root`."""
    paths = [u.path(root) for u in units] if units is not None else sorted((Path(root) / "timed").glob("*.csv"))
    frames = [pd.read_csv(p, dtype={"prompt_id": str}) for p in paths if p.exists()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_target_ids(prompt, root, loader, pair: str) -> list[int]:
    """Token ids of a prompt (for calibrations), without loading models in the driver when ids are given."""
    if isinstance(prompt, (list, tuple)):
        return [int(t) for t in prompt]
    return encode(_pair(loader, pair, "base"), prompt)


def unit_costs(root) -> pd.DataFrame:
    """What each stored target and replay unit cost to compute (seconds in its Ray worker, tokens, draft forwards):
    the basis for saying what a bigger grid would take on the same machine."""
    import torch

    rows = []
    for kind, folder in (("target", "target"), ("replay", "units")):
        for path in sorted((Path(root) / folder).glob("*.pt")):
            d = torch.load(path)
            unit = d["unit"]
            rows.append({"kind": kind, "draft": unit.get("draft") if kind == "replay" else "",
                         "prompt_id": str(unit["prompt_id"]), "max_new_tokens": int(unit["max_new_tokens"]),
                         "seconds": float(d["seconds"]), "batch": int(d.get("batch", 1)),
                         "starts": len(d["starts"]) if "starts" in d else None,
                         "draft_forwards": d.get("draft_forwards"), "threads": d.get("threads"),
                         "date_utc": d.get("date_utc")})
    return pd.DataFrame(rows)


def acceptance_hours(costs: pd.DataFrame) -> float:
    """Hours of wall time the stored units took, from their own timestamps: the first unit's start (its save time
    less its seconds; a target unit's seconds are its share of its batch) to the last one's end. One sweep's
    acceptance phase when the units come from one run; a resumed or extended store also counts the time between."""
    end = pd.to_datetime(costs["date_utc"], utc=True)
    batch = costs["batch"].where(costs["kind"] == "target", 1) if "batch" in costs else 1
    start = end - pd.to_timedelta(costs["seconds"] * batch, unit="s")
    return (end.max() - start.min()).total_seconds() / 3600


def _per_token(batching: pd.DataFrame, measure: str, draft: str, batch: int) -> float:
    """Seconds per token at `batch` as `batching` measured it: linear between the measured batch sizes (a sweep's
    last group is often smaller than the others), never beyond them."""
    import numpy as np

    rows = batching[(batching["measure"] == measure) & (batching["draft"].fillna("") == draft)]
    at = rows.groupby("batch")["s_per_token"].median()
    if at.empty or not at.index.min() <= batch <= at.index.max():
        raise ValueError(f"grid_batching has no {measure} row for draft {draft!r} at batch {batch}")
    return float(np.interp(batch, at.index.to_numpy(dtype=float), at.to_numpy()))


def projection(costs: pd.DataFrame, batching: pd.DataFrame, prompts: int, length: int, drafts, workers: int,
               target_batch: int, replay_batch: int | dict) -> pd.DataFrame:
    """Hours a grid of `prompts` x `length` would take on `workers` workers, per part (the target's continuations,
    each draft's replay), one unit at a time as the stored units were computed, and batched: the stored units'
    per-token costs scaled by the ratios `batching` (benchmarks/grid_batching.py, one process) measured between
    batch 1 and the given batches. A draft with no stored replay unit is priced from int4's stored cost times the
    ratio of the two drafts' one-at-a-time replay in `batching`; a unit stored from a batch (its `batch` column) is
    first brought back to its one-at-a-time cost by the same ratios. Every number is predicted, not timed."""
    batch = costs["batch"] if "batch" in costs else pd.Series(1, index=costs.index)
    unbatch = [1.0 if b == 1 else _per_token(batching, k, d or "", 1) / _per_token(batching, k, d or "", b)
               for k, d, b in zip(costs["kind"], costs["draft"].fillna(""), batch)]
    per_token = costs.assign(s=costs["seconds"] / costs["max_new_tokens"] * pd.Series(unbatch, index=costs.index))
    stored = per_token[per_token["kind"] == "replay"].groupby("draft")["s"].median()
    parts = [("target", "target", "", per_token.loc[per_token["kind"] == "target", "s"].median(), target_batch)]
    for d in drafts:
        if d in stored.index:
            cost = stored[d]
        elif "int4" in stored.index:
            cost = stored["int4"] * _per_token(batching, "replay", d, 1) / _per_token(batching, "replay", "int4", 1)
        else:
            raise ValueError(f"no stored replay unit of draft {d} or int4 to scale from; have {list(stored.index)}")
        parts.append((f"replay ({d})", "replay", d, cost, replay_batch_of(replay_batch, d)))
    rows = []
    for part, measure, d, s, batch in parts:
        factor = _per_token(batching, measure, d, 1) / _per_token(batching, measure, d, batch)
        hours = prompts * length * s / workers / 3600
        rows.append({"part": part, "batch": batch, "one_at_a_time_h": hours, "speedup": factor,
                     "batched_h": hours / factor})
    return pd.DataFrame(rows)
