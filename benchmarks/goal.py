"""The performance-goal table: every method against AR and transformers' assisted generation on the embedded pair.

    python benchmarks/goal.py                       # 5 HumanEval prompts, 128 new tokens, bf16
    python benchmarks/goal.py --prompts 164         # the full set (resumes: finished configurations are skipped)
    python benchmarks/goal.py --report              # print the table from data/results/goal.csv, run nothing
    python benchmarks/goal.py --sets humaneval:4,prose:3,technical:3 --skip 10 --experiment speed \
        --methods "$(python benchmarks/goal.py --speed-methods)"   # three kinds of text, new prompts (the "speed" table)

Per method: median tok/s, median speedup over AR, worst prompt's speedup, median speedup over HFAssisted
(per prompt, the ratio of the two same-process speedups), tokens per round, and the share of wall time spent
outside model forwards (bookkeeping). Raw rows with provenance: data/results/goal.csv (+ goal.meta.json).
"""
from __future__ import annotations

import argparse

from common import add_common_args, print_summary, sweep

from dynatree_lib.models.pair import pair_from_args
from dynatree_lib.bench.prompts import SPEED_SETS, SPEED_SKIP, load_prompts, prompt_sets

# Peers as a transformers user runs them, the same methods with the int4 draft copy (draft_bits=4: the draft's
# weights approximated, the target untouched, output unchanged), and HFAssisted given that same int4 draft, so the
# comparison with transformers is also made on equal drafts.
METHODS = ("AR, HFAssisted, HFAssisted(draft_bits=4), Linear(k=5), Linear(k=5, draft_bits=4), "
           "FixedTree(depth=5, branch=2, max_nodes=32), FixedTree(depth=5, branch=2, max_nodes=32, draft_bits=4), "
           "FixedTree(depth=6, branch=2, max_nodes=32, draft_bits=4), "
           "FixedTree(depth=8, branch=3, max_nodes=64, draft_bits=4), AdaptiveTree(draft_bits=4), "
           "HardwareAware(draft_bits=4)")


# The "speed" table (trees that beat the best chain): the defaults as shipped, with the bf16 and the int4
# draft, each also with staging switched the other way (DynaTree stages an unquantized draft by default), beside
# transformers' assisted generation given the same drafts; both plain decoders are measured and the faster one is
# the reference (bench.harness: HFGenerate).
SPEED_METHODS = ("AR, HFGenerate, HFAssisted, HFAssisted(draft_bits=4), DynaTree, DynaTree(draft_bits=4), "
                 "DynaTree(staged=False), DynaTree(draft_bits=4, staged=True), "
                 "DynaTree(draft_bits=4, draft_vocab=32768), Linear(k=5, draft_bits=4), AdaptiveTree(draft_bits=4)")

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=5, help="first N HumanEval prompts (default: 5; all: 164)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per generation (default: 128)")
    parser.add_argument("--sets", default=None,
                        help='prompts from several sets, e.g. "humaneval:4,prose:3,technical:3" (instead of --prompts)')
    parser.add_argument("--skip", type=int, default=0, help="with --sets: leave out the first N prompts of each set")
    parser.add_argument("--speed-methods", action="store_true", help="print the speed table's method list and exit")
    add_common_args(parser, experiment="goal", methods=METHODS)
    args = parser.parse_args(argv)
    if args.speed_methods:
        print(SPEED_METHODS)
        return
    prompts = prompt_sets(args.sets, args.skip) if args.sets else load_prompts("humaneval", args.prompts)
    df = sweep(args, prompts, [args.tokens], lambda: pair_from_args(args))
    print(f"\n{args.target} pair, {args.dtype}, {df['prompt_id'].nunique()} prompt(s), {args.tokens} new tokens")
    print_summary(df)
    if "HFAssisted(draft_bits=4)" in set(df["method"]):
        print("\nover transformers' assisted generation given the same int4 draft:")
        print_summary(df, baseline="HFAssisted(draft_bits=4)")


if __name__ == "__main__":
    main()
