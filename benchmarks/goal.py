"""The performance-goal table: every method against AR and transformers' assisted generation on the embedded pair.

    python benchmarks/goal.py                       # 5 HumanEval prompts, 128 new tokens, bf16
    python benchmarks/goal.py --prompts 164         # the full set (resumes: finished configurations are skipped)
    python benchmarks/goal.py --report              # print the table from data/results/goal.csv, run nothing

Per method: median tok/s, median speedup over AR, worst prompt's speedup, median speedup over HFAssisted
(per prompt, the ratio of the two same-process speedups), tokens per round, and the share of wall time spent
outside model forwards (bookkeeping). Raw rows with provenance: data/results/goal.csv (+ goal.meta.json).
"""
from __future__ import annotations

import argparse

from common import add_common_args, print_summary, sweep

from dynatree_lib.models.pair import load_pair
from dynatree_lib.bench.prompts import load_prompts

# Peers as a transformers user runs them, the same methods with the int4 draft copy (draft_bits=4: the draft's
# weights approximated, the target untouched, output unchanged), and HFAssisted given that same int4 draft, so the
# comparison with transformers is also made on equal drafts.
METHODS = ("AR,HFAssisted,HFAssisted(draft_bits=4),Linear(K=5),Linear(K=5,draft_bits=4),"
           "FixedTree(D=5,B=2,tau=0.03,N=32),FixedTree(D=5,B=2,tau=0.03,N=32,draft_bits=4),"
           "FixedTree(D=6,B=2,tau=0.03,N=32,draft_bits=4),FixedTree(D=8,B=3,tau=0.03,N=64,draft_bits=4),"
           "DynaTree(phase=3,draft_bits=4),HardwareAware(draft_bits=4)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=5, help="first N HumanEval prompts (default: 5; all: 164)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per generation (default: 128)")
    add_common_args(parser, experiment="goal", methods=METHODS)
    args = parser.parse_args(argv)
    prompts = load_prompts("humaneval", args.prompts)
    df = sweep(args, prompts, [args.tokens], lambda: load_pair("embedded", dtype=args.dtype))
    print(f"\nembedded pair, {args.dtype}, {df['prompt_id'].nunique()} HumanEval prompt(s), {args.tokens} new tokens")
    print_summary(df)


if __name__ == "__main__":
    main()
