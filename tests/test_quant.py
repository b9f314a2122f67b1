"""Int8 target / int4-int8 draft weights: close to the original, smaller, and speculation stays exact.

Exactness is with respect to the quantized target itself: after `quantize_int8`, the greedy output of every method must
equal a plain greedy loop (transformers' generate) over that same quantized model.
"""
import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from dynatree_lib import DynaTree, FixedTree, Linear, ModelPair, Streaming, generate, label, model_memory_bytes, quantize_draft, quantize_int8
from dynatree_lib.models import quant
from dynatree_lib.models.quant import Int4Linear, Int8Linear, bitsandbytes_available, dense_copy, is_quantized
from tiny import ARCHS, DRAFTS, VOCAB, perturbed, reference_greedy, tiny_model, tiny_pair


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


@torch.no_grad()
def logits(model, ids):
    return model(torch.tensor([ids])).logits[0]


def int8_pair(arch: str, draft_kind: str, **kwargs) -> ModelPair:
    """The tiny pair with an int8 copy of its target (the float draft proposes for it)."""
    pair = tiny_pair(arch, draft_kind)
    return ModelPair(target=quantize_int8(copy.deepcopy(pair.target), **kwargs), draft=pair.draft)


@pytest.mark.parametrize("lm_head", [False, True])
@pytest.mark.parametrize("arch", ARCHS)
def test_int8_logits_close_and_layers_replaced(arch, lm_head):
    model = tiny_model(arch, seed=0)
    reference = logits(model, list(range(40)))
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    quantized = quantize_int8(model, "torch", lm_head=lm_head)
    assert quantized is model  # in place
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == linears - (0 if lm_head else 1)
    assert any(isinstance(m, torch.nn.Linear) for m in model.modules()) == (not lm_head)
    assert relative_error(logits(model, list(range(40))), reference) < 0.02


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_memory_shrinks_by_the_expected_bytes(arch):
    for dtype in (torch.float32, torch.bfloat16):
        model = tiny_model(arch, seed=0, dtype=dtype)
        before = model_memory_bytes(model)
        head = model.get_output_embeddings()
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
        size = torch.tensor([], dtype=dtype).element_size()
        # each weight goes from `size` bytes to 1, plus one scale (in the model dtype) per output channel
        saved = sum(m.weight.numel() * (size - 1) - m.out_features * size for m in linears)
        quantize_int8(model)
        assert model_memory_bytes(model) == before - saved
        assert model_memory_bytes(model) < (0.5 if dtype == torch.float32 else 0.8) * before


def test_memory_counts_tied_weights_once():
    model = tiny_model("qwen2", seed=0)
    untied = model_memory_bytes(model)
    model.lm_head.weight = model.model.embed_tokens.weight
    assert model_memory_bytes(model) == untied - model.lm_head.weight.numel() * 4


methods = st.one_of(
    st.builds(Linear, k=st.integers(1, 6)),
    st.builds(FixedTree, depth=st.integers(1, 6), branch=st.integers(1, 3),
              threshold=st.sampled_from([0.0, 0.01, 0.05]), max_nodes=st.integers(1, 30)),
)
prompts = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=20)


@pytest.mark.parametrize("draft_kind", DRAFTS)
@pytest.mark.parametrize("arch", ARCHS)
@given(method=methods, prompt=prompts, n=st.integers(1, 32), lm_head=st.booleans())
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_speculation_exact_for_int8_target(arch, draft_kind, method, prompt, n, lm_head):
    pair = int8_pair(arch, draft_kind, lm_head=lm_head)
    out = generate(pair, prompt, method, n, stop_at_eos=False)
    assert out.token_ids == reference_greedy(pair.target, prompt, n), label(method)


def test_int8_target_differs_from_float_somewhere():
    """Quantization must actually change the model (else the exactness test above proves nothing new)."""
    pair = tiny_pair("llama", "same")
    quantized = int8_pair("llama", "same", lm_head=True).target
    assert not torch.equal(logits(quantized, list(range(30))), logits(pair.target, list(range(30))))


def test_streaming_with_int8_target():
    pair = int8_pair("qwen2", "perturbed")
    full = generate(pair, list(range(5, 25)), Streaming(FixedTree(depth=4, branch=2), cache_size=300), 30,
                    stop_at_eos=False)
    assert full.token_ids == reference_greedy(pair.target, list(range(5, 25)), 30)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("arch", ARCHS)
def test_quantized_draft_keeps_output_exact(arch, bits):
    pair = tiny_pair(arch, "same")
    draft = quantize_draft(copy.deepcopy(pair.draft), bits=bits, group_size=32)
    assert not any(isinstance(m, torch.nn.Linear) for m in draft.modules())  # lm_head included by default
    cheap = ModelPair(target=pair.target, draft=draft)
    prompt = [9, 8, 7, 6, 5, 4, 3]
    for method in (Linear(5), FixedTree(depth=5, branch=2, threshold=0.0)):
        out = generate(cheap, prompt, method, 40, stop_at_eos=False)
        assert out.token_ids == reference_greedy(pair.target, prompt, 40)
        assert out.stats["acceptance_depth"] > 0.5, out.stats["acceptance_depth"]  # still a useful draft


@pytest.mark.parametrize("group_size", [32, 64])
def test_int4_linear_close_to_float(group_size):
    torch.manual_seed(0)
    linear = torch.nn.Linear(128, 48, bias=True)
    x = torch.randn(5, 3, 128)
    q = Int4Linear.from_linear(linear, group_size=group_size)
    # 16 levels per group: roughly 1/30 of the group's range per weight, averaging out over 128 inputs
    assert relative_error(q(x), linear(x)) < 0.15
    assert q(x).shape == (5, 3, 48) and q(x).dtype == x.dtype
    int8 = Int8Linear.from_linear(linear)
    assert relative_error(int8(x), linear(x)) < 0.01
    # one row goes through the fused kernel, fifteen through the dense GEMM: the same numbers either way
    torch.testing.assert_close(int8(x[:1, :1]), int8(x)[:1, :1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("arch", ARCHS)
def test_dense_copy_computes_the_quantized_draft(arch, bits):
    draft = quantize_draft(tiny_model(arch, seed=1), bits=bits, group_size=32)
    dense = dense_copy(draft)
    assert is_quantized(draft) and not is_quantized(dense)  # the quantized model is left as it was
    assert not any(isinstance(m, (Int8Linear, Int4Linear)) for m in dense.modules())
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]])
    with torch.inference_mode():
        a, b = draft(ids).logits, dense(ids).logits
    # the same weights, rounded once to the model's dtype (the int4 kernel also rounds its input to bf16)
    assert relative_error(b, a) < (1e-2 if bits == 4 else 1e-5), relative_error(b, a)
    float_model = tiny_model(arch, seed=1)
    with torch.inference_mode():  # and not the float model's numbers: it really is the quantized draft
        assert relative_error(b, float_model(ids).logits) > 10 * relative_error(b, a)
    with pytest.raises(ValueError, match="int8/int4 layers"):
        dense_copy(float_model)


def test_int4_falls_back_to_int8_for_shapes_the_kernel_refuses():
    model = torch.nn.Sequential(torch.nn.Linear(64, 40), torch.nn.Linear(40, 64))  # 40 % 16 != 0
    model.get_output_embeddings = lambda: None
    quantize_draft(model, bits=4, group_size=32)
    assert isinstance(model[0], Int8Linear) and isinstance(model[1], Int8Linear)  # 40 in-features % 32 != 0 too
    model = torch.nn.Sequential(torch.nn.Linear(64, 32))
    model.get_output_embeddings = lambda: None
    quantize_draft(model, bits=4, group_size=32)
    assert isinstance(model[0], Int4Linear)


def test_validation():
    model = tiny_model("llama", seed=0)
    with pytest.raises(ValueError, match="backend"):
        quantize_int8(model, backend="gptq")
    with pytest.raises(ValueError, match="bits"):
        quantize_draft(model, bits=3)
    with pytest.raises(ValueError, match="group_size"):
        quantize_draft(model, bits=4, group_size=100)


def test_bitsandbytes_refused_clearly_without_cuda():
    if bitsandbytes_available():
        pytest.skip("CUDA and bitsandbytes are available here: the refusal path does not apply")
    with pytest.raises(ValueError, match="bitsandbytes"):
        quantize_int8(tiny_model("llama", seed=0), backend="bitsandbytes")
    model = tiny_model("llama", seed=0)
    assert quantize_int8(model, backend="auto") is model  # auto falls back to the torch path
    assert any(isinstance(m, Int8Linear) for m in model.modules())


def test_bitsandbytes_int8_exact_on_cuda():
    if not bitsandbytes_available():
        pytest.skip("bitsandbytes int8 needs a CUDA GPU and the bitsandbytes package; neither is required on CPU")
    pair = tiny_pair("llama", "perturbed")
    target = tiny_model("llama", seed=0, dtype=torch.float16).cuda()
    before = model_memory_bytes(target)
    quantized = quantize_int8(target, backend="bitsandbytes")
    assert model_memory_bytes(quantized) < before
    cuda_pair = ModelPair(target=quantized, draft=copy.deepcopy(pair.draft).half().cuda())
    prompt = [1, 2, 3, 4, 5]
    out = generate(cuda_pair, prompt, Linear(4), 24, stop_at_eos=False)
    assert out.token_ids == reference_greedy_on(quantized, prompt, 24)


def reference_greedy_on(model, prompt, n):
    ids = torch.tensor([prompt], device=model.device)
    model.generation_config.eos_token_id = None
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def int4_target_pair(arch: str) -> tuple[ModelPair, ModelPair]:
    """A tiny pair wide enough for the int4 kernel's groups of 128 inputs, and the same pair with an int4 target."""
    target = tiny_model(arch, seed=0, hidden=128)
    pair = ModelPair(target, perturbed(target, 0.3, seed=1), name=f"tiny-{arch}")
    return pair, pair.with_target_bits(4)


@pytest.mark.parametrize("arch", ARCHS)
def test_int4_target_is_a_copy_with_int4_layers_and_its_own_name(arch):
    pair, quantized = int4_target_pair(arch)
    assert quantized.name == f"tiny-{arch}+int4" and quantized.draft is pair.draft
    assert not is_quantized(pair.target)  # the caller's pair is untouched
    head = quantized.target.get_output_embeddings()
    assert isinstance(head, torch.nn.Linear)  # the output layer keeps the model's dtype
    layers = [m for m in quantized.target.modules() if isinstance(m, (Int4Linear, Int8Linear, torch.nn.Linear))]
    assert all(isinstance(m, Int4Linear) for m in layers if m is not head), {type(m).__name__ for m in layers}
    ids = list(range(3, 40))
    assert not torch.equal(logits(quantized.target, ids), logits(pair.target, ids))  # it really changed the model
    assert relative_error(logits(quantized.target, ids), logits(pair.target, ids)) < 0.2


@pytest.mark.parametrize("arch", ARCHS)
def test_speculation_exact_for_int4_target(arch):
    """Exactness against the quantized target: every method's tokens equal its own plain greedy decoding."""
    _, pair = int4_target_pair(arch)
    prompt = [5, 17, 3, 80, 41, 9, 9, 12]
    expected = reference_greedy(pair.target, prompt, 40)
    # Trees stay under TARGET_DENSE_ROWS: calls of that many rows take the dense path, which rounds differently.
    for method in (Linear(4), FixedTree(depth=4, branch=2, threshold=0.0), DynaTree(max_nodes=32),
                   DynaTree(max_nodes=32, draft_bits=8)):
        assert generate(pair, prompt, method, 40, stop_at_eos=False).token_ids == expected, label(method)


def test_target_bits_options(monkeypatch):
    import argparse

    from dynatree_lib.models import pair as pairs

    for bad in (3, 16, True, "4"):
        with pytest.raises(ValueError, match="target_bits must be 4, 8 or None"):
            pairs.load_pair("embedded", target_bits=bad)  # refused before any model is read
    parser = argparse.ArgumentParser()
    pairs.add_model_args(parser)
    seen = {}
    monkeypatch.setattr(pairs, "load_pair", lambda target, draft, **options: seen.update(options))
    pairs.pair_from_args(parser.parse_args(["--target-bits", "4"]))
    assert seen["target_bits"] == 4
    pairs.pair_from_args(parser.parse_args([]))
    assert seen["target_bits"] is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--target-bits", "2"])


def test_int4_dense_rows_multiplies_the_kernels_own_weights():
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 64, bias=True).to(torch.bfloat16)
    kernel = Int4Linear.from_linear(linear, 128)
    both = Int4Linear.from_linear(linear, 128, dense_rows=4)
    assert kernel.dense is None and both.dense.shape == (64, 256)
    eye = torch.eye(256, dtype=torch.bfloat16)  # x @ W.T with x = I reads back the weights the kernel uses
    read_back = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, kernel.weight, 128, kernel.scales_and_zeros).T
    torch.testing.assert_close(both.dense, read_back, rtol=1e-2, atol=1e-3)
    x = torch.randn(3, 10, 256, dtype=torch.bfloat16)
    assert torch.equal(both(x[:, :1]), kernel(x[:, :1]))  # 3 rows: below dense_rows, the kernel itself
    assert relative_error(both(x), kernel(x)) < 1e-2  # 30 rows through the dense weights: the same product
    assert both(x).shape == (3, 10, 64) and both(x).dtype == x.dtype


@pytest.fixture
def native_bf16(monkeypatch):
    """A CPU that multiplies bf16 in hardware, whatever this machine is (the dense thresholds hold there)."""
    monkeypatch.setattr(quant, "native_bf16_matmul", lambda: True)


def test_int4_draft_multiplies_many_rows_densely_and_target_only_its_prefill(native_bf16):
    from dynatree_lib.models.quant import DRAFT_DENSE_ROWS, TARGET_DENSE_ROWS, quantize_target

    draft = quantize_draft(tiny_model("qwen2", seed=1, hidden=128), bits=4)
    int4 = [m for m in draft.modules() if isinstance(m, Int4Linear)]
    assert int4 and all(m.dense is not None and m.dense_rows == DRAFT_DENSE_ROWS for m in int4)
    assert all(m.dense is None for m in quantize_draft(tiny_model("qwen2", seed=1, hidden=128), 4,
                                                       dense_rows=None).modules() if isinstance(m, Int4Linear))
    target = quantize_target(tiny_model("qwen2", seed=0, hidden=128), 4)
    assert {m.dense_rows for m in target.modules() if isinstance(m, Int4Linear)} == {TARGET_DENSE_ROWS}
    assert DRAFT_DENSE_ROWS < TARGET_DENSE_ROWS  # a target's trees stay on the kernel plain decoding uses


def test_int4_layers_keep_no_dense_copy_where_bf16_is_not_native(monkeypatch):
    from dynatree_lib.models.quant import quantize_target

    monkeypatch.setattr(quant, "native_bf16_matmul", lambda: False)
    for model in (quantize_draft(tiny_model("qwen2", seed=1, hidden=128), bits=4),
                  quantize_target(tiny_model("qwen2", seed=0, hidden=128), 4)):
        int4 = [m for m in model.modules() if isinstance(m, Int4Linear)]
        assert int4 and all(m.dense is None and m.dense_rows is None for m in int4)


def test_native_bf16_reads_the_cpu_flags(monkeypatch, tmp_path):
    import builtins

    real_open = builtins.open
    for flags, native in (("fpu sse avx avx2 fma", False), ("fpu avx2 avx512f avx512_bf16", True),
                          ("fp asimd bf16", True)):
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(
            cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
        assert quant.native_bf16_matmul() is native, flags
