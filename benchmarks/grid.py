"""The research's whole parameter grid by acceptance replay, on Ray (dynatree_lib.bench.grid / gridrun).

    python benchmarks/grid.py                                  # the full grid on this machine (hours: see README)
    python benchmarks/grid.py --address auto                   # on a running Ray cluster (`ray start --head
                                                               #   --resources '{"timing_slot": 1}'` on each node)
    python benchmarks/grid.py --calibration base=gpu.json,int4=gpu_int4.json --no-calibrate --validate 0
                                                               # another machine's predicted speedups
    python benchmarks/grid.py --evaluate-only                  # rebuild the table from stored units

Stores units under --root (default data/results/replay/<pair>/): target/, units/, calibration/, timed/, errors/;
the table goes to --out (default data/results/grid.csv) and the validation to <root>/grid_validation.csv. Rerunning
skips every stored unit; a failed unit is retried (its error is in errors/).
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dynatree_lib.bench import grid, gridrun  # noqa: E402
from dynatree_lib.bench.prompts import prompt_sets  # noqa: E402
from dynatree_lib.bench.storage import results_dir  # noqa: E402
from dynatree_lib.models.provenance import provenance, write_table  # noqa: E402


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def prompts_of(spec: str) -> list[tuple[str, str]]:
    """"humaneval:20,prose:10" -> [(id, text)] (bench.prompts.prompt_sets)."""
    table = prompt_sets(spec)
    return list(zip(table["id"], table["text"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="embedded", help="pair name or target model (load_pair; default: %(default)s)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--prompts", default="humaneval:20,prose:10", help="sets and counts (default: %(default)s)")
    p.add_argument("--drafts", default="base,int4", help="draft variants: base (the pair's dtype), int8, int4")
    p.add_argument("--lengths", default=",".join(map(str, grid.LENGTHS)), help="default: %(default)s")
    p.add_argument("--linear", default="5,6,7,8", help="Linear(K) baselines replayed beside the trees")
    p.add_argument("--root", default=None, help="unit store (default: data/results/replay/<pair>)")
    p.add_argument("--out", default=None, help="table (default: data/results/grid.csv)")
    p.add_argument("--address", default=None, help="join a Ray cluster (e.g. auto); default: a local one")
    p.add_argument("--workers", type=int, default=None, help="local Ray workers (default: one per core)")
    p.add_argument("--validate", type=int, default=24, help="timed (policy, prompt) pairs (default: %(default)s)")
    p.add_argument("--validate-length", type=int, default=200)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per validation pair")
    p.add_argument("--target-batch", type=int, default=grid.TARGET_BATCH,
                   help="prompts whose target continuations are decoded as one batch (default: %(default)s)")
    p.add_argument("--replay-batch", type=int, default=None,
                   help=f"starts whose draft supersets are drafted together (default, per draft: {grid.REPLAY_BATCH})")
    p.add_argument("--calibration", default="", help="draft=path.json,... Calibrations to use (e.g. from a GPU)")
    p.add_argument("--no-calibrate", action="store_true", help="do not measure this machine's cost curves")
    p.add_argument("--evaluate-only", action="store_true", help="run nothing: build the table from stored units")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    from dynatree_lib.planning.predict import Calibration

    drafts = [d for d in args.drafts.split(",") if d]
    lengths = _ints(args.lengths)
    methods = grid.grid_methods(linear=tuple(_ints(args.linear)))
    root = Path(args.root) if args.root else grid.default_root(args.pair)
    out = Path(args.out) if args.out else results_dir() / "grid.csv"
    calibrations = {}
    for item in filter(None, args.calibration.split(",")):
        draft, _, path = item.partition("=")
        calibrations[draft] = Calibration.load(path)
    if args.evaluate_only:
        for d in drafts:
            stored = grid.Unit("calibration", args.pair, "calibration", 64, draft=d).path(root)
            if d not in calibrations and stored.exists() and not args.no_calibrate:
                calibrations[d] = Calibration.load(stored)
        df = gridrun.evaluate(root, methods, lengths, calibrations)
        params = {"pair": args.pair, "evaluate_only": True}
        print(write_table(df, out, provenance(None, params)), len(df), "rows")  # the dtype: from the rows
        if calibrations and len(df):
            print(json.dumps(gridrun.write_validation(root, df, params), indent=1, default=str))
        return 0
    loader = functools.partial(grid.load_named_pair, dtype=args.dtype)
    started = time.perf_counter()
    report = gridrun.run_grid(args.pair, prompts_of(args.prompts), root=root, loader=loader, drafts=drafts,
                           lengths=lengths, methods=methods, address=args.address, workers=args.workers,
                           validate=args.validate, validate_length=args.validate_length, calibrations=calibrations,
                           calibrate=not args.no_calibrate, repeats=args.repeats, out=out, progress=not args.quiet,
                           target_batch=args.target_batch,
                           replay_batch=grid.REPLAY_BATCH if args.replay_batch is None else args.replay_batch)
    summary = {phase: _counts(rows) for phase, rows in report.items() if isinstance(rows, list)}
    summary.update({k: v for k, v in report.items() if not isinstance(v, list)})
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, indent=1, default=str))
    return 1 if any(c.get("error") for c in summary.values() if isinstance(c, dict)) else 0


def _counts(rows) -> dict:
    counts: dict = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


if __name__ == "__main__":
    raise SystemExit(main())
