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


def test_labels_unchanged():
    assert label(TopNTree(max_nodes=16)) == "TopNTree(N=16,D=8,k=8)"
    assert label(PromptLookup(k=6, branches=2)) == "PromptLookup(n=3,K=6,b=2)"
    assert label(HybridTree(FixedTree(), k=6)) == "Hybrid(FixedTree(D=5,B=2,tau=0.03,N=128)+PL(n=3,K=6))"
    assert label(HFPromptLookup(k=4)) == "HFPromptLookup(K=4,n=2)"


def test_bad_values_name_the_new_parameter():
    with pytest.raises(ValueError, match="max_nodes"):
        TopNTree(max_nodes=0)
    with pytest.raises(ValueError, match="k must"):
        PromptLookup(k=0)
