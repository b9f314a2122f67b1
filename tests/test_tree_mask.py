"""Tree structure and tree attention mask against a brute-force ancestor relation."""
import torch
from hypothesis import given, settings, strategies as st

from dynatree_lib.core import tree as tree_mod
from dynatree_lib.core.mask import tree_attention_mask, tree_position_ids


@st.composite
def random_trees(draw, max_nodes=40):
    n = draw(st.integers(1, max_nodes))
    parents = [-1] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    tokens = draw(st.lists(st.integers(0, 50), min_size=n, max_size=n))
    return tokens, parents


def brute_ancestors(parents):
    n = len(parents)
    anc = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        j = i
        while j != -1:
            anc[i, j] = True
            j = parents[j]
    return anc


def brute_depth(parents, i):
    return 0 if parents[i] == -1 else 1 + brute_depth(parents, parents[i])


@given(random_trees())
@settings(max_examples=200, deadline=None)
def test_tree_matches_brute_force(case):
    tokens, parents = case
    tree = tree_mod.from_parents(tokens, parents)
    assert torch.equal(tree.ancestors, brute_ancestors(parents))
    assert tree.depth.tolist() == [brute_depth(parents, i) for i in range(len(parents))]
    assert tree.tokens.tolist() == tokens
    for i in range(len(parents)):
        path = tree.path(i)
        assert path[0] == 0 and path[-1] == i
        assert all(parents[b] == a for a, b in zip(path, path[1:]))


@given(random_trees(), st.integers(0, 20))
@settings(max_examples=100, deadline=None)
def test_mask_allows_prefix_and_ancestors_only(case, prefix):
    tokens, parents = case
    tree = tree_mod.from_parents(tokens, parents)
    mask = tree_attention_mask(tree.ancestors, prefix, torch.float32)[0, 0]
    n = len(tokens)
    assert mask.shape == (n, prefix + n)
    allowed = mask == 0
    assert allowed[:, :prefix].all()
    assert torch.equal(allowed[:, prefix:], brute_ancestors(parents))
    assert (mask[~allowed] == torch.finfo(torch.float32).min).all()
    positions = tree_position_ids(tree.depth, prefix)[0]
    assert positions.tolist() == [prefix + brute_depth(parents, i) for i in range(n)]


def test_chain_mask_is_causal():
    tree = tree_mod.from_parents([1, 2, 3, 4], [-1, 0, 1, 2])
    allowed = tree_attention_mask(tree.ancestors, 0, torch.float32)[0, 0] == 0
    assert torch.equal(allowed, torch.tril(torch.ones(4, 4, dtype=torch.bool)))


def test_add_level_cumulative_logp():
    t = tree_mod.root(7)
    t = tree_mod.add_level(t, torch.tensor([0, 0]), torch.tensor([3, 4]), torch.tensor([-0.5, -1.0]))
    t = tree_mod.add_level(t, torch.tensor([1]), torch.tensor([5]), torch.tensor([-0.25]))
    assert t.cum_logp.tolist() == [0.0, -0.5, -1.0, -0.75]
    assert t.depth.tolist() == [0, 1, 1, 2]
    assert t.max_depth == 2 and t.num_draft == 3


def test_from_parents_rejects_bad_trees():
    import pytest

    with pytest.raises(ValueError, match="parent"):
        tree_mod.from_parents([1, 2], [-1, 1])
    with pytest.raises(ValueError, match="root"):
        tree_mod.from_parents([1, 2], [0, 0])


def test_max_depth_without_bfs_order():
    # parents before children, but not level by level: the last node (depth 1) is not among the deepest (depth 2)
    tree = tree_mod.from_parents([1, 2, 3, 4], [-1, 0, 1, 0])
    assert tree.depth.tolist() == [0, 1, 2, 1]
    assert tree.max_depth == 2


@given(random_trees())
@settings(max_examples=100, deadline=None)
def test_max_depth_is_the_deepest_node(case):
    tokens, parents = case
    tree = tree_mod.from_parents(tokens, parents)
    assert tree.max_depth == max(brute_depth(parents, i) for i in range(len(parents)))
