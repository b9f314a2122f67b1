"""quality: exactness against AR, the first divergence and the target's margin there, perplexity."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

import dynatree_lib as dt
from dynatree_lib.bench import quality
from dynatree_lib.core.method import Method
from tiny import ARCHS, reference_greedy, tiny_pair


@dataclass(frozen=True)
class FlipAt(Method):
    """A deliberately wrong method: AR's tokens, except token `at`, which it replaces by the target's runner-up."""

    at: int

    def decode(self, run) -> None:
        ids = torch.tensor([run.prompt_ids])
        tokens = []
        for i in range(run.max_new_tokens):
            logits = run.pair.target(input_ids=torch.cat([ids, torch.tensor([tokens], dtype=torch.long)], dim=1)
                                     ).logits[0, -1]
            tokens.append(int(torch.topk(logits, 2).indices[1 if i == self.at else 0]))
        run.emit(tokens)


def test_ulp_is_the_spacing_of_the_dtype():
    assert quality.ulp(torch.tensor([1.0, 20.0, -3.0]), torch.bfloat16).tolist() == [2**-7, 2**-3, 2**-6]
    x = torch.rand(100) * 50 + 0.5
    nxt = torch.nextafter(x, torch.full_like(x, math.inf))
    assert torch.equal(quality.ulp(x, torch.float32), nxt - x)


@pytest.mark.parametrize("arch", ARCHS)
def test_margins_along_the_greedy_path(arch):
    pair = tiny_pair(arch, "perturbed")
    prompt = [4, 8, 15, 16]
    ref = reference_greedy(pair.target, prompt, 10)
    m = quality.margins(pair.target, prompt, ref)
    assert m["position"].tolist() == list(range(10)) and m["token"].tolist() == ref
    assert m["argmax_agrees"].all() and (m["top1"] == m["token"]).all()
    assert (m["gap"] > 0).all() and (m["top2"] != m["top1"]).all()
    assert (m["gap_ulps"] > 1000).all()  # float32, sharpened logits: nowhere near a tie
    assert quality.margins(pair.target, prompt, []).empty


@pytest.mark.parametrize("arch", ARCHS)
def test_every_greedy_method_matches_ar_in_float32(arch):
    pair = tiny_pair(arch, "perturbed")
    methods = [dt.Linear(3), dt.FixedTree(depth=3, branch=2, threshold=0.02), dt.AdaptiveTree(phase=3)]
    table = quality.compare_to_ar(pair, {"a": [1, 2, 3], "b": [9, 8, 7, 6, 5]}, methods, 12)
    assert table["method"].tolist() == ["AR", *[dt.label(m) for m in methods]] * 2
    assert table["match_ar"].all() and (table["first_divergence"] == -1).all()
    assert (table["new_tokens"] == 12).all() and table["dtype"].eq("float32").all()
    for pid, prompt in (("a", [1, 2, 3]), ("b", [9, 8, 7, 6, 5])):
        rows = table[table["prompt_id"] == pid]
        assert all(t == reference_greedy(pair.target, prompt, 12) for t in rows["token_ids"])
        assert rows["perplexity"].nunique() == 1 and rows["perplexity"].iloc[0] > 1


def test_a_divergence_is_found_and_explained():
    pair = tiny_pair("llama", "perturbed")
    prompt = [3, 1, 4, 1, 5]
    table = quality.compare_to_ar(pair, {"p": prompt}, [FlipAt(4)], 8)
    ar, flip = table.iloc[0], table.iloc[1]
    ref = reference_greedy(pair.target, prompt, 8)
    assert flip["method"] == "FlipAt(at=4)" and not flip["match_ar"] and flip["first_divergence"] == 4
    assert flip["ar_token"] == ref[4] and flip["method_token"] != ref[4]
    gap = quality.margins(pair.target, prompt, ref)["gap"].iloc[4]
    assert flip["gap_at_divergence"] == pytest.approx(gap)
    assert ar["match_ar"] and math.isnan(ar["gap_at_divergence"])
    assert flip["perplexity"] > ar["perplexity"]  # the runner-up is less likely under the target than its argmax
