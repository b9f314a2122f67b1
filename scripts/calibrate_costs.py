"""Calibrate this machine for the grid's predicted speedups: cost curves and per-round overheads of the research's
model pairs, built with random weights from their published shapes (no download), saved as Calibration JSON files
that `benchmarks/grid.py --calibration base=...json` (or planning.predict.Calibration.load) reads on any machine.

    python scripts/calibrate_costs.py --out data/results/calibration            # CUDA if present, else CPU
    python scripts/calibrate_costs.py --pairs qwen2.5-1.5b-0.5b --draft-bits 4   # int4 draft variant too
    python scripts/calibrate_costs.py --shrink --out /tmp/rehearsal              # toy shapes: a rehearsal in seconds

A forward's cost depends on shapes, dtype, kernels and hardware, not on weight values, so random weights measure
what the checkpoints would cost. The shapes and model builder are scripts/gpu_costs.py's. Every speedup computed
from such a file is a prediction for that machine and is labelled "predicted" with its hardware.

Writes, per pair, dtype and draft variant: calibration_<pair>_<dtype>_<draft>.json (Costs + Overheads + provenance)
and the same curves as CSV (nodes, verify_s, draft_s, draft_over_verify, provenance columns).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynatree_lib.models.provenance import write_atomic  # noqa: E402


def _gpu_costs():
    """scripts/gpu_costs.py as a module (its SHAPES, PAIRS, SHRUNK, build_model and provenance)."""
    spec = importlib.util.spec_from_file_location("gpu_costs", ROOT / "scripts" / "gpu_costs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def calibrate_pair(name: str, dtype: torch.dtype, device: torch.device, *, shrink: bool, bits, nodes, prefix_len: int,
                   repeats: int, n: int, gc=None):
    from dynatree_lib import Autoregressive, FixedTree, ModelPair
    from dynatree_lib.planning.calibrate import context_scale, measure_costs
    from dynatree_lib.planning.predict import Calibration, measure_overheads

    gc = gc or _gpu_costs()
    shapes = gc.SHRUNK if shrink else gc.SHAPES
    target_name, draft_name = gc.PAIRS[name]
    target = gc.build_model(shapes[target_name], dtype, device)
    draft = gc.build_model(shapes[draft_name], dtype, device)
    pair = ModelPair(target, draft, name=f"{name} (random weights{', shrunk' if shrink else ''})")
    running = pair.with_draft_bits(bits) if bits else pair
    costs = measure_costs(running, nodes=nodes, prefix_len=prefix_len, repeats=repeats)
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(shapes[target_name]["vocab_size"], (prefix_len,), generator=generator).tolist()
    methods = [Autoregressive(), FixedTree(3, 2, 0.0, 6, draft_bits=bits), FixedTree(6, 3, 0.0, 64, draft_bits=bits)]
    overheads = measure_overheads(pair, methods, prompt, n=n, repeats=repeats)
    machine = gc.provenance(device)
    info = {**machine, "pair": name, "target": target_name, "draft": draft_name,
            "draft_variant": f"int{bits}" if bits else "base", "dtype": str(dtype).removeprefix("torch."),
            "random_weights": True, "shrunk": shrink, "torch_threads": torch.get_num_threads(),
            "hardware": machine["device_name"]}
    # the caches a short prompt .. a long prompt plus a long run read (128 .. 2048 at the default prefix)
    contexts = tuple(prefix_len * k for k in (1, 4, 8, 16))
    context = {role: context_scale(model, contexts, repeats=repeats)
               for role, model in (("target", running.target), ("draft", running.draft))}
    return Calibration(costs, overheads, info, context)


def main(argv=None) -> int:
    gc = _gpu_costs()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", default=",".join(gc.PAIRS), help="default: %(default)s")
    p.add_argument("--dtype", default=None, help="float16/bfloat16/float32 (default: bfloat16, float16 on old GPUs)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--draft-bits", default="", help="also calibrate int8/int4 draft copies, e.g. 4 or 8,4")
    p.add_argument("--nodes", default="1,2,4,8,16,32,64,128", help="tree sizes to time (default: %(default)s)")
    p.add_argument("--prefix-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n", type=int, default=64, help="tokens per overhead run (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--shrink", action="store_true", help="toy shapes (a rehearsal)")
    p.add_argument("--out", default=str(ROOT / "data" / "results" / "calibration"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.dtype:
        dtype = getattr(torch, args.dtype)
    elif device.type == "cuda" and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    else:
        dtype = torch.bfloat16
    nodes = tuple(int(x) for x in args.nodes.split(","))
    out = Path(args.out)
    for name in filter(None, args.pairs.split(",")):
        for bits in [None] + [int(b) for b in filter(None, args.draft_bits.split(","))]:
            calib = calibrate_pair(name, dtype, device, shrink=args.shrink, bits=bits, nodes=nodes,
                                   prefix_len=args.prefix_len, repeats=args.repeats, n=args.n, gc=gc)
            stem = f"calibration_{name}_{str(dtype).removeprefix('torch.')}_{calib.info['draft_variant']}"
            calib.save(out / f"{stem}.json")
            frame = calib.costs.frame().assign(**{k: v for k, v in calib.info.items() if not isinstance(v, (dict, list))})
            write_atomic(out / f"{stem}.csv", frame.to_csv(index=False))
            o = calib.overheads
            print(f"{stem}: verify(1) {calib.costs.verify(1) * 1e3:.2f} ms, draft(1) {calib.costs.draft(1) * 1e3:.2f} ms, "
                  f"round overhead {o.round_s * 1e3:.2f} ms + {o.node_s * 1e6:.1f} us/node -> {out / stem}.json")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
