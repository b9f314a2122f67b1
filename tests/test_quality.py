"""quality: exactness against AR, the first divergence and the target's margin there, perplexity."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd
import pytest
import torch

import dynatree_lib as dt
from dynatree_lib import bench
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


def test_repeated_share_counts_ngrams_seen_before():
    assert quality.repeated_share([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 / 5)  # (1,2,3,4) again, once of five
    assert quality.repeated_share([7] * 10) == pytest.approx(6 / 7)  # a loop: every 4-gram but the first
    assert quality.repeated_share(list(range(20))) == 0
    assert quality.repeated_share([1, 2, 1, 2], n=2) == pytest.approx(1 / 3)
    assert math.isnan(quality.repeated_share([1, 2, 3]))  # fewer tokens than n: no 4-gram to count
    for n in (0, 2.0, True):
        with pytest.raises(ValueError, match="n must be a positive int"):
            quality.repeated_share([1, 2, 3], n=n)


def test_flip_table_finds_the_flip_its_gap_and_both_texts_quality():
    pair = tiny_pair("llama", "perturbed")
    prompt = [3, 1, 4, 1, 5]
    table = quality.flip_table(pair, {"p": prompt}, [dt.Autoregressive(), FlipAt(4), dt.Linear(3)], 8)
    assert list(table.columns) == list(quality.FLIP_COLUMNS) and table["method"].tolist() == ["FlipAt(at=4)",
                                                                                            "Linear(k=3)"]
    flip, same = table.iloc[0], table.iloc[1]
    ref = reference_greedy(pair.target, prompt, 8)
    gaps = quality.margins(pair.target, prompt, ref)
    assert flip["first_divergence"] == 4 and flip["max_new_tokens"] == 8
    assert flip["ar_token"] == ref[4] and flip["method_token"] == gaps["top2"].iloc[4]  # the runner-up won
    assert flip["gap_logits"] == pytest.approx(gaps["gap"].iloc[4], rel=1e-4)  # the shared prefix only
    assert flip["gap_spacings"] == pytest.approx(gaps["gap_ulps"].iloc[4], rel=1e-4)
    assert flip["perplexity_method"] > flip["perplexity_ar"]
    assert flip["repeat4_ar"] == quality.repeated_share(ref)
    assert 0 <= flip["repeat4_method"] <= 1
    assert same["first_divergence"] == -1 and math.isnan(same["gap_logits"]) and pd.isna(same["ar_token"])
    assert same["perplexity_method"] == same["perplexity_ar"] and same["repeat4_method"] == same["repeat4_ar"]


def test_store_flips_stores_with_provenance_and_resumes_per_unit(tmp_path, monkeypatch):
    pair = tiny_pair("llama", "perturbed")
    prompts = {"a": [1, 2, 3], "b": [9, 8, 7, 6]}
    calls = []
    real = quality.flip_table
    monkeypatch.setattr(quality, "flip_table", lambda p, pr, ms, n: calls.append((list(pr), [dt.label(m) for m in ms]))
                        or real(p, pr, ms, n))
    first = quality.store_flips(pair, prompts, [dt.Linear(3)], [6], out=tmp_path, params={"x": 1}, progress=False)
    assert len(first) == 2 and set(first["prompt_id"]) == {"a", "b"} and (first["first_divergence"] == -1).all()
    assert {"git_commit", "dtype", "pair", "method_type", "method_params", "date_utc"} <= set(first.columns)
    calls.clear()
    again = quality.store_flips(pair, prompts, [dt.Linear(3), dt.Linear(2)], [6], out=tmp_path, progress=False)
    assert calls == [(["a"], ["Linear(k=2)"]), (["b"], ["Linear(k=2)"])]  # only the units not stored yet
    assert len(again) == 4 and len(bench.read_results(tmp_path / "flips.csv")) == 4
    calls.clear()
    quality.store_flips(pair, prompts, [dt.Linear(2)], 6, out=tmp_path, progress=False)
    assert calls == []
    meta = json.loads((tmp_path / "flips.meta.json").read_text())
    assert len(meta["sessions"]) == 2  # the rerun with nothing to do recorded no session
    with pytest.raises(ValueError, match="at least one method other than AR"):
        quality.store_flips(pair, prompts, [dt.Autoregressive()], 6, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="max_new_tokens"):
        quality.store_flips(pair, prompts, [dt.Linear(3)], [0], out=tmp_path, progress=False)
