"""Weight-only quantization: int8 for the target (what the research benchmarked), int8/int4 for the draft.

Target. `quantize_int8(model)` stores every linear layer's weights as int8 with one symmetric scale per output
channel and keeps activations in the model's dtype. Greedy output then is that of the *quantized* target: the
speculative methods stay exact with respect to it (not to the bf16 model), which is all exactness promises.
On CPU the matmul is torch's `_weight_int8pack_mm` kernel. torch.ao's `quantize_dynamic` was the other candidate;
it quantizes the activations too, needs float32 in and out (bf16 activations must be converted both ways) and is
deprecated in favour of torchao; benchmarks/int_kernels.py measures both. On CUDA with bitsandbytes installed,
`backend="bitsandbytes"` is the research's own path: the model is re-loaded with `BitsAndBytesConfig(load_in_8bit=
True)` (LLM.int8(): int8 weights, outlier features in fp16), which keeps the output layer in 16 bit.

Draft. The draft only proposes tokens; the target decides. Its weights can therefore be approximated freely with
no effect on the output, only on how often proposals are accepted: `quantize_draft(model, bits=4)` (torch's CPU
int4 kernel, asymmetric, one scale and zero per group of input channels) is a pure speed lever.

Both modify the model in place (no second copy of a 1.5B model in memory) and return it; the bitsandbytes path
returns a new, re-loaded model. Use the return value.
"""
from __future__ import annotations

import os
import tempfile

import torch
from torch import nn

BACKENDS = ("auto", "torch", "bitsandbytes")

# torch's fused CPU int8 kernel costs about one pass over the weights per row or two: at one row it beats bf16 (half
# the bytes), at 32 it is several times slower than the dense bf16 GEMM (benchmarks/int_kernels.py). Beyond this many
# rows the weights are converted to the activation dtype for the call instead (exactly representable: |q| <= 127),
# which costs roughly one bf16 forward's worth of extra memory traffic.
FUSED_MAX_ROWS = 8
# An int4 target multiplies calls of this many rows or more (a prompt's prefill) through dense dequantized weights;
# verification of the trees a cost-aware method drafts stays below it, on the kernel plain decoding uses.
TARGET_DENSE_ROWS = 64
# An int4 draft does so from fewer rows: its numbers only move acceptance, and on 2 cores the kernel costs more than
# the dense GEMM from about this many rows on (benchmarks/int_kernels.py). The draft's prefill of a long prompt is
# the call that matters: through the kernel, 826 prompt tokens (Spec-Bench's summarization) cost the 0.5B draft
# about 5 s, an eighth of plain decoding's whole 128-token generation.
DRAFT_DENSE_ROWS = 16
# Both thresholds hold where the CPU multiplies bf16 matrices in hardware (native_bf16_matmul). Where it does not
# (AVX2-only x86 parts), torch converts bf16 to float32 inside the GEMM, a dense call of 16 rows costs about 16
# single-row calls, and the int4 kernel is the cheaper one at every row count measured (an AMD EPYC with AVX2 only:
# 1.9 ms against 7.1 ms for the draft's 896x4864 layer at 16 rows, 21 against 84 ms for the target's 1536x8960 at
# 64); there the int4 layers keep no dense copy.


def native_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware: the x86 flags avx512_bf16 or amx_bf16, or an Arm
    core's bf16 feature. True where /proc/cpuinfo cannot tell (another OS): the thresholds above were measured on
    such CPUs."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = {word for line in f if line.startswith(("flags", "Features")) for word in line.split()}
    except OSError:
        return True
    return not flags or bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def dense_rows_here(rows: int) -> int | None:
    """`rows` (DRAFT_DENSE_ROWS, TARGET_DENSE_ROWS) where this CPU multiplies bf16 in hardware, else None: no dense
    path (the comment above says why)."""
    return rows if native_bf16_matmul() else None


class Int8Linear(nn.Module):
    """y = x @ (int8 weight * per-output-channel scale).T + bias; activations keep their dtype."""

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)  # (out, in) int8: `.weight.shape` still reads like nn.Linear's
        self.register_buffer("scales", scales)  # (out,) in the activation dtype, as the kernel requires
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        w = linear.weight.detach().float()
        scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127  # symmetric: 0 stays exactly 0
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(q, scales.to(linear.weight.dtype), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        scales = self.scales.to(x.dtype)
        if x.device.type == "cpu" and rows.shape[0] <= FUSED_MAX_ROWS:
            y = torch.ops.aten._weight_int8pack_mm(rows.contiguous(), self.weight, scales)
        else:  # same product, (x . q) * scale, through the dense GEMM on a transient dequantized copy
            y = nn.functional.linear(rows, self.weight.to(x.dtype)) * scales
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


class Int4Linear(nn.Module):
    """Weight-only int4 on CPU (torch's `_weight_int4pack_mm_for_cpu`): 4-bit codes q in [0, 15] per group of
    `group_size` input channels, dequantized as (q - 8) * scale + zero, with bf16 scale/zero pairs.

    The kernel's cost grows with the rows it multiplies (on 2 cores, about one pass over the packed weights per row or
    two), so with `dense_rows` set the layer also keeps the dequantized weights in the activation dtype and multiplies
    calls of at least that many rows (a prompt's prefill, a wide level) through the dense GEMM, which reads them once.
    The same values, rounded once to that dtype: only the rounding of near-ties can differ between the two paths."""

    def __init__(self, packed, scales_and_zeros, bias, in_features: int, out_features: int, group_size: int,
                 dense: torch.Tensor | None = None, dense_rows: int | None = None):
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer("weight", packed)  # (out, in / 2) uint8, the kernel's packed layout
        self.register_buffer("scales_and_zeros", scales_and_zeros)  # (in / group_size, out, 2) bf16
        self.register_buffer("bias", bias)
        self.register_buffer("dense", dense)  # (out, in) dequantized, or None
        self.dense_rows = dense_rows

    @staticmethod
    def supports(linear: nn.Linear, group_size: int) -> bool:
        """The kernel's shape rules: out_features a multiple of 16, in_features of the group size."""
        out_features, in_features = linear.weight.shape
        return out_features % 16 == 0 and in_features % group_size == 0

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 128, dense_rows: int | None = None) -> "Int4Linear":
        if not cls.supports(linear, group_size):
            raise ValueError(f"int4 needs out_features % 16 == 0 and in_features % group_size == 0, got "
                             f"{tuple(linear.weight.shape)} with group_size={group_size}")
        n, k = linear.weight.shape
        w = linear.weight.detach().float().reshape(n, k // group_size, group_size)
        low, high = w.amin(dim=-1), w.amax(dim=-1)
        scale = (high - low).clamp(min=1e-6) / 15
        q = torch.round((w - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32).reshape(n, k)
        zero = low + 8 * scale  # the kernel subtracts 8 from every code: re-centre the zero point to match
        scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)  # inner k tiles: unused on CPU
        bias = None if linear.bias is None else linear.bias.detach().clone()
        dense = None
        if dense_rows is not None:  # what the kernel multiplies: the codes with its bf16 scale and zero
            scale, zero = scales_and_zeros.float().permute(2, 1, 0)  # each (n, k / group_size)
            w = (q.reshape(n, k // group_size, group_size) - 8) * scale[..., None] + zero[..., None]
            dense = w.reshape(n, k).to(linear.weight.dtype)
        return cls(packed, scales_and_zeros, bias, k, n, group_size, dense, dense_rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A draft level's rows are few, so each call's Python counts: convert only what needs converting.
        rows = x.reshape(-1, self.in_features)
        if self.dense is not None and rows.shape[0] >= self.dense_rows:
            y = nn.functional.linear(rows.to(self.dense.dtype), self.dense)
            if self.bias is not None:
                y = y + self.bias.to(y.dtype)
            return y.to(x.dtype).view(*x.shape[:-1], self.out_features)
        if rows.dtype != torch.bfloat16:
            rows = rows.to(torch.bfloat16)
        if not rows.is_contiguous():
            rows = rows.contiguous()
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.weight, self.group_size, self.scales_and_zeros)
        if y.dtype != x.dtype:
            y = y.to(x.dtype)
        if self.bias is not None:
            y = y + (self.bias if self.bias.dtype == y.dtype else self.bias.to(y.dtype))
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 g{self.group_size}"


def quantize_int8(model, backend: str = "auto", *, lm_head: bool = False):
    """Int8 weights for `model` (the target). Returns the quantized model: the same object for `backend="torch"`,
    a re-loaded one for `"bitsandbytes"`.

    backend: "torch" (weight-only int8 via torch kernels, any device, fused on CPU), "bitsandbytes" (CUDA only,
    LLM.int8() as in the research), "auto" (bitsandbytes for a CUDA model when the package is installed, else torch).
    lm_head: also quantize the output layer. Off by default, as bitsandbytes does, so that both backends quantize
    the same layers; turning it on saves the largest single matmul of a big-vocabulary model but, when the output
    layer is tied to the input embeddings, adds an int8 copy instead of replacing anything.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cuda = next(model.parameters()).device.type == "cuda"
    if backend == "auto":
        backend = "bitsandbytes" if on_cuda and bitsandbytes_available() else "torch"
    if backend == "bitsandbytes":
        return _bitsandbytes_int8(model)
    _replace_linears(model, Int8Linear.from_linear, lm_head=lm_head)
    return model


def quantize_target(model, bits: int):
    """Int8 or int4 weights for the target, the output layer kept in the model's dtype (as bitsandbytes does).

    bits=8 is `quantize_int8` (the research's variant); bits=4 uses the draft's CPU int4 kernel (one scale and zero
    per group of 128 input channels; layers it cannot take get int8), about the precision of a Q4_K_M GGUF file. The
    quantized target is then *the* target: greedy speculative output equals its own plain decoding, not the bf16
    model's. Modifies `model` in place and returns it (bits=8 on CUDA with bitsandbytes: a re-loaded model)."""
    if bits == 8:
        return quantize_int8(model)
    if bits == 4:  # a prompt's prefill through the dense GEMM: the int4 kernel's cost grows with its rows
        return quantize_draft(model, 4, lm_head=False, dense_rows=dense_rows_here(TARGET_DENSE_ROWS))
    raise ValueError(f"target_bits must be 4, 8 or None, got {bits!r}")


def quantize_draft(model, bits: int = 4, *, group_size: int = 128, lm_head: bool = True,
                   dense_rows: int | None | str = "auto"):
    """Cheaper draft weights: int8 (per channel) or int4 (per group of `group_size` input channels, CPU only).

    The output is unaffected whatever the draft computes (the target verifies every token), so accuracy only shows
    up as acceptance. The output layer is included by default: for a small model with a big vocabulary it is the
    largest matmul. Layers whose shape the int4 kernel does not take are quantized to int8 instead. `dense_rows`:
    int4 layers multiply calls of at least that many rows through dequantized dense weights (Int4Linear; None: the
    kernel always, and no dense copy is kept; "auto": DRAFT_DENSE_ROWS where the CPU multiplies bf16 in hardware,
    None elsewhere). An int4 Qwen2/LLaMA decoder is also fused (models/fused.py): its q/k/v and gate/up projections
    become one kernel call each in the library's forwards, with the same logits.
    """
    if dense_rows == "auto":
        dense_rows = dense_rows_here(DRAFT_DENSE_ROWS)
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits!r}")
    if bits == 8:
        _replace_linears(model, Int8Linear.from_linear, lm_head=lm_head)
        return model
    if group_size not in (32, 64, 128, 256):
        raise ValueError(f"group_size must be one of 32, 64, 128, 256, got {group_size!r}")
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("bits=4 uses torch's CPU int4 kernel; the draft must be on the CPU (use bits=8 elsewhere)")

    def convert(linear):
        if Int4Linear.supports(linear, group_size):
            return Int4Linear.from_linear(linear, group_size, dense_rows)
        return Int8Linear.from_linear(linear)

    _replace_linears(model, convert, lm_head=lm_head)
    from .fused import fuse

    fuse(model)  # a Qwen2/LLaMA decoder then drafts (and verifies) in fewer kernel calls, the same logits
    return model


def _replace_linears(model, convert, *, lm_head: bool) -> None:
    head = model.get_output_embeddings()
    _replace(model, lambda m: isinstance(m, nn.Linear) and (lm_head or m is not head), convert)


def _replace(model, select, convert) -> int:
    """Every submodule that `select` picks is swapped for `convert(module)`; returns how many."""
    targets = [(name, module) for name, module in model.named_modules() if name and select(module)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, convert(module))
    return len(targets)


def bitsandbytes_available() -> bool:
    """True when bitsandbytes' int8 path can run here: a CUDA device and the package installed."""
    if not torch.cuda.is_available():
        return False
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def _bitsandbytes_int8(model):
    if not bitsandbytes_available():
        missing = "the bitsandbytes package (pip install bitsandbytes)" if torch.cuda.is_available() else \
            "a CUDA GPU (this machine has none)"
        raise ValueError(f"backend='bitsandbytes' needs {missing}; use backend='torch'")
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_8bit=True)
    kwargs = dict(quantization_config=config, device_map={"": torch.cuda.current_device()}, dtype=model.dtype)
    # bitsandbytes quantizes while loading a checkpoint; a model that only lives in memory is saved first.
    source = getattr(model, "name_or_path", "")
    if source and os.path.isdir(source):
        return type(model).from_pretrained(source, **kwargs).eval()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return type(model).from_pretrained(folder, **kwargs).eval()


def model_memory_bytes(model) -> int:
    """Bytes held by the model's parameters and buffers (tied weights once), quantized or not.

    bitsandbytes keeps each int8 layer's scales beside the weight (`weight.SCB`), counted here too.
    """
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        for t in (tensor, getattr(tensor, "SCB", None)):
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def is_quantized(model) -> bool:
    """True when `model` holds int8/int4 layers made by quantize_int8 / quantize_draft (torch kernels)."""
    return any(isinstance(m, (Int8Linear, Int4Linear)) for m in model.modules())


@torch.no_grad()
def dequantized(layer, dtype: torch.dtype | None = None) -> nn.Linear:
    """A plain nn.Linear holding the weights an Int8Linear / Int4Linear `layer` computes with, each rounded once to
    `dtype` (default: int8's scale dtype, bf16 for int4). int4 is read back through the kernel itself (an identity
    matrix's product), so the codes, scales and zeros are the kernel's; its packed layout cannot be sliced."""
    if isinstance(layer, Int8Linear):
        weight = layer.weight.to(torch.float32) * layer.scales.to(torch.float32)[:, None]  # exact in float32
        dtype = dtype or layer.scales.dtype
    elif isinstance(layer, Int4Linear):  # y = x @ W.T: the identity's product is W.T
        eye = torch.eye(layer.in_features, dtype=torch.bfloat16, device=layer.weight.device)
        weight = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, layer.weight, layer.group_size,
                                                            layer.scales_and_zeros).T
        dtype = dtype or torch.bfloat16
    else:
        raise TypeError(f"cannot dequantize a layer of type {type(layer).__name__}")
    out = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, dtype=dtype,
                    device=layer.weight.device)
    out.weight.copy_(weight.to(dtype))
    if layer.bias is not None:
        out.bias.copy_(layer.bias.to(dtype))
    return out.requires_grad_(False)


@torch.inference_mode()
def dense_copy(model):
    """A copy of a quantized `model` whose int8/int4 layers are plain nn.Linear layers holding the dequantized
    weights (`dequantized`), each rounded once to the model's dtype. The quantized model stays as it is.

    Why: the quantized kernels cost about one pass over the weights per row or two (FUSED_MAX_ROWS), so a forward
    over many rows at once (the grid's batched superset drafting, bench.supersets) is several times cheaper through
    the dense GEMM, which reads the weights once. The probabilities differ from the quantized kernel's by that
    rounding only; a draft's numbers only move acceptance, never output."""
    import copy

    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.bfloat16)
    if not is_quantized(model):
        raise ValueError("dense_copy needs a model with int8/int4 layers (quantize_draft / quantize_int8); "
                         "this one has none")
    copied = copy.deepcopy(model)
    _replace(copied, lambda m: isinstance(m, (Int8Linear, Int4Linear)), lambda layer: dequantized(layer, dtype))
    return copied
