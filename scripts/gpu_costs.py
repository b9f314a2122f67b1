"""Cost curves on this machine for the research's model SHAPES, with random weights (no download, no network):
seconds of one forward over n tree nodes on a cache of a `prefix`-token prompt, for the target and the draft of
the Pythia-2.8B/70M and Qwen2.5-1.5B/0.5B pairs. Run by scripts/gpu_check.sh; usable alone:

    python scripts/gpu_costs.py --out data/results/gpu            # CUDA: float16 and bfloat16, int8 variants
    python scripts/gpu_costs.py --shrink --out /tmp/rehearsal      # CPU rehearsal: small shapes, few sizes

A forward's cost depends on the shapes, dtype, kernels and hardware, not on the weights' values, so random
weights measure what the real checkpoints would cost. The timing itself is the library's own
(`forward_costs`: tree mask, all logits, median of `repeats` after a warm-up, CUDA synchronised), so these curves
are the ones the hardware chapter's planner uses, measured on other hardware.

Variants per model and dtype: "dense" (the weights as they are), "int8-torch" (dynatree_lib's weight-only int8:
what `draft_bits=8` gives a draft), and "int8-bnb" (bitsandbytes LLM.int8(), only on CUDA with bitsandbytes
installed; otherwise a row with status "skipped"). A variant that fails writes a row with status "error" and the
message, and the script goes on; the exit status is 1 when any row is "error".

Writes into --out, every row with provenance columns (date_utc, device, device_name, torch, transformers, cuda,
bitsandbytes, dtype, git_commit, git_dirty):
- costs.csv: one row per model, dtype, variant and n (status ok / skipped / error);
- gpu_costs_<pair>_<dtype>[_draft-int8].csv: per pair, the columns of dynatree_lib's Costs.frame() (nodes,
  verify_s, draft_s, draft_over_verify), the form the hardware chapter reads GPU curves in;
- exactness.csv, with --junit: one row per exactness test and dtype (scripts/gpu_check.sh passes the reports).
"""
from __future__ import annotations

import argparse
import csv
import gc
import os
import sys
import time
from pathlib import Path

import torch

from dynatree_lib.models.provenance import (atomic_path, cpu_model, git_state, package_version, utc_now,
                                            write_atomic)
from dynatree_lib.models.quant import quantize_draft, quantize_int8
from dynatree_lib.planning.calibrate import forward_costs, monotone


# The research's pairs. Numbers are those of the published configs (EleutherAI/pythia-*, Qwen/Qwen2.5-*).
SHAPES = {
    "pythia-2.8b": dict(arch="gpt_neox", hidden_size=2560, num_hidden_layers=32, num_attention_heads=32,
                        intermediate_size=10240, vocab_size=50304, rotary_pct=0.25, max_position_embeddings=2048),
    "pythia-70m": dict(arch="gpt_neox", hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                       intermediate_size=2048, vocab_size=50304, rotary_pct=0.25, max_position_embeddings=2048),
    "qwen2.5-1.5b": dict(arch="qwen2", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, intermediate_size=8960, vocab_size=151936,
                         tie_word_embeddings=True, max_position_embeddings=32768),
    "qwen2.5-0.5b": dict(arch="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                         tie_word_embeddings=True, max_position_embeddings=32768),
}
ROLES = {"pythia-2.8b": "target", "pythia-70m": "draft", "qwen2.5-1.5b": "target", "qwen2.5-0.5b": "draft"}
PAIRS = {"pythia-2.8b-70m": ("pythia-2.8b", "pythia-70m"), "qwen2.5-1.5b-0.5b": ("qwen2.5-1.5b", "qwen2.5-0.5b")}
# --shrink: the same families and attention layouts at toy size, so that the CPU rehearsal takes seconds.
SHRUNK = {
    name: {**shape, "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 512,
           "num_attention_heads": 4, **({"num_key_value_heads": 2} if "num_key_value_heads" in shape else {})}
    for name, shape in SHAPES.items()
}
NODES = (1, 2, 4, 8, 16, 32, 64)
FIELDS = ["model", "role", "shape", "params", "dtype", "variant", "status", "nodes", "prefix_len", "repeats",
          "forward_s", "ms_per_forward", "peak_mem_bytes", "message",
          "date_utc", "device", "device_name", "torch", "transformers", "cuda", "bitsandbytes", "git_commit",
          "git_dirty", "shrink"]


def provenance(device: torch.device) -> dict:
    """models.provenance's git state, versions and hardware, under this script's column names."""
    state = git_state()
    return {
        "date_utc": utc_now(), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "torch": torch.__version__, "transformers": package_version("transformers") or "",
        "cuda": torch.version.cuda or "", "bitsandbytes": package_version("bitsandbytes") or "",
        "git_commit": state["git_commit"], "git_dirty": "" if state["git_dirty"] is None else state["git_dirty"],
    }


def build_model(shape: dict, dtype: torch.dtype, device: torch.device):
    """A randomly initialised causal LM of `shape`, created directly on `device` in `dtype`."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, Qwen2Config, Qwen2ForCausalLM

    kwargs = {k: v for k, v in shape.items() if k != "arch"}
    if shape["arch"] == "gpt_neox":
        config, cls = GPTNeoXConfig(**kwargs), GPTNeoXForCausalLM
    else:
        config, cls = Qwen2Config(**kwargs), Qwen2ForCausalLM
    config._attn_implementation = "sdpa"  # as dynatree_lib.load_pair loads models
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # init straight into the target dtype: no float32 copy of a 2.8B model
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=dtype).eval()


def measure(args) -> list[dict]:
    device = torch.device(args.device)
    shapes = SHRUNK if args.shrink else SHAPES
    info = provenance(device)
    bnb_ok = device.type == "cuda" and bool(info["bitsandbytes"])
    started = time.perf_counter()
    rows = []

    def row(name, shape, dtype, variant, status, **extra):
        base = {"model": name, "role": ROLES[name], "shape": "shrunk" if args.shrink else "full",
                "dtype": str(dtype).removeprefix("torch."), "variant": variant, "status": status,
                "prefix_len": args.prefix, "repeats": args.repeats, "shrink": args.shrink, **info}
        base.update(extra)
        return base

    # Dense curves of every model first, then the int8 variants: when the time budget runs out, what is lost is
    # the least important.
    variants = ["dense", "int8-torch", "int8-bnb"] if args.int8 else ["dense"]
    for variant in variants:
        for name in args.models:
            shape = shapes[name]
            for dtype_name in args.dtypes:
                dtype = getattr(torch, dtype_name)
                if time.perf_counter() - started > args.budget_s:
                    rows.append(row(name, shape, dtype, variant, "skipped", message="time budget spent"))
                    continue
                if variant == "int8-bnb" and not bnb_ok:
                    why = "needs CUDA" if device.type != "cuda" else "bitsandbytes is not installed"
                    rows.append(row(name, shape, dtype, variant, "skipped", message=why))
                    continue
                model = None
                t0 = time.perf_counter()
                try:
                    model = build_model(shape, dtype, device)
                    params = sum(p.numel() for p in model.parameters())
                    if variant == "int8-torch":
                        model = quantize_draft(model, bits=8)
                    elif variant == "int8-bnb":
                        model = quantize_int8(model, backend="bitsandbytes")  # LLM.int8(): saved and reloaded
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    times = forward_costs(model, args.nodes, args.prefix, args.repeats)
                    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else ""
                    for n, s in zip(args.nodes, times):
                        rows.append(row(name, shape, dtype, variant, "ok", params=params, nodes=n, forward_s=s,
                                        ms_per_forward=round(s * 1e3, 4), peak_mem_bytes=peak))
                    print(f"gpu_costs: {name:13s} {dtype_name:8s} {variant:10s} "
                          + " ".join(f"{n}:{s * 1e3:.2f}" for n, s in zip(args.nodes, times))
                          + f" ms  ({time.perf_counter() - t0:.1f} s)", flush=True)
                except Exception as error:  # noqa: BLE001 - one failing variant must not lose the others
                    message = f"{type(error).__name__}: {error}".replace("\n", " ")[:500]
                    rows.append(row(name, shape, dtype, variant, "error", message=message))
                    print(f"gpu_costs: {name} {dtype_name} {variant}: ERROR {message}", flush=True)
                finally:
                    del model
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
    return rows


EXACTNESS_FIELDS = ["test", "outcome", "time_s", "message", "dtype", "date_utc", "device", "device_name", "torch",
                    "transformers", "cuda", "bitsandbytes", "git_commit", "git_dirty"]


def junit_rows(path: Path, dtype: str, info: dict) -> list[dict]:
    """One row per test case of a pytest --junitxml report: passed, failed, error or skipped, and why."""
    import xml.etree.ElementTree as ET

    if not path.is_file():
        return [{"test": "(all)", "outcome": "no report", "message": f"{path} missing: the run was killed",
                 "dtype": dtype, **info}]
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (element.get("message") or element.text or "").replace("\n", " ")[:300]
                break
        rows.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                     "time_s": case.get("time"), "message": message, "dtype": dtype, **info})
    return rows


def write_csv(rows: list[dict], path: Path, fields=FIELDS) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_pair_files(rows: list[dict], out: Path) -> list[Path]:
    """gpu_costs_<pair>_<dtype>[_draft-int8].csv: the columns of the library's Costs.frame() (nodes, verify_s,
    draft_s, draft_over_verify; made monotone like Costs) plus provenance, one file per pair and dtype, the dense
    target with the dense draft and, when measured, with the int8 draft (draft_bits=8). The hardware chapter reads
    files of this form."""
    import pandas as pd

    ok = pd.DataFrame([r for r in rows if r["status"] == "ok"])
    written = []
    if ok.empty:
        return written
    for pair, (target, draft) in PAIRS.items():
        for dtype in ok["dtype"].unique():
            for draft_variant, suffix in (("dense", ""), ("int8-torch", "_draft-int8")):
                t = ok[(ok.model == target) & (ok.dtype == dtype) & (ok.variant == "dense")].sort_values("nodes")
                d = ok[(ok.model == draft) & (ok.dtype == dtype) & (ok.variant == draft_variant)].sort_values("nodes")
                if t.empty or d.empty or list(t.nodes) != list(d.nodes):
                    continue
                frame = pd.DataFrame({"nodes": list(t.nodes), "verify_s": monotone(t.forward_s),
                                      "draft_s": monotone(d.forward_s)})
                frame["draft_over_verify"] = frame["draft_s"] / frame["verify_s"]
                frame["raw_verify_s"], frame["raw_draft_s"] = list(t.forward_s), list(d.forward_s)
                frame["pair"], frame["draft_variant"] = pair, draft_variant
                for column in ["dtype", "prefix_len", "repeats", "shape", *FIELDS[FIELDS.index("date_utc"):]]:
                    frame[column] = t[column].iloc[0]
                path = out / f"gpu_costs_{pair}_{dtype}{suffix}.csv"
                write_atomic(path, frame.to_csv(index=False))
                written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for costs.csv")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shrink", action="store_true", help="toy shapes and few sizes (the CPU rehearsal)")
    parser.add_argument("--dtypes", default=None, help="comma-separated (default: float16,bfloat16 on CUDA, "
                        "float32 on CPU)")
    parser.add_argument("--models", default=",".join(SHAPES), help=f"comma-separated subset of {list(SHAPES)}")
    parser.add_argument("--nodes", default=None, help="comma-separated tree sizes (default 1,2,4,...,64; "
                        "1,4,16 with --shrink)")
    parser.add_argument("--prefix", type=int, default=None, help="prompt tokens in the cache (default 128; 32 "
                        "with --shrink)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes per size (default 5; 1 with "
                        "--shrink)")
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="dense weights only")
    parser.add_argument("--junit", nargs="*", default=[], metavar="DTYPE=REPORT.xml",
                        help="pytest --junitxml reports of the exactness tests, summarised into exactness.csv")
    parser.add_argument("--budget-s", type=float, default=float(os.environ.get("GPU_COSTS_BUDGET_S", 240)),
                        help="stop starting new measurements after this many seconds (rows say 'skipped')")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.dtypes = (args.dtypes or ("float16,bfloat16" if cuda else "float32")).split(",")
    args.models = args.models.split(",")
    unknown = set(args.models) - set(SHAPES)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}")
    args.nodes = tuple(int(n) for n in (args.nodes or ("1,4,16" if args.shrink else ",".join(map(str, NODES))))
                       .split(","))
    args.prefix = args.prefix or (32 if args.shrink else 128)
    args.repeats = args.repeats or (1 if args.shrink else 5)
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device (use --shrink --device cpu to rehearse)")
    if args.shrink:
        torch.set_num_threads(1)  # toy shapes: a second thread only adds contention on a shared machine
    started = time.perf_counter()
    if args.junit:
        info = provenance(torch.device(args.device))
        cases = []
        for spec in args.junit:
            dtype, _, report = spec.partition("=")
            cases += junit_rows(Path(report), dtype, info)
        write_csv(cases, args.out / "exactness.csv", EXACTNESS_FIELDS)
        counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
        print(f"gpu_costs: wrote {len(cases)} test outcomes to {args.out / 'exactness.csv'}: {counts}")
    rows = measure(args)
    out = args.out / "costs.csv"
    write_csv(rows, out)
    pair_files = write_pair_files(rows, args.out)
    errors = sum(r["status"] == "error" for r in rows)
    print(f"gpu_costs: wrote {len(rows)} rows to {out} and {len(pair_files)} per-pair files in "
          f"{time.perf_counter() - started:.1f} s"
          f"{f'; {errors} errors' if errors else ''}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
