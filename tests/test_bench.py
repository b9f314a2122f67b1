"""The benchmark harness, its stored results (provenance, resume) and the plot helpers, on tiny random models."""
from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import dataclass

import pandas as pd
import pytest
import torch

from dynatree_lib import Autoregressive, FixedTree, HFAssisted, Linear, bench, generate, label
from dynatree_lib.book import plots
from dynatree_lib.core.loop import autoregressive
from dynatree_lib.core.method import Method
from dynatree_lib.models import provenance, quant
from dynatree_lib.models.provenance import write_atomic
from tiny import VOCAB, tiny_pair

PROMPTS = {"p0": [5, 17, 3, 42], "p1": [7, 7, 1]}
N = 6


@dataclass(frozen=True)
class Corrupted(Method):
    """AR with token 2 replaced: a method whose output must be flagged as diverging from AR at index 2."""

    def decode(self, run) -> None:
        autoregressive(run)
        run.tokens[2] = (run.tokens[2] + 1) % VOCAB


@pytest.fixture(scope="module")
def pair():
    return tiny_pair("llama", "perturbed")


@pytest.fixture(scope="module")
def stored(pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    df = bench.run_benchmark(pair, [Linear(3), FixedTree(3, 2), Corrupted()], PROMPTS, N, repeats=2, warmup=1,
                             out=out, experiment="unit", params={"note": "test"}, progress=False)
    return df, out


def test_rows_cover_every_config_and_repeat(stored):
    df, _ = stored
    assert len(df) == 4 * len(PROMPTS) * 2  # AR added + 3 methods, 2 prompts, 2 repeats
    assert df["method"].iloc[0] == "AR"
    assert set(df["method"]) == {"AR", "Linear(k=3)", "FixedTree(depth=3)", "Corrupted"}
    assert sorted(df["repeat"].unique()) == [0, 1]
    assert (df["new_tokens"] == N).all() and (df["max_new_tokens"] == N).all()
    assert set(df["prompt_tokens"]) == {4, 3}


def test_speedup_is_against_median_ar_wall_of_the_same_call(stored):
    df, _ = stored
    for pid, group in df.groupby("prompt_id"):
        ar_walls = group.loc[group["method"] == "AR", "wall_s"]
        assert group["ar_wall_s"].nunique() == 1
        assert group["ar_wall_s"].iloc[0] == pytest.approx(ar_walls.median())
    assert df["speedup"].to_numpy() == pytest.approx((df["ar_wall_s"] / df["wall_s"]).to_numpy())
    assert df["tokens_per_s"].to_numpy() == pytest.approx((N / df["wall_s"]).to_numpy())


def test_speedup_divides_the_faster_of_ar_and_transformers_generate(pair):
    from dynatree_lib import HFGenerate

    df = bench.run_benchmark(pair, [HFGenerate(), Linear(3)], PROMPTS, N, repeats=2, warmup=0, progress=False)
    assert set(df["method"]) == {"AR", "HFGenerate", "Linear(k=3)"}
    assert df["match_ar"].all()  # transformers' greedy generate writes the same tokens
    for _, group in df.groupby("prompt_id"):
        ar = group.loc[group["method"] == "AR", "wall_s"].median()
        hf = group.loc[group["method"] == "HFGenerate", "wall_s"].median()
        assert (group["ar_wall_s"] == ar).all() and (group["hf_generate_wall_s"] == hf).all()
        assert (group["baseline"] == ("HFGenerate" if hf < ar else "AR")).all()
        assert group["speedup"].to_numpy() == pytest.approx(min(ar, hf) / group["wall_s"].to_numpy())
        assert group["speedup_vs_ar"].to_numpy() == pytest.approx(ar / group["wall_s"].to_numpy())


def test_reference_repeats_time_plain_decoding_more_often(pair):
    df = bench.run_benchmark(pair, [Linear(3)], PROMPTS, N, repeats=1, reference_repeats=3, warmup=0,
                             progress=False)
    for _, group in df.groupby("prompt_id"):
        ar = group[group["method"] == "AR"]
        assert sorted(ar["repeat"]) == [0, 1, 2] and (group["method"] == "Linear(k=3)").sum() == 1
        assert (group["ar_wall_s"] == ar["wall_s"].median()).all()  # every speedup divides by their median
    with pytest.raises(ValueError, match="reference_repeats"):
        bench.run_benchmark(pair, [Linear(3)], PROMPTS, N, reference_repeats=0, progress=False)


def test_match_ar_and_first_divergence(stored):
    df, _ = stored
    exact = df[df["method"] != "Corrupted"]
    assert exact["match_ar"].all() and (exact["first_divergence"] == -1).all()  # float32: exact methods
    bad = df[df["method"] == "Corrupted"]
    assert (~bad["match_ar"]).all() and (bad["first_divergence"] == 2).all()


def test_perplexity_matches_an_independent_computation(pair, stored):
    df, _ = stored
    for pid, ids in PROMPTS.items():
        for method in (Autoregressive(), Corrupted()):
            new = generate(pair, ids, method, N, stop_at_eos=False).token_ids
            with torch.no_grad():
                logits = pair.target(torch.tensor([ids + new])).logits[0]
            nll = torch.nn.functional.cross_entropy(logits[len(ids) - 1:-1], torch.tensor(new))
            got = df[(df["prompt_id"] == pid) & (df["method"] == label(method))]["perplexity"]
            assert got.to_numpy() == pytest.approx(math.exp(nll.item()), rel=1e-4)
    ar = df[df["method"] == "AR"].groupby("prompt_id")["perplexity"].first()
    bad = df[df["method"] == "Corrupted"].groupby("prompt_id")["perplexity"].first()
    assert (ar != bad).all()


def test_forward_counts_and_time_shares(stored):
    df, _ = stored
    ar = df[df["method"] == "AR"]
    assert (ar["target_forwards"] == N).all() and (ar["draft_forwards"] == 0).all()
    spec = df[df["method"].isin(["Linear(k=3)", "FixedTree(depth=3)"])]
    assert (spec["target_forwards"] == spec["rounds"] + 1).all()  # prefill + one verify per round
    assert (spec["draft_forwards"] >= spec["rounds"]).all()
    for col in ("bookkeeping_share", "commit_share"):
        assert df[col].between(0, 1).all(), col
    assert ((df["target_forward_s"] + df["draft_forward_s"]) <= df["wall_s"]).all()
    assert (spec["acceptance_nodes"].between(0, 1)).all() and spec["tokens_per_round"].ge(1).all()
    assert df["kv_compressions"].isna().all()  # no streaming method here
    assert ar["draft_prefill_s"].isna().all()  # no draft
    assert (spec["draft_prefill_s"] > 0).all() and (spec["draft_prefill_s"] < spec["draft_forward_s"]).all()


def test_forward_timer_agrees_with_the_library_count(pair):
    timer = bench.ForwardTimer(pair)
    with timer:
        gen = generate(pair, PROMPTS["p0"], Linear(2), N, stop_at_eos=False)
    assert timer.calls["draft"] == gen.stats["draft_forwards"]
    assert timer.calls["target"] == gen.stats["rounds"] + 1
    assert not pair.target._forward_hooks and not pair.draft._forward_pre_hooks  # hooks removed


def test_forward_timer_times_each_models_first_forward_the_prompt(pair):
    timer = bench.ForwardTimer(pair, log=True)
    with timer:
        generate(pair, PROMPTS["p0"], Linear(2), N, stop_at_eos=False)
    for role in ("target", "draft"):
        first = next(f for f in timer.forwards if f[0] == role)
        assert timer.first[role] == first[3] and first[2] == 0  # the first forward starts from an empty cache
        assert first[1] >= len(PROMPTS["p0"])  # ... and reads the whole prompt
    timer.reset()
    assert timer.first == {}


def test_memory_columns(pair, stored):
    df, _ = stored
    params = sum(p.numel() * p.element_size() for m in (pair.target, pair.draft) for p in m.parameters())
    buffers = sum(b.numel() * b.element_size() for m in (pair.target, pair.draft) for b in m.buffers())
    assert (df["param_bytes"] == params + buffers).all()  # buffers too: int8/int4 weights are buffers
    assert (df["peak_mem_bytes"] > params).all()  # process RSS holds at least the weights
    assert set(df["peak_mem_kind"]) <= {"rss_peak", "rss_after"}
    assert df["peak_mem_delta_bytes"].between(0, df["peak_mem_bytes"].min()).all()


def test_full_length_is_forced_past_eos(pair, monkeypatch, tmp_path):
    ar = generate(pair, PROMPTS["p0"], Autoregressive(), N, stop_at_eos=False).token_ids
    monkeypatch.setattr(pair.target.generation_config, "eos_token_id", ar[1])
    assert len(generate(pair, PROMPTS["p0"], Autoregressive(), N).token_ids) == 2  # EOS would stop it
    df = bench.run_benchmark(pair, [Linear(2)], {"p0": PROMPTS["p0"]}, N, warmup=0, progress=False)
    assert (df["new_tokens"] == N).all()


def test_provenance_in_rows_and_sidecar(stored):
    df, out = stored
    row = df.iloc[0]
    assert row["git_commit"] == "unknown" or len(row["git_commit"]) == 40
    assert row["git_dirty"] in (True, False)
    assert row["torch_version"] == torch.__version__
    import transformers

    assert row["transformers_version"] == transformers.__version__
    assert row["cpu"] and row["torch_threads"] == torch.get_num_threads()
    assert row["cpu_bf16"] == quant.native_bf16_matmul()
    assert (row["dtype"], row["device"], row["pair"]) == ("float32", "cpu", "tiny-llama-perturbed")
    assert row["target_model"] and row["draft_model"] and row["experiment"] == "unit"
    assert json.loads(row["params"]) == {"note": "test", "repeats": 2, "reference_repeats": 2, "warmup": 1}
    assert dt.datetime.fromisoformat(row["date_utc"]).tzinfo is not None
    meta = json.loads((out / "unit.meta.json").read_text())
    session = meta["sessions"][0]
    assert len(meta["sessions"]) == 1 and "git_changes" in session and session["params"]["note"] == "test"
    for key in ("git_commit", "torch_version", "transformers_version", "cpu", "torch_threads", "param_bytes"):
        assert key in session


def test_csv_round_trip(stored):
    df, out = stored
    back = bench.read_results(out / "unit.csv")
    assert list(back.columns) == list(df.columns) and len(back) == len(df)
    assert back["match_ar"].dtype == bool and back["prompt_id"].tolist() == df["prompt_id"].tolist()
    pd.testing.assert_series_equal(back["wall_s"], df["wall_s"])


def test_resume_skips_finished_configs_and_loses_none(pair, monkeypatch, tmp_path):
    prompts = {"a": [1, 2, 3], "b": [4, 5, 6], "c": [7, 8, 9]}
    methods = [Linear(2), FixedTree(2, 2)]
    calls = []
    kill_after = [3]  # the 4th non-AR generation "crashes" the process
    real = bench.harness.generate

    class Killed(Exception):
        pass

    def counting(pair, ids, method, n, **kw):
        if kill_after[0] is not None and sum(c[0] != "AR" for c in calls) >= kill_after[0] and label(method) != "AR":
            raise Killed
        calls.append((label(method), tuple(ids), n))
        return real(pair, ids, method, n, **kw)

    monkeypatch.setattr(bench.harness, "generate", counting)
    run = lambda: bench.run_benchmark(pair, methods, prompts, 4, warmup=0, out=tmp_path,  # noqa: E731
                                      experiment="sweep", progress=False)
    with pytest.raises(Killed):
        run()
    key = lambda df: set(zip(df["method"], df["prompt_id"]))  # noqa: E731
    first = bench.read_results(tmp_path / "sweep.csv")
    labels = ["AR", "Linear(k=2)", "FixedTree(depth=2)"]
    assert key(first) == {("AR", "a"), (labels[1], "a"), (labels[2], "a"), ("AR", "b"), (labels[1], "b")}
    assert not list(tmp_path.glob(".*.tmp"))

    by_ids = {tuple(v): k for k, v in prompts.items()}
    calls.clear()
    kill_after[0] = None
    df = run()
    rerun = {(m, by_ids[ids]) for m, ids, _ in calls}
    assert not {c for c in rerun if c[0] != "AR"} & key(first)  # nothing finished was repeated
    assert {(m, p) for m, p in rerun if m == "AR"} == {("AR", "b"), ("AR", "c")}  # AR re-measured as reference
    assert len(calls) == len(rerun)  # and nothing ran twice within the rerun
    final = bench.read_results(tmp_path / "sweep.csv")
    everything = {(m, p) for m in labels for p in prompts}
    assert key(final) == everything and len(final) == len(everything)  # none missing, none duplicated
    assert key(df) == everything
    # The reference for b was measured in the rerun, so b's rows from the rerun use the rerun's AR wall.
    b_rerun = final[(final["prompt_id"] == "b") & (final["method"] == labels[2])]
    assert (b_rerun["ar_wall_s"] != first.loc[(first["prompt_id"] == "b") & (first["method"] == "AR"), "wall_s"]
            .iloc[0]).all()
    calls.clear()
    run()
    assert calls == []  # a finished sweep does nothing, and records no session
    assert len(json.loads((tmp_path / "sweep.meta.json").read_text())["sessions"]) == 2


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.csv"
    write_atomic(path, "old\n")

    def boom(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(provenance.os, "replace", boom)
    with pytest.raises(OSError):
        write_atomic(path, "new\n")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["x.csv"]


def test_bad_arguments_raise_before_running(pair, tmp_path):
    cases = [
        (dict(repeats=0), "repeats"),
        (dict(warmup=-1), "warmup"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(experiment="../x"), "experiment"),
        (dict(methods=[Linear(2), Linear(2)]), "distinct labels"),
        (dict(prompts=[1, 2, 3]), "wrap a single prompt"),
        (dict(prompts={"long": list(range(1, 90)) * 3}), "context"),
        (dict(prompts={}), "empty"),
        (dict(experiment=None), "give experiment"),
    ]
    for override, message in cases:
        kwargs = dict(methods=[Linear(2)], prompts=PROMPTS, max_new_tokens=4, out=tmp_path, experiment="bad",
                      progress=False) | override
        with pytest.raises(ValueError, match=message):
            bench.run_benchmark(pair, **kwargs)
        assert not (tmp_path / "bad.csv").exists()


def test_with_ar_puts_ar_first_once():
    assert [label(m) for m in bench.with_ar([Linear(2)])] == ["AR", "Linear(k=2)"]
    assert [label(m) for m in bench.with_ar([Linear(2), Autoregressive()])] == ["AR", "Linear(k=2)"]


def test_as_prompts_accepts_frames_dicts_and_lists():
    frame = pd.DataFrame({"id": ["HumanEval/0", "HumanEval/1"], "text": ["def f():", "x = 1"], "source": "s"})
    assert bench.as_prompts(frame) == [("HumanEval/0", "def f():"), ("HumanEval/1", "x = 1")]
    assert bench.as_prompts({3: [1, 2]}) == [("3", [1, 2])]
    assert bench.as_prompts([[1, 2], "text"]) == [("0", [1, 2]), ("1", "text")]
    with pytest.raises(ValueError, match="unique"):
        bench.as_prompts({1: [1], "1": [2]})


def test_first_divergence():
    assert bench.first_divergence([1, 2, 3], [1, 2, 3]) == -1
    assert bench.first_divergence([1, 9, 3], [1, 2, 3]) == 1
    assert bench.first_divergence([1, 2], [1, 2, 3]) == 2


@pytest.mark.parametrize("method", [Autoregressive(), HFAssisted(), Linear(7), FixedTree(8, 3, 0.05, 64),
                                    FixedTree(5, 2, 0, 128)])
def test_parse_methods_round_trips_labels(method):
    assert bench.parse_methods(label(method)) == [method]


def test_parse_methods_lists_and_ranges():
    got = bench.parse_methods("AR, HFAssisted(num_assistant_tokens=5), Linear(k=range(4, 7)), "
                              "FixedTree(depth=[3, 4], branch=[2, 3])")
    assert got[:2] == [Autoregressive(), HFAssisted(5)]
    assert got[2:5] == [Linear(4), Linear(5), Linear(6)]
    assert got[5:] == [FixedTree(3, 2), FixedTree(3, 3), FixedTree(4, 2), FixedTree(4, 3)]
    with pytest.warns(DeprecationWarning, match="old spelling"):
        assert bench.parse_methods("Linear(K=[4, 5, 6]), FixedTree(D=range(3, 5),B=[2, 3])") == got[2:]
    for bad, message in [("Nope", "unknown method"), ("Linear(Q=3)", "no parameter"), ("Linear(3, 4, 5, 6)", "positional"),
                         ("Linear(k=0)", "k must")]:
        with pytest.raises(ValueError, match=message):
            bench.parse_methods(bad)


def _synthetic() -> pd.DataFrame:
    rows = []
    speed = {"AR": 1.0, "HFAssisted": 1.25, "Linear(K=4)": 1.5, "FixedTree(D=5,B=2,tau=0.03,N=128)": 2.0}
    for n in (64, 128):
        for p, factor in (("q0", 1.0), ("q1", 0.8)):
            for r in range(2):
                for m, s in speed.items():
                    sp = s * factor if m != "AR" else 1.0
                    params = {"depth": 5, "branch": 2} if m.startswith("FixedTree") else {}
                    rows.append(dict(method=m, prompt_id=p, max_new_tokens=n, repeat=r, speedup=sp,
                                     tokens_per_s=10 * sp, tokens_per_round=1 + sp, acceptance_depth=0.5,
                                     acceptance_nodes=0.4, bookkeeping_share=0.1, commit_share=0.01,
                                     match_ar=True, method_params=json.dumps(params)))
    return pd.DataFrame(rows)


def test_summarize():
    s = bench.summarize(_synthetic()).set_index(["method", "max_new_tokens"])
    tree = s.loc[("FixedTree(D=5,B=2,tau=0.03,N=128)", 128)]
    assert tree["prompts"] == 2 and tree["speedup"] == pytest.approx(1.8) and tree["speedup_min"] == pytest.approx(1.6)
    assert tree["speedup_vs_HFAssisted"] == pytest.approx(1.6)
    assert s.loc[("AR", 64), "speedup"] == 1.0 and s.loc[("HFAssisted", 64), "speedup_vs_HFAssisted"] == 1.0
    assert "variant" not in s.columns  # one variant: nothing to tell apart
    two = pd.concat([_synthetic().assign(variant="base"),
                     _synthetic().assign(variant="int8", speedup=lambda d: d["speedup"] / 2)])
    both = bench.summarize(two).set_index(["method", "max_new_tokens", "variant"])
    assert both.loc[("FixedTree(D=5,B=2,tau=0.03,N=128)", 128, "int8"), "speedup"] == pytest.approx(0.9)


def test_with_params():
    df = bench.with_params(_synthetic())
    assert set(df.loc[df["method"].str.startswith("FixedTree"), "depth"]) == {5}
    assert df.loc[df["method"] == "AR", "depth"].isna().all()


def test_plots_return_figures_with_data(pair):
    df = _synthetic()
    gens = {label(m): generate(pair, PROMPTS["p0"], m, N) for m in (Autoregressive(), Linear(2))}
    tl = plots.timeline(gens)
    frame = plots.timeline_frame(gens)
    assert {d.name for d in tl.data} >= {"prefill", "verify", "draft"}
    assert sum(len(d.x) for d in tl.data) == len(frame)
    lin = frame[frame["method"] == "Linear(k=2)"]
    assert lin["start_s"].is_monotonic_increasing
    assert lin["seconds"].sum() == pytest.approx(gens["Linear(k=2)"].stats["ttft_s"]
                                                 + sum(r["round_s"] for r in gens["Linear(k=2)"].trace))
    colors = plots.color_map(df["method"])
    assert len(set(colors.values())) == 4


def test_forward_timer_counts_the_quantized_draft_that_runs():
    """draft_bits runs use an int8/int4 copy of the draft: the timer must hook that copy, whether it was made
    before the benchmark (an earlier generate) or during it, and leave no hook behind on any copy."""
    from dynatree_lib import ModelPair
    from tiny import perturbed, tiny_model

    target = tiny_model("llama", seed=0)
    pair = ModelPair(target=target, draft=perturbed(target, 0.5, seed=1))
    methods = [Linear(3, draft_bits=4), FixedTree(3, 2, draft_bits=8)]
    for run in ("copies made during the benchmark", "copies made before"):
        df = bench.run_benchmark(pair, methods, {"p0": PROMPTS["p0"]}, N, warmup=1, progress=False)
        quantized = df[df["method"] != "AR"]
        assert (quantized["draft_forwards"] > 0).all(), run
        assert (quantized["draft_forward_s"] > 0).all(), run
        assert (df.loc[df["method"] == "AR", "draft_forwards"] == 0).all()
        for model in [pair.target, pair.draft, *pair._drafts.values()]:
            assert not model._forward_hooks and not model._forward_pre_hooks, run
