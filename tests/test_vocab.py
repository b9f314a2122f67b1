"""A frequency-trimmed draft vocabulary (models/vocab.py, the `draft_vocab` option): the draft scores K tokens, the
target verifies over all of them, so greedy output is the target's and sampling stays exact."""
import json

import pytest
import torch

from dynatree_lib import (AdaptiveTree, Autoregressive, DynaTree, FixedTree, HardwareAware, HFAssisted, HybridTree,
                          Linear, ModelPair, TopNTree, generate, label)
from dynatree_lib.bench import parse_method
from dynatree_lib.models.pair import vocab_size
from dynatree_lib.models.quant import Int4Linear, Int8Linear, quantize_draft
from dynatree_lib.models.vocab import (data_dir, full_probs, keep_ids, rank_from_counts, token_ranking,
                                       trim_draft_vocab)
from dynatree_lib.planning.calibrate import model_identity
from test_sampling import PROMPT, SMALL_VOCAB, chi_square_pvalue, exact_first_three, run_counts
from tiny import ARCHS, VOCAB, perturbed, reference_greedy, tiny_model, tiny_pair

K = 40  # of the tiny models' 96 token ids


def shuffled(pair: ModelPair, seed: int = 0) -> ModelPair:
    """The pair with a random vocabulary ranking: the kept ids are scattered, not 0..K-1."""
    ranking = torch.randperm(VOCAB, generator=torch.Generator().manual_seed(seed))
    return ModelPair(pair.target, pair.draft, name=f"{pair.name}-ranked{seed}", vocab_ranking=ranking)


METHODS = [
    Linear(3, draft_vocab=K),
    FixedTree(depth=3, branch=2, draft_vocab=K),
    FixedTree(depth=4, branch=3, threshold=0.0, draft_vocab=K, draft_bits=4),
    DynaTree(draft_vocab=K),
    DynaTree(draft_vocab=K, draft_bits=4),
    TopNTree(nodes=8, max_depth=4, topk=3, draft_vocab=K, draft_bits=8),
    HybridTree(tree=FixedTree(depth=3, branch=2, draft_vocab=K), max_ngram=2, num_tokens=3),
]


@pytest.mark.parametrize("ranking", [None, 0], ids=["id-order", "shuffled"])
@pytest.mark.parametrize("method", METHODS, ids=label)
@pytest.mark.parametrize("arch", ARCHS)
def test_trimmed_draft_keeps_greedy_output(arch, method, ranking):
    pair = tiny_pair(arch, "perturbed")
    if ranking is not None:
        pair = shuffled(pair, ranking)
    prompt = [11, 22, 33, 44, 55]
    out = generate(pair, prompt, method, 30, stop_at_eos=False)
    assert out.token_ids == reference_greedy(pair.target, prompt, 30)
    assert out.token_ids == generate(pair, prompt, Autoregressive(), 30, stop_at_eos=False).token_ids


def test_hardware_aware_with_trimmed_draft(monkeypatch, tmp_path):
    monkeypatch.setenv("DYNATREE_CACHE", str(tmp_path))  # calibrate the tiny trimmed draft afresh
    pair = shuffled(tiny_pair("llama", "perturbed"), 1)
    prompt = [3, 1, 4, 1, 5]
    out = generate(pair, prompt, HardwareAware(max_depth=3, max_nodes=8, draft_vocab=K, draft_bits=4), 24,
                   stop_at_eos=False)
    assert out.token_ids == reference_greedy(pair.target, prompt, 24)


@pytest.mark.parametrize("arch", ARCHS)
def test_ids_map_back_to_the_full_vocabulary(arch):
    """Draft = target, kept set = every token the target will emit (plus filler): a chain is then always accepted,
    which it is only if every trimmed index is mapped back to the right token id."""
    base = tiny_pair(arch, "same")
    prompt = [7, 8, 9, 10]
    expected = reference_greedy(base.target, prompt, 24)
    first = list(dict.fromkeys(expected))  # (+ 2 below: room for the eos id, always kept)
    rest = [t for t in torch.randperm(VOCAB, generator=torch.Generator().manual_seed(5)).tolist() if t not in first]
    pair = ModelPair(base.target, base.draft, vocab_ranking=torch.tensor(first + rest))
    out = generate(pair, prompt, Linear(4, draft_vocab=max(16, len(first) + 2)), 24, stop_at_eos=False)
    assert out.token_ids == expected
    assert out.stats["acceptance_nodes"] == 1.0


@pytest.mark.parametrize("head", ["float", "int8", "int4"])
def test_trim_keeps_the_kept_rows(head):
    model = tiny_model("qwen2", seed=3)
    if head == "int8":
        quantize_draft(model, bits=8)
    elif head == "int4":  # the tiny models' 32 input channels take the int4 kernel with groups of 32
        model.lm_head = Int4Linear.from_linear(model.lm_head.to(torch.bfloat16), group_size=32)
    keep = torch.tensor([90, 3, 17, 0, 42, 95, 8])
    trimmed = trim_draft_vocab(model, keep)
    assert torch.equal(trimmed.kept_ids, keep.sort().values)
    assert vocab_size(trimmed) == VOCAB and trimmed.get_input_embeddings().weight.shape[0] == VOCAB
    assert vocab_size(model) == VOCAB and getattr(model, "kept_ids", None) is None  # the original is untouched
    ids = torch.tensor([[1, 2, 3, 50, 94]])
    with torch.no_grad():
        full, part = model(input_ids=ids).logits, trimmed(input_ids=ids).logits
    assert part.shape[-1] == len(keep)
    # the same rows (a narrower GEMM may round differently); int4 codes are re-fitted from the dequantized rows
    tol = dict(rtol=1e-5, atol=1e-5) if head != "int4" else dict(rtol=0.05, atol=0.15)
    torch.testing.assert_close(part.float(), full[..., keep.sort().values].float(), **tol)
    assert isinstance(trimmed.lm_head, {"float": torch.nn.Linear, "int8": Int8Linear, "int4": Int4Linear}[head]) \
        or head == "int4"  # 7 rows are not a multiple of 16: an int4 head comes back as int8


def test_tied_embeddings_stay_whole():
    model = tiny_model("qwen2", seed=4)
    model.lm_head.weight = model.model.embed_tokens.weight  # tie, as Qwen2.5-0.5B does
    before = model.model.embed_tokens.weight.clone()
    trimmed = trim_draft_vocab(model, torch.arange(0, VOCAB, 3))
    assert trimmed.model.embed_tokens.weight.shape == (VOCAB, 32)
    assert torch.equal(trimmed.model.embed_tokens.weight, before) and torch.equal(model.lm_head.weight, before)
    assert trimmed.lm_head.weight.shape == (VOCAB // 3, 32)
    assert trimmed.lm_head.weight.data_ptr() != trimmed.model.embed_tokens.weight.data_ptr()
    assert not trimmed.config.tie_word_embeddings


def test_trim_then_quantize_and_cache():
    pair = shuffled(tiny_pair("gpt_neox", "perturbed"), 2)
    variant = pair.with_draft(4, K)
    assert variant.draft is pair.with_draft(4, K).draft  # cached on the pair
    assert variant.draft is not pair.with_draft(None, K).draft is not pair.with_draft(4).draft
    assert pair.with_draft_bits(4).draft is pair.with_draft(4).draft is pair._drafts[4]
    assert pair.with_draft() is pair and pair.with_draft_bits(None) is pair
    head = variant.draft.get_output_embeddings()
    assert isinstance(head, Int8Linear) and head.out_features == K  # 40 rows: int8 fallback of quantize_draft
    assert torch.equal(variant.draft.kept_ids, keep_ids(pair, K))


def test_keep_ids_keeps_special_tokens():
    pair = tiny_pair("llama", "perturbed")
    ranking = torch.arange(VOCAB).flip(0)  # 95 first
    pair = ModelPair(pair.target, pair.draft, vocab_ranking=ranking)
    eos = pair.target.generation_config.eos_token_id or pair.target.config.eos_token_id
    kept = keep_ids(pair, 20)
    assert len(kept) == 20 and torch.equal(kept, kept.sort().values)
    assert set(kept.tolist()) >= {eos} and set(kept.tolist()) - {eos} <= set(range(VOCAB - 20, VOCAB))
    assert torch.equal(keep_ids(pair, VOCAB), torch.arange(VOCAB))


def test_probabilities_map_to_full_vocabulary():
    model = trim_draft_vocab(tiny_model("llama", seed=0), torch.tensor([1, 4, 9]))
    q = torch.tensor([[0.2, 0.3, 0.5]])
    full = full_probs(model, q)
    assert full.shape == (1, VOCAB) and full.sum() == pytest.approx(1.0)
    assert full[0, [1, 4, 9]].tolist() == pytest.approx([0.2, 0.3, 0.5]) and full[0, 0] == 0


@pytest.mark.parametrize("method", [Linear(4, draft_vocab=K), FixedTree(depth=3, branch=3, draft_vocab=K, draft_bits=4),
                                    AdaptiveTree(phase=3, draft_vocab=K)], ids=label)
def test_sampling_is_seed_reproducible(method):  # (phase 3: tree shapes that do not depend on timings)
    pair = shuffled(tiny_pair("llama", "perturbed"), 3)
    run = lambda seed: generate(pair, [3, 14, 15, 92], method, 24, stop_at_eos=False, temperature=0.9,
                                top_p=0.95, seed=seed).token_ids
    first = run(7)
    assert run(7) == first
    assert any(run(seed) != first for seed in (8, 9, 10))


@pytest.mark.parametrize("method, n_runs", [(Linear(2), 1000), (FixedTree(depth=2, branch=3, threshold=0.0), 1000)],
                         ids=["Linear", "FixedTree"])
def test_sampling_with_trimmed_draft_matches_target_distribution(method, n_runs):
    """The draft scores 5 of 8 tokens (its q is zero on the others, which the target still emits): the first three
    tokens are still distributed exactly as target-only sampling (chi-square, as test_sampling.py)."""
    target = tiny_model("llama", seed=0, vocab=SMALL_VOCAB, layers=1)
    draft = trim_draft_vocab(perturbed(target, 0.5, seed=1), torch.tensor([0, 2, 3, 5, 7]))
    pair = ModelPair(target=target, draft=draft, name="tiny-llama-v8-trimmed")
    exact = exact_first_three(target, PROMPT, 1.0, None, None)
    counts = run_counts(pair, method, n_runs, 1.0, None, None)
    p, df = chi_square_pvalue(counts, n_runs * exact)
    assert p > 1e-3, f"{label(method)}: p = {p:.3g} (df = {df})"


PARSEABLE = [Linear(5, draft_vocab=32768), Linear(5, draft_bits=4, draft_vocab=16384),
             FixedTree(depth=6, branch=3, draft_vocab=65536), FixedTree(draft_bits=8, draft_vocab=16),
             HardwareAware(draft_bits=4, draft_vocab=32768), HardwareAware(max_depth=6, draft_vocab=16384)]
# Labels that show the option; each spec (some in old spellings) reads back to the method.
SHOWN = [(DynaTree(draft_bits=4, draft_vocab=32768), "DynaTree(draft_bits=4, draft_vocab=32768)"),
         (AdaptiveTree(phase=2, draft_vocab=20000), "AdaptiveTree(phase=2, draft_vocab=20000)"),
         (TopNTree(nodes=16, draft_vocab=32768), "TopNTree(nodes=16, draft_vocab=32768)"),
         (HybridTree(tree=DynaTree(draft_bits=4, draft_vocab=32768)), None)]


@pytest.mark.parametrize("method", PARSEABLE, ids=label)
def test_labels_parse_back(method):
    assert label(method).endswith(f"draft_vocab={method.draft_vocab})")
    assert parse_method(label(method)) == method


@pytest.mark.parametrize("method, spec", SHOWN, ids=[label(m) for m, _ in SHOWN])
def test_labels_show_draft_vocab(method, spec):
    assert label(method).count("draft_vocab=32768") + label(method).count("draft_vocab=20000") == 1
    if spec is not None:
        assert parse_method(spec) == method


def test_labels_without_the_option_are_unchanged():
    assert label(Linear(6)) == "Linear(k=6)"
    assert label(Linear(6, draft_bits=4)) == "Linear(k=6, draft_bits=4)"
    assert label(Linear(6, draft_bits=4, draft_vocab=32768)) == "Linear(k=6, draft_bits=4, draft_vocab=32768)"
    for m in (FixedTree(), DynaTree(), TopNTree(), HardwareAware(), DynaTree(draft_bits=4)):
        assert "draft_vocab" not in label(m)


@pytest.mark.parametrize("value", [0, 8, -1, True, 3.5, "32k"])
@pytest.mark.parametrize("cls", [Linear, FixedTree, DynaTree, TopNTree, HardwareAware])
def test_bad_draft_vocab_is_refused(cls, value):
    with pytest.raises(ValueError, match="draft_vocab must be None"):
        cls(draft_vocab=value)


def test_unusable_draft_vocab_is_refused_at_generate():
    pair = tiny_pair("llama", "perturbed")
    with pytest.raises(ValueError, match="exceeds the vocabulary of 96"):
        generate(pair, [1, 2, 3], Linear(3, draft_vocab=VOCAB + 1), 5)
    with pytest.raises(ValueError, match="needs a draft model"):
        ModelPair(pair.target, None).with_draft(None, K)
    with pytest.raises(ValueError, match="distinct token ids"):
        trim_draft_vocab(pair.draft, [1, 1, 2])
    with pytest.raises(ValueError, match="permutation"):
        token_ranking(ModelPair(pair.target, pair.draft, vocab_ranking=[0, 1, 2]))
    assert "draft_vocab" not in {f for f in HFAssisted.__dataclass_fields__}


def test_calibration_tells_trimmed_drafts_apart():
    pair = tiny_pair("gpt_neox", "perturbed")
    assert model_identity(pair.with_draft(None, K).draft) != model_identity(pair.draft)
    assert model_identity(pair.with_draft(None, K).draft) != model_identity(pair.with_draft(None, 48).draft)


def test_rank_from_counts_interleaves_counts_and_id_order():
    ranking = rank_from_counts([7, 3, 9], [5, 5, 1], 10)
    assert ranking.tolist() == [3, 0, 7, 1, 9, 2, 4, 5, 6, 8]
    assert sorted(ranking.tolist()) == list(range(10))


def test_stored_ranking_is_described():
    """data/vocab holds the Qwen ranking's counts with its provenance; it never reads the benchmark prompts."""
    meta = json.loads((data_dir() / "vocab" / "qwen2.5-stdlib.json").read_text())
    assert meta["vocab_size"] == 151936 and meta["command"].startswith("python scripts/build_vocab_ranking.py")
    assert "pydoc_data" in meta["skipped_dirs"]  # the technical prompts' source
    import numpy as np

    with np.load(data_dir() / "vocab" / "qwen2.5-stdlib.npz") as data:
        ranking = rank_from_counts(data["ids"], data["counts"], meta["vocab_size"])
    assert torch.equal(ranking.sort().values, torch.arange(151936))
