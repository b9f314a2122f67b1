"""Weight-only integer matmul kernels on this CPU: bf16 vs int8 vs int4, the shapes that matter for the Qwen2.5 pair.

    python benchmarks/int_kernels.py [--threads 2] [--rows 1 8 32] [--repeats 30]

Shapes are (in_features, out_features): 896x4864 and 896x151936 are the 0.5B draft's MLP up-projection and lm_head,
1536x8960 the 1.5B target's MLP. Columns:
  bf16        nn.Linear in bf16, the baseline
  int8 fused  torch's `_weight_int8pack_mm` (int8 weights, one scale per output channel, bf16 activations)
  int8 deq    the same product through the dense GEMM on a dequantized copy of the weights
  Int8Linear  the library's choice between the two (dynatree_lib.models.quant.FUSED_MAX_ROWS)
  int4 gN     torch's CPU int4 kernel, groups of N input channels
  dynamic     torch.ao's quantize_dynamic nn.Linear: int8 weights AND activations, float32 in and out (the bf16
              activations are converted both ways, part of its cost here). Its activation scale is per tensor, so a
              token's output depends on the other rows of the batch: unusable for exact speculation anyway.
Each cell is the best (minimum) wall time in ms of `repeats` calls after warm-up, the kernels of a row taking turns:
on a CPU shared with other work the minimum is the stable estimate of what the kernel itself costs.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dynatree_lib.models.quant import Int4Linear, Int8Linear  # noqa: E402

SHAPES = [(896, 4864), (896, 151936), (1536, 8960)]


def timed(kernels: dict, x: torch.Tensor, repeats: int) -> dict:
    """Best wall time (ms) of each kernel on `x`. The kernels take turns, so that on a shared CPU every one of them
    meets the same background load, and the minimum over the turns is the least disturbed call."""
    for fn in kernels.values():
        fn(x)
    best = dict.fromkeys(kernels, float("inf"))
    for _ in range(repeats):
        for name, fn in kernels.items():
            t0 = time.perf_counter()
            fn(x)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: t * 1e3 for name, t in best.items()}


def dynamic_linear(linear: torch.nn.Linear):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(torch.nn.Sequential(linear.float()), {torch.nn.Linear}, dtype=torch.qint8)[0]


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-dynamic", action="store_true", help="skip torch.ao quantize_dynamic")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}, ms per matmul")
    names = ["bf16", "int8 fused", "int8 deq", "Int8Linear", "int4 g128", "int4 g32"]
    names += [] if args.no_dynamic else ["dynamic"]
    print(f"{'shape (in x out)':>18} {'rows':>5} " + " ".join(f"{name:>{max(len(name), 9)}}" for name in names))
    for k, n in SHAPES:
        torch.manual_seed(0)
        linear = torch.nn.Linear(k, n, bias=False, dtype=torch.bfloat16)
        int8 = Int8Linear.from_linear(linear)
        kernels = {
            "bf16": linear,
            "int8 fused": lambda x: torch.ops.aten._weight_int8pack_mm(x, int8.weight, int8.scales),
            "int8 deq": lambda x: torch.nn.functional.linear(x, int8.weight.to(x.dtype)) * int8.scales,
            "Int8Linear": int8,
            "int4 g128": Int4Linear.from_linear(linear, group_size=128),
            "int4 g32": Int4Linear.from_linear(linear, group_size=32),
        }
        if not args.no_dynamic:
            dyn = dynamic_linear(torch.nn.Linear(k, n, bias=False).requires_grad_(False))
            kernels["dynamic"] = lambda x: dyn(x.float()).to(torch.bfloat16)
        for rows in args.rows:
            x = torch.randn(rows, k, dtype=torch.bfloat16)
            best = timed(kernels, x, args.repeats)
            cells = [f"{best[name]:{max(len(name), 9)}.3f}" for name in kernels]
            print(f"{f'{k}x{n}':>18} {rows:>5} " + " ".join(cells), flush=True)
        del kernels


if __name__ == "__main__":
    main()
