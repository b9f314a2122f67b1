"""book/hardware.py: the hardware chapter's tables, figures and glued numbers, on small hand-made cost curves."""
import pandas as pd
import pytest

from dynatree_lib.book import hardware
from dynatree_lib.planning import planner
from dynatree_lib.planning.calibrate import Costs

BEST = {"depth": 8, "branch": 3, "threshold": 0.03, "max_new_tokens": 500, "speedup": 1.79}


def _costs(draft_scale: float = 1.0, raw: bool = False) -> Costs:
    """A verification flat to n = 2 then rising, and a draft at a fifth of it at n = 1."""
    nodes = (1, 2, 4, 8, 16)
    verify = (0.1, 0.1, 0.12, 0.16, 0.24)
    draft = tuple(draft_scale * d for d in (0.02, 0.022, 0.026, 0.034, 0.05))
    info = {"raw_verify_s": [0.1, 0.11, 0.12, 0.15, 0.24], "raw_draft_s": list(draft), "date_utc": "2026-12-01",
            "cpu": "AMD EPYC"} if raw else {}
    return Costs(nodes, verify, draft, info)


def test_cost_table_and_figure():
    table = hardware.cost_table(_costs())
    assert list(table["nodes"]) == [1, 2, 4, 8, 16]
    assert table["verify ms"].tolist() == pytest.approx([100, 100, 120, 160, 240])
    assert table["verify / AR step"].tolist() == pytest.approx([1.0, 1.0, 1.2, 1.6, 2.4])
    assert table.loc[0, "draft / verify"] == pytest.approx(0.2)
    assert len(hardware.cost_figure(_costs()).data) == 2  # no raw medians kept: the two curves alone
    fig = hardware.cost_figure(_costs(raw=True))
    assert [t.name for t in fig.data] == ["target (verify)", "target, raw medians", "draft (one level)",
                                         "draft, raw medians"]
    assert list(fig.data[1].y) == pytest.approx([100, 110, 120, 150, 240])
    with pytest.raises(ValueError, match="without a draft"):
        hardware.cost_table(Costs((1, 2), (0.1, 0.1)))


def test_curve_numbers():
    n = hardware.curve_numbers(_costs(), 1_500_000_000, 500_000_000, {"target": 2.8e9, "draft": 70e6})
    assert n["ar_ms"] == pytest.approx(100) and n["n_max"] == 16 and n["verify_growth"] == pytest.approx(2.4)
    assert n["draft_step"] == pytest.approx(0.2) and n["draft_over_verify_max"] == pytest.approx(0.05 / 0.24)
    assert n["draft_share"] == pytest.approx(1 / 3) and n["draft_b"] == pytest.approx(0.5)
    assert n["research_share"] == pytest.approx(0.025)
    assert all(type(v) in (int, float) for v in n.values())  # glue writes Python numbers as the page formats them


def test_shape_costs_price_the_root_every_level_but_the_last_and_the_verification():
    c = _costs()
    table = hardware.shape_costs(c, [(1, 1, 1), (4, 1, 4), (8, 3, 128)]).set_index("shape")
    step = table.loc["D=1, B=1, N=1"]  # one drafted token: the root's draft forward, a verification of 2
    assert step["draft ms"] == pytest.approx(20) and step["verify ms"] == pytest.approx(100)
    assert step["round / AR step"] == pytest.approx(1.2) and not step["extrapolated"]
    chain = table.loc["D=4, B=1, N=4"]  # root + 3 levels fed to the draft; 5 tokens verified (between 4 and 8)
    assert chain["widths"] == (1, 1, 1, 1) and chain["draft ms"] == pytest.approx(80)
    assert chain["verify ms"] == pytest.approx(130) and chain["round / AR step"] == pytest.approx(2.1)
    assert table.loc["D=8, B=3, N=128", "nodes"] == 128 and table.loc["D=8, B=3, N=128", "extrapolated"]


def test_plan_sizes_best_speedup_per_size():
    c = _costs()
    sizes = hardware.plan_sizes(c, [0.5, 0.9], max_depth=4, max_branch=2, max_nodes=8)
    one = sizes[(sizes["p"] == 0.9) & (sizes["nodes"] == 1)]["speedup"].item()
    assert one == pytest.approx((1 + 0.9) / (0.02 + 0.1) * 0.1)  # one drafted token: 1.9 tokens for 1.2 steps
    assert sizes.groupby("p")["nodes"].max().tolist() == [8, 8]
    # higher acceptance never lowers the best speedup of a size
    wide = sizes.pivot(index="nodes", columns="p", values="speedup")
    assert (wide[0.9] >= wide[0.5]).all()
    fig = hardware.plan_sizes_figure(sizes)
    assert [t.name for t in fig.data] == ["p = 0.5", "p = 0.9"]


def test_plan_numbers_and_shape_names():
    plans = pd.DataFrame({"p": [0.3, 0.9], "depth": [0, 4], "branch": [0, 2], "nodes": [0, 10],
                          "expected speedup over AR": [1.0, 1.7]})
    assert hardware.plan_numbers(plans) == {"p_top": 0.9, "shape_top": "D=4, B=2, N=10", "speedup_top": 1.7}
    assert hardware.shape_name(plans.iloc[0]) == "none (AR)"


def test_quantized_draft_table_figure_and_finding():
    c, q = _costs(), _costs(draft_scale=0.5)
    table = hardware.draft_bits_table(c, q, "bfloat16", 4)
    assert list(table.columns) == ["nodes", "draft ms (bfloat16)", "draft ms (int4)", "int4 draft / AR step"]
    assert table["draft ms (int4)"].tolist() == pytest.approx([10, 11, 13, 17, 25])
    assert table.loc[0, "int4 draft / AR step"] == pytest.approx(0.1)
    names = [t.name for t in hardware.draft_bits_figure(c, q, "bfloat16", 4).data]
    assert names == ["draft, bfloat16", "draft, int4", "target (verify)"]
    plans = planner.plan_table(c, [0.5, 0.9], max_depth=4, max_branch=2, max_nodes=8)
    qplans = planner.plan_table(q, [0.5, 0.9], max_depth=4, max_branch=2, max_nodes=8)
    text = hardware.draft_bits_finding(c, q, plans, qplans, "bfloat16", 4)
    assert "costs 0.10 of a plain step against 0.20 for the bfloat16 draft" in text
    assert f"{qplans['expected speedup over AR'].iloc[-1]:.2f}x" in text
    assert hardware.draft_bits_finding(c, None, plans, None, "bfloat16", None).startswith("No quantized draft")


def test_the_research_tree_on_these_curves():
    c = _costs()
    n = hardware.research_numbers(c, BEST)
    assert (n["r_nodes"], n["r_levels"], n["r_widths"]) == (128, 5, "3, 9, 27, 81, 8")
    drafted = c.draft(1) + c.draft(3) + c.draft(9) + c.draft(27) + c.draft(81)  # the last level is not drafted
    assert n["r_round_steps"] == pytest.approx((drafted + c.verify(129)) / c.verify(1))
    plans = pd.DataFrame({"p": [0.5, 0.9], "depth": [0, 3], "branch": [0, 2], "nodes": [0, 6],
                          "expected speedup over AR": [1.0, 1.4]})
    table = hardware.research_tree(c, plans, BEST, max_depth=4, max_branch=2)
    expected = planner.expected_tokens((3, 9, 27, 81, 8), planner.rank_accept_prior(0.9, 8, 3))
    assert table.loc[1, "research tree E[tokens/round]"] == pytest.approx(expected)
    assert table.loc[1, "research tree expected speedup here"] == pytest.approx(expected / n["r_round_steps"])
    assert table["best tree here"].tolist() == ["none (AR)", "D=3, B=2, N=6"]


def test_gpu_curves_beside_this_machine(tmp_path):
    assert hardware.gpu_finding([]).startswith("No GPU")
    path = tmp_path / "gpu_costs_pythia_float16.csv"
    pd.DataFrame({"nodes": [1, 16, 64], "verify_s": [0.01, 0.0105, 0.012], "draft_s": [0.002, 0.002, 0.0022],
                  "device_name": "H100"}).to_csv(path, index=False)
    fig, plans = hardware.gpu_curves([path], _costs(), "cpu", [0.5, 0.9], max_depth=4, max_branch=2, max_nodes=8)
    assert [t.name for t in fig.data] == ["this machine (cpu)", "pythia_float16 (H100)"]
    assert list(fig.data[1].y) == pytest.approx([1.0, 1.05, 1.2])
    assert plans["costs"].unique().tolist() == ["pythia_float16 (H100)"] and len(plans) == 2
    assert hardware.gpu_finding([path]) == "GPU cost curves are stored for pythia_float16."


def _planner_rows():
    rows = []
    for prompt, speeds in (("HumanEval/1", {"AR": 1.0, "P": 2.0, "Q": 1.5, "Linear(k=5)": 1.8, "Tree": 2.2}),
                           ("prose/x", {"AR": 1.0, "P": 1.2, "Q": 1.3, "Linear(k=5)": 1.0, "Tree": 1.1})):
        for method, s in speeds.items():
            rows.append({"method": method, "prompt_id": prompt, "max_new_tokens": 128, "speedup": s,
                         "wall_s": 10.0 / s, "rounds": 10, "tokens_per_round": 3.0, "drafted_nodes": 40,
                         "match_ar": True, "method_params": "{}"})
    return pd.DataFrame(rows)


def test_planners_against_the_best_other_policy():
    rows = _planner_rows()
    table = hardware.planner_table(rows, ["P", "Q"]).set_index("prompt_id")
    # the planners are not each other's candidates: the best other policy is Tree on both prompts
    assert table.loc["HumanEval/1", "P"] == pytest.approx(2.0 / 2.2)
    assert table.loc["prose/x", "Q"] == pytest.approx(1.3 / 1.1)
    assert table["best_other_policy"].tolist() == ["Tree", "Tree"]
    text = hardware.planner_finding(rows, ["P", "Q"], twin=("P", "Tree"))
    assert f"P runs {2.0 / 2.2:.2f}x to {1.2 / 1.1:.2f}x as fast as the best other policy" in text
    # P and Tree committed in the same rounds on both prompts; their walls differ by up to 1 - 2.0/2.2 ...
    assert "On 2 of 2 prompts P and Tree committed in the same rounds" in text
    assert f"up to {abs(2.2 / 2.0 - 1):.1%}" in text
    assert hardware.planner_table(rows, ["HardwareAware(draft_bits=4)"]) is None
    assert hardware.planner_finding(pd.DataFrame(), ["P"]).startswith("No planner benchmark is stored")


def test_stored_findings_and_notes(tmp_path, monkeypatch):
    vtable = pd.DataFrame({"K": ["full", "16384"], "level_ms_1": [20.0, 16.0], "level_vs_full_1": [1.0, 0.8],
                           "target_outside_K": [0.0, 0.0123], "draft_top1_agrees": [0.7, 0.696],
                           "agreement_change": [0.0, -0.004]})
    assert hardware.vocab_finding(vtable) == (
        "With K = 16384 a draft level (1 node) costs 0.80 of the full vocabulary's; 1.23% of the target's tokens "
        "fall outside the kept K, and the draft's top-1 agreement moves by -0.4 points.")
    assert hardware.vocab_finding(None).startswith("No trimmed-vocabulary costs are stored")
    index = pd.MultiIndex.from_tuples([("target", 1), ("target", 4), ("draft int4", 1), ("draft int4", 4)],
                                      names=["model", "nodes"])
    ptable = pd.DataFrame({"outside matmuls %": [20.0, 30.0, 40.0, 55.0]}, index=index)
    assert hardware.profile_finding(ptable) == (
        "An int4 draft level spends 40-55% of its time outside the weight matmuls (1, 4 nodes), the target's "
        "verification 25% (median).")
    assert hardware.profile_finding(None).startswith("No forward profile is stored")
    note = hardware.calibration_note(_costs(raw=True), "bfloat16", "cpu", 128, 3)
    assert note.startswith("**Calibration:** 2026-12-01, AMD EPYC") and "sizes [1, 2, 4, 8, 16]" in note
    monkeypatch.setenv("DYNATREE_DATA", str(tmp_path))
    missing = hardware.stored("planner", "benchmarks/goal.py")
    assert missing.empty and missing.attrs["experiment"] == "planner"
    (tmp_path / "results").mkdir()
    plain = _planner_rows()[lambda r: r["method"].isin(["AR", "Linear(k=5)"])]
    plain.to_csv(tmp_path / "results" / "planner.csv", index=False)
    rows = hardware.stored("planner", "benchmarks/goal.py")
    assert len(rows) == 4 and rows.attrs["preset"] == "benchmarks/goal.py"
    assert rows["prompt_id"].tolist() == plain["prompt_id"].tolist()
