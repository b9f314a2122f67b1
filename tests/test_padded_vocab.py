"""Pairs whose output layers differ only by padding rows (Qwen2.5-7B: 152,064 rows; its 0.5B draft: 151,936).

ModelPair accepts them when the tokenizer's vocabulary fits in both; the draft never proposes an id the target has no
row for (or that it could not read itself), target tokens in the other model's padding rows do not break the draft,
and the output is still exactly the target's. Tokenizers that really differ are refused.
"""
import copy

import pytest
import torch

from dynatree_lib import Autoregressive, DynaTree, FixedTree, Linear, ModelPair, TopNTree, generate, label
from dynatree_lib.models.pair import load_pair
from test_sampling import chi_square_pvalue, exact_first_three
from tiny import perturbed, reference_greedy, tiny_model

SMALL, BIG = 96, 128


def word_tokenizer(n: int):
    """A word-level tokenizer of `n` tokens (w0 ... w{n-1}; w0 is <unk>, w1 is <eos>)."""
    from tokenizers import Tokenizer, models as tmodels, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<eos>"] + [f"w{i}" for i in range(2, n)]
    tok = Tokenizer(tmodels.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


def with_rows(model, rows: int):
    """A copy of `model` whose input embedding and output layer have `rows` rows: cut, or grown with rows copied from
    the first ones (scaled up, so that an unmasked draft would often pick them)."""
    model = copy.deepcopy(model)
    old = model.get_output_embeddings().weight.shape[0]
    head_rows = model.get_output_embeddings().weight.detach().clone()
    model.resize_token_embeddings(rows, mean_resizing=False)
    if rows > old:
        with torch.no_grad():
            extra = rows - old
            model.get_output_embeddings().weight[old:] = 3.0 * head_rows[:extra]
            emb = model.get_input_embeddings().weight
            emb[old:] = emb[:extra]
    return model.eval()


def padded_pair(arch: str, target_rows: int, draft_rows: int, words: int = 90) -> ModelPair:
    target = tiny_model(arch, seed=0, vocab=target_rows)
    draft = with_rows(perturbed(target, 0.3, seed=1), draft_rows)
    return ModelPair(target, draft, word_tokenizer(words), name=f"tiny-{arch}-{target_rows}/{draft_rows}")


METHODS = [Linear(4), FixedTree(depth=5, branch=3, threshold=0.0), FixedTree(depth=4, branch=2, threshold=0.05),
           DynaTree(), TopNTree(nodes=8, max_depth=4, topk=3)]
PROMPT = [3, 14, 15, 92 % SMALL, 65, 35, 89, 79]


@pytest.mark.parametrize("rows", [(BIG, SMALL), (SMALL, BIG)], ids=["target128-draft96", "target96-draft128"])
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_padded_output_layers_give_the_target_output(arch, rows):
    pair = padded_pair(arch, *rows)
    assert pair.shared_vocab == SMALL
    n = 40
    ar = generate(pair, PROMPT, Autoregressive(), n, stop_at_eos=False).token_ids
    assert ar == reference_greedy(pair.target, PROMPT, n)
    if rows[0] == BIG:  # the target writes ids the draft has no row for: the draft must read them anyway
        assert max(ar) >= SMALL
    for method in METHODS:
        out = generate(pair, PROMPT, method, n, stop_at_eos=False)
        assert out.token_ids == ar, label(method)
        assert out.stats["accepted_nodes"] > 0, label(method)  # the draft still helps


def test_the_draft_never_proposes_a_padding_row():
    """Target 96 rows, draft 128 whose extra rows dominate its logits: every drafted node is a shared id."""
    from dynatree_lib.core import kvcache
    from dynatree_lib.core.draft import DraftState, draft_tree, fixed_expand

    pair = padded_pair("qwen2", SMALL, BIG)
    state = DraftState(kvcache.new_cache(pair.draft), pending=PROMPT, vocab=pair.shared_vocab)
    drafted = draft_tree(pair.draft, state, fixed_expand(4, 0.0, 60), 4, 4)
    assert drafted.tree.num_draft > 0 and int(drafted.tree.tokens.max()) < SMALL
    unmasked = draft_tree(pair.draft, DraftState(kvcache.new_cache(pair.draft), pending=PROMPT),
                          fixed_expand(4, 0.0, 60), 4, 1)
    assert int(unmasked.tree.tokens.max()) >= SMALL  # without the limit it would have (the test has teeth)


@pytest.mark.parametrize("rows", [(8, 6), (6, 8)], ids=["target8-draft6", "target6-draft8"])
def test_padded_output_layers_sample_exactly(rows):
    """Sampling stays exact: q over fewer rows than p is zero past them; q over more is cut to the shared ids."""
    v = rows[0]
    target = tiny_model("llama", seed=0, vocab=v, layers=1)
    pair = ModelPair(target, with_rows(perturbed(target, 0.5, seed=1), rows[1]), word_tokenizer(5))
    prompt, n_runs = [5, 1, 2, 3, 1, 2, 4, 5], 500
    exact = exact_first_three(pair.target, prompt, 1.0, None, None)
    counts = torch.zeros(v, v, v)
    for seed in range(n_runs):
        out = generate(pair, prompt, FixedTree(depth=2, branch=2, threshold=0.0), 4, stop_at_eos=False,
                       temperature=1.0, seed=seed)
        counts[tuple(out.token_ids[:3])] += 1
    p, df = chi_square_pvalue(counts, n_runs * exact)
    assert p > 1e-3, f"p = {p:.3g} (df = {df})"


def test_model_pair_refuses_a_tokenizer_that_does_not_fit():
    target, draft = tiny_model("llama", 0, vocab=BIG), tiny_model("llama", 1, vocab=SMALL, layers=1)
    with pytest.raises(ValueError, match=r"vocab_size=128.*vocab_size=96.*100 tokens do not fit"):
        ModelPair(target, draft, word_tokenizer(100))
    with pytest.raises(ValueError, match=r"give the pair's tokenizer"):
        ModelPair(target, draft)
    assert ModelPair(target, draft, word_tokenizer(SMALL)).shared_vocab == SMALL
    assert ModelPair(target, with_rows(target, BIG)).shared_vocab == BIG  # same rows: no tokenizer needed


def test_load_pair_padded_rows_and_different_tokenizers(tmp_path):
    def save(path, model, tok):
        model.save_pretrained(path)
        tok.save_pretrained(path)
        return str(path)

    target = tiny_model("llama", 0, vocab=BIG)
    t = save(tmp_path / "t", target, word_tokenizer(90))
    d = save(tmp_path / "d", with_rows(perturbed(target, 0.3, seed=1), SMALL), word_tokenizer(90))
    pair = load_pair(t, d, dtype="float32")
    assert pair.shared_vocab == SMALL
    out = generate(pair, "w5 w7 w9", FixedTree(depth=4, branch=2, threshold=0.0), 12, stop_at_eos=False)
    assert out.token_ids == generate(pair, "w5 w7 w9", Autoregressive(), 12, stop_at_eos=False).token_ids
    other = save(tmp_path / "o", with_rows(target, SMALL), word_tokenizer(91))  # really a different tokenizer
    with pytest.raises(ValueError, match="different tokenizers"):
        load_pair(t, other, dtype="float32")
