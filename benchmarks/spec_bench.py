"""Spec-Bench on a model pair (embedded by default): every method on each task's questions, in Spec-Bench's layout.

    python benchmarks/spec_bench.py --dry-run             # list the prompts and the units to run, load nothing
    python benchmarks/spec_bench.py                       # 5 questions per task, 128 new tokens, bf16, one process
    python benchmarks/spec_bench.py --report              # print the table from data/results/spec_bench.csv
    python benchmarks/spec_bench.py --dtype float32 --per-task 1 --experiment spec_bench_fp32   # exactness subset

The table (dynatree_lib.book.spec_bench): one row per method, one column per task plus overall, each cell the
speedup over AR (median over the task's questions of per-question same-process ratios) and the mean accepted tokens
per target forward, and the share of runs token-identical to AR. Then each method's speedup over transformers'
assisted generation given the same draft, per task. Raw rows with provenance: data/results/<experiment>.csv.
"""
from __future__ import annotations

import argparse

import pandas as pd
from common import add_common_args, sweep

from dynatree_lib.bench import parse_methods, with_ar
from dynatree_lib.bench.spec_bench import TASKS, spec_bench_prompts
from dynatree_lib.book.spec_bench import spec_bench_layout, spec_bench_table, spec_bench_versus
from dynatree_lib.methods.base import label
from dynatree_lib.models.pair import pair_from_args

# The issue's list: plain decoding, transformers' assisted generation with the shipped and the int4 draft, the best
# chain, prompt lookup as transformers runs it (Spec-Bench's PLD row), and the default with both drafts.
METHODS = ("AR,HFAssisted(),HFAssisted(draft_bits=4),Linear(k=5, draft_bits=4),HFPromptLookup(),"
           "DynaTree(),DynaTree(draft_bits=4)")
# Each of our methods is set beside the peer that drafts with the same draft.
PEERS = ("HFAssisted", "HFAssisted(draft_bits=4)")


def report(df: pd.DataFrame, length: int) -> None:
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(spec_bench_layout(spec_bench_table(df, length)).to_string(index=False))
        for peer in (p for p in PEERS if p in set(df["method"])):
            bits = "draft_bits=4" in peer
            others = [m for m in dict.fromkeys(df["method"]) if m not in ("AR", peer) and
                      ("draft_bits=4" in m) == bits and not m.startswith(("HFAssisted", "HFPromptLookup"))]
            if others:
                print(f"\nover {peer} (per question, the ratio of the two speedups over AR; medians):")
                print(pd.DataFrame([spec_bench_versus(df, m, peer, length) for m in others]).to_string(
                    float_format="{:.2f}x".format))


def main(argv=None, load=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-task", type=int, default=5, help="questions per task (default: 5; Spec-Bench: 80)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks (default: all six)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per generation (default: 128)")
    parser.add_argument("--dry-run", action="store_true", help="list prompts and units, load and run nothing")
    add_common_args(parser, experiment="spec_bench", methods=METHODS)
    args = parser.parse_args(argv)
    prompts = spec_bench_prompts(args.per_task, [t.strip() for t in args.tasks.split(",") if t.strip()])
    if args.dry_run:
        methods = [label(m) for m in with_ar(parse_methods(args.methods))]
        print(prompts[["id", "task", "category"]].to_string(index=False))
        print(f"\n{len(methods)} methods x {len(prompts)} questions x {args.tokens} tokens = "
              f"{len(methods) * len(prompts)} units, into {args.experiment}.csv:")
        print("\n".join(methods))
        return
    df = sweep(args, prompts[["id", "prompt"]], [args.tokens],
               load or (lambda: pair_from_args(args)))
    print(f"\n{df['pair'].iloc[0]}, {df['dtype'].iloc[0]}, {df['prompt_id'].nunique()} question(s), "
          f"{args.tokens} new tokens")
    report(df, args.tokens)


if __name__ == "__main__":
    main()
