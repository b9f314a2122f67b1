"""Command line: `python -m dynatree_lib generate|demo|fetch ...`."""
from __future__ import annotations

import argparse
import json
import sys

from .models.pair import add_model_args, pair_from_args


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynatree_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="one generation with one method, printing the text and its stats")
    gen.add_argument("prompt")
    gen.add_argument("--method", default="FixedTree(depth=5, branch=2, threshold=0.03)",
                     help='constructor syntax, e.g. "AR", "Linear(k=6)", "FixedTree(depth=8, branch=3)", '
                          '"DynaTree(draft_bits=4)"')
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--ignore-eos", action="store_true", help="force the full length (benchmarks do)")
    gen.add_argument("--json", action="store_true", help="print stats as JSON")
    add_model_args(gen)

    demo = sub.add_parser("demo", help="AR, Linear and FixedTree side by side on one prompt")
    demo.add_argument("--prompt", default="def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n")
    demo.add_argument("--max-new-tokens", type=int, default=64)
    add_model_args(demo)

    sub.add_parser("fetch", help="download, verify and convert the embedded model pair (once)")

    args = parser.parse_args(argv)
    if args.command == "fetch":
        from .models.embedded import fetch_embedded

        print(fetch_embedded())
        return 0

    from . import generate, label
    from .bench.specs import parse_method

    if args.command == "generate":
        try:
            method = parse_method(args.method)  # before the models load: a typo costs no model load
        except ValueError as error:
            parser.error(f"--method: {error}")
        out = generate(pair_from_args(args), args.prompt, method, args.max_new_tokens, stop_at_eos=not args.ignore_eos)
        if args.json:
            print(json.dumps(out.stats, indent=1))
        else:
            print(out.text)
            print(_stats_line(label(out.method), out.stats), file=sys.stderr)
        return 0

    from .methods.base import Autoregressive, FixedTree, Linear

    pair = pair_from_args(args)
    methods = [Autoregressive(), Linear(k=5), FixedTree(depth=5, branch=2, threshold=0.03)]
    results = [generate(pair, args.prompt, m, args.max_new_tokens, stop_at_eos=False) for m in methods]
    ar = results[0]
    for out in results:
        same = "identical to AR" if out.token_ids == ar.token_ids else "DIFFERS from AR"
        print(f"=== {label(out.method)} ({same})\n{out.text}\n")
    for out in results:
        print(_stats_line(label(out.method), out.stats, ar.stats["wall_s"]))
    return 0


def _stats_line(name, stats, ar_wall=None) -> str:
    speed = f"  speedup {ar_wall / stats['wall_s']:.2f}x" if ar_wall else ""
    return (f"{name:<40} {stats['tokens_per_s']:6.2f} tok/s{speed}  tokens/round {stats['tokens_per_round']:.2f}"
            f"  acceptance(depth) {stats['acceptance_depth']:.2f}")
