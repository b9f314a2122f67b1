"""Tiny randomly initialised causal LMs of the three families the library must support, for fast exact tests, and the
Hypothesis strategies that draw methods and prompts for them."""
from __future__ import annotations

import functools
import os

import torch
from hypothesis import strategies as st
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from dynatree_lib import FixedTree, Linear, ModelPair

VOCAB = 96
ARCHS = ("gpt_neox", "llama", "qwen2")
DRAFTS = ("same", "perturbed", "unrelated")  # the draft kinds tiny_pair builds
# Where and in which dtype the tiny models run by default: CPU float32, unless scripts/gpu_check.sh asks for
# another (DYNATREE_TEST_DEVICE=cuda DYNATREE_TEST_DTYPE=float16). A model's weights are drawn on the CPU and then
# moved (a perturbed draft's noise is drawn on the device).
DEVICE = torch.device(os.environ.get("DYNATREE_TEST_DEVICE", "cpu"))
DTYPE = getattr(torch, os.environ.get("DYNATREE_TEST_DTYPE", "float32"))


def tiny_model(arch: str, seed: int, vocab: int = VOCAB, dtype=None, layers: int = 2, hidden: int = 32):
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                  intermediate_size=2 * hidden, max_position_embeddings=256)
    if arch == "gpt_neox":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**common, rotary_pct=0.25))  # Pythia's partial rotary
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, num_key_value_heads=2))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, num_key_value_heads=2))
    else:
        raise ValueError(arch)
    # Random init is nearly uniform; sharper logits make drafts partially agree and argmax ties impossible.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    return model.to(device=DEVICE, dtype=dtype or DTYPE).eval()


def perturbed(model, scale: float, seed: int):
    """A copy of `model` with Gaussian noise on every weight: a draft that agrees often but not always."""
    import copy

    torch.manual_seed(seed)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(torch.randn_like(p) * scale * p.std().clamp(min=1e-3))
    return clone


@functools.lru_cache(maxsize=None)
def tiny_pair(arch: str, draft_kind: str, dtype=None) -> ModelPair:
    target = tiny_model(arch, seed=0, dtype=dtype)
    if draft_kind == "same":
        draft = target
    elif draft_kind == "perturbed":
        draft = perturbed(target, 0.5, seed=1)
    elif draft_kind == "unrelated":
        draft = tiny_model(arch, seed=2, dtype=dtype, layers=1)
    else:
        raise ValueError(draft_kind)
    return ModelPair(target=target, draft=draft, name=f"tiny-{arch}-{draft_kind}")


def reference_greedy(model, prompt_ids, max_new_tokens: int) -> list[int]:
    """transformers' own greedy generate, EOS switched off: the ground truth every method must reproduce."""
    ids = torch.tensor([prompt_ids], device=model.device)
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    try:
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=0)
    finally:
        model.generation_config.eos_token_id = saved
    return out[0, len(prompt_ids):].tolist()


def linear_or_fixed_tree(max_depth: int, thresholds, max_nodes: int):
    """A Linear (k from 1 to 8) or a FixedTree (depth 1..max_depth, branch 1..4, a threshold of `thresholds`,
    max_nodes 1..max_nodes), drawn by Hypothesis."""
    return st.one_of(
        st.builds(Linear, k=st.integers(1, 8)),
        st.builds(
            FixedTree,
            depth=st.integers(1, max_depth),
            branch=st.integers(1, 4),
            threshold=st.sampled_from(thresholds),
            max_nodes=st.integers(1, max_nodes),
        ),
    )


def token_lists(max_size: int):
    """Prompts of 1..max_size token ids of the tiny vocabulary, drawn by Hypothesis."""
    return st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=max_size)


@functools.lru_cache(maxsize=None)
def sharp_pair(arch: str, draft_kind: str) -> ModelPair:
    """tiny_pair with 5x sharper logits: top-1 probabilities spread over 0.2..0.95, so every confidence class of
    DynaTree (and its depth rules) is exercised; the stock tiny models are nearly uniform (top-1 < 0.4)."""

    def sharpen(model):
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(5.0)
        return model

    target = sharpen(tiny_model(arch, seed=0))
    draft = {"same": lambda: target, "perturbed": lambda: perturbed(target, 0.3, seed=1),
             "unrelated": lambda: sharpen(tiny_model(arch, seed=2, layers=1))}[draft_kind]()
    return ModelPair(target=target, draft=draft, name=f"sharp-{arch}-{draft_kind}")
