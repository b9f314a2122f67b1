"""AdaptiveTree (the research's phases), DynaTree (confidence and cost), TopNTree (best-first), PromptLookup and
HybridTree (n-gram): exactness, policies, errors."""
import dataclasses
import functools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from dynatree_lib import (AdaptiveTree, DynaTree, FixedTree, HybridTree, Linear, ModelPair, PromptLookup, TopNTree,
                          generate, label)
from dynatree_lib.core import kvcache
from dynatree_lib.methods import adaptive, ngram, topn
from dynatree_lib.core.draft import DraftState, Drafted, draft_tree, reorder, select_children
from dynatree_lib.core.tree import add_level, from_parents, root
from tiny import ARCHS, DRAFTS, VOCAB, reference_greedy, sharp_pair, tiny_pair


def pair_for(arch, draft_kind, sharp):
    return sharp_pair(arch, draft_kind) if sharp else tiny_pair(arch, draft_kind)


@functools.lru_cache(maxsize=None)
def _reference(arch, sharp, prompt, n):
    return tuple(reference_greedy(pair_for(arch, "same", sharp).target, list(prompt), n))


def reference(arch, sharp, prompt, n):
    return list(_reference(arch, sharp, tuple(prompt), n))


def check_tree(tree):
    """BFS layout invariants every verified tree must keep."""
    parents, depth = tree.parents.tolist(), tree.depth.tolist()
    assert parents[0] == -1 and depth[0] == 0
    for i in range(1, len(tree)):
        assert 0 <= parents[i] < i and depth[i] == depth[parents[i]] + 1
    assert depth == sorted(depth)
    expected = torch.eye(len(tree), dtype=torch.bool)
    for i in range(1, len(tree)):
        expected[i] |= expected[parents[i]]
    assert torch.equal(tree.ancestors, expected)


# ---------------------------------------------------------------------------------------------------------------------
# Exactness

probs = st.sampled_from([0.0, 0.05, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 1.0])


@st.composite
def dynatrees(draw):
    """A DynaTree or an AdaptiveTree of phase 1-3, each given only the settings its algorithm reads."""
    low, high = sorted([draw(probs), draw(probs)])
    b = sorted(draw(st.lists(st.integers(1, 4), min_size=3, max_size=3)))
    shared = dict(high_conf=high, low_conf=low, min_branch=b[0], default_branch=b[1], max_branch=b[2],
                  max_nodes=draw(st.integers(1, 40)), node_budget=draw(st.booleans()))
    phase = draw(st.sampled_from([1, 2, 3, 4]))
    if phase == 4:
        return DynaTree(**shared, max_depth=draw(st.integers(1, 8)))
    base = draw(st.integers(1, 5))
    research = dict(phase=phase, base_depth=base, threshold=draw(st.sampled_from([0.0, 0.01, 0.03, 0.2])),
                    pruning=draw(st.booleans()))
    if phase >= 2:
        research.update(max_depth=draw(st.integers(base, 8)),
                        stop_threshold=draw(st.sampled_from([0.0, 0.01, 0.1, 0.3])),
                        extend_threshold=draw(st.sampled_from([0.0, 0.3, 0.95, 1.0])))
    if phase == 3:
        research.update(learning_rate=draw(st.sampled_from([0.0, 0.01, 0.2])),
                        target_acceptance=draw(st.sampled_from([0.0, 0.5, 0.85, 1.0])),
                        window=draw(st.integers(1, 5)))
    return AdaptiveTree(**shared, **research)


topns = st.builds(TopNTree, nodes=st.integers(1, 40), max_depth=st.integers(1, 8), topk=st.integers(1, 6))
lookups = st.builds(PromptLookup, max_ngram=st.integers(1, 4), num_tokens=st.integers(1, 10),
                    branches=st.integers(1, 4))
inner = st.one_of(
    st.builds(Linear, k=st.integers(1, 6)),
    st.builds(FixedTree, depth=st.integers(1, 6), branch=st.integers(1, 3),
              threshold=st.sampled_from([0.0, 0.03]), max_nodes=st.integers(1, 30)),
    dynatrees(), topns,
)
hybrids = st.builds(HybridTree, tree=inner, max_ngram=st.integers(1, 4), num_tokens=st.integers(1, 10),
                    branches=st.integers(1, 3))
methods = st.one_of(dynatrees(), topns, lookups, hybrids)


@st.composite
def prompts(draw):
    """Random prompts, half of them built from repeats so that n-gram lookups hit."""
    if draw(st.booleans()):
        return draw(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=20))
    unit = draw(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=6))
    tail = draw(st.lists(st.integers(0, VOCAB - 1), max_size=4))
    return unit * draw(st.integers(2, 4)) + tail


@pytest.mark.parametrize("draft_kind", DRAFTS)
@pytest.mark.parametrize("arch", ARCHS)
@given(method=methods, prompt=prompts(), n=st.integers(1, 30), sharp=st.booleans())
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_new_methods_equal_greedy(arch, draft_kind, method, prompt, n, sharp):
    pair = pair_for(arch, draft_kind, sharp)
    out = generate(pair, prompt, method, n, stop_at_eos=False)
    assert out.token_ids == reference(arch, sharp, prompt, n), label(method)
    assert sum(r["committed"] for r in out.trace) == n - 1
    for r in out.trace:
        assert 0 <= r["accepted"] <= r["depth"] and r["committed"] == r["accepted"] + 1


EDGE_METHODS = [
    AdaptiveTree(phase=1),
    AdaptiveTree(phase=2),
    AdaptiveTree(phase=3),
    AdaptiveTree(phase=3, pruning=False),
    AdaptiveTree(phase=3, node_budget=False, threshold=0.0, stop_threshold=0.0),
    AdaptiveTree(phase=2, max_nodes=4, threshold=0.0, stop_threshold=0.0, extend_threshold=0.0),  # budget binds
    AdaptiveTree(phase=3, high_conf=0.5, low_conf=0.5, min_branch=1, default_branch=1, max_branch=1, learning_rate=0.2),
    TopNTree(),
    TopNTree(nodes=1, max_depth=1, topk=1),
    TopNTree(nodes=6, max_depth=8, topk=1),
    PromptLookup(),
    PromptLookup(max_ngram=1, num_tokens=1),
    PromptLookup(branches=4),
    HybridTree(),
    HybridTree(tree=DynaTree(), branches=2),
    HybridTree(tree=TopNTree(nodes=8), max_ngram=2, num_tokens=4),
    HybridTree(tree=Linear(3)),
]


@pytest.mark.parametrize("method", EDGE_METHODS, ids=label)
@pytest.mark.parametrize("arch", ARCHS)
def test_edge_configurations_equal_greedy(arch, method):
    prompt = [3, 14, 15, 92, 65, 35, 3, 14, 15, 92]
    for draft_kind, sharp in (("perturbed", True), ("unrelated", False)):
        pair = pair_for(arch, draft_kind, sharp)
        out = generate(pair, prompt, method, 24, stop_at_eos=False)
        assert out.token_ids == reference(arch, sharp, prompt, 24), (draft_kind, sharp)


@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_lookup_needs_no_draft_model(arch):
    target = tiny_pair(arch, "same").target
    prompt = [5, 6, 7, 8] * 4
    for method in (PromptLookup(), PromptLookup(branches=3)):
        out = generate(ModelPair(target=target), prompt, method, 30, stop_at_eos=False)
        assert out.token_ids == reference(arch, False, prompt, 30)
        assert out.stats["draft_forwards"] == 0
        assert any(r["ngram"] > 0 for r in out.trace)
    for method in (DynaTree(), TopNTree(), HybridTree()):
        with pytest.raises(ValueError, match="needs a draft model"):
            generate(ModelPair(target=target), prompt, method, 5)


def test_prompt_lookup_drafts_get_accepted():
    """The tiny llama falls into a loop after this prompt: copied n-grams must then be accepted, several per round."""
    pair = tiny_pair("llama", "unrelated")
    prompt = [5, 6, 7, 8] * 4
    out = generate(ModelPair(target=pair.target), prompt, PromptLookup(), 30, stop_at_eos=False)
    assert out.stats["accepted_nodes"] >= 10 and max(r["accepted"] for r in out.trace) >= 3
    # The hybrid gets the same free tokens on top of an unrelated draft model's (mostly rejected) tree.
    hybrid = generate(pair, prompt, HybridTree(tree=FixedTree(depth=3, branch=2)), 30, stop_at_eos=False)
    plain = generate(pair, prompt, FixedTree(depth=3, branch=2), 30, stop_at_eos=False)
    assert hybrid.stats["rounds"] < plain.stats["rounds"]
    assert any(r["ngram_nodes"] > 0 for r in hybrid.trace)


# ---------------------------------------------------------------------------------------------------------------------
# AdaptiveTree policies


def level_tree(logps):
    """Root with one child per entry of `logps` (draft log-probs), all at depth 1."""
    n = len(logps)
    return add_level(root(0), torch.zeros(n, dtype=torch.long), torch.arange(1, n + 1), torch.tensor(logps))


def chain_tree(logps):
    """A chain root -> 1 -> 2 ... with the given draft log-probs."""
    tree = root(0)
    for i, lp in enumerate(logps):
        tree = add_level(tree, torch.tensor([i]), torch.tensor([i + 1]), torch.tensor([lp]))
    return tree


def test_branch_counts_follow_confidence():
    m = DynaTree()  # high 0.9 / low 0.4, branches 1 / 2 / 3
    p = torch.tensor([0.99, 0.91, 0.9, 0.6, 0.4, 0.39, 0.05])
    assert adaptive.branches(p, m.high_conf, m).tolist() == [1, 1, 2, 2, 2, 3, 3]
    m = DynaTree(min_branch=2, default_branch=3, max_branch=4, high_conf=0.7, low_conf=0.2)
    assert adaptive.branches(p, m.high_conf, m).tolist() == [2, 2, 2, 3, 3, 3, 4]


def candidates(top1_probs, width):
    """Candidate log-probs per frontier row: the given top-1 probability, then the rest spread evenly."""
    rows = []
    for p in top1_probs:
        rest = (1 - p) / (width - 1)
        rows.append([math.log(p)] + [math.log(rest) - 1e-3 * j for j in range(width - 1)])
    return torch.tensor(rows), torch.arange(len(rows) * width).view(len(rows), width) + 10


def test_adaptive_expand_children_per_node():
    tree = level_tree([math.log(0.3)] * 3)
    frontier = torch.tensor([1, 2, 3])
    cand_logp, cand_tokens = candidates([0.95, 0.6, 0.2], 3)
    state = adaptive.AdaptiveDrafter(AdaptiveTree(threshold=0.0), None)
    parents, tokens, logp = state.expand(tree, frontier, cand_logp, cand_tokens)
    assert parents.tolist() == [1, 2, 2, 3, 3, 3]
    assert tokens.tolist() == [10, 13, 14, 16, 17, 18]
    assert (state.counts["conf_high"], state.counts["conf_mid"], state.counts["conf_low"]) == (1, 1, 1)
    # Pruning: second children (cumulative ~0.3 * 0.25 = 0.075) survive tau=0.03 but not tau=0.1 ...
    cand_logp, cand_tokens = candidates([0.5, 0.49, 0.48], 3)
    parents, *_ = adaptive.AdaptiveDrafter(AdaptiveTree(threshold=0.1), None).expand(tree, frontier, cand_logp,
                                                                                     cand_tokens)
    assert parents.tolist() == [1, 2, 3]
    # ... unless pruning is switched off.
    parents, *_ = adaptive.AdaptiveDrafter(AdaptiveTree(threshold=0.1, pruning=False), None).expand(
        tree, frontier, cand_logp, cand_tokens)
    assert parents.tolist() == [1, 1, 2, 2, 3, 3]
    # Node budget: 3 nodes exist, room for 2 more, the most probable ones; unlimited without node_budget.
    parents, tokens, _ = adaptive.AdaptiveDrafter(AdaptiveTree(threshold=0.0, max_nodes=5), None).expand(
        tree, frontier, cand_logp, cand_tokens)
    assert parents.tolist() == [1, 2] and tokens.tolist() == [10, 13]
    parents, *_ = adaptive.AdaptiveDrafter(AdaptiveTree(threshold=0.0, max_nodes=5, node_budget=False), None).expand(
        tree, frontier, cand_logp, cand_tokens)
    assert len(parents) == 6


def test_dynamic_depth_rules():
    # Chain with cumulative probabilities 0.99, 0.98, ... (depth d has 0.99**d), then a sharp drop.
    lp = [math.log(0.99)] * 7 + [math.log(0.05)]
    tree = chain_tree(lp)
    nodes = torch.arange(1, len(tree))
    m = AdaptiveTree(phase=2, base_depth=3, max_depth=6, extend_threshold=0.95, stop_threshold=0.1)
    # depth 1..2 (< base) expand; 3..5 expand past base only with cum > 0.95 (0.99**5 = 0.951); 6 = max_depth stops.
    assert adaptive.expandable(tree, nodes, m).tolist() == [1, 2, 3, 4, 5]
    m = AdaptiveTree(phase=2, base_depth=3, max_depth=8, extend_threshold=0.96, stop_threshold=0.1)
    assert adaptive.expandable(tree, nodes, m).tolist() == [1, 2, 3, 4]  # 0.99**4 = 0.961 > 0.96 > 0.99**5
    m = AdaptiveTree(phase=2, base_depth=8, max_depth=8, stop_threshold=0.1)
    assert adaptive.expandable(tree, nodes, m).tolist() == [1, 2, 3, 4, 5, 6, 7]  # node 8 is at max_depth
    drop = chain_tree([math.log(0.99), math.log(0.05), math.log(0.99)])  # cumulative 0.99, 0.0495, 0.049
    assert adaptive.expandable(drop, torch.arange(1, 4), m).tolist() == [1]  # below stop_threshold: a leaf
    m = AdaptiveTree(phase=1, base_depth=3, max_depth=8)
    assert adaptive.expandable(tree, nodes, m).tolist() == [1, 2]  # phase 1: fixed depth, no stop rule


def test_phase2_stopped_nodes_are_not_fed():
    pair = sharp_pair("qwen2", "perturbed")
    m = AdaptiveTree(phase=2, stop_threshold=0.3, threshold=0.0, base_depth=2, max_depth=6, extend_threshold=0.5)
    state = adaptive.AdaptiveDrafter(m, None)
    draft = DraftState(kvcache.new_cache(pair.draft), pending=[7, 8, 9, 10])
    drafted = draft_tree(pair.draft, draft, state.expand, m.max_branch, m.max_depth, state.select_frontier)
    tree, fed = drafted.tree, set(drafted.fed)
    check_tree(tree)
    with_children = set(tree.parents[1:].tolist()) - {0}
    assert with_children <= fed
    kept = set(adaptive.expandable(tree, torch.arange(1, len(tree)), m).tolist())
    assert fed <= kept
    assert state.counts["stopped"] > 0 and len(fed) < tree.num_draft
    assert kvcache.cache_len(draft.cache) == drafted.base + len(drafted.fed)  # only fed nodes cost cache slots


def test_phase2_grows_past_base_depth_only_when_confident():
    pair = tiny_pair("llama", "same")
    prompt = [3, 14, 15, 92, 65, 35]
    deep = AdaptiveTree(phase=2, base_depth=2, max_depth=6, extend_threshold=0.0, stop_threshold=0.0, threshold=0.0)
    out = generate(pair, prompt, deep, 30, stop_at_eos=False)
    assert max(r["depth"] for r in out.trace) > 2 and sum(r["extended"] for r in out.trace) > 0
    shallow = AdaptiveTree(phase=2, base_depth=2, max_depth=6, extend_threshold=1.0, stop_threshold=0.0, threshold=0.0)
    out = generate(pair, prompt, shallow, 30, stop_at_eos=False)
    assert max(r["depth"] for r in out.trace) == 2 and sum(r["extended"] for r in out.trace) == 0
    phase1 = AdaptiveTree(phase=1, base_depth=2, threshold=0.0)
    out = generate(pair, prompt, phase1, 30, stop_at_eos=False)
    assert max(r["depth"] for r in out.trace) == 2


def hear(state, record: dict) -> None:
    """What speculate does with a finished round: the drafter's notes go into the record, then it learns."""
    record.update(state.notes())
    state.learn(record)


def test_high_conf_moves_toward_target_acceptance():
    m = AdaptiveTree(phase=3, learning_rate=0.01, target_acceptance=0.85)
    assert adaptive.adjust(0.9, 0.5, m) == pytest.approx(0.89)  # below target: lower
    assert adaptive.adjust(0.9, 1.0, m) == pytest.approx(0.91)  # above target: raise
    assert adaptive.adjust(0.9, 0.85, m) == 0.9
    assert adaptive.adjust(0.995, 1.0, m) == 1.0 and adaptive.adjust(0.405, 0.0, m) == m.low_conf  # clamped

    def rounds(accepted, depth, n):
        state = adaptive.AdaptiveDrafter(m, None)
        records = [dict(accepted=accepted, depth=depth) for _ in range(n)]
        for r in records:
            hear(state, r)
        return [r["high_conf"] for r in records], state.high_conf

    seen, final = rounds(1, 5, 5)  # acceptance 0.2 < 0.85
    assert seen == pytest.approx([0.9, 0.89, 0.88, 0.87, 0.86]) and final == pytest.approx(0.85)
    seen, final = rounds(5, 5, 3)  # acceptance 1.0 > 0.85
    assert seen == pytest.approx([0.9, 0.91, 0.92]) and final == pytest.approx(0.93)
    # Rounds without a tree carry no acceptance; phases 1 and 2 never move.
    state = adaptive.AdaptiveDrafter(m, None)
    hear(state, dict(accepted=0, depth=0))
    assert state.high_conf == 0.9
    for phase in (1, 2):
        state = adaptive.AdaptiveDrafter(AdaptiveTree(phase=phase), None)
        hear(state, dict(accepted=0, depth=5))
        assert state.high_conf == 0.9


def test_phase3_running_window():
    m = AdaptiveTree(phase=3, learning_rate=0.01, target_acceptance=0.5, window=2)
    state = adaptive.AdaptiveDrafter(m, None)
    for acc in (1.0, 1.0, 0.0, 0.0, 0.0):  # window means: 1, 1, 0.5, 0, 0
        hear(state, dict(accepted=int(acc * 4), depth=4))
    assert state.high_conf == pytest.approx(0.9 + 0.02 - 0.02)


def test_phase3_state_is_per_generation_and_traced():
    pair = sharp_pair("gpt_neox", "unrelated")
    method = AdaptiveTree(phase=3, learning_rate=0.05)
    first = generate(pair, [1, 2, 3, 4], method, 25, stop_at_eos=False)
    second = generate(pair, [1, 2, 3, 4], method, 25, stop_at_eos=False)
    trace = [r["high_conf"] for r in first.trace]
    assert trace[0] == 0.9 and len(set(trace)) > 1  # it moved during the generation ...
    assert trace == [r["high_conf"] for r in second.trace]  # ... and the next generation starts afresh
    assert first.stats["final_high_conf"] != 0.9 and method.high_conf == 0.9
    for r in first.trace:
        assert {"nodes", "depth", "accepted", "committed", "draft_s", "verify_s", "commit_s", "high_conf",
                "conf_high", "conf_mid", "conf_low", "stopped", "extended"} <= r.keys()


def test_node_budget_binds_and_can_be_switched_off():
    pair = sharp_pair("llama", "perturbed")
    prompt = [4, 8, 15, 16, 23, 42]
    base = dict(phase=2, max_nodes=6, threshold=0.0, stop_threshold=0.0, extend_threshold=0.0)
    out = generate(pair, prompt, AdaptiveTree(**base), 20, stop_at_eos=False)
    nodes = [r["nodes"] for r in out.trace]
    assert max(nodes) == 6
    out = generate(pair, prompt, AdaptiveTree(**base, node_budget=False), 20, stop_at_eos=False)
    assert max(r["nodes"] for r in out.trace) > 6


# ---------------------------------------------------------------------------------------------------------------------
# TopNTree


def test_best_nodes_is_the_global_top_n():
    # Two levels: cumulative probs 0.5, 0.3, 0.2 | children of node 1: 0.5*0.9, 0.5*0.1; of node 2: 0.3*0.5 (tie-free)
    tree = level_tree([math.log(0.5), math.log(0.3), math.log(0.2)])
    tree = add_level(tree, torch.tensor([1, 1, 2]), torch.tensor([7, 8, 9]),
                     torch.log(torch.tensor([0.9, 0.1, 0.5])))
    assert topn.best_nodes(tree, 3).tolist() == [1, 2, 4]  # 0.5, 0.45, 0.3
    assert topn.best_nodes(tree, 5).tolist() == [1, 2, 3, 4, 6]  # ..., 0.2, 0.15
    assert topn.best_nodes(tree, 99).tolist() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("arch", ARCHS)
@given(nodes=st.integers(1, 30), depth=st.integers(1, 6), topk=st.integers(1, 5),
       pending=st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=8))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_topn_keeps_exactly_the_global_best(arch, nodes, depth, topk, pending):
    pair = sharp_pair(arch, "perturbed")
    method = TopNTree(nodes=nodes, max_depth=depth, topk=topk)
    run = type("R", (), {"pair": pair})()
    best_first = topn._BestFirst(method, run)
    # Every candidate the rule considered, before the final selection ...
    state = DraftState(kvcache.new_cache(pair.draft), pending=list(pending))
    everything = draft_tree(pair.draft, state, select_children, topk, depth, best_first.select_frontier)
    all_cum = everything.tree.cum_logp[1:]
    # ... and the tree it verifies.
    state = DraftState(kvcache.new_cache(pair.draft), pending=list(pending))
    drafted = best_first.propose(state, depth)
    tree = drafted.tree
    check_tree(tree)
    assert tree.num_draft == min(nodes, len(all_cum))
    worst_kept = tree.cum_logp[1:].min()
    assert int((all_cum > worst_kept).sum()) < nodes  # nothing outside the tree beats its worst member
    assert torch.equal(tree.cum_logp[1:].sort(descending=True).values,
                       all_cum.sort(descending=True).values[:nodes])
    assert everything.forwards <= depth  # one draft forward per level (the last level is never fed)
    # Fed nodes: at most topk per level, and the draft cache holds exactly them.
    assert kvcache.cache_len(state.cache) == drafted.base + len(drafted.fed)
    fed_depths = everything.tree.depth[torch.tensor(everything.fed, dtype=torch.long)].tolist()
    assert all(fed_depths.count(d) <= topk for d in set(fed_depths))


def test_topn_beats_fixed_budget_depth_with_same_draft():
    """Best-first spends the budget on the confident path: with draft == target it accepts deep chains."""
    pair = sharp_pair("qwen2", "same")
    out = generate(pair, [1, 2, 3], TopNTree(nodes=10, max_depth=8, topk=4), 40, stop_at_eos=False)
    assert max(r["depth"] for r in out.trace) > 3 and out.stats["tokens_per_round"] > 3
    assert all(r["nodes"] <= 10 and r["candidates"] >= r["nodes"] for r in out.trace)


# ---------------------------------------------------------------------------------------------------------------------
# N-gram lookup and grafting


def test_lookup_rules():
    ctx = [1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3]
    assert ngram.lookup(ctx, 3, 2) == ([[7, 5]], 3)  # the most recent earlier match
    # Past the end of the context the continuation copies itself: the text repeats with period 5.
    assert ngram.lookup(ctx, 3, 8) == ([[7, 5, 1, 2, 3, 7, 5, 1]], 3)
    assert ngram.lookup(ctx, 3, 8, branches=2) == ([[7, 5, 1, 2, 3, 7, 5, 1], [9, 1, 2, 3, 7, 5, 1, 2]], 3)
    assert ngram.lookup([4, 1, 2, 6, 2], 3, 3, branches=3) == ([[6, 2, 6]], 1)
    # Shorter n-grams join when the longer ones run out; repeated continuations are skipped.
    assert ngram.lookup([4, 2, 6, 8, 2, 6], 2, 2, branches=3) == ([[8, 2]], 2)  # the 1-gram repeats [8, 2]
    assert ngram.lookup([5, 6, 1, 9, 6, 2, 5, 6], 2, 2, branches=3) == ([[1, 9], [2, 5]], 2)
    assert ngram.lookup([1, 2, 3], 3, 4) == ([], 0)
    assert ngram.lookup([5], 3, 4) == ([], 0)
    assert ngram.lookup([5, 5], 3, 4) == ([[5, 5, 5, 5]], 1)


def test_graft_merges_chains_like_a_trie():
    tree, added = ngram.graft(root(0), [[1, 2, 3], [1, 2, 4], [5], [1]])
    check_tree(tree)
    assert added == 5 and tree.tokens.tolist() == [0, 1, 5, 2, 3, 4]
    # Against an existing model tree: a chain follows matching children and only adds what differs.
    model = from_parents([0, 1, 2, 3, 4], [-1, 0, 0, 1, 3])  # 0 -> {1 -> 3 -> 4, 2}
    grown, added = ngram.graft(model, [[1, 3, 9, 9], [2], [7]])
    assert added == 3
    assert grown.tokens.tolist()[5:] == [7, 9, 9]
    assert grown.parents.tolist()[5:] == [0, 3, 6]


def test_hybrid_reorders_into_bfs_and_keeps_fed_slots():
    pair = sharp_pair("llama", "perturbed")
    prompt = [9, 10, 11, 12, 13, 14, 9, 10, 11, 12, 13, 14, 9, 10]
    method = HybridTree(tree=FixedTree(depth=2, branch=2, threshold=0.0), max_ngram=3, num_tokens=6, branches=2)
    state = DraftState(kvcache.new_cache(pair.draft), pending=list(prompt))
    run = type("R", (), {"pair": pair, "prompt_ids": prompt[:-1], "tokens": prompt[-1:]})()
    lookup = ngram._Lookup(method, run, method.tree.drafter(run))
    drafted = lookup.propose(state, 8)
    tree = drafted.tree
    check_tree(tree)
    assert lookup.found == 3 and lookup.added > 0 and tree.max_depth == 6
    # Fed nodes are the model's depth-1 nodes (depth-2 leaves are never fed), still in slot order.
    assert tree.depth[torch.tensor(drafted.fed)].tolist() == [1, 1]
    assert kvcache.cache_len(state.cache) == drafted.base + 2
    # The n-gram chain [11, 12, 13, 14, 9, 10] hangs below the root.
    node, path = 0, []
    for token in [11, 12, 13, 14, 9, 10]:
        children = [i for i in range(len(tree)) if tree.parents[i] == node and tree.tokens[i] == token]
        assert len(children) == 1
        node = children[0]
        path.append(node)
    assert tree.path(node) == [0] + path


def test_reorder_drops_fed_nodes_to_minus_one():
    tree = from_parents([0, 1, 2, 3], [-1, 0, 0, 1])
    drafted = Drafted(tree=tree, base=5, fed=[1, 2], forwards=2)
    out = reorder(drafted, tree, [0, 1, 3])
    assert out.fed == [1, -1] and out.tree.tokens.tolist() == [0, 1, 3] and out.tree.parents.tolist() == [-1, 0, 1]
    again = reorder(out, out.tree, [0, 1])  # a dropped slot stays dropped (-1 is not "the last node")
    assert again.fed == [1, -1]
    assert reorder(Drafted(tree=tree, base=5, fed=[], forwards=1), tree, [0, 2]).fed == []


# ---------------------------------------------------------------------------------------------------------------------
# Parameters


@pytest.mark.parametrize("make, name", [
    (lambda: DynaTree(phase=5), "phase"),
    (lambda: DynaTree(phase=0), "phase"),
    (lambda: DynaTree(low_conf=0.95, high_conf=0.9), "low_conf"),
    (lambda: DynaTree(high_conf=1.5), "high_conf"),
    (lambda: DynaTree(low_conf=-0.1), "low_conf"),
    (lambda: DynaTree(min_branch=3, max_branch=2, default_branch=2), "min_branch"),
    (lambda: DynaTree(default_branch=4), "default_branch"),
    (lambda: DynaTree(min_branch=0), "min_branch"),
    (lambda: AdaptiveTree(phase=3, base_depth=9), "base_depth"),
    (lambda: DynaTree(max_depth=0), "max_depth"),
    (lambda: AdaptiveTree(stop_threshold=-0.1), "stop_threshold"),
    (lambda: AdaptiveTree(extend_threshold=1.2), "extend_threshold"),
    (lambda: AdaptiveTree(learning_rate=-0.01), "learning_rate"),
    (lambda: AdaptiveTree(target_acceptance=2), "target_acceptance"),
    (lambda: AdaptiveTree(threshold=-0.03), "threshold"),
    (lambda: AdaptiveTree(threshold=1.0), "threshold"),
    (lambda: DynaTree(max_nodes=0), "max_nodes"),
    (lambda: AdaptiveTree(window=0), "window"),
    (lambda: AdaptiveTree(pruning="no"), "pruning"),
    (lambda: DynaTree(node_budget=1), "node_budget"),
    (lambda: DynaTree(max_depth=0), "max_depth"),
    (lambda: AdaptiveTree(phase=4), "phase"),
    (lambda: AdaptiveTree(phase=1, max_depth=12), "max_depth"),  # phase 1 never reads it
    (lambda: AdaptiveTree(phase=1, stop_threshold=0.2), "stop_threshold"),
    (lambda: AdaptiveTree(phase=2, window=5), "window"),
    (lambda: AdaptiveTree(phase=2, learning_rate=0.1, target_acceptance=0.5), "learning_rate, target_acceptance"),
    (lambda: AdaptiveTree(max_nodes=0), "max_nodes"),
    (lambda: AdaptiveTree(min_branch=0), "min_branch"),
    (lambda: TopNTree(nodes=0), "nodes"),
    (lambda: TopNTree(max_depth=0), "max_depth"),
    (lambda: TopNTree(topk=0), "topk"),
    (lambda: TopNTree(nodes=2.5), "nodes"),
    (lambda: PromptLookup(max_ngram=0), "max_ngram"),
    (lambda: PromptLookup(k=0), "k must"),
    (lambda: PromptLookup(branches=0), "branches"),
    (lambda: HybridTree(tree=PromptLookup()), "tree"),
    (lambda: HybridTree(tree="FixedTree"), "tree"),
    (lambda: HybridTree(k=-1), "k must"),
])
def test_bad_parameters(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_defaults():
    m = DynaTree()  # the confidence- and cost-shaped default
    assert (m.high_conf, m.low_conf, m.min_branch, m.default_branch, m.max_branch, m.max_depth, m.max_nodes,
            m.node_budget, m.staged) == (0.9, 0.4, 1, 2, 3, 32, 128, True, True)
    m = AdaptiveTree()  # the research's best setting, phase 3
    assert (m.phase, m.high_conf, m.low_conf, m.min_branch, m.default_branch, m.max_branch, m.base_depth,
            m.max_depth, m.stop_threshold, m.extend_threshold, m.learning_rate, m.target_acceptance, m.max_nodes,
            m.threshold, m.pruning, m.node_budget) == (3, 0.9, 0.4, 1, 2, 3, 5, 8, 0.1, 0.95, 0.01, 0.85, 128, 0.03,
                                                        True, True)
    assert label(DynaTree()) == "DynaTree" and label(AdaptiveTree(phase=1, pruning=False)) == \
        "AdaptiveTree(phase=1, pruning=False)"
    assert len({DynaTree(), AdaptiveTree(), AdaptiveTree(phase=2), TopNTree(), PromptLookup(), HybridTree()}) == 6


@pytest.mark.parametrize("cls, changed", [
    (AdaptiveTree, dict(phase=2, high_conf=0.8, low_conf=0.3, min_branch=2, default_branch=3, max_branch=4,
                        base_depth=4, max_depth=12, stop_threshold=0.2, extend_threshold=0.9, learning_rate=0.02,
                        target_acceptance=0.8, window=5, max_nodes=32, threshold=0.05, pruning=False,
                        node_budget=False, draft_bits=4, draft_vocab=32768)),
    (DynaTree, dict(high_conf=0.8, low_conf=0.3, min_branch=2, default_branch=3, max_branch=4, max_depth=12,
                    max_nodes=32, node_budget=False, draft_bits=4, draft_vocab=32768, staged=False,
                    draft_context=256)),
])
def test_labels_tell_every_setting_apart(cls, changed):
    """Labels name methods in stored results: one that differs from the default in any one setting gets its own."""
    names = {f.name for f in dataclasses.fields(cls)}
    assert set(changed) == names, names ^ set(changed)  # a new setting must be added here
    labels = [label(cls(**{name: value})) for name, value in changed.items()]
    assert len(set(labels + [label(cls())])) == len(labels) + 1, labels


# ---------------------------------------------------------------------------------------------------------------------
# DynaTree: the confidence- and cost-shaped default (once phase 4)


def _level_costs(shaped, seconds: float, per_node: float = 0.0):
    """Give a phase-4 state draft levels that cost `seconds` for one node and `per_node` more per extra node."""
    from dynatree_lib.methods.confidence import _Line

    shaped.draft = _Line(0.0, spread=0.25)
    for width in (1, 2, 3) * 10:
        shaped.draft.add(width, seconds + per_node * (width - 1))


def test_phase4_feeds_a_level_only_when_it_pays_for_itself():
    from dynatree_lib.methods.confidence import Shaped

    shaped = Shaped(DynaTree(), lambda p: torch.ones_like(p, dtype=torch.long))
    tree = from_parents([0, 1, 2], [-1, 0, 1])  # a chain: root, then two draft nodes
    shaped.logq = torch.log(torch.tensor([1.0, 0.9, 0.5]))  # worth: the chance the target accepts the path
    new = torch.tensor([2])
    shaped.rate, shaped.abar = 10.0, 0.8  # tokens/s, how often a first child is accepted
    _level_costs(shaped, 0.01)  # a level must bring 0.7 * 0.1 tokens: 0.8 * 0.5 = 0.4 expected from the next one
    assert shaped.select_frontier(tree, new).tolist() == [2]
    _level_costs(shaped, 0.1)  # now it must bring 0.7 tokens: not worth drafting
    assert shaped.select_frontier(tree, new).tolist() == []
    _level_costs(shaped, 0.01)
    shaped.logq[2] = torch.log(torch.tensor(0.05))  # a path the target rarely accepts: not worth extending
    assert shaped.select_frontier(tree, new).tolist() == []


def test_phase4_prices_a_node_in_both_forwards():
    """A node that stays in the tree is verified and fed to the next draft level: the floor counts both costs, and a
    wide level must be worth more than a narrow one."""
    from dynatree_lib.methods.confidence import Shaped, _Line

    shaped = Shaped(DynaTree(), lambda p: torch.ones_like(p, dtype=torch.long))
    shaped.rate, shaped.abar = 10.0, 0.8
    shaped.verify = _Line(0.0)
    for nodes in (1, 8, 16) * 10:
        shaped.verify.add(nodes, 0.2 + 0.002 * nodes)
    _level_costs(shaped, 0.02, per_node=0.003)
    assert shaped.draft.slope() == pytest.approx(0.003)
    assert shaped.node_floor() == pytest.approx(10.0 * (0.002 + 0.003))
    assert shaped.level_tokens(3) == pytest.approx(10.0 * (0.02 + 2 * 0.003))
    tree = from_parents([0, 1, 2, 3], [-1, 0, 0, 0])
    shaped.logq = torch.log(torch.tensor([1.0, 0.07, 0.07, 0.07]))
    wide = torch.tensor([1, 2, 3])
    # Three nodes worth 0.07 each pass the floor (0.8 * 0.07 >= 0.05) and together bring 0.8 * 0.21 = 0.168 tokens,
    # short of 0.7 * 10 * (0.02 + 2 * 0.003) = 0.182 for a level that feeds three nodes
    assert shaped.select_frontier(tree, wide).tolist() == []
    _level_costs(shaped, 0.02)  # were a wide level as cheap as a narrow one (0.14 tokens), it would be drafted
    assert shaped.select_frontier(tree, wide).tolist() == [1, 2, 3]


def test_phase4_calibration_learns_what_the_target_accepts():
    from dynatree_lib.methods.confidence import AcceptanceTable

    cal = AcceptanceTable()
    assert cal.f(torch.tensor([0.55])).item() == pytest.approx(0.55)  # the prior: f(p) = p
    for _ in range(200):
        cal.observe(0.55, True)  # an int4 draft unsure of tokens the target then writes
    assert cal.f(torch.tensor([0.55])).item() > 0.95
    assert cal.f(torch.tensor([0.15])).item() == pytest.approx(0.15)  # other bins keep their prior


def test_phase4_sampling_is_reproducible_from_its_seed(monkeypatch):
    import random
    import time

    pair = pair_for("llama", "perturbed", False)
    runs = []
    for clock_seed in range(3):  # a wildly different clock each run: timings must not decide which draws are made
        ticks = random.Random(clock_seed)
        now = [0.0]

        def clock():
            now[0] += ticks.choice([1e-4, 1e-2, 1.0])
            return now[0]

        monkeypatch.setattr(time, "perf_counter", clock)
        runs.append(generate(pair, [3, 1, 4, 1, 5], DynaTree(), 24, stop_at_eos=False, temperature=0.9,
                             seed=11).token_ids)
    monkeypatch.undo()
    assert runs[0] == runs[1] == runs[2]


def test_phase4_learns_its_costs_and_calibration_per_generation():
    pair = pair_for("llama", "perturbed", False)
    out = generate(pair, [3, 1, 4, 1, 5, 9, 2, 6], DynaTree(), 40, stop_at_eos=False)
    assert out.token_ids == reference("llama", False, [3, 1, 4, 1, 5, 9, 2, 6], 40)
    assert {"abar", "rate_x_level", "node_floor"} <= set(out.trace[0])
    assert 0 <= out.stats["final_abar"] <= 1 and 0 <= out.stats["final_accept_at_p0.95"] <= 1
