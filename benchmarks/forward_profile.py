"""Where a forward's time goes, for the target and each draft: weight matmuls, attention, other ops, Python between.

    python benchmarks/forward_profile.py [--nodes 1,4,16] [--prefix 128] [--repeats 10] [--bits 0,4]
                                         [--out data/results/forward_profile.csv]

`bench.profile.forward_profile` per model: the bf16 target (a verify forward), the bf16 draft and its int4 copy
(a draft level). Rows carry provenance (git state, versions, CPU, threads, load average before/after); run it on
an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dynatree_lib import load_pair  # noqa: E402
from dynatree_lib.bench.profile import forward_profile, profile_table  # noqa: E402
from dynatree_lib.models.provenance import provenance, write_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="1,4,16")
    ap.add_argument("--prefix", type=int, default=128, help="cached tokens before each forward")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--bits", default="0,4", help="draft weights to profile (0: the bf16 draft)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "data" / "results" / "forward_profile.csv")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    nodes = tuple(int(n) for n in args.nodes.split(","))
    load_before = os.getloadavg()
    started = time.perf_counter()
    pair = load_pair("embedded", dtype="bfloat16")
    models = {"target": pair.target}
    for bits in (int(b) for b in args.bits.split(",")):
        models["draft" if bits == 0 else f"draft int{bits}"] = pair.with_draft(bits or None).draft
    frames = []
    for name, model in models.items():
        frame = forward_profile(model, nodes, prefix_len=args.prefix, repeats=args.repeats)
        frames.append(frame.assign(model=name))
        print(name, profile_table(frame).to_string(), sep="\n", flush=True)
    prov = provenance(pair, {"nodes": args.nodes, "prefix": args.prefix, "repeats": args.repeats,
                             "bits": args.bits})
    prov.update(loadavg_before=" ".join(f"{x:.2f}" for x in load_before),
                loadavg_after=" ".join(f"{x:.2f}" for x in os.getloadavg()),
                wall_s=round(time.perf_counter() - started, 1))
    df = pd.concat(frames, ignore_index=True)[["model", "nodes", "part", "ms", "share", "wall_ms", "matmul_ms"]]
    write_table(df, args.out, prov)
    print(f"wrote {args.out} ({len(df)} rows; load {prov['loadavg_before']} -> {prov['loadavg_after']})")


if __name__ == "__main__":
    main()
