"""Defects found by probing the public API and the stored results with bad input and faults (issue 24, item 7): each
test failed before its fix."""
from __future__ import annotations

import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from dynatree_lib import Autoregressive, FixedTree, ModelPair, generate
from tiny import VOCAB


def dropout_model(seed: int):
    """A tiny Llama with attention dropout, left in training mode as a freshly built transformers model is."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                                         attention_dropout=0.5))
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    return model


def test_models_in_training_mode_are_switched_to_eval_with_a_warning():
    target, draft = dropout_model(0), dropout_model(1)
    assert target.training and draft.training
    with pytest.warns(UserWarning, match="training mode"):
        pair = ModelPair(target, draft)
    assert not target.training and not draft.training
    runs = [generate(pair, [1, 2, 3], method, 24).token_ids for method in (Autoregressive(), FixedTree(), FixedTree())]
    assert runs[0] == runs[1] == runs[2]  # dropout on: random tokens, different from run to run


def test_a_model_put_back_in_training_mode_is_caught_by_generate():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pair = ModelPair(dropout_model(0), dropout_model(1))
    want = generate(pair, [1, 2, 3], FixedTree(), 24).token_ids
    pair.target.train()
    with pytest.warns(UserWarning, match="target.*training mode"):
        assert generate(pair, [1, 2, 3], FixedTree(), 24).token_ids == want
    assert not pair.target.training
