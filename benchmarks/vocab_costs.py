"""What a frequency-trimmed draft vocabulary (FR-Spec; `draft_vocab=K`) buys and costs on this machine.

    python benchmarks/vocab_costs.py [--ks full,65536,32768,16384] [--nodes 1,4,16] [--reps 5] [--tokens 384]
                                     [--bits 4] [--out data/results/vocab_costs.csv]

1. Cost: one draft level (`planning.calibrate.forward_costs`: tree mask, all logits, on a 128-token cache) of the
   int4 draft with its output layer trimmed to K rows, for 1/4/16 nodes. The K variants are timed interleaved
   (every repetition times every K, in a rotating order) in one process, so load drifts hit all of them alike;
   rows keep the median and the minimum over repetitions.
2. Acceptance: on texts that are neither benchmark prompts nor in the ranking's corpus (three held-out stdlib
   modules, the stdlib's LICENSE history, transformers' package description), teacher-forced: the target's greedy
   next token at every position, and whether (a) it is outside the K kept tokens (a trimmed draft can never
   propose it), (b) the draft's top-1 equals it, over the full vocabulary and over the kept K only.
   (b) takes the argmax of the untrimmed int4 draft's logits over the kept columns: trimming then quantizing gives
   the kept rows the same int4 codes (per-row groups), so this is the trimmed draft's top-1 up to GEMM rounding.

Rows carry provenance (git state, versions, CPU, threads, load average before/after). On a shared machine the
numbers are rough; rerun on a quiet one before quoting them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dynatree_lib import load_pair  # noqa: E402
from dynatree_lib.models.provenance import provenance, write_table  # noqa: E402
from dynatree_lib.models.vocab import keep_ids  # noqa: E402
from dynatree_lib.planning.calibrate import forward_costs  # noqa: E402


def held_out_texts() -> dict[str, tuple[str, str]]:
    """name -> (kind, text). None of these is a benchmark prompt or in data/vocab's corpus (see its SOURCES.md)."""
    import importlib.metadata as md

    root = Path(sysconfig.get_paths()["stdlib"])
    texts = {f"stdlib/{name}": ("code", (root / name).read_text(encoding="utf-8"))
             for name in ("textwrap.py", "fractions.py", "shlex.py")}
    texts["stdlib/LICENSE.txt"] = ("prose", (root / "LICENSE.txt").read_text(encoding="utf-8"))
    description = md.metadata("transformers").get_payload() or ""
    texts["transformers/METADATA"] = ("prose", description)
    return texts


def parse_ks(spec: str) -> list[int | None]:
    return [None if k in ("full", "none") else int(k) for k in spec.split(",")]


@torch.inference_mode()
def acceptance_rows(pair, ks, tokens: int) -> list[dict]:
    rows = []
    kept = {k: keep_ids(pair, k) for k in ks if k is not None}
    draft = pair.with_draft(BITS).draft
    for name, (kind, text) in held_out_texts().items():
        ids = pair.tokenizer(text)["input_ids"][: tokens + 1]
        x = torch.tensor([ids])
        target_next = pair.target(input_ids=x, use_cache=False).logits[0, :-1].argmax(-1)
        draft_logits = draft(input_ids=x, use_cache=False).logits[0, :-1].float()
        truth = target_next
        for k in ks:
            if k is None:
                outside, agree = 0.0, float((draft_logits.argmax(-1) == truth).float().mean())
            else:
                keep = kept[k]
                outside = float((~torch.isin(truth, keep)).float().mean())
                agree = float((keep[draft_logits[:, keep].argmax(-1)] == truth).float().mean())
            rows.append({"measure": "acceptance", "text": name, "kind": kind, "K": k or "full",
                         "positions": len(truth), "target_outside_K": outside, "draft_top1_agrees": agree})
        print(name, [(r["K"], round(r["target_outside_K"], 4), round(r["draft_top1_agrees"], 4))
                     for r in rows[-len(ks):]], flush=True)
    return rows


def cost_rows(pair, ks, nodes, reps: int) -> list[dict]:
    models = {k: pair.with_draft(BITS, k).draft for k in ks}
    samples = {(k, n): [] for k in ks for n in nodes}
    for rep in range(reps):
        order = ks[rep % len(ks):] + ks[: rep % len(ks)]  # rotate: no K always runs first or last
        for k in order:
            for n, t in zip(nodes, forward_costs(models[k], nodes, prefix_len=128, repeats=3, seed=rep)):
                samples[(k, n)].append(t)
        now = " ".join(f"K={k or 'full'}:" + "/".join(f"{samples[(k, n)][-1] * 1e3:.0f}" for n in nodes) for k in ks)
        print(f"rep {rep + 1}/{reps} load {os.getloadavg()[0]:.2f} ms per level ({'/'.join(map(str, nodes))} "
              f"nodes): {now}", flush=True)
    rows = []
    for (k, n), times in samples.items():
        rows.append({"measure": "draft_level_cost", "K": k or "full", "nodes": n, "repetitions": len(times),
                     "median_s": statistics.median(times), "min_s": min(times),
                     "times_s": " ".join(f"{t:.5f}" for t in times)})
    return rows


BITS = 4


def main() -> None:
    global BITS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", default="full,65536,32768,16384")
    ap.add_argument("--nodes", default="1,4,16")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=384, help="positions per acceptance text")
    ap.add_argument("--bits", type=int, default=4, help="draft weights (4 or 8; 0: the bf16 draft)")
    ap.add_argument("--skip", choices=["cost", "acceptance"], default=None)
    ap.add_argument("--out", type=Path, default=REPO / "data" / "results" / "vocab_costs.csv")
    args = ap.parse_args()
    BITS = args.bits or None
    ks, nodes = parse_ks(args.ks), tuple(int(n) for n in args.nodes.split(","))
    load_before = os.getloadavg()
    started = time.perf_counter()
    pair = load_pair("embedded", dtype="bfloat16")
    rows = []
    if args.skip != "cost":
        rows += cost_rows(pair, ks, nodes, args.reps)
    if args.skip != "acceptance":
        rows += acceptance_rows(pair, ks, args.tokens)
    prov = provenance(pair, {"ks": args.ks, "nodes": args.nodes, "reps": args.reps, "tokens": args.tokens,
                             "bits": BITS})
    prov.update(loadavg_before=" ".join(f"{x:.2f}" for x in load_before),
                loadavg_after=" ".join(f"{x:.2f}" for x in os.getloadavg()), cpu_count=os.cpu_count(),
                wall_s=round(time.perf_counter() - started, 1))
    fields = ["measure", "K", "nodes", "repetitions", "median_s", "min_s", "times_s", "text", "kind", "positions",
              "target_outside_K", "draft_top1_agrees"]
    write_table(pd.DataFrame(rows, columns=fields), args.out, prov)
    for row in rows:
        if row["measure"] == "draft_level_cost":
            print(f"K={row['K']:>6} nodes={row['nodes']:>2}: median {row['median_s'] * 1e3:7.1f} ms, "
                  f"min {row['min_s'] * 1e3:7.1f} ms")
    print(f"wrote {args.out} ({len(rows)} rows; load {prov['loadavg_before']} -> {prov['loadavg_after']})")


if __name__ == "__main__":
    main()
