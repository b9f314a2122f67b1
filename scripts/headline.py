"""Writes the intro's headline results (Markdown) from the stored results, for scripts/build_book.sh.

    python scripts/headline.py OUT.md [--results data/results]

Reads data/results/goal.csv (benchmarks/goal.py) and, when present, data/results/quality.csv; every number comes
from those rows (dynatree_lib.tables.headline). Without goal.csv the page says which command produces it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dynatree_lib import DynaTree, label
from dynatree_lib.bench import read_results
from dynatree_lib.book.tables import headline
from dynatree_lib.book.versus import versus_line


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "results")
    args = parser.parse_args(argv)
    # The speed table (three kinds of text, both plain decoders as reference) when it is stored, else the older
    # HumanEval-only goal table.
    name = "speed.csv" if (args.results / "speed.csv").exists() else "goal.csv"
    goal = read_results(args.results / name)
    if goal.empty:
        text = ("No goal benchmark is stored yet: `python benchmarks/goal.py` measures it (about 3 minutes per "
                "prompt on a 2-core CPU) and this section is rebuilt from its rows.")
    else:
        quality = read_results(args.results / "quality.csv")
        text = headline(goal, quality if not quality.empty else None, source=f"data/results/{name}")
        # longer generations measured on several prompts (single-prompt lengths stay in the benchmarks chapter)
        prompts = goal.groupby("max_new_tokens")["prompt_id"].nunique()
        for length in sorted(n for n, count in prompts.items() if n != 128 and count >= 3):
            text += (f"\n\n**At {length} new tokens**:\n\n"
                     + headline(goal, length=length, top=5, source=f"data/results/{name}"))
    # a separate one-process run of the bf16-draft default beside its peer, where the table above lacks that peer
    shipped = read_results(args.results / "speed_bf16.csv")
    for length in sorted(set(shipped.get("max_new_tokens", []))):
        text += ("\n\n**With the draft as shipped**, measured on its own: "
                 + versus_line(shipped, label(DynaTree()), "HFAssisted", length, "data/results/speed_bf16.csv"))
    args.out.write_text(text + "\n")
    print(f"headline: wrote {args.out}")


if __name__ == "__main__":
    main()
