"""models.fused: the int4 draft's forward with fused projections gives transformers' own logits bit for bit, and a
method drafting with it drafts the same trees and commits the target's greedy tokens."""
import copy

import pytest
import torch

from dynatree_lib import DynaTree, FixedTree, Linear, ModelPair, generate, quantize_draft
from dynatree_lib.core import kvcache
from dynatree_lib.models import fused
from dynatree_lib.core.forward import forward
from dynatree_lib.core.mask import tree_attention_mask, tree_position_ids
from tiny import DEVICE, perturbed, reference_greedy, tiny_model

pytestmark = pytest.mark.skipif(DEVICE.type != "cpu", reason="the int4 kernel is CPU-only")


def int4_draft(arch, dtype=torch.float32, dense_rows=None, hidden=128):
    """A tiny int4 draft whose projections are whole packing blocks of the kernel (64 output channels)."""
    model = tiny_model(arch, seed=1, dtype=dtype, hidden=hidden)
    return quantize_draft(model, bits=4, group_size=32, dense_rows=dense_rows)


def own_logits(model, ids, cache, positions, mask):
    """transformers' forward, as core.forward calls it when the model is not fused."""
    return model(input_ids=ids, position_ids=positions, attention_mask=mask, past_key_values=cache).logits[0]


def level_inputs(model, rows: int, prefix: int):
    """A tree level of `rows` nodes (a chain: each sees the ones before it) over `prefix` cached tokens."""
    visible = torch.ones(rows, rows, dtype=torch.bool).tril()
    mask = tree_attention_mask(visible, prefix, model.dtype)
    return torch.arange(rows).unsqueeze(0) + 7, tree_position_ids(torch.arange(1, rows + 1), prefix - 1), mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_fused_forward_equals_the_models_own_bit_for_bit(arch, dtype):
    model = int4_draft(arch, dtype, dense_rows=16)  # 20 rows take the dense path, fewer the kernel
    reference = copy.deepcopy(model)  # not fused: transformers' own forward
    assert fused.fuse(model) and not fused.runs(reference, torch.zeros(1, 1), None)
    prompt = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]])
    caches = [kvcache.new_cache(model), kvcache.new_cache(reference)]
    with torch.inference_mode():
        for m, cache in zip((model, reference), caches):
            forward(m, prompt, cache)
        calls = [(torch.tensor([[11]]), None, None)]  # one row, no mask: a chain's step
        calls += [level_inputs(model, rows, prompt.shape[1]) for rows in (1, 3, 20)]
        for ids, positions, mask in calls:
            assert fused.runs(model, ids, mask)
            got = forward(model, ids, caches[0], positions, mask)
            want = own_logits(reference, ids, caches[1], positions, mask)
            assert torch.equal(got, want), (ids.shape, (got - want).abs().max())
            for cache in caches:
                kvcache.crop(cache, prompt.shape[1])
        # and the projections still compute what they did: transformers' forward on the fused model is unchanged
        torch.testing.assert_close(model(prompt).logits, reference(prompt).logits, rtol=0, atol=0)


def test_what_is_not_fused():
    assert not fused.fuse(tiny_model("qwen2", seed=1, hidden=128))  # no int4 layers
    assert not fused.fuse(int4_draft("qwen2", hidden=32))  # 16-channel key/value projections: not whole blocks
    assert not fused.fuse(int4_draft("gpt_neox"))  # another decoder's shape
    model = tiny_model("qwen2", seed=1, hidden=128)
    model.config.layer_types = ["sliding_attention"] * len(model.model.layers)
    assert not fused.fuse(quantize_draft(model, bits=4, group_size=32))
    model = int4_draft("llama")
    fused.fuse(model)
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    assert not fused.runs(model, prompt, None)  # several rows without a mask: transformers builds the causal mask


def test_int4_models_are_fused_where_they_can_be():
    target = tiny_model("qwen2", seed=0, hidden=128)
    pair = ModelPair(target, perturbed(target, 0.3, seed=1), name="tiny")
    assert pair.with_draft_bits(4).draft in fused._FUSED and pair.with_draft_bits(8).draft not in fused._FUSED
    assert pair.with_target_bits(4).target in fused._FUSED and pair.target not in fused._FUSED


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_fused_draft_drafts_the_same_trees_and_stays_exact(arch, monkeypatch):
    target = tiny_model(arch, seed=0, hidden=128)
    draft = quantize_draft(perturbed(target, 0.3, seed=1), bits=4, group_size=32)
    plain = ModelPair(target, copy.deepcopy(draft), name="plain")  # a copy is not fused
    quick = ModelPair(target, draft, name="fused")
    assert quick.draft in fused._FUSED and plain.draft not in fused._FUSED
    taken = []
    original = fused.forward
    monkeypatch.setattr(fused, "forward", lambda model, *args: taken.append(model) or original(model, *args))
    prompt = [5, 17, 3, 80, 41, 9, 9, 12]
    expected = reference_greedy(target, prompt, 40)
    for method in (Linear(4), FixedTree(depth=4, branch=2, threshold=0.0), DynaTree(max_nodes=32)):
        a = generate(plain, prompt, method, 40, stop_at_eos=False)
        b = generate(quick, prompt, method, 40, stop_at_eos=False)
        assert a.token_ids == b.token_ids == expected
        if not isinstance(method, DynaTree):  # DynaTree's trees follow measured times, so they may differ run to run
            assert [r["nodes"] for r in a.trace] == [r["nodes"] for r in b.trace]
    assert taken and all(m is quick.draft for m in taken)  # the fused path drafted, for the fused pair only


def test_the_forward_timer_counts_fused_forwards():
    """Fused forwards bypass the module's hooks: the timer must still count and time every draft forward (the
    benchmark's draft_forwards and draft_forward_s, and the planner's calibration, read it)."""
    from dynatree_lib.core.loop import running_pair
    from dynatree_lib.core.timing import ForwardTimer

    target = tiny_model("qwen2", seed=0, hidden=128)
    draft = quantize_draft(perturbed(target, 0.3, seed=1), bits=4, group_size=32)
    for pair in (ModelPair(target, draft, name="fused"), ModelPair(target, copy.deepcopy(draft), name="plain")):
        method = FixedTree(depth=4, branch=2, threshold=0.0)
        with ForwardTimer(running_pair(pair, method), log=True) as timer:
            out = generate(pair, [5, 17, 3, 80, 41, 9, 9, 12], method, 30, stop_at_eos=False)
        assert timer.calls["draft"] == out.stats["draft_forwards"] > 0, (pair.name, timer.calls)
        assert timer.seconds["draft"] > 0 and all(f[1] > 0 for f in timer.forwards if f[0] == "draft")
