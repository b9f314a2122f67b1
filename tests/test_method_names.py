"""One parameter vocabulary across methods (max_nodes, max_depth, k); the old names still work, with a warning."""
import pytest

from dynatree_lib import FixedTree, HFPromptLookup, HybridTree, PromptLookup, TopNTree, label


@pytest.mark.parametrize("cls, old, new, value", [
    (TopNTree, "nodes", "max_nodes", 12),
    (PromptLookup, "num_tokens", "k", 5),
    (HybridTree, "num_tokens", "k", 5),
    (HFPromptLookup, "num_tokens", "k", 7),
])
def test_old_parameter_names_warn_and_give_equal_methods(cls, old, new, value):
    with pytest.warns(DeprecationWarning, match=f"{old}.*{new}"):
        method = cls(**{old: value})
    assert method == cls(**{new: value}) and label(method) == label(cls(**{new: value}))
    assert getattr(method, new) == value
    with pytest.warns(DeprecationWarning):
        assert getattr(method, old) == value
    with pytest.raises(TypeError, match=new):
        cls(**{old: value, new: value})


def test_labels_use_the_new_names():
    assert label(TopNTree(max_nodes=16)) == "TopNTree(max_nodes=16)"
    assert label(PromptLookup(k=6, branches=2)) == "PromptLookup(k=6, branches=2)"
    assert label(HybridTree(FixedTree(depth=4), k=6)) == "HybridTree(tree=FixedTree(depth=4), k=6)"
    assert label(HFPromptLookup(k=4)) == "HFPromptLookup(k=4)"


def test_bad_values_name_the_new_parameter():
    with pytest.raises(ValueError, match="max_nodes"):
        TopNTree(max_nodes=0)
    with pytest.raises(ValueError, match="k must"):
        PromptLookup(k=0)
