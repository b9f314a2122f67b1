"""Where bf16 runs leave bf16 plain decoding (AR), how near a tie each flip was, and whether the text after it is worse.

    python benchmarks/flips.py                      # DynaTree(draft_bits=4), DynaTree() on the speed table's 10 prompts
    python benchmarks/flips.py --tokens 128,512     # both lengths of the speed table (resumes: stored units skipped)
    python benchmarks/flips.py --report             # print the stored rows that diverged, run nothing

A computation, not a timing: AR and every method are generated again (EOS ignored), and per (method, prompt, length)
one row says where the method first left AR's tokens, the target's top-2 logit gap there (teacher-forced on the
shared prefix; in logits and in spacings of the dtype), AR's and the method's token, and for both generations the
share of repeated 4-grams and the perplexity under the target (dynatree_lib.bench.quality.flip_table). Rows with
provenance: data/results/flips.csv (+ flips.meta.json), resumable one (prompt, length) at a time.
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch

from dynatree_lib.bench import parse_methods, read_results, results_dir, results_path
from dynatree_lib.bench.prompts import SPEED_SETS, SPEED_SKIP, prompt_sets
from dynatree_lib.bench.quality import store_flips
from dynatree_lib.models.pair import add_model_args, pair_from_args

METHODS = "DynaTree(draft_bits=4), DynaTree()"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=METHODS, help="methods compared with AR (default: %(default)s)")
    parser.add_argument("--tokens", default="128", help="comma-separated new-token counts (default: 128)")
    parser.add_argument("--sets", default=SPEED_SETS, help="prompt sets as goal.py reads them (default: %(default)s)")
    parser.add_argument("--skip", type=int, default=SPEED_SKIP,
                        help="leave out the first N prompts of each set (default: %(default)s)")
    add_model_args(parser, dtype="bfloat16", dtype_help="the speed table's runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--experiment", default="flips", help="results go to <out>/<experiment>.csv")
    parser.add_argument("--out", default=str(results_dir()), help="results folder (default: %(default)s)")
    parser.add_argument("--report", action="store_true", help="run nothing: print the stored rows that diverged")
    args = parser.parse_args(argv)
    try:
        methods = parse_methods(args.methods)
        lengths = [int(t) for t in args.tokens.split(",") if t.strip()]
    except ValueError as error:
        raise SystemExit(f"--methods/--tokens: {error}") from None
    if args.report:
        df = read_results(results_path(args.experiment, args.out))
    else:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        df = store_flips(pair_from_args(args), prompt_sets(args.sets, args.skip), methods, lengths,
                         experiment=args.experiment, out=args.out, params=vars(args))
    if df.empty:
        raise SystemExit(f"no stored rows for experiment {args.experiment!r} in {args.out}")
    columns = ["method", "prompt_id", "max_new_tokens", "first_divergence", "gap_spacings", "repeat4_ar",
               "repeat4_method", "perplexity_ar", "perplexity_method"]
    diverged = df[df["first_divergence"] >= 0]
    print(f"{len(diverged)} of {len(df)} runs left AR's tokens")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(diverged[columns].to_string(index=False))


if __name__ == "__main__":
    main()
