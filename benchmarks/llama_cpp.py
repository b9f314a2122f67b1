"""llama.cpp beside us: its plain and speculative decoding on the GGUF files the embedded pair is made from.

    bash scripts/build_llama_cpp.sh                         # once: builds the tools into $DYNATREE_CACHE/llama.cpp
    python benchmarks/llama_cpp.py --dry-run                # list configurations and prompts, run nothing
    python benchmarks/llama_cpp.py --prompts speed --tokens 128 --configs all   # the sweep, speed table's 10 prompts
    python benchmarks/llama_cpp.py --prompts speed,spec_bench --tokens 128,512 --configs "plain,draft,<best>,ngram-mod"
    python benchmarks/llama_cpp.py --report                 # the table from data/results/llama_cpp.csv

Prompts: "speed" is the speed table's 10 held-out prompts as benchmarks/goal.py takes them (raw text, as our harness
feeds them), "spec_bench" Spec-Bench's questions (5 per task, the first turn through the target's chat template, the
text handed to llama.cpp with its special tokens). Every run is greedy, ignores EOS (exactly --tokens new tokens) and
uses --threads threads (default 2) for target and draft. One row per run, resumable (a stored (config, prompt,
length) is skipped), with provenance: data/results/llama_cpp.csv (+ .meta.json). The table: per configuration and
length, tokens per second with the prefill included (as our rows count them), after the prefill, and the speedup over
llama.cpp's own plain decoding (per prompt, then the median and the worst prompt).
"""
from __future__ import annotations

import argparse

import pandas as pd

from dynatree_lib.bench import llama_cpp as lc
from dynatree_lib.bench.harness import load_1m
from dynatree_lib.bench.prompts import SPEED_SETS, SPEED_SKIP, prompt_sets
from dynatree_lib.bench.spec_bench import spec_bench_prompts
from dynatree_lib.bench.storage import _append, _write_meta, read_results, results_dir, results_path
from dynatree_lib.models.provenance import provenance, row_provenance, utc_now


# name -> (tool, extra arguments). "draft": llama.cpp's defaults (draft at most 3 tokens, no probability floor);
# a small sweep of the draft length and the draft's probability floor; two trees (llama-speculative with -np draft
# sequences split where the draft's probability is below p-split); the n-gram drafters, which need no draft model.
CONFIGS = {
    "plain": ("llama-completion", ()),
    "draft": ("llama-speculative-simple", ()),
    "draft n_max=8 p_min=0.5": ("llama-speculative-simple", ("--spec-draft-n-max", "8", "--spec-draft-p-min", "0.5")),
    "draft n_max=8 p_min=0.75": ("llama-speculative-simple", ("--spec-draft-n-max", "8", "--spec-draft-p-min", "0.75")),
    "draft n_max=16 p_min=0.75": ("llama-speculative-simple",
                                  ("--spec-draft-n-max", "16", "--spec-draft-p-min", "0.75")),
    "draft n_max=16 n_min=4 p_min=0.9": ("llama-speculative-simple",
                                         ("--spec-draft-n-max", "16", "--spec-draft-n-min", "4",
                                          "--spec-draft-p-min", "0.9")),
    "tree np=2 n_max=8 p_split=0.1": ("llama-speculative",
                                      ("-np", "2", "--spec-draft-n-max", "8", "--spec-draft-p-split", "0.1")),
    "tree np=4 n_max=8 p_split=0.3": ("llama-speculative",
                                      ("-np", "4", "--spec-draft-n-max", "8", "--spec-draft-p-split", "0.3")),
    "ngram-simple": ("llama-speculative-simple", ("--spec-type", "ngram-simple")),
    "ngram-mod": ("llama-speculative-simple", ("--spec-type", "ngram-mod")),
    "ngram-cache": ("llama-speculative-simple", ("--spec-type", "ngram-cache")),
    "lookup": ("llama-lookup", ()),
}
KEY = ("config", "prompt_id", "max_new_tokens")


def prompts(names: list[str]) -> pd.DataFrame:
    """id, kind and the text llama.cpp is given, for the prompt sets named."""
    frames = []
    for name in names:
        if name == "speed":
            frames.append(prompt_sets(SPEED_SETS, SPEED_SKIP)[["id", "kind", "text"]])
        elif name == "spec_bench":
            from transformers import AutoTokenizer

            from dynatree_lib.models.embedded import embedded_folder

            tokenizer = AutoTokenizer.from_pretrained(embedded_folder("target"))
            questions = spec_bench_prompts(5)
            text = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
                    for p in questions["prompt"]]
            frames.append(pd.DataFrame({"id": questions["id"], "kind": questions["task"], "text": text}))
        else:
            raise SystemExit(f"unknown prompt set {name!r}: speed, spec_bench")
    return pd.concat(frames, ignore_index=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", default="speed", help="comma-separated: speed, spec_bench (default: speed)")
    parser.add_argument("--tokens", default="128", help="comma-separated new-token counts (default: 128)")
    parser.add_argument("--configs", default="all", help=f"comma-separated names, or all: {', '.join(CONFIGS)}")
    parser.add_argument("--threads", type=int, default=2, help="threads for target and draft (default: 2)")
    parser.add_argument("--experiment", default="llama_cpp", help="results go to <out>/<experiment>.csv")
    parser.add_argument("--out", default=str(results_dir()), help="results folder (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")
    parser.add_argument("--report", action="store_true", help="run nothing: print the stored table")
    args = parser.parse_args(argv)
    path = results_path(args.experiment, args.out)
    if args.report:
        print(lc.llama_cpp_table(read_results(path)).to_string(index=False, float_format="{:.2f}".format))
        return
    names = list(CONFIGS) if args.configs == "all" else [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}")
    lengths = [int(t) for t in args.tokens.split(",") if t.strip()]
    todo_prompts = prompts([p.strip() for p in args.prompts.split(",") if p.strip()])
    table = read_results(path)
    done = set(map(tuple, table[list(KEY)].astype(str).to_numpy())) if not table.empty else set()
    units = [(pid, text, n, name) for pid, text in zip(todo_prompts["id"], todo_prompts["text"]) for n in lengths
             for name in names if (name, pid, str(n)) not in done]
    print(f"{len(units)} runs to do ({len(names)} configurations x {len(todo_prompts)} prompts x {lengths} tokens, "
          f"{len(todo_prompts) * len(lengths) * len(names) - len(units)} stored), into {path}")
    if args.dry_run:
        print("\n".join(f"{n}: {CONFIGS[n][0]} {' '.join(CONFIGS[n][1])}" for n in names))
        print(todo_prompts[["id", "kind"]].to_string(index=False))
        return
    session = {**provenance(params={**vars(args), "llama_cpp": lc.version(), "llama_cpp_python": lc.VERSION}),
               "dtype": lc.DTYPE}
    _write_meta(path, session)
    files = {"target_gguf": lc.embedded_gguf("target").name, "draft_gguf": lc.embedded_gguf("draft").name}
    for i, (pid, text, n, name) in enumerate(units, 1):
        tool_name, extra = CONFIGS[name]
        parsed, _ = lc.run(tool_name, extra, text, n, threads=args.threads)
        row = {"engine": "llama.cpp", "config": name, "tool": tool_name, "args": " ".join(extra), "prompt_id": pid,
               "max_new_tokens": n, **parsed, "threads": args.threads, "llama_cpp": session["params"]["llama_cpp"],
               "llama_cpp_python": lc.VERSION, "dtype": lc.DTYPE, **files, "load_1m": load_1m(),
               **row_provenance(session), "date_utc": utc_now()}
        table = _append(path, table, [row])
        print(f"[{i}/{len(units)}] {name} | {pid} | {n}: {parsed['tokens_per_s']:.2f} tok/s "
              f"({parsed['decode_tokens_per_s']:.2f} after the prefill)", flush=True)
    print(lc.llama_cpp_table(table).to_string(index=False, float_format="{:.2f}".format))


if __name__ == "__main__":
    main()
