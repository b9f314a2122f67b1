"""Writes the intro's verdict from the stored speed table, for scripts/build_book.sh; or prints its table.

    python scripts/headline.py OUT.md [--results data/results]   # OUT.md and OUT's figure (_figure.html beside it)
    python scripts/headline.py --print [--results data/results]  # the current table, as text (README)

Every number comes from data/results/speed.csv (benchmarks/goal.py) through dynatree_lib.book.verdict, and
Spec-Bench's and the second machine's sentences from spec_bench.csv and speed_other_cpu.csv. Without
speed.csv the page says which command produces it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from dynatree_lib.bench import read_results
from dynatree_lib.bench.storage import distinct
from dynatree_lib.book import page as book_page, spec_bench, verdict
from dynatree_lib.book.tables import prompts_described
from dynatree_lib.models.provenance import write_atomic

SHOWN_ELSEWHERE = ["Configuration", "Prompts"]  # the figure's hover and the provenance line carry these
MISSING = ("No speed table is stored yet: `python benchmarks/goal.py --sets humaneval:4,prose:3,technical:3 --skip 10 "
           "--experiment speed` measures it, and this section is rebuilt from its rows.")


def page(speed: pd.DataFrame, figure_file: str) -> str:
    n = verdict.numbers(speed)
    short, long = n["short"], n["long"]
    table = verdict.summary(speed, long)
    part = speed[speed["max_new_tokens"].isin([short, long])]
    provenance = (f"{prompts_described(part)} none of which tuning saw; {', '.join(distinct(part, 'dtype'))} on "
                  f"{', '.join(distinct(part, 'cpu'))} with {', '.join(distinct(part, 'torch_threads'))} threads; "
                  f"`benchmarks/goal.py`, stored in `data/results/speed.csv` (commit "
                  f"{', '.join(distinct(part, 'git_commit', 7))}, {', '.join(distinct(part, 'date_utc', 10))})")
    return "\n".join([
        verdict.verdict(n), "",
        "```{raw} html", f":file: {figure_file}", "```", "",
        f"**Figure 1.** Speedup over plain decoding against the number of new tokens, median over prompts; the band "
        f"is the range over prompts (fewer prompts were measured past {long} tokens: hover for the count). The "
        "buttons select a kind of text. Dashed: the draft as shipped (bf16); solid: its int4 copy.", "",
        book_page.table(table.drop(columns=SHOWN_ELSEWHERE), "headline-table",
                        f"Each method at {long} new tokens, fastest first: speedup over plain decoding (median and "
                        "slowest prompt), over transformers' assisted generation given the same draft (per prompt, "
                        "each speedup over its own process's plain decoding), tokens committed per target forward, "
                        "and the share of runs token-identical to plain decoding in bf16.", verdict.FORMATS), "",
        f"Measured on {provenance}. The {{doc}}`benchmarks chapter <../notebooks/06_benchmarks>` has every method "
        f"and length; the {{doc}}`quality chapter <../notebooks/08_quality>` the exactness checks.",
    ])


def field(spec: pd.DataFrame) -> str:
    """One sentence on Spec-Bench (benchmarks/spec_bench.py's rows), or "" where none are stored."""
    lead, peer = "DynaTree(draft_bits=4)", "HFAssisted(draft_bits=4)"
    if spec.empty or not {lead, peer} <= set(spec["method"]):
        return ""
    length = int(spec["max_new_tokens"].max())
    cells = spec_bench.spec_bench_table(spec, length)
    overall = cells[(cells["method"] == lead) & (cells["task"] == "overall")].iloc[0]
    over = spec_bench.spec_bench_versus(spec, lead, peer, length)
    tasks = over.drop("overall")
    names = spec_bench.TASK_TITLES
    return (f"**On the field's benchmark.** On Spec-Bench's six tasks ({spec['prompt_id'].nunique()} questions, "
            f"{length} new tokens) DynaTree with the int4 draft runs {overall['speedup']:.2f}x as fast as plain "
            f"decoding and {over['overall']:.2f}x as fast as transformers' assisted generation with the same draft, "
            f"from {tasks.min():.2f}x on {names[tasks.idxmin()]} to {tasks.max():.2f}x on {names[tasks.idxmax()]}; "
            "the {doc}`benchmarks chapter <../notebooks/06_benchmarks>` shows Spec-Bench's table and llama.cpp, the "
            "CPU's own engine, beside this library.")


def other_cpu(other: pd.DataFrame, length: int = 128) -> str:
    """One sentence on the contenders timed on a second machine (speed_other_cpu.csv), or "" where none are stored."""
    if other.empty:
        return ""
    n = verdict.machine_numbers(other, length)
    return (f"**On another CPU.** Timed again on a second machine ({n['cpu']}, {n['prompts']} of the same prompts, "
            f"{length} new tokens), DynaTree with the int4 draft runs {n['lead']:.2f}x as fast as plain decoding and "
            f"{n['lead_vs_peer']:.2f}x as fast as transformers' assisted generation with the same draft: products "
            f"over many rows cost more there beside a one-token step (a verification of the tree takes "
            f"{n['verify_steps']:.2f} plain steps), and every speculative method gains less; the "
            "{doc}`benchmarks chapter <../notebooks/06_benchmarks>` compares the two machines.")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--print", action="store_true", help="print the current table and verdict instead")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "results")
    args = parser.parse_args(argv)
    if not args.print and args.out is None:
        parser.error("give OUT.md, or --print")
    speed = read_results(args.results / "speed.csv")
    if args.print:
        if speed.empty:
            print(MISSING)
            return
        n = verdict.numbers(speed)
        print(verdict.verdict(n) + "\n")
        table = verdict.summary(speed, n["long"]).drop(columns=SHOWN_ELSEWHERE)
        print(book_page.formatted(table, verdict.FORMATS).to_string(index=False))
        return
    figure_file = args.out.with_name(args.out.stem + "_figure.html")
    if speed.empty:
        write_atomic(args.out, MISSING + "\n")
        return
    fig = verdict.figure(speed)
    # plotly.js once per site, from _static (scripts/build_book.sh copies it there); the intro is book/intro.html
    html = fig.to_html(full_html=False, include_plotlyjs=False, div_id="verdict-figure", config={"displaylogo": False})
    write_atomic(figure_file, '<script src="../_static/plotly.min.js"></script>\n' + html)
    sentences = [field(read_results(args.results / "spec_bench.csv")),
                 other_cpu(read_results(args.results / "speed_other_cpu.csv"))]
    write_atomic(args.out, "\n\n".join([page(speed, figure_file.name), *filter(None, sentences)]) + "\n")
    print(f"headline: wrote {args.out} and {figure_file}")


if __name__ == "__main__":
    main()
