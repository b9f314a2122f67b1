"""Instruct pairs: `generate(..., chat=True)` and conversation prompts go through the tokenizer's chat template."""
import pytest
import torch

from dynatree_lib import Autoregressive, FixedTree, ModelPair, generate
from dynatree_lib.core.loop import encode
from dynatree_lib.models.embedded import cache_root
from tiny import perturbed, tiny_model

WORDS = ["<unk>", "<eos>", "[system]", "[user]", "[assistant]", "[end]", "def", "add", "a", "b", "return", "be", "brief"]
TEMPLATE = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} [end] {% endfor %}"
            "{% if add_generation_prompt %}[assistant]{% endif %}")


def tokenizer(template=TEMPLATE):
    from tokenizers import Tokenizer, models as tmodels, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tmodels.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    fast.chat_template = template
    return fast


@pytest.fixture(scope="module")
def pair():
    target = tiny_model("llama", seed=0, vocab=len(WORDS))
    return ModelPair(target, perturbed(target, 0.3, seed=1), tokenizer(), name="tiny-chat")


def ids(*words):
    return [WORDS.index(w) for w in words]


def test_chat_true_applies_the_template_to_a_text_prompt(pair):
    out = generate(pair, "def add a b", Autoregressive(), 6, chat=True, stop_at_eos=False)
    assert out.prompt_ids == ids("[user]", "def", "add", "a", "b", "[end]", "[assistant]")
    plain = generate(pair, "def add a b", Autoregressive(), 6, stop_at_eos=False)
    assert plain.prompt_ids == ids("def", "add", "a", "b")  # without chat=True the text is used as is


def test_messages_are_templated_and_decoded_exactly(pair):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "def add a b"}]
    want = ids("[system]", "be", "brief", "[end]", "[user]", "def", "add", "a", "b", "[end]", "[assistant]")
    assert encode(pair, messages) == encode(pair, messages, chat=True) == want
    assert encode(pair, [{"role": "user", "content": "a b"}]) == encode(pair, "a b", chat=True)
    ar = generate(pair, messages, Autoregressive(), 16, stop_at_eos=False)
    tree = generate(pair, messages, FixedTree(depth=4, branch=2, threshold=0.0), 16, stop_at_eos=False)
    assert ar.prompt_ids == tree.prompt_ids == want
    assert tree.token_ids == ar.token_ids  # still exactly the target's output
    assert tree.text == pair.tokenizer.decode(tree.token_ids)


def test_chat_errors(pair):
    bare = ModelPair(pair.target, pair.draft, tokenizer(template=None), name="no-template")
    with pytest.raises(ValueError, match="no-template has no chat template"):
        generate(bare, "a b", Autoregressive(), 2, chat=True)
    with pytest.raises(ValueError, match="no chat template"):
        generate(bare, [{"role": "user", "content": "a b"}], Autoregressive(), 2)
    with pytest.raises(ValueError, match="not token ids"):
        generate(pair, [3, 4, 5], Autoregressive(), 2, chat=True)
    with pytest.raises(ValueError, match="not token ids"):
        generate(pair, torch.tensor([3, 4, 5]), Autoregressive(), 2, chat=True)
    with pytest.raises(ValueError, match='"role" and "content"'):
        generate(pair, [{"role": "user"}], Autoregressive(), 2)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        generate(ModelPair(pair.target, pair.draft), "a b", Autoregressive(), 2, chat=True)
    with pytest.raises(ValueError, match="empty"):
        generate(pair, "", Autoregressive(), 2, chat=True)


@pytest.mark.embedded
def test_embedded_tokenizer_chat_template():
    """The embedded Qwen instruct tokenizer (only the tokenizer is loaded): ChatML with the assistant turn opened."""
    from transformers import AutoTokenizer

    folder = cache_root() / "models" / "qwen2.5-coder-0.5b-instruct"
    if not (folder / "tokenizer.json").exists():
        pytest.skip(f"the embedded pair is not in the cache ({folder}); python -m dynatree_lib fetch")
    tok = AutoTokenizer.from_pretrained(folder)
    qwen = ModelPair(torch.nn.Linear(1, 1).eval(), None, tok, name="qwen tokenizer")  # encode needs only the tokenizer
    prompt_ids = encode(qwen, "Write a Python function that adds two numbers.", chat=True)
    text = tok.decode(prompt_ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nWrite a Python function that adds two numbers.<|im_end|>" in text
    assert prompt_ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3
    assert encode(qwen, [{"role": "user", "content": "Write a Python function that adds two numbers."}]) == prompt_ids
