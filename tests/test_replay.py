"""Acceptance replay equals the real loop: every replayed round (tree size per level, accepted length, committed
tokens, and each draft forward's width) is the round `generate` runs, on the tiny float32 models."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from dynatree_lib import FixedTree, Linear, generate, label
from dynatree_lib.bench.replay import Replay, Superset, SupersetSpec, params_of, replay_grid
from dynatree_lib.bench.supersets import (SupersetDrafter, greedy_continuation, greedy_continuations,
                                          live_replay)
from dynatree_lib.core.draft import choose
from tiny import ARCHS, DRAFTS, linear_or_fixed_tree, tiny_pair, token_lists

FIELDS = ("nodes", "depth", "accepted", "committed")

methods = linear_or_fixed_tree(max_depth=8, thresholds=[0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.3], max_nodes=128)
prompts = token_lists(max_size=20)


def spec_for(method) -> SupersetSpec:
    """The default spec, plus the method as an exact extra when the default does not cover it (tau = 0 trees)."""
    spec = SupersetSpec()
    return spec if spec.covers(params_of(method)) else SupersetSpec(extras=(params_of(method),))


def draft_widths(pair, fn):
    """Run fn() and return the width (input tokens) of every draft forward it made."""
    widths = []
    handle = pair.draft.register_forward_pre_hook(lambda m, a, kw: widths.append(kw["input_ids"].shape[1]),
                                                  with_kwargs=True)
    try:
        out = fn()
    finally:
        handle.remove()
    return out, widths


def check_equal(pair, prompt, method, n, replay=None):
    replay = replay or live_replay(pair, prompt, n, spec_for(method))
    rounds = replay.rounds(method, n)
    out, widths = draft_widths(pair, lambda: generate(pair, prompt, method, n, stop_at_eos=False))
    assert [r.record() for r in rounds] == [{k: r[k] for k in FIELDS} for r in out.trace], label(method)
    # the cost model's inputs: the draft's first forward (pending + root) and one forward per fed level
    if pair.draft is not pair.target:  # (a "same" draft's hook would count the target's forwards too)
        assert [w for r in rounds if r.draft for w in (r.root_tokens, *r.fed)] == widths, label(method)
    assert 1 + sum(r.committed for r in rounds) == n


@pytest.mark.parametrize("draft_kind", DRAFTS)
@pytest.mark.parametrize("arch", ARCHS)
@given(method=methods, prompt=prompts, n=st.integers(1, 48))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_replay_equals_generate(arch, draft_kind, method, prompt, n):
    check_equal(tiny_pair(arch, draft_kind), prompt, method, n)


EDGES = [
    Linear(1), Linear(8),
    FixedTree(depth=1, branch=1, threshold=0.0, max_nodes=1),
    FixedTree(depth=8, branch=4, threshold=0.01, max_nodes=128),
    FixedTree(depth=8, branch=4, threshold=0.01, max_nodes=5),  # the budget binds at level 2
    FixedTree(depth=6, branch=3, threshold=0.0, max_nodes=10),  # tau = 0: an exact extra
    FixedTree(depth=8, branch=2, threshold=0.5, max_nodes=128),  # the threshold often empties level 1
]


@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("method", EDGES, ids=label)
@pytest.mark.parametrize("arch", ARCHS)
def test_replay_edges(arch, method, batch):
    pair, prompt = tiny_pair(arch, "perturbed"), [5, 17, 3, 60]
    check_equal(pair, prompt, method, 40, live_replay(pair, prompt, 40, spec_for(method), batch=batch))


def same_superset(a: Superset, b: Superset) -> bool:
    return (torch.equal(a.tokens, b.tokens) and torch.equal(a.parents, b.parents) and torch.equal(a.rank, b.rank)
            and torch.allclose(a.logp, b.logp, atol=1e-5))


@pytest.mark.parametrize("draft_kind", DRAFTS)
@pytest.mark.parametrize("arch", ARCHS)
@given(prompt=prompts, n=st.integers(2, 40), batch=st.sampled_from([2, 3, 7, 64]),
       spec=st.sampled_from([SupersetSpec(), SupersetSpec(max_depth=3, max_branch=2, min_threshold=0.1, chain_depth=6),
                             SupersetSpec(extras=((3, 0.0, 10, 6),))]))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_batched_supersets_equal_one_at_a_time(arch, draft_kind, prompt, n, batch, spec):
    """Drafting the supersets of many starts in one forward per level (their nodes masked to their own prefix and
    ancestors) gives every start the superset drafted alone, in fewer forwards; starts asked for in increasing
    order, as replay_grid asks, with gaps."""
    pair = tiny_pair(arch, draft_kind)
    target = greedy_continuation(pair, prompt, n)
    one = SupersetDrafter(pair.draft, prompt, target, spec, getattr(pair, "shared_vocab", None))
    many = SupersetDrafter(pair.draft, prompt, target, spec, getattr(pair, "shared_vocab", None), batch=batch)
    starts = [s for s in range(1, n) if s % 5 != 3]
    for start in starts:
        assert same_superset(many(start), one(start)), start
    if n > 8:
        assert many.forwards < one.forwards
    with pytest.raises(ValueError, match="batch"):
        SupersetDrafter(pair.draft, prompt, target, spec, batch=0)


def test_one_superset_serves_a_whole_grid_from_storage():
    """Supersets drafted once for a grid (all policies, several lengths, in step) and stored (pack/unpack) replay
    every policy without the draft model, equal to generate."""
    pair = tiny_pair("llama", "perturbed")
    prompt, lengths = [1, 2, 3, 4, 5], [10, 31, 40]
    grid = [FixedTree(d, b, t) for d in (3, 8) for b in (2, 4) for t in (0.01, 0.1)] + [Linear(4), Linear(8)]
    live = live_replay(pair, prompt, max(lengths))
    runs = replay_grid(live, grid, lengths)
    assert live.drafter.forwards > 0
    stored = {c: Superset.unpack(s.pack()) for c, s in live.supersets.items()}
    offline = Replay(prompt, live.target, supersets=stored, spec=live.spec)
    assert replay_grid(offline, grid, lengths) == runs
    for method in (grid[0], grid[5], grid[-1]):
        for n in lengths:
            out = generate(pair, prompt, method, n, stop_at_eos=False)
            assert [r.record() for r in runs[(label(method), n)]] == [{k: r[k] for k in FIELDS} for r in out.trace]
    with pytest.raises(KeyError):  # a start no stored policy reached
        offline.superset(max(lengths) + 100)


def test_greedy_continuation_and_coverage():
    pair = tiny_pair("qwen2", "unrelated")
    prompt = [7, 8, 9]
    target = greedy_continuation(pair, prompt, 20)
    assert generate(pair, prompt, Linear(3), 20, stop_at_eos=False).token_ids == target
    replay = Replay(prompt, target, drafter=None)
    with pytest.raises(ValueError, match="not covered"):
        replay.rounds(FixedTree(depth=4, branch=2, threshold=0.0), 20)
    with pytest.raises(ValueError, match="exceeds"):
        replay.rounds(Linear(3), 21)
    with pytest.raises(TypeError):
        params_of(object())
    assert SupersetSpec.from_dict(SupersetSpec(extras=((2, 0.0, 10, 6),)).to_dict()).extras == ((2, 0.0, 10, 6),)


def test_superset_cumulative_probabilities_match_the_tree():
    pair = tiny_pair("gpt_neox", "perturbed")
    replay = live_replay(pair, [3, 4, 5], 30)
    sup = replay.superset(1)
    assert len(sup) > 1
    again = Superset.unpack(sup.pack())
    assert torch.equal(again.cum, sup.cum) and again.children == sup.children
    # every stored node either passes the grid's smallest threshold or lies on the draft's top-1 chain
    chain, passing = {0}, set(choose(sup.cum, 0.01)[0].tolist())
    for i in range(1, len(sup)):
        if int(sup.rank[i]) == 0 and int(sup.parents[i]) in chain:
            chain.add(i)
        assert i in chain or i in passing


@pytest.mark.parametrize("arch", ARCHS)
@given(batch=st.lists(prompts, min_size=1, max_size=4),
       n=st.integers(1, 30))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_batched_target_continuations_equal_greedy(arch, batch, n):
    """Prompts of different lengths decoded as one left-padded batch: each row is that prompt's greedy
    continuation (float32)."""
    pair = tiny_pair(arch, "same")
    assert greedy_continuations(pair, batch, n) == [greedy_continuation(pair, p, n) for p in batch]
