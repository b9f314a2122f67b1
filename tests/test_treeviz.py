"""treeviz: one drafted tree looked at closely (the book's chapters 01 and 02), and tree.brute_force_ancestors.

The tree `draft_one_tree` shows must be the tree `generate` drafts in its first round, and what it commits must be
the target's own greedy tokens; the candidate bookkeeping must agree with the tree; the mask picture must be read
off the real mask; tree-masked logits must equal plain per-path forwards.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import dynatree_lib as dt
from dynatree_lib.core.loop import Run
from dynatree_lib.core import tree as tree_mod
from dynatree_lib.book import maskviz as mv
from dynatree_lib.book import treeviz as tv
from tiny import ARCHS, reference_greedy, tiny_pair

METHODS = [
    dt.FixedTree(depth=4, branch=3, threshold=0.05, max_nodes=12),
    dt.FixedTree(depth=3, branch=2, threshold=0.0),
    dt.Linear(4),
    dt.AdaptiveTree(phase=1, base_depth=3),
    dt.AdaptiveTree(phase=2, base_depth=2, max_depth=4, stop_threshold=0.01, extend_threshold=0.5),
]


@st.composite
def parent_lists(draw, max_nodes=30):
    n = draw(st.integers(1, max_nodes))
    return [-1] + [draw(st.integers(0, i - 1)) for i in range(1, n)]


@given(parent_lists())
@settings(max_examples=100, deadline=None)
def test_brute_force_ancestors_matches_tree(parents):
    tree = tree_mod.from_parents(list(range(len(parents))), parents)
    assert torch.equal(tree_mod.brute_force_ancestors(parents), tree.ancestors)


def test_brute_force_ancestors_any_order_and_bad_input():
    # Not BFS order: node 1's parent comes after it. The relation is still well defined.
    anc = tree_mod.brute_force_ancestors([-1, 2, 0])
    assert anc.tolist() == [[True, False, False], [True, True, True], [True, False, True]]
    with pytest.raises(ValueError, match="parents"):
        tree_mod.brute_force_ancestors([-1, 2, 1])  # a cycle
    with pytest.raises(ValueError, match="parents"):
        tree_mod.brute_force_ancestors([-1, 7])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["same", "perturbed", "unrelated"])
@pytest.mark.parametrize("method", METHODS, ids=dt.label)
def test_draft_one_tree_is_generates_first_round(arch, kind, method):
    pair = tiny_pair(arch, kind)
    prompt = [3, 17, 42, 5, 9, 11]
    view = tv.draft_one_tree(pair, prompt, method)
    ref = reference_greedy(pair.target, prompt, len(view.committed) + 1)
    assert int(view.tree.tokens[0]) == ref[0]  # the root is the target's first token
    assert view.committed == ref[1:]  # accepted path + bonus: the target's own greedy continuation
    first = dt.generate(pair, prompt, method, 6, stop_at_eos=False).trace[0]  # depth <= 4: round 1 uncut
    assert first["nodes"] == view.tree.num_draft and first["accepted"] == len(view.path) - 1
    if kind == "same":  # the draft is the target: its greedy chain is always accepted in full
        assert len(view.path) - 1 == view.tree.max_depth


@pytest.mark.parametrize("method", METHODS, ids=dt.label)
def test_candidates_agree_with_the_tree(method):
    pair = tiny_pair("llama", "perturbed")
    view = tv.draft_one_tree(pair, [7, 8, 9, 10], method)
    cand, tree = view.candidates, view.tree
    kept = cand[cand["reason"] == "kept"].sort_values("node")
    assert kept["node"].tolist() == list(range(1, len(tree)))
    assert kept["token_id"].tolist() == tree.tokens[1:].tolist()
    assert kept["parent"].tolist() == tree.parents[1:].tolist()
    assert torch.allclose(torch.tensor(kept["cum_logp"].tolist()), tree.cum_logp[1:])
    assert (cand.loc[cand["reason"] != "kept", "node"] == -1).all()
    threshold = method.drafter(Run(pair=pair, prompt_ids=[7, 8, 9, 10], max_new_tokens=1, eos_ids=set())).threshold
    below = cand[cand["reason"] == "threshold"]
    assert (below["cum_logp"].map(math.exp) < threshold).all()
    frame = tv.tree_frame(view)
    assert frame["accepted"].tolist() == [i in view.path for i in range(len(tree))]
    assert frame["children"].sum() == tree.num_draft
    assert torch.allclose(torch.tensor(frame["cum_prob"].tolist()), tree.cum_logp.exp())


def test_threshold_and_budget_reasons():
    pair = tiny_pair("qwen2", "perturbed")
    pruned = tv.draft_one_tree(pair, [1, 2, 3], dt.FixedTree(depth=3, branch=3, threshold=0.05))
    assert (pruned.candidates["reason"] == "threshold").any()
    free = tv.draft_one_tree(pair, [1, 2, 3], dt.FixedTree(depth=3, branch=3, threshold=0.0))
    assert set(free.candidates["reason"]) == {"kept"} and free.tree.num_draft == 3 + 9 + 27
    tight = tv.draft_one_tree(pair, [1, 2, 3], dt.FixedTree(depth=3, branch=3, threshold=0.0, max_nodes=5))
    assert tight.tree.num_draft == 5 and (tight.candidates["reason"] == "budget").any()
    frame = tv.pruned_frame(tight)
    assert set(frame["reason"]) == {"budget"} and len(frame) == (tight.candidates["reason"] == "budget").sum()


def test_dynatree_branches_follow_confidence():
    pair = tiny_pair("gpt_neox", "perturbed")
    method = dt.AdaptiveTree(phase=1, base_depth=2, threshold=0.0, high_conf=0.09, low_conf=0.05)
    view = tv.draft_one_tree(pair, [4, 5, 6], method)
    frame = tv.tree_frame(view)
    for _, row in frame[frame["depth"] < 2].iterrows():  # every node above the last level was expanded
        p = row["draft_top1"]
        want = 1 if p > method.high_conf else 3 if p < method.low_conf else 2
        assert row["children"] == want


def test_tree_figure_shows_every_part():
    pair = tiny_pair("llama", "perturbed")
    view = tv.draft_one_tree(pair, [7, 8, 9], dt.FixedTree(depth=3, branch=3, threshold=0.05))
    fig = tv.tree_figure(view)
    markers = {tr.name: len(tr.x) for tr in fig.data if tr.mode == "markers+text"}
    assert markers.pop("target's bonus token") == 1
    assert markers.pop("pruned candidate", 0) == len(tv.pruned_frame(view))
    assert sum(markers.values()) == len(view.tree)
    assert markers.get("accepted by the target", 0) == len(view.path) - 1


def test_layout_centres_parents_on_children():
    y = tv._layout([-1, 0, 0, 1, 1, 2], [0, 0, 1, 0, 1, 0])
    assert y[3:] == [0.0, 1.0, 2.0] and y[1] == 0.5 and y[2] == 2.0 and y[0] == 1.25


@given(parent_lists(20), st.integers(0, 8))
@settings(max_examples=50, deadline=None)
def test_mask_classes_are_prefix_ancestors_blocked(parents, prefix):
    tree = tree_mod.from_parents([0] * len(parents), parents)
    classes = mv.mask_classes(tree, prefix)
    assert (classes[:, :prefix] == 1).all()
    assert torch.equal(classes[:, prefix:] == 2, tree_mod.brute_force_ancestors(parents))
    assert torch.equal(classes[:, prefix:] == 0, ~tree_mod.brute_force_ancestors(parents))
    fig = mv.mask_figure(tree, prefix, prefix_shown=3)
    assert len(fig.data[0].z[0]) == min(prefix, 3) + len(parents)
    assert mv.position_frame(tree, prefix)["position_id"].tolist() == (tree.depth + prefix).tolist()


@pytest.mark.parametrize("arch", ARCHS)
def test_tree_logits_equal_per_path_forwards(arch):
    pair = tiny_pair(arch, "perturbed")
    view = tv.draft_one_tree(pair, [5, 6, 7, 8], dt.FixedTree(depth=3, branch=2, threshold=0.0))
    tree_l = mv.tree_logits(pair.target, view.prompt_ids, view.tree)
    path_l = mv.path_logits(pair.target, view.prompt_ids, view.tree)
    assert tree_l.shape == (len(view.tree), path_l.shape[1])
    assert torch.allclose(tree_l, path_l, atol=1e-4)
    assert tree_l.argmax(-1).tolist() == view.target_next


def test_unsupported_method_and_live_jupyter(monkeypatch):
    with pytest.raises(ValueError, match="method"):
        tv.draft_one_tree(tiny_pair("llama", "same"), [1, 2], dt.Autoregressive())
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert not tv.live_jupyter()
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/u/01_tree_structure.ipynb")
    assert tv.live_jupyter()


def test_explorer_builds_controls():
    pytest.importorskip("ipywidgets")
    box = tv.explorer(tiny_pair("llama", "perturbed"), [1, 2, 3], depth=2, branch=2)
    sliders = box.children[0].children
    assert [s.description for s in sliders] == ["depth", "branch", "threshold"]
    assert sliders[0].value == 2


def test_tree_summary_and_side_by_side_figure():
    pair = tiny_pair("qwen2", "perturbed")
    view = tv.draft_one_tree(pair, [1, 2, 3], dt.FixedTree(depth=3, branch=3, threshold=0.05, max_nodes=8))
    s = tv.tree_summary(view)
    reasons = view.candidates["reason"].value_counts()
    assert s["nodes"] == view.tree.num_draft and s["accepted"] == len(view.path) - 1
    assert s["pruned_threshold"] == reasons.get("threshold", 0) and s["pruned_budget"] == reasons.get("budget", 0)
    assert s["committed"] == len(view.committed) == s["accepted"] + 1
    fig = mv.tree_mask_figure(view, prefix_shown=2)
    heat = [tr for tr in fig.data if tr.type == "heatmap"]
    assert len(heat) == 1 and len(heat[0].z) == len(view.tree)
    labels = [t for tr in fig.data if tr.type == "scatter" and tr.text is not None for t in tr.text]
    assert all(any(lab.startswith(f"{i}:") for lab in labels) for i in range(len(view.tree)))


def test_without_the_tree_mask_logits_change():
    pair = tiny_pair("qwen2", "unrelated")
    view = tv.draft_one_tree(pair, [5, 6, 7, 8], dt.FixedTree(depth=2, branch=3, threshold=0.0))
    masked = mv.tree_logits(pair.target, view.prompt_ids, view.tree)
    causal = mv.tree_logits(pair.target, view.prompt_ids, view.tree, tree_mask=False)
    assert torch.allclose(masked[:2], causal[:2], atol=1e-5)  # root and first child: nothing extra to see
    assert not torch.allclose(masked[2:], causal[2:], atol=1e-3)  # later nodes see their siblings and cousins


def test_draft_bits_tree_is_the_quantized_drafts():
    pair = tiny_pair("llama", "perturbed")
    method = dt.FixedTree(depth=3, branch=2, threshold=0.0, draft_bits=8)
    view = tv.draft_one_tree(pair, [2, 4, 6, 8], method)
    first = dt.generate(pair, [2, 4, 6, 8], method, 5, stop_at_eos=False).trace[0]
    assert first["nodes"] == view.tree.num_draft and first["accepted"] == len(view.path) - 1
    assert view.committed == reference_greedy(pair.target, [2, 4, 6, 8], len(view.committed) + 1)[1:]
    plain = tv.draft_one_tree(pair, [2, 4, 6, 8], dt.FixedTree(depth=3, branch=2, threshold=0.0))
    assert len(plain.tree) == len(view.tree)  # full trees either way; only the draft's probabilities move
    assert not torch.allclose(plain.tree.logp, view.tree.logp, atol=1e-6)


def test_branching_frame_reads_the_rule_the_drafter_applied():
    pair = tiny_pair("gpt_neox", "perturbed")
    method = dt.AdaptiveTree(phase=1, base_depth=3, threshold=0.0, high_conf=0.08, low_conf=0.06)
    view = tv.draft_one_tree(pair, [4, 5, 6], method)
    frame = tv.branching_frame(view)
    nodes = tv.tree_frame(view)
    assert list(frame["node"]) == list(nodes.loc[nodes["draft_top1"].notna(), "node"])
    for _, row in frame.iterrows():
        p = row["draft_top1"]
        high, low = p > method.high_conf, p < method.low_conf
        assert row["allowed"] == (method.min_branch if high else method.max_branch if low else method.default_branch)
        assert row["confidence"] == ("high" if high else "low" if low else "mid")
        assert row["children"] <= row["allowed"]
    assert set(frame["confidence"]) == {"low", "mid", "high"}  # the thresholds above split this tree three ways
    fig = tv.branching_figure(frame, method)
    assert sum(len(trace.x) for trace in fig.data) == len(frame)
    assert sorted(shape.x0 for shape in fig.layout.shapes) == [method.low_conf, method.high_conf]
    with pytest.raises(ValueError, match="confidence"):
        tv.branching_frame(tv.draft_one_tree(pair, [4, 5, 6], dt.FixedTree(depth=2, branch=2)))


def test_draft_variations_redraft_the_round_with_each_change():
    pair = tiny_pair("llama", "perturbed")
    base = dt.FixedTree(depth=2, branch=2, threshold=0.0)
    view = tv.draft_one_tree(pair, [1, 2, 3], base)
    views = tv.draft_variations(pair, [1, 2, 3], view, [dict(depth=3), dict(branch=3)])
    deeper, wider = dt.FixedTree(depth=3, branch=2, threshold=0.0), dt.FixedTree(depth=2, branch=3, threshold=0.0)
    assert list(views) == [dt.label(base), dt.label(deeper), dt.label(wider)] and views[dt.label(base)] is view
    assert views[dt.label(deeper)].tree.max_depth == 3
    frame = tv.summary_frame(views.values())
    assert list(frame["method"]) == list(views) and list(frame["nodes"]) == [2 + 4, 2 + 4 + 8, 3 + 9]
    with pytest.raises(ValueError, match="no field widht"):
        tv.draft_variations(pair, [1, 2, 3], view, [dict(widht=3)])


def test_round_numbers_glue_the_round_as_the_prose_tells_it(monkeypatch):
    import myst_nb

    from dynatree_lib.book import page

    pair = tiny_pair("qwen2", "perturbed")
    view = tv.draft_one_tree(pair, [1, 2, 3], dt.FixedTree(depth=3, branch=2, threshold=0.05))
    numbers = tv.round_numbers(view)
    assert {k: numbers[k] for k in ("nodes", "accepted", "committed")} == {
        "nodes": view.tree.num_draft, "accepted": len(view.path) - 1, "committed": len(view.committed)}
    assert numbers["method"].data == f"` {dt.label(view.method)} `"
    assert numbers["text"].data == f"` {str(view.committed)!r} `"  # no tokenizer: the token ids
    glued = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: glued.append(name))
    page.glue_numbers(numbers, "tree_")
    assert "tree_accepted_depth_share" in glued and len(glued) == len(numbers)
