"""Bad input fails early with an error that names the problem."""
import pytest
import torch

from dynatree_lib import Autoregressive, FixedTree, Linear, ModelPair, generate
from tiny import tiny_model, tiny_pair


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: FixedTree(depth=0), "depth"),
        (lambda: FixedTree(branch=0), "branch"),
        (lambda: FixedTree(threshold=-0.1), "threshold"),
        (lambda: FixedTree(threshold=1.0), "threshold"),
        (lambda: FixedTree(max_nodes=0), "max_nodes"),
        (lambda: Linear(k=0), "k"),
        (lambda: Linear(k=2.5), "k"),
    ],
)
def test_bad_method_parameters(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_empty_prompt():
    pair = tiny_pair("llama", "perturbed")
    with pytest.raises(ValueError, match="empty"):
        generate(pair, [], Linear(3), 5)
    with pytest.raises(ValueError, match="empty"):
        generate(pair, "", Linear(3), 5)


def test_text_prompt_without_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        generate(tiny_pair("llama", "perturbed"), "hello", Linear(3), 5)


@pytest.mark.parametrize("n", [0, -3, 2.0])
def test_bad_max_new_tokens(n):
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(tiny_pair("llama", "perturbed"), [1, 2], Autoregressive(), n)


def test_prompt_beyond_context():
    pair = tiny_pair("qwen2", "perturbed")  # context 256
    with pytest.raises(ValueError, match="context"):
        generate(pair, [1] * 250, FixedTree(), 10)


def test_token_outside_vocab():
    with pytest.raises(ValueError, match="vocabulary"):
        generate(tiny_pair("llama", "perturbed"), [1, 10_000], Autoregressive(), 3)


def test_vocab_mismatch_refused():
    with pytest.raises(ValueError, match="vocabular"):
        ModelPair(target=tiny_model("llama", 0, vocab=96), draft=tiny_model("llama", 1, vocab=80))


def test_missing_draft():
    pair = ModelPair(target=tiny_model("llama", 0))
    with pytest.raises(ValueError, match="draft"):
        generate(pair, [1, 2], Linear(3), 4)
    assert len(generate(pair, [1, 2], Autoregressive(), 4, stop_at_eos=False).token_ids) == 4


def test_unknown_method():
    with pytest.raises(TypeError, match="unknown decoding method"):
        generate(tiny_pair("llama", "perturbed"), [1, 2], object(), 4)


def test_batched_tensor_prompt_refused():
    pair = tiny_pair("llama", "perturbed")
    with pytest.raises(ValueError, match="batch"):
        generate(pair, torch.tensor([[1, 2, 3], [4, 5, 6]]), Linear(3), 4)
    with pytest.raises(ValueError, match="batch"):
        generate(pair, torch.ones(1, 1, 3, dtype=torch.long), Linear(3), 4)
    # one prompt as (1, L) or (L,) stays fine, and means the same tokens
    one = generate(pair, torch.tensor([[1, 2, 3]]), Linear(3), 4, stop_at_eos=False).token_ids
    assert one == generate(pair, torch.tensor([1, 2, 3]), Linear(3), 4, stop_at_eos=False).token_ids
    assert one == generate(pair, [1, 2, 3], Linear(3), 4, stop_at_eos=False).token_ids


def test_draft_context_shorter_than_the_output_refused():
    target = tiny_model("llama", 0)  # context 256
    draft = tiny_model("llama", 2, layers=1)
    draft.config.max_position_embeddings = 16
    pair = ModelPair(target=target, draft=draft)
    with pytest.raises(ValueError, match="draft's context of 16"):
        generate(pair, [1] * 10, FixedTree(), 10)
    with pytest.raises(ValueError, match="draft's context of 16"):
        generate(pair, [1] * 10, Linear(3), 7)
    # within the draft's context, or a method that does not use the draft: fine
    assert len(generate(pair, [1] * 10, Linear(3), 6, stop_at_eos=False).token_ids) == 6
    assert len(generate(pair, [1] * 10, Autoregressive(), 20, stop_at_eos=False).token_ids) == 20


@pytest.mark.parametrize("prompt, match", [
    ([1.7, 2.2], "integer"),               # int() would run it as [1, 2]
    (["1", "2"], "integer"),
    ([True, False], "integer"),
    (torch.tensor([1.0, 2.0]), "integer"),  # failed deep inside torch
    (torch.tensor([True, False]), "integer"),
    (None, "prompt"),                       # was "'NoneType' object is not iterable"
    (5, "prompt"),
])
def test_prompt_that_is_not_token_ids_refused(prompt, match):
    with pytest.raises(ValueError, match=match):
        generate(tiny_pair("llama", "perturbed"), prompt, Autoregressive(), 3)


def test_token_ids_of_any_integer_type_accepted():
    import numpy as np

    pair = tiny_pair("llama", "perturbed")
    want = generate(pair, [1, 2], Autoregressive(), 3).token_ids
    for prompt in (np.array([1, 2]), torch.tensor([[1, 2]], dtype=torch.int32), (1, 2)):
        assert generate(pair, prompt, Autoregressive(), 3).token_ids == want


@pytest.mark.parametrize("n", [True, False])
def test_boolean_max_new_tokens_refused(n):  # True was one token
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(tiny_pair("llama", "perturbed"), [1, 2], Autoregressive(), n)
