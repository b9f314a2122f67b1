"""The research's whole parameter grid, exactly and cheaply: replay units computed in parallel on Ray, then arithmetic.

Expensive work comes in units, each stored atomically the moment it finishes, so a sweep can be interrupted and
resumed (finished keys are skipped) and a failing unit is recorded (errors/<key>.json) without stopping the rest:

    target unit (pair, prompt, n)          the target's greedy continuation of n tokens      <root>/target/<key>.pt
    replay unit (pair, draft, prompt, n)   the draft's superset trees at every start that any  <root>/units/<key>.pt
                                           grid policy reaches at any grid length <= n
    timed unit  (pair, draft, prompt, method, n)   run_benchmark rows (AR + method)            <root>/timed/<key>.csv

`evaluate` then replays all 90 FixedTree configurations (D 3..8 x B 2..4 x tau {0.01, 0.02, 0.03, 0.05, 0.1},
N = 128) and the Linear baselines at every length from the stored units (no model), with predicted wall times
from a per-draft Calibration (planning.predict), into one tidy table marked "predicted".

Ray: `ray.init()` local by default with one worker per core (`workers`), or `address=` to join a cluster. Acceptance
units run in parallel; timed units need the custom resource "timing_slot" (each node is started with one:
`ray start ... --resources '{"timing_slot": 1}'`; a local cluster gets one) and run in a phase of their own, after
the acceptance work, so a timed run never shares a machine's cores with other work.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import traceback
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.loop import encode, running_pair
from ..methods.base import FixedTree, Linear
from ..models.provenance import atomic_path, git_state, utc_now, write_atomic
from .replay import Replay, Superset, SupersetSpec, replay_grid
from .supersets import SupersetDrafter, greedy_continuations

DEPTHS, BRANCHES, THRESHOLDS = range(3, 9), (2, 3, 4), (0.01, 0.02, 0.03, 0.05, 0.1)
LENGTHS = (100, 200, 300, 500, 1000)
DRAFT_BITS = {"base": None, "int8": 8, "int4": 4}  # base: the pair's own draft in the pair's dtype (bf16 here)
FORMAT = 1
# A sweep's defaults for batching its acceptance work (benchmarks/grid.py), chosen from what
# benchmarks/grid_batching.py measured on a 2-core CPU with one thread per worker (data/results/grid_batching.csv):
# 8 prompts' target continuations decoded together ran 3.2x faster than one at a time; 32 starts' supersets drafted
# together 3.4-3.8x faster with the bf16 draft, but not faster with the int4 kernel (its cost grows with the rows it
# multiplies, and a batch also drafts starts no policy asks for); through the int4 draft's dense copy (replay_draft)
# 32 starts together ran 1.7x faster than one at a time through the kernel.
TARGET_BATCH = 8
REPLAY_BATCH = {"base": 32, "int8": 32, "int4": 32}


def replay_batch_of(replay_batch, draft: str) -> int:
    """A sweep's replay batch for `draft`: one number for every draft, or a {draft: batch} mapping (default 1)."""
    return int(replay_batch.get(draft, 1)) if isinstance(replay_batch, dict) else int(replay_batch)


def tree_grid(depths=DEPTHS, branches=BRANCHES, thresholds=THRESHOLDS, max_nodes: int = 128) -> tuple:
    """FixedTree(depth, branch, threshold, max_nodes) for every combination; by default the research's 90."""
    return tuple(FixedTree(d, b, t, max_nodes) for d in depths for b in branches for t in thresholds)


def grid_methods(max_nodes: int = 128, linear=(5, 6, 7, 8)) -> list:
    """The research's 90 fixed trees, plus Linear(K) baselines."""
    return [*tree_grid(max_nodes=max_nodes), *(Linear(k) for k in linear)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", str(text)).strip("-") or "x"


def default_root(pair: str, folder=None) -> Path:
    """Where a pair's units live unless a sweep is told otherwise: <folder>/replay/<pair>/, beside the grid table
    in <folder> (default data/results/): benchmarks/grid.py writes there and the book reads there."""
    from .storage import results_dir

    return Path(folder or results_dir()) / "replay" / _slug(pair)


@dataclass(frozen=True)
class Unit:
    """One piece of work. kind: "target", "replay" or "timed"; `prompt` (text or ids) is not part of the key."""

    kind: str  # target, replay, timed or calibration
    pair: str
    prompt_id: str
    max_new_tokens: int
    draft: str = "base"
    method: str = ""
    prompt: object = dataclasses.field(default=None, compare=False, hash=False, repr=False)

    @property
    def key(self) -> str:
        parts = [self.pair] + ([self.draft] if self.kind != "target" else []) + [self.prompt_id,
                                                                                 str(self.max_new_tokens)]
        return "__".join(_slug(p) for p in parts + ([self.method] if self.method else []))

    def path(self, root) -> Path:
        folder = {"target": "target", "replay": "units", "timed": "timed", "calibration": "calibration"}[self.kind]
        return Path(root) / folder / f"{self.key}.{ {'timed': 'csv', 'calibration': 'json'}.get(self.kind, 'pt')}"

    def error_path(self, root) -> Path:
        return Path(root) / "errors" / f"{self.kind}__{self.key}.json"

    def target_unit(self) -> "Unit":
        return Unit("target", self.pair, self.prompt_id, self.max_new_tokens, prompt=self.prompt)


def _save_atomic(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# ---------------------------------------------------------------------------------------------------------------------
# Work (runs in Ray workers, or inline)

_PAIRS: dict = {}  # per worker process: loaded pairs, reused by every unit the worker runs


def load_named_pair(name: str, dtype: str = "bfloat16"):
    from ..models.pair import load_pair

    return load_pair(name, dtype=dtype)


def _pair(loader, name: str, draft: str):
    if (name, None) not in _PAIRS:
        _PAIRS[(name, None)] = loader(name)
    pair = _PAIRS[(name, None)]
    bits = DRAFT_BITS[draft]
    return pair if bits is None else running_pair(pair, FixedTree(draft_bits=bits))


_DENSE = weakref.WeakKeyDictionary()  # per worker process: a quantized draft's dense copy, made once


def replay_draft(pair, batch: int):
    """The draft a replay unit drafts `batch` starts at a time with: the pair's own, or for batch > 1 the dense copy
    of a quantized one (models.quant.dense_copy: the same weights through the dense GEMM, which reads them once per
    forward, where the int4/int8 kernels pass over them every row or two; data/results/grid_batching.csv)."""
    from ..models.quant import dense_copy, is_quantized

    if batch <= 1 or not is_quantized(pair.draft):
        return pair.draft
    if pair.draft not in _DENSE:
        _DENSE[pair.draft] = dense_copy(pair.draft)
    return _DENSE[pair.draft]


def run_target(unit: Unit, root, loader) -> dict:
    path = unit.path(root)
    if path.exists():
        return torch.load(path)
    return run_targets(unit, root, loader, [unit])[0]


def run_targets(unit: Unit, root, loader, group: list[Unit]) -> list[dict]:
    """The target units of `group` not stored yet, decoded as one batch (greedy_continuations), each saved
    atomically in group order; `unit` is the group's last, so a sweep skips the group once all are stored. A unit's
    `seconds` is its share of the batch's time."""
    todo = [u for u in group if not u.path(root).exists()]
    if not todo:
        return []
    pair = _pair(loader, unit.pair, "base")
    try:
        ids = [encode(pair, u.prompt) for u in todo]
        t0 = time.perf_counter()
        tokens = greedy_continuations(pair, ids, max(u.max_new_tokens for u in todo))
        seconds = (time.perf_counter() - t0) / len(todo)
    except Exception:  # noqa: BLE001 - one bad prompt must not cost the others: one at a time, then raise
        if len(todo) == 1:
            raise
        out, failed = [], None
        for u in todo:
            try:
                out += run_targets(u, root, loader, [u])
            except Exception as e:  # noqa: BLE001
                failed = failed or e
        if failed is not None:
            raise failed
        return out
    return [_save_target(u, pair, p, t, seconds, len(todo), root) for u, p, t in zip(todo, ids, tokens)]


def _save_target(unit: Unit, pair, ids, tokens, seconds: float, batch: int, root) -> dict:
    data = {"format": FORMAT, "unit": _unit_dict(unit), "prompt_ids": torch.tensor(ids, dtype=torch.int32),
            "target": torch.tensor(tokens[: unit.max_new_tokens], dtype=torch.int32), "seconds": seconds,
            "batch": batch, "date_utc": utc_now(), "git_commit": git_state()["git_commit"], "dtype": str(pair.dtype),
            "threads": torch.get_num_threads()}
    _save_atomic(data, unit.path(root))
    return data


def run_replay(unit: Unit, root, loader, target: dict, spec: SupersetSpec, methods, lengths, batch: int = 1) -> dict:
    """A replay unit: every superset the grid's policies reach, drafted `batch` starts at a time (SupersetDrafter)."""
    pair = _pair(loader, unit.pair, unit.draft)
    ids, tokens = target["prompt_ids"].tolist(), target["target"].tolist()
    t0 = time.perf_counter()
    draft = replay_draft(pair, batch)
    drafter = SupersetDrafter(draft, ids, tokens, spec, getattr(pair, "shared_vocab", None), batch)
    replay = Replay(ids, tokens, drafter=drafter, spec=spec)
    replay_grid(replay, methods, [n for n in lengths if n <= unit.max_new_tokens])
    starts = sorted(replay.supersets)
    packed = [replay.supersets[s].pack() for s in starts]
    sizes = torch.tensor([len(p["tokens"]) for p in packed], dtype=torch.int32)
    cat = lambda k: torch.cat([p[k] for p in packed]) if packed else torch.zeros(0)  # noqa: E731
    data = {"format": FORMAT, "unit": _unit_dict(unit), "spec": spec.to_dict(), "prompt_ids": target["prompt_ids"],
            "target": target["target"], "starts": torch.tensor(starts, dtype=torch.int32), "sizes": sizes,
            "tokens": cat("tokens"), "parents": cat("parents").to(torch.int32), "rank": cat("rank"),
            "logp": cat("logp"), "seconds": time.perf_counter() - t0, "draft_forwards": drafter.forwards,
            "date_utc": utc_now(), "git_commit": git_state()["git_commit"], "dtype": str(pair.draft.dtype),
            "target_seconds": target.get("seconds"), "threads": torch.get_num_threads(), "batch": batch,
            "drafted_starts": drafter.drafted, "dense_draft": draft is not pair.draft}
    _save_atomic(data, unit.path(root))
    return {"positions": len(starts), "nodes": int(sizes.sum()), "seconds": data["seconds"]}


def load_replay(path) -> Replay:
    """A stored replay unit as a Replay (no model needed)."""
    d = torch.load(path)
    supersets, offset = {}, 0
    for start, size in zip(d["starts"].tolist(), d["sizes"].tolist()):
        sl = slice(offset, offset + size)
        supersets[start] = Superset.unpack({k: d[k][sl] for k in ("tokens", "parents", "rank", "logp")})
        offset += size
    replay = Replay(d["prompt_ids"].tolist(), d["target"].tolist(), supersets, spec=SupersetSpec.from_dict(d["spec"]))
    replay.meta = {k: d[k] for k in ("unit", "seconds", "date_utc", "git_commit", "dtype") if k in d}
    return replay


def run_timed(unit: Unit, root, loader, repeats: int = 1) -> dict:
    """AR and the unit's policy on its prompt, `repeats` times interleaved (AR, policy, AR, policy, ...): each
    repeat's speedup divides by the AR run beside it, so a machine whose speed drifts over minutes (a shared host's
    memory bandwidth) moves both runs of a repeat together, and the median over repeats drops an odd one."""
    import pandas as pd

    from .harness import run_benchmark
    from .specs import parse_method

    pair = _pair(loader, unit.pair, "base")
    method = parse_method(unit.method)
    torch.set_num_threads(os.cpu_count() or 1)  # a timed unit has the machine to itself (timing_slot)
    frames = [run_benchmark(pair, [method], {unit.prompt_id: unit.prompt}, unit.max_new_tokens, repeats=1,
                            progress=False).assign(repeat=r) for r in range(repeats)]
    df = pd.concat(frames, ignore_index=True)
    df["draft"] = unit.draft
    write_atomic(unit.path(root), df.to_csv(index=False))
    return {"rows": len(df)}


def _unit_dict(unit: Unit) -> dict:
    d = dataclasses.asdict(unit)
    d["prompt"] = None if isinstance(d["prompt"], str) and len(d["prompt"]) > 10000 else d["prompt"]
    return d


def guarded(fn, unit: Unit, root, *args, threads: int | None = 1, **kwargs) -> dict:
    """Run one unit: skip it when stored, record an error file when it fails (never raise), clear that on success."""
    if unit.path(root).exists():
        return {"key": unit.key, "kind": unit.kind, "status": "skipped"}
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        info = fn(unit, root, *args, **kwargs)
        if not isinstance(info, dict) or "format" in info:
            info = {}
    except Exception as e:  # noqa: BLE001 - a failing unit must not kill the sweep
        return record_error(unit, root, e, traceback.format_exc())
    unit.error_path(root).unlink(missing_ok=True)
    return {"key": unit.key, "kind": unit.kind, "status": "done", "wall_s": time.perf_counter() - t0, **info}


def record_error(unit: Unit, root, error: BaseException, trace: str | None = None) -> dict:
    """Record a failed unit in <root>/errors/ (the unit, the error and, when known, its traceback): the sweep goes on,
    and a rerun retries the unit."""
    record = {"unit": _unit_dict(unit), "error": repr(error), "traceback": trace, "date_utc": utc_now()}
    write_atomic(unit.error_path(root), json.dumps(record, indent=1, default=str) + "\n")
    return {"key": unit.key, "kind": unit.kind, "status": "error", "error": repr(error)}


def _target_then_replay(unit: Unit, root, loader, spec, methods, lengths, batch: int = 1) -> dict:
    target = run_target(unit.target_unit(), root, loader)
    return run_replay(unit, root, loader, target, spec, methods, lengths, batch)


def _calibrate(unit: Unit, root, loader, prompt_ids) -> dict:
    """Cost curves, overheads and context curves of (pair, draft) on this machine, saved as a Calibration (a timed
    unit)."""
    from ..methods.base import Autoregressive
    from ..planning.calibrate import calibration_nodes, context_scale, load_or_measure_costs
    from ..planning.predict import Calibration, measure_overheads

    pair = _pair(loader, unit.pair, unit.draft)
    torch.set_num_threads(os.cpu_count() or 1)
    costs = load_or_measure_costs(pair, nodes=calibration_nodes(128))
    bits = DRAFT_BITS[unit.draft]
    methods = [Autoregressive(), FixedTree(3, 2, 0.0, 6, draft_bits=bits), FixedTree(6, 3, 0.0, 64, draft_bits=bits)]
    over = measure_overheads(_pair(loader, unit.pair, "base"), methods, prompt_ids, n=unit.max_new_tokens)
    context = {role: context_scale(model) for role, model in (("target", pair.target), ("draft", pair.draft))}
    calib = Calibration(costs, over, {"pair": unit.pair, "draft": unit.draft, "date_utc": utc_now(),
                                      "threads": torch.get_num_threads()}, context)
    unit.path(root).parent.mkdir(parents=True, exist_ok=True)
    calib.save(unit.path(root))
    return {}
