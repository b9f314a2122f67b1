"""Command-line plumbing shared by the benchmark scripts (the measuring itself is dynatree_lib.bench)."""
from __future__ import annotations

import argparse

import pandas as pd
import torch

from dynatree_lib.bench import parse_methods, read_results, results_path, results_dir, run_benchmark, summarize
from dynatree_lib.models.pair import add_model_args


def add_common_args(parser: argparse.ArgumentParser, *, experiment: str | None, methods: str) -> None:
    parser.add_argument("--methods", default=methods,
                        help='methods in constructor syntax separated by commas, e.g. "AR, DynaTree(draft_bits=4)"; '
                             'a list value sweeps, "Linear(k=[4, 5, 6])" (default: %(default)s)')
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per configuration (default: 1)")
    parser.add_argument("--reference-repeats", type=int, default=None,
                        help="timed runs of plain decoding, the reference every speedup divides by, per prompt and "
                             "length; their median counts (default: --repeats)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed runs of each method before its first timed run (default: 1)")
    add_model_args(parser, dtype="bfloat16", dtype_help="as the stored results were measured")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice; recorded either way)")
    parser.add_argument("--experiment", default=experiment, required=experiment is None,
                        help="results go to <out>/<experiment>.csv (default: %(default)s)")
    parser.add_argument("--out", default=str(results_dir()), help="results folder (default: %(default)s)")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: summarise the results already stored for these settings")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def sweep(args, prompts: pd.DataFrame, lengths: list[int], load) -> pd.DataFrame:
    """Run (or with --report only read back) the configurations the arguments ask for; their rows."""
    try:
        methods = parse_methods(args.methods)
    except ValueError as error:
        raise SystemExit(f"--methods: {error}") from None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.report:
        df = read_results(results_path(args.experiment, args.out))
        if df.empty:
            raise SystemExit(f"no stored results for experiment {args.experiment!r} in {args.out}")
        from dynatree_lib.bench.sweep import rows_for
        from dynatree_lib.models.embedded import _as_dtype

        return rows_for(df, methods, prompts["id"], lengths, dtype=_as_dtype(args.dtype))
    pair = load()
    return run_benchmark(pair, methods, prompts, lengths, repeats=args.repeats, warmup=args.warmup,
                         reference_repeats=args.reference_repeats, out=args.out, experiment=args.experiment,
                         params=vars(args), progress=not args.quiet)


def print_summary(df: pd.DataFrame, baseline: str | None = "HFAssisted") -> pd.DataFrame:
    table = summarize(df, baseline=baseline)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    return table
