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
