"""Run the book's experiments (dynatree_lib/experiments.py) by name, resumably, into data/results/.

    python benchmarks/run_experiments.py --list                          # the registry, with time estimates
    python benchmarks/run_experiments.py methods length --preset session
    python benchmarks/run_experiments.py all --preset session            # every experiment the notebooks read
    python benchmarks/run_experiments.py param_search --preset full      # hours: stop and rerun, it resumes

The pair is loaded once per dtype (an experiment that needs float32, `quality`, gets its own load). Results go to
<out>/<name>.csv for the session preset and <out>/<name>-<preset>.csv otherwise; finished configurations are
skipped on a rerun.
"""
from __future__ import annotations

import argparse
import gc
import time

import torch

from dynatree_lib.bench import experiments
from dynatree_lib.models.pair import add_model_args, pair_from_args


def _table(preset: str) -> str:
    lines = [f"{'experiment':<17}{'estimate':>10}  configurations  description"]
    total = 0.0
    for name in experiments.names():
        p = experiments.plan(name, preset)
        seconds = experiments.estimate_seconds(name, preset)
        alias = experiments.ALIASES.get(name)
        total += 0 if alias else seconds
        configs = (len(p.methods) + 1) * len(p.prompt_ids()) * len(p.lengths) * len(p.variants)
        what = f"same results as {alias}" if alias else experiments.description(name)
        lines.append(f"{name:<17}{_duration(seconds):>10}  {configs:>14}  {what}")
    lines.append(f"{'total':<17}{_duration(total):>10}  "
                 f"(2-core CPU, AR ~{experiments.AR_TOKENS_PER_S} tok/s, {experiments.SPEEDUP}x speculative, "
                 f"{experiments.QUANTIZED_SPEEDUP}x with an int4 draft; rough)")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"experiments, or 'all': {', '.join(experiments.names())}")
    parser.add_argument("--preset", default="session", choices=experiments.PRESETS, help="(default: %(default)s)")
    add_model_args(parser, dtype=None, dtype_help="bfloat16, or what the experiment needs, e.g. float32 for quality")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--out", default=None, help="results folder (default: data/results/)")
    parser.add_argument("--list", action="store_true", help="print the registry with time estimates; run nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    if args.list:
        print(_table(args.preset))
        return
    if not args.names:
        parser.error("name at least one experiment (or 'all'); --list shows them")
    chosen = list(experiments.EXPERIMENTS) if "all" in args.names else list(dict.fromkeys(
        experiments.ALIASES.get(n, n) for n in args.names))
    for name in chosen:
        experiments.plan(name, args.preset)  # unknown names fail before any model is loaded
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    # One load per dtype, in the order first needed.
    by_dtype: dict[str, list[str]] = {}
    for name in chosen:
        needed = experiments.plan(name, args.preset).dtype
        if needed and args.dtype and args.dtype != needed:
            print(f"note: {name} needs {needed}; --dtype {args.dtype} does not apply to it")
        by_dtype.setdefault(needed or args.dtype or "bfloat16", []).append(name)

    for dtype, group in by_dtype.items():
        pair = pair_from_args(args, dtype=dtype)
        for name in group:
            started = time.perf_counter()
            estimate = _duration(experiments.estimate_seconds(name, args.preset))
            print(f"== {name} ({args.preset}, {dtype}; estimate {estimate})")
            df = experiments.run_experiment(name, pair, args.preset, args.out, progress=not args.quiet)
            print(f"   {len(df)} rows, {df.attrs.get('missing', 0)} configurations missing, "
                  f"{_duration(time.perf_counter() - started)} -> {df.attrs.get('source')}")
        del pair
        gc.collect()


if __name__ == "__main__":
    main()
