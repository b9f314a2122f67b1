"""Every greedy method reproduces target-only greedy decoding (transformers' generate) token for token, float32."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dynatree_lib import (Autoregressive, DynaTree, FixedTree, HFAssisted, HFPromptLookup, Linear, generate,
                          label)
from dynatree_lib.core.draft import draft_tree, DraftState, fixed_expand
from dynatree_lib.core import kvcache
from method_traces import record
from tiny import ARCHS, DRAFTS, linear_or_fixed_tree, reference_greedy, tiny_pair, token_lists

methods = linear_or_fixed_tree(max_depth=7, thresholds=[0.0, 0.001, 0.01, 0.05, 0.2], max_nodes=40)
prompts = token_lists(max_size=24)


@pytest.mark.parametrize("draft_kind", DRAFTS)
@pytest.mark.parametrize("arch", ARCHS)
@given(method=methods, prompt=prompts, n=st.integers(1, 40))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_speculative_methods_equal_greedy(arch, draft_kind, method, prompt, n):
    pair = tiny_pair(arch, draft_kind)
    out = generate(pair, prompt, method, n, stop_at_eos=False)
    assert out.token_ids == reference_greedy(pair.target, prompt, n), label(method)
    assert len(out.token_ids) == n
    assert sum(r["committed"] for r in out.trace) == n - 1  # the first token comes from the prefill


EDGE_METHODS = [
    Autoregressive(),
    HFAssisted(),
    Linear(1),
    FixedTree(depth=1, branch=1, threshold=0.0),
    FixedTree(depth=1, branch=5, threshold=0.0),
    FixedTree(depth=8, branch=1, threshold=0.0),
    FixedTree(depth=6, branch=3, threshold=0.0, max_nodes=10),  # budget binds
    FixedTree(depth=8, branch=4, threshold=0.0, max_nodes=128),
    DynaTree(draft_context=3),  # the draft reads the prompt's last 3 tokens, the target all 8
    DynaTree(draft_context=1, staged=False),
]


@pytest.mark.parametrize("method", EDGE_METHODS, ids=label)
@pytest.mark.parametrize("draft_kind", DRAFTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_edge_configurations_equal_greedy(arch, draft_kind, method):
    pair = tiny_pair(arch, draft_kind)
    prompt = [3, 14, 15, 92, 65, 35, 89, 79]
    out = generate(pair, prompt, method, 33, stop_at_eos=False)
    assert out.token_ids == reference_greedy(pair.target, prompt, 33)


@pytest.mark.parametrize("arch", ARCHS)
def test_draft_context_is_what_the_draft_reads_first(arch):
    """The draft's first forward reads the prompt's last draft_context tokens and the first new token, at positions
    0.. (its own cache); without draft_context it reads the whole prompt."""
    pair = tiny_pair(arch, "perturbed")
    prompt = [3, 14, 15, 92, 65, 35, 89, 79]
    for method, read in ((DynaTree(draft_context=3), 3), (DynaTree(draft_context=50), 8), (DynaTree(), 8)):
        out = record(pair, method, n=10, prompt=prompt)
        first_ids, first_positions = out["fed"]["draft"][0]
        assert first_ids[:read + 1] == prompt[-read:] + out["tokens"][:1], label(method)
        assert first_positions[:read + 1] == list(range(read + 1)), label(method)


@pytest.mark.parametrize("arch", ARCHS)
def test_same_draft_accepts_everything(arch):
    """With draft == target every drafted chain token is accepted: rounds commit depth + 1 tokens."""
    pair = tiny_pair(arch, "same")
    out = generate(pair, [1, 2, 3], Linear(5), 1 + 6 * 5, stop_at_eos=False)
    assert [r["committed"] for r in out.trace] == [6] * 5
    assert out.stats["acceptance_depth"] == 1.0
    tree = generate(pair, [1, 2, 3], FixedTree(depth=4, branch=2, threshold=0.0), 1 + 5 * 4, stop_at_eos=False)
    assert [r["accepted"] for r in tree.trace] == [4] * 4


def test_unrelated_draft_rarely_accepted():
    pair = tiny_pair("llama", "unrelated")
    out = generate(pair, [1, 2, 3], Linear(4), 40, stop_at_eos=False)
    assert out.stats["acceptance_nodes"] < 0.3


def test_budget_and_threshold_respected():
    pair = tiny_pair("qwen2", "perturbed")
    state = DraftState(kvcache.new_cache(pair.draft), pending=[5, 6, 7])
    drafted = draft_tree(pair.draft, state, fixed_expand(4, 0.0, 11), width=4, max_depth=6)
    assert drafted.tree.num_draft == 11
    state = DraftState(kvcache.new_cache(pair.draft), pending=[5, 6, 7])
    drafted = draft_tree(pair.draft, state, fixed_expand(3, 0.05, 128), width=3, max_depth=6)
    assert (drafted.tree.cum_logp[1:].exp() >= 0.05).all()
    # One draft forward per level, never one per node.
    assert drafted.forwards <= drafted.tree.max_depth + 1


def test_stop_at_eos_cuts_after_eos():
    pair = tiny_pair("llama", "perturbed")
    prompt = [9, 8, 7]
    ref = reference_greedy(pair.target, prompt, 30)
    eos = ref[10]
    pair.target.generation_config.eos_token_id = eos
    try:
        out = generate(pair, prompt, FixedTree(depth=4, branch=2, threshold=0.0), 30, stop_at_eos=True)
    finally:
        pair.target.generation_config.eos_token_id = None
    assert out.token_ids == ref[: ref.index(eos) + 1]


def test_stats_and_trace_fields():
    pair = tiny_pair("gpt_neox", "perturbed")
    out = generate(pair, [1, 2, 3, 4], FixedTree(depth=3, branch=2, threshold=0.0), 20, stop_at_eos=False)
    for key in ("rounds", "tokens_per_round", "wall_s", "tokens_per_s", "ttft_s", "tpot_s", "acceptance_depth",
                "acceptance_nodes"):
        assert key in out.stats
    assert out.stats["rounds"] == len(out.trace) > 0
    for rec in out.trace:
        assert {"nodes", "depth", "accepted", "committed", "draft_s", "verify_s", "commit_s"} <= rec.keys()
        assert 0 <= rec["accepted"] <= rec["depth"] <= 3 and rec["committed"] == rec["accepted"] + 1
    assert 0 < out.stats["ttft_s"] <= out.stats["wall_s"]


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("method_cls", [Linear, FixedTree, HFAssisted])
def test_quantized_draft_keeps_output(method_cls, bits):
    """An int8/int4 copy of the draft changes what is proposed, never what is output."""
    pair = tiny_pair("qwen2", "perturbed")
    prompt = [11, 22, 33, 44, 55]
    out = generate(pair, prompt, method_cls(draft_bits=bits), 30, stop_at_eos=False)
    assert out.token_ids == reference_greedy(pair.target, prompt, 30)
    assert pair.with_draft_bits(bits) is not pair and pair.with_draft_bits(bits).draft is pair._drafts[bits]


def test_bad_draft_bits():
    with pytest.raises(ValueError, match="draft_bits"):
        FixedTree(draft_bits=3)


@pytest.mark.parametrize("method", [HFAssisted(), HFAssisted(num_assistant_tokens=3), HFPromptLookup()], ids=label)
def test_hf_peers_decode_plain_greedy_whatever_the_generation_config(method):
    """transformers' generate applies the model's generation_config (repetition penalty, n-gram blocking, minimum
    length...): the peers must still run plain greedy decoding, the baseline every other method reproduces."""
    from dynatree_lib import ModelPair
    from tiny import perturbed, tiny_model

    target = tiny_model("llama", seed=0)
    pair = ModelPair(target=target, draft=perturbed(target, 0.5, seed=1))
    for model in (pair.target, pair.draft):
        model.generation_config.repetition_penalty = 1.5
        model.generation_config.no_repeat_ngram_size = 2
        model.generation_config.min_new_tokens = 30
    prompt = [5, 6, 5, 6, 5, 6, 5, 6, 7]
    ar = generate(pair, prompt, Autoregressive(), 30, stop_at_eos=False).token_ids
    assert len(set(zip(ar, ar[1:]))) < len(ar) - 1  # a repeated bigram: no_repeat_ngram_size=2 would change it
    assert generate(pair, prompt, method, 30, stop_at_eos=False).token_ids == ar
    assert pair.target.generation_config.repetition_penalty == 1.5  # the model's own config is left as it was
    assert pair.target.generation_config.no_repeat_ngram_size == 2


def test_hf_assisted_draft_length_reaches_transformers():
    """HFAssisted(num_assistant_tokens=K) drafts K tokens a round (transformers 5 reads them from the assistant's
    generation_config, not from generate's arguments); the assistant's config is restored afterwards."""
    import copy

    from dynatree_lib import ModelPair
    from tiny import tiny_model

    target = tiny_model("llama", seed=0)
    pair = ModelPair(target=target, draft=copy.deepcopy(target))  # the same weights: every draft token is accepted
    pair.draft.generation_config.assistant_confidence_threshold = 0.0  # the assistant's own setting: never stop early
    before = pair.draft.generation_config.to_dict()
    rounds = {k: generate(pair, [1, 2, 3], HFAssisted(num_assistant_tokens=k), 41, stop_at_eos=False).stats["rounds"]
              for k in (1, 4)}
    assert rounds == {1: 21, 4: 9}  # k + 1 tokens a round (the first round reads the prompt too)
    assert pair.draft.generation_config.to_dict() == before
