"""Summary tables (dynatree_lib.tables) on hand-made rows with known answers, and the research's reference numbers
(dynatree_lib.research) checked for internal consistency."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from dynatree_lib.book import research, tables
from dynatree_lib import AdaptiveTree, DynaTree
from dynatree_lib.methods.base import Autoregressive, FixedTree, Linear, label
from dynatree_lib.methods.streaming import Streaming


def rows(spec, n=32, variant="base", target_bytes=1000.0):
    """Result rows from {prompt_id: {method: speedup}}; AR at 10 tok/s."""
    out = []
    for pid, speedups in spec.items():
        for method, s in speedups.items():
            fields = {k: v for k, v in vars(method).items()} if not isinstance(method, Streaming) else {
                "cache_size": method.cache_size, "sink_tokens": method.sink_tokens}
            out.append(dict(
                method=label(method), method_params=json.dumps(fields), prompt_id=pid, max_new_tokens=n, new_tokens=n,
                repeat=0,
                speedup=s, tokens_per_s=10.0 * s, tokens_per_round=1 + s, acceptance_depth=0.5,
                acceptance_nodes=0.4, ttft_s=0.1, tpot_s=0.1 / s, drafted_nodes=12, rounds=4,
                kv_compressions=3 if isinstance(method, Streaming) else math.nan, peak_mem_bytes=2e9,
                peak_mem_delta_bytes=1e6, perplexity=1.5, match_ar=True, variant=variant,
                target_bytes=target_bytes, target_forward_s=1.0, target_forwards=4, draft_forward_s=0.4,
                draft_forwards=8 if s != 1.0 else 0))
    return pd.DataFrame(out)


AR = Autoregressive()


def test_per_config_medians_and_worst_prompt():
    t = FixedTree(depth=3, branch=2)
    df = rows({"a": {AR: 1.0, t: 1.4}, "b": {AR: 1.0, t: 1.0}, "c": {AR: 1.0, t: 2.0}})
    row = tables.per_config(df).set_index("method").loc[label(t)]
    assert row["prompts"] == 3 and row["speedup"] == pytest.approx(1.4) and row["speedup_min"] == pytest.approx(1.0)
    assert row["depth"] == 3 and row["nodes_per_round"] == pytest.approx(3.0)


def ablation_rows(step) -> pd.DataFrame:
    """Two prompts, base depths 4 and 5: the fixed tree at AR's speed, phase p at 1 + p * step(base depth) times it,
    phase 3 without pruning (base depth 5) at half of it."""
    spec = {}
    for pid in ("a", "b"):
        spec[pid] = {AR: 1.0, AdaptiveTree(phase=3, pruning=False): 0.5}
        for d in (4, 5):
            spec[pid][FixedTree(depth=d, branch=2)] = 1.0
            for p in (1, 2, 3):
                spec[pid][AdaptiveTree(phase=p, base_depth=d)] = 1.0 + p * step(d)
    return rows(spec)


def test_ablation_gains_are_per_base_depth():
    table = tables.ablation_table(ablation_rows(lambda d: 0.1 * (d - 3))).set_index(["base_depth", "stage"])
    assert table.loc[(4, "phase 3"), "gain_over_fixed"] == pytest.approx(0.3)
    assert table.loc[(5, "phase 2"), "gain_over_fixed"] == pytest.approx(0.4)
    assert table.loc[(5, "fixed tree"), "gain_over_fixed"] == pytest.approx(0.0)
    assert table.loc[(5, "phase 3, no pruning"), "gain_over_fixed"] == pytest.approx(-0.5)


def test_sensitivity_relative_to_default():
    default, other = AdaptiveTree(phase=3), AdaptiveTree(phase=3, min_branch=2)
    table = tables.sensitivity_table(rows({"a": {AR: 1.0, default: 1.25, other: 1.0}})).set_index("branches")
    assert table.loc["[2, 3], default 2", "vs_default"] == pytest.approx(0.8)
    assert table.loc["[1, 3], default 2", "confidence"] == "0.9/0.4"


def test_streaming_beside_unstreamed():
    lin = Linear(6)
    df = rows({"a": {AR: 1.0, lin: 1.2, Streaming(lin, cache_size=64): 0.6, Streaming(AR, cache_size=64): 0.9}})
    table = tables.streaming_table(df).set_index(["method", "cache_size"])
    assert table.loc[(label(lin), 64), "vs_unstreamed"] == pytest.approx(0.5)
    assert table.set_index("label").loc[label(Streaming(lin, cache_size=64)), "name"] == "Chain of 6"
    assert table.loc[("AR", 64), "vs_unstreamed"] == pytest.approx(0.9)
    assert table.loc[("AR", 64), "kv_compressions"] == 3
    with pytest.raises(ValueError, match="Streaming"):
        tables.streaming_table(rows({"a": {AR: 1.0}}))


def test_int8_speed_and_memory():
    lin = Linear(6)
    base = rows({"a": {AR: 1.0, lin: 1.2}}, target_bytes=1000.0)
    int8 = rows({"a": {AR: 1.0, lin: 1.5}}, variant="int8", target_bytes=600.0)
    int8["tokens_per_s"] = int8["tokens_per_s"] / 2  # int8 AR at 5 tok/s: half the speed
    table = tables.int8_table(pd.concat([base, int8])).set_index("method")
    assert table.loc["AR", "int8_speed"] == pytest.approx(0.5)
    assert table.loc[label(lin), "int8_speed"] == pytest.approx(7.5 / 12)
    assert table.loc["AR", "memory_saving"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="both variants"):
        tables.int8_table(base)


def test_round_costs():
    df = rows({"a": {AR: 1.0, Linear(4): 1.1}})
    df["draft_s"], df["verify_s"], df["commit_s"] = [0.0, 2.0], [1.0, 3.0], [0.0, 1.0]  # AR: 4 rounds of 0.25 s
    costs = tables.round_costs(df).set_index("method")
    chain = label(Linear(4))
    assert costs.loc[chain, "round_over_ar_step"] == pytest.approx(6.0)
    assert costs.loc[chain, "verify_over_ar_step"] == pytest.approx(3.0)
    assert costs.loc[chain, "draft_forward_over_ar_step"] == pytest.approx(0.05 / 0.25)
    assert costs.loc[chain, "draft_s_per_round"] == pytest.approx(0.5)
    assert math.isnan(costs.loc["AR", "draft_s_per_forward"])


def test_costs_table_names_and_sorts():
    df = rows({"a": {AR: 1.0, Linear(4): 1.1}, "b": {AR: 1.0, Linear(4): 1.3}})
    df["draft_s"], df["verify_s"], df["commit_s"] = 0.5, 1.0, 0.0
    table = tables.costs_table(df)
    assert list(table["Method"]) == ["Chain of 4", "Plain decoding"]  # most tokens per forward first
    assert table.iloc[0]["Tokens per forward"] == pytest.approx(2.2)  # medians of 2.1 and 2.3
    assert table.iloc[0]["TPOT (ms)"] == pytest.approx(1e3 * (0.1 / 1.1 + 0.1 / 1.3) / 2) and table.iloc[0]["Peak memory"] == 2e9


def test_stored_rows_keep_the_dtype_and_device_or_say_how_to_measure(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNATREE_DATA", str(tmp_path))
    (tmp_path / "results").mkdir()
    rows({"a": {AR: 1.0}}).assign(dtype=["bfloat16"], device=["cpu"]).to_csv(tmp_path / "results" / "x.csv",
                                                                              index=False)
    assert len(tables.stored_rows("x", "bfloat16", "cpu", "run it")) == 1
    with pytest.raises(ValueError, match="no float32 rows on cpu in data/results/x.csv: measure them with run it"):
        tables.stored_rows("x", "float32", "cpu", "run it")


def test_research_headline_numbers():
    n = research.headline_numbers()
    assert (n["r_tree"], n["r_hf"], n["r_phase3"]) == (1.62, 1.36, 1.61)


def test_beside_research():
    lin = Linear(6)
    ours = tables.per_config(rows({"a": {AR: 1.0, lin: 1.3}}))
    side = tables.beside_research(research.PEERS_500, ours, {"Linear K=6": label(lin), "AR baseline": "AR"},
                                  ["speedup"])
    assert side.loc["Linear K=6", "ours_speedup"] == pytest.approx(1.3)
    assert side.loc["Linear K=6", "research_speedup"] == 1.11
    assert math.isnan(side.loc["HF assisted", "ours_speedup"])


def test_research_tables_are_consistent():
    # tok/s over the AR row's tok/s must give the reported speedup, to the two decimals reported.
    for table in (research.PEERS_500, research.ADAPTIVE_1000):
        ar = table.loc[table["family"] == "AR", "tokens_per_s"].item()
        approx = table["method"] == "HF assisted"  # reported as "~", rounded
        ratio = table["tokens_per_s"] / ar
        assert ((ratio - table["speedup"]).abs()[~approx] < 0.006).all()
        assert ((ratio - table["speedup"]).abs()[approx] < 0.03).all()
    best = research.PARAM_BEST_PER_LENGTH.set_index("max_new_tokens")["speedup"]
    assert best.max() == research.PARAM_BEST["speedup"] and best.idxmax() == research.PARAM_BEST["max_new_tokens"]


def run_headline_script(results) -> str:
    """The intro's headline as scripts/headline.py writes it from the results folder `results`."""
    import subprocess
    import sys
    from pathlib import Path

    out = results / "h.md"
    script = Path(__file__).resolve().parents[1] / "scripts" / "headline.py"
    subprocess.run([sys.executable, str(script), str(out), "--results", str(results)], check=True)
    return out.read_text()


def test_headline_script_without_results(tmp_path):
    assert "python benchmarks/goal.py" in run_headline_script(tmp_path)


def test_text_kinds_and_the_speed_reference():
    assert [tables.text_kind(p) for p in ("HumanEval/3", "prose/hamlet", "technical/x", "t")] == [
        "code", "prose", "technical", "other"]
    df = pd.DataFrame({"prompt_id": ["HumanEval/1", "HumanEval/2", "prose/a", "prose/a"]})
    assert tables.prompts_described(df) == "3 prompts (2 code, 1 prose)"
    assert tables.prompts_described(df.head(1)) == "1 prompt (1 code)"


def test_against_best_policy_picks_the_best_candidate_per_prompt():
    from dynatree_lib.book.tables import against_best_policy

    rows = []
    for prompt, speeds in (("HumanEval/1", {"Planner": 2.0, "Linear(K=5)": 2.5, "FixedTree(D=5)": 1.5}),
                           ("prose/x", {"Planner": 1.8, "Linear(K=5)": 1.2, "FixedTree(D=5)": 1.6})):
        for method, speedup in {"AR": 1.0, "HFAssisted": 3.0, **speeds}.items():
            rows.append(dict(method=method, max_new_tokens=64, prompt_id=prompt, speedup=speedup, rounds=1,
                             drafted_nodes=0, match_ar=True, method_params="{}"))
    table = against_best_policy(pd.DataFrame(rows), "Planner").set_index("prompt_id")
    assert table.loc["HumanEval/1", "best_policy"] == "Linear(K=5)"  # HFAssisted is not a candidate
    assert table.loc["HumanEval/1", "ratio"] == pytest.approx(0.8)
    assert table.loc["prose/x", "ratio"] == pytest.approx(1.8 / 1.6)
    with pytest.raises(ValueError, match="no rows of"):
        against_best_policy(pd.DataFrame(rows), "DynaTree")


def test_rerun_table_pairs_the_same_prompts():
    from dynatree_lib.book.reruns import rerun_table

    x = Linear(5)
    first = rows({"HumanEval/1": {AR: 1.0, x: 2.0}, "prose/a": {AR: 1.0, x: 1.5}, "prose/b": {AR: 1.0, x: 1.2}})
    second = rows({"HumanEval/1": {AR: 1.0, x: 2.2}, "prose/a": {AR: 1.0, x: 1.5}})  # prose/b not measured again
    table = rerun_table(first, second, 32).set_index("method")
    assert table.loc[label(x), "prompts"] == 2
    assert table.loc[label(x), "speedup_first"] == pytest.approx(1.75)  # the shared prompts only
    assert table.loc[label(x), "ratio_max"] == pytest.approx(1.1) and table.loc[label(x), "ratio_min"] == 1.0
    assert list(rerun_table(first, second, 32, methods=[label(x), "AR"])["method"]) == [label(x), "AR"]
    with pytest.raises(ValueError, match="max_new_tokens=64"):
        rerun_table(first, second, 64)
