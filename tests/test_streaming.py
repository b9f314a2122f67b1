"""Streaming (attention sinks + recent window): greedy output equals target-only greedy decoding under the SAME policy.

The reference is deliberately naive and shares no code with the library's streaming path: one token at a time over a
full, never-evicted transformers cache, with the policy written out as an explicit mask row per position.
"""
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from transformers import DynamicCache

from dynatree_lib import Autoregressive, DynaTree, FixedTree, HFAssisted, Linear, Streaming, generate, label
from tiny import ARCHS, VOCAB, reference_greedy, tiny_pair

DRAFTS = ("same", "perturbed", "unrelated")


@torch.no_grad()
def windowed_greedy(model, prompt_ids, n, cache_size, sink_tokens):
    """Greedy decoding where the query at position p attends to positions j <= p with j < sink_tokens or
    j > p - (cache_size - sink_tokens)."""
    cache = DynamicCache(config=model.config)
    ids, out = list(prompt_ids), []
    for p in range(len(prompt_ids) + n - 1):
        row = [0.0 if j < sink_tokens or j > p - (cache_size - sink_tokens) else float("-inf") for j in range(p + 1)]
        mask = torch.tensor(row, dtype=model.dtype).view(1, 1, 1, p + 1)
        logits = model(input_ids=torch.tensor([[ids[p]]]), position_ids=torch.tensor([[p]]), attention_mask=mask,
                       past_key_values=cache, use_cache=True).logits
        if p >= len(prompt_ids) - 1:
            ids.append(int(logits[0, -1].argmax()))
            out.append(ids[-1])
    return out


inner_methods = st.one_of(
    st.just(Autoregressive()),
    st.builds(Linear, k=st.integers(1, 6)),
    st.builds(FixedTree, depth=st.integers(1, 6), branch=st.integers(1, 3),
              threshold=st.sampled_from([0.0, 0.01, 0.05]), max_nodes=st.integers(1, 24)),
)
prompts = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=24)


@st.composite
def streaming_methods(draw):
    cache_size = draw(st.integers(2, 20))
    return Streaming(draw(inner_methods), cache_size=cache_size, sink_tokens=draw(st.integers(0, min(4, cache_size - 1))),
                     slack=draw(st.one_of(st.none(), st.integers(0, 10))))


@pytest.mark.parametrize("draft_kind", DRAFTS)
@pytest.mark.parametrize("arch", ARCHS)
@given(method=streaming_methods(), prompt=prompts, n=st.integers(1, 32))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_streaming_equals_windowed_greedy(arch, draft_kind, method, prompt, n):
    pair = tiny_pair(arch, draft_kind)
    out = generate(pair, prompt, method, n, stop_at_eos=False)
    expected = windowed_greedy(pair.target, prompt, n, method.cache_size, method.sink_tokens)
    assert out.token_ids == expected, label(method)
    total = len(prompt) + n - 1  # tokens the target has processed by the end
    if total > method.cache_size + method.evict_slack:
        assert out.stats["kv_compressions"] > 0
    biggest_tree = 25  # FixedTree max_nodes <= 24, plus the root
    assert out.stats["kv_peak_slots"] <= max(len(prompt), method.cache_size + method.evict_slack + biggest_tree)


@pytest.mark.parametrize("method", [Linear(6), FixedTree(depth=5, branch=3, threshold=0.0, max_nodes=30)], ids=label)
@pytest.mark.parametrize("window", [1, 3])
@pytest.mark.parametrize("arch", ARCHS)
def test_trees_deeper_than_the_window(arch, window, method):
    """A tree node must not see its own ancestors once they fall out of its window."""
    pair = tiny_pair(arch, "same")
    prompt = [11, 22, 33, 44, 55, 66, 77]
    streaming = Streaming(method, cache_size=window + 2, sink_tokens=2, slack=3)
    out = generate(pair, prompt, streaming, 30, stop_at_eos=False)
    assert out.token_ids == windowed_greedy(pair.target, prompt, 30, window + 2, 2)
    assert out.stats["accepted_nodes"] >= 3  # deep enough acceptance that the mask inside the tree mattered


def other_speculate_methods():
    from dynatree_lib import DynaTree, HybridTree, PromptLookup, TopNTree

    return [DynaTree(), PromptLookup(), HybridTree(), TopNTree()]


@pytest.mark.parametrize("method", other_speculate_methods(), ids=label)
def test_any_speculate_method_can_stream(method):
    pair = tiny_pair("llama", "perturbed")
    prompt = [1, 2, 3, 1, 2, 3, 1, 2, 3, 40, 41, 42, 1, 2, 3]  # repeats, so the n-gram drafters propose something
    out = generate(pair, prompt, Streaming(method, cache_size=10, sink_tokens=2, slack=2), 30, stop_at_eos=False)
    assert out.token_ids == windowed_greedy(pair.target, prompt, 30, 10, 2), label(method)
    assert out.stats["kv_compressions"] > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_reference_is_full_greedy_when_the_window_covers_everything(arch):
    """The naive reference itself: with a window longer than the text it is plain greedy decoding."""
    pair = tiny_pair(arch, "same")
    prompt = [5, 17, 2, 88, 40, 9]
    assert windowed_greedy(pair.target, prompt, 30, 64, 4) == reference_greedy(pair.target, prompt, 30)


@pytest.mark.parametrize("arch", ARCHS)
def test_window_changes_the_output(arch):
    """A small window must matter (otherwise the exactness test above could not tell a policy from no policy)."""
    pair = tiny_pair(arch, "perturbed")
    prompts = [[(7 * i + 3 * s) % VOCAB for i in range(24)] for s in range(4)]
    method = Streaming(FixedTree(depth=4, branch=2, threshold=0.0), cache_size=6, sink_tokens=2)
    differs = [generate(pair, p, method, 40, stop_at_eos=False).token_ids != reference_greedy(pair.target, p, 40)
               for p in prompts]
    assert any(differs)


TREE_SIZES = {Autoregressive(): 1, Linear(4): 5, FixedTree(depth=5, branch=3, threshold=0.0, max_nodes=20): 21}


@pytest.mark.parametrize("method", list(TREE_SIZES), ids=label)
@pytest.mark.parametrize("arch", ARCHS)
def test_eviction_timing_does_not_change_the_output(arch, method):
    """Compressing every round (slack 0) or never (huge slack: the mask alone enforces the policy) is the same."""
    pair = tiny_pair(arch, "perturbed")
    prompt = list(range(10, 40))  # longer than the cache: the prefill already windows and compresses
    eager = generate(pair, prompt, Streaming(method, cache_size=12, sink_tokens=3, slack=0), 40, stop_at_eos=False)
    lazy = generate(pair, prompt, Streaming(method, cache_size=12, sink_tokens=3, slack=1000), 40, stop_at_eos=False)
    assert eager.token_ids == lazy.token_ids
    assert lazy.stats["kv_compressions"] == 0 and lazy.stats["kv_evicted_tokens"] == 0
    assert eager.stats["kv_compressions"] > 5
    # The target processed 30 + 39 tokens (not the last one emitted); at most cache_size of them are left.
    assert eager.stats["kv_evicted_tokens"] >= 30 + 39 - 12
    # Between rounds the cache never exceeds cache_size + slack; verification adds one tree on top.
    assert eager.stats["kv_peak_slots"] <= max(30, 12 + TREE_SIZES[method])


def test_large_cache_is_plain_greedy():
    pair = tiny_pair("qwen2", "perturbed")
    prompt = [4, 8, 15, 16, 23, 42]
    out = generate(pair, prompt, Streaming(Linear(3), cache_size=200), 40, stop_at_eos=False)
    assert out.token_ids == reference_greedy(pair.target, prompt, 40)
    assert out.stats["kv_compressions"] == 0


def test_validation_and_label():
    with pytest.raises(ValueError, match="cache_size"):
        Streaming(Linear(3), cache_size=0)
    with pytest.raises(ValueError, match="sink_tokens"):
        Streaming(Linear(3), cache_size=4, sink_tokens=4)
    with pytest.raises(ValueError, match="sink_tokens"):
        Streaming(Linear(3), sink_tokens=-1)
    with pytest.raises(ValueError, match="slack"):
        Streaming(Linear(3), slack=-2)
    with pytest.raises(ValueError, match="method"):
        Streaming(HFAssisted())
    with pytest.raises(ValueError, match="method"):
        Streaming(Streaming(Linear(3)))
    with pytest.raises(ValueError, match="method"):
        Streaming(Linear)
    assert label(Streaming(Linear(6), cache_size=512)) == "Streaming(method=Linear(k=6), cache_size=512)"
    assert Streaming(Autoregressive()).needs_draft is False and Streaming(Linear(2)).needs_draft is True


@pytest.mark.parametrize("method", [Linear(3), FixedTree(depth=3, branch=2), DynaTree(phase=3)], ids=label)
def test_sampling_streams(method):
    """Lossless sampling runs under Streaming: with a window that covers everything it draws exactly the unstreamed
    method's tokens for the same seed (same distributions, same random stream); with a small window it evicts and
    stays reproducible per seed. (The sampling rule itself is chi-square-tested unstreamed in test_sampling.py.)"""
    pair = tiny_pair("llama", "perturbed")
    kw = dict(stop_at_eos=False, temperature=0.8, seed=5)
    plain = generate(pair, [1, 2, 3, 4], method, 24, **kw).token_ids
    assert generate(pair, [1, 2, 3, 4], Streaming(method, cache_size=1000), 24, **kw).token_ids == plain
    small = Streaming(method, cache_size=8, sink_tokens=2)
    first = generate(pair, [1, 2, 3, 4], small, 24, **kw)
    assert first.stats["kv_compressions"] > 0
    assert generate(pair, [1, 2, 3, 4], small, 24, **kw).token_ids == first.token_ids
    assert generate(pair, [1, 2, 3, 4], small, 24, **{**kw, "seed": 6}).token_ids != first.token_ids
