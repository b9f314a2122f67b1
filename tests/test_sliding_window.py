"""Sliding-window attention (Mistral, Gemma 2/3: DynamicSlidingWindowLayer caches): exact inside the window, refused
with a clear error beyond it."""
import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from dynatree_lib import (Autoregressive, DynaTree, FixedTree, HybridTree, Linear, ModelPair, PromptLookup, Streaming,
                          TopNTree, generate, label)
from tiny import VOCAB, perturbed

WINDOW = 24


def tiny_mistral(seed: int, window: int = WINDOW):
    torch.manual_seed(seed)
    config = MistralConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                           sliding_window=window)
    model = MistralForCausalLM(config)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    return model.float().eval()


def full_forward_greedy(model, prompt, n):
    """The reference: one full forward over the whole sequence per token (the model's own sliding-window mask)."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
            ids.append(int(logits.argmax()))
    return ids[len(prompt):]


@pytest.fixture(scope="module")
def pair():
    target = tiny_mistral(0)
    return ModelPair(target=target, draft=perturbed(target, 0.5, seed=1))


METHODS = [Autoregressive(), Linear(3), FixedTree(depth=3, branch=2, threshold=0.0), DynaTree(), TopNTree(),
           PromptLookup(), HybridTree(), Streaming(Linear(3), cache_size=12, sink_tokens=2)]


@pytest.mark.parametrize("method", METHODS, ids=label)
def test_inside_the_window_equals_greedy(pair, method):
    prompt = [3, 14, 15, 9, 2, 6, 5, 3]
    n = WINDOW - len(prompt)  # prompt + output fill the window exactly
    out = generate(pair, prompt, method, n, stop_at_eos=False).token_ids
    if isinstance(method, Streaming):
        assert out == generate(pair, prompt, Streaming(Autoregressive(), 12, 2), n, stop_at_eos=False).token_ids
    else:
        assert out == full_forward_greedy(pair.target, prompt, n)


@pytest.mark.parametrize("method", [Linear(3), FixedTree(), DynaTree(), PromptLookup()], ids=label)
def test_beyond_the_window_refused(pair, method):
    prompt = [3, 14, 15, 9, 2, 6, 5, 3]
    with pytest.raises(ValueError, match=r"mistral.*sliding window of 24"):
        generate(pair, prompt, method, WINDOW - len(prompt) + 1)


def test_autoregressive_beyond_the_window_equals_greedy(pair):
    prompt = [3, 14, 15, 9, 2, 6, 5, 3]
    out = generate(pair, prompt, Autoregressive(), 2 * WINDOW, stop_at_eos=False).token_ids
    assert out == full_forward_greedy(pair.target, prompt, 2 * WINDOW)


def test_hybrid_gemma2_inside_the_window_equals_greedy():
    """Gemma 2: sliding and full-attention layers alternate (a hybrid cache)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=8, intermediate_size=64, max_position_embeddings=256,
                          sliding_window=WINDOW)
    target = Gemma2ForCausalLM(config).float().eval()
    with torch.no_grad():
        target.get_output_embeddings().weight.mul_(8.0)
    pair = ModelPair(target=target, draft=perturbed(target, 0.5, seed=1))
    prompt = [3, 14, 15, 9, 2, 6, 5, 3]
    for method in (Linear(3), FixedTree(depth=3, branch=2, threshold=0.0)):
        out = generate(pair, prompt, method, WINDOW - len(prompt), stop_at_eos=False).token_ids
        assert out == full_forward_greedy(target, prompt, WINDOW - len(prompt)), label(method)
    with pytest.raises(ValueError, match=r"gemma2.*sliding window of 24"):
        generate(pair, prompt, Linear(3), WINDOW)
