"""A general sweep: any methods x prompt set x generation lengths on a model pair, resumable, into one experiment.

    python benchmarks/sweep.py --experiment length_scaling --set prose --prompts 3 --tokens 100,200,500 \
        --methods "Linear(k=6), FixedTree(depth=8, branch=3, threshold=0.05)"
    python benchmarks/sweep.py --experiment db_grid --methods "FixedTree(depth=range(3, 9), branch=[2, 3, 4])" --tokens 200
    python benchmarks/sweep.py --experiment db_grid --methods "FixedTree(depth=range(3, 9), branch=[2, 3, 4])" --report

`--target`/`--draft` are passed to dynatree_lib.models.load_pair (default: the embedded Qwen2.5-Coder pair).
"""
from __future__ import annotations

import argparse

from common import add_common_args, print_summary, sweep

from dynatree_lib.models.pair import pair_from_args
from dynatree_lib.bench.prompts import PROMPT_SETS, load_prompts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="humaneval", choices=PROMPT_SETS, help="prompt set (default: humaneval)")
    parser.add_argument("--prompts", type=int, default=3, help="first N prompts of the set (default: 3)")
    parser.add_argument("--tokens", default="128", help="comma-separated new-token counts (default: 128)")
    parser.add_argument("--baseline", default="HFAssisted", help="second reference in the summary (default: HFAssisted)")
    add_common_args(parser, experiment=None, methods="AR, Linear(k=5), FixedTree(depth=5, branch=2)")
    args = parser.parse_args(argv)
    lengths = [int(t) for t in args.tokens.split(",") if t.strip()]
    prompts = load_prompts(args.set, args.prompts)
    df = sweep(args, prompts, lengths, lambda: pair_from_args(args))
    print_summary(df, baseline=args.baseline)


if __name__ == "__main__":
    main()
