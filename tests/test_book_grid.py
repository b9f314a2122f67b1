"""book/grid.py: medians over prompts, best tree against best chain per length, ranks, and the figures' panels."""
import pandas as pd
import pytest

from dynatree_lib.book.grid import (ar_spread, ar_steps, best_per_length, context_curves, draft_of, error_table,
                                   grid_heatmaps, grid_summary, prediction_scatter, rank_of, repeat_errors)


def _rows():
    rows = []
    for n in (100, 200):
        for prompt, scale in (("a", 1.0), ("b", 0.5)):
            for d in (3, 4):
                for b in (2, 3):
                    for tau in (0.01, 0.1):
                        s = (1.0 + 0.1 * d + 0.05 * b - tau + n / 1000) * scale
                        rows.append({"draft": "int4", "method": f"FixedTree(D={d},B={b},tau={tau:g},N=128)",
                                     "method_type": "FixedTree", "depth": d, "branch": b, "threshold": tau,
                                     "max_new_tokens": n, "prompt_id": prompt, "speedup": s,
                                     "tokens_per_round": 2.0, "acceptance_depth": 0.5, "drafted_nodes": 10 * d,
                                     "rounds": 5, "measurement": "predicted"})
            for k in (5, 6):
                rows.append({"draft": "int4", "method": f"Linear(K={k})", "method_type": "Linear", "depth": k,
                             "branch": 1, "threshold": 0.0, "max_new_tokens": n, "prompt_id": prompt,
                             "speedup": (1.2 + 0.01 * k) * scale, "tokens_per_round": 2.0,
                             "acceptance_depth": 0.5, "drafted_nodes": k, "rounds": 5, "measurement": "predicted"})
    return pd.DataFrame(rows)


def test_summary_best_tree_and_chain_per_length():
    s = grid_summary(_rows())
    top = s.iloc[0]
    assert (top["depth"], top["branch"], top["threshold"], top["max_new_tokens"]) == (4, 3, 0.01, 200)
    assert top["speedup"] == pytest.approx((1.0 + 0.4 + 0.15 - 0.01 + 0.2) * 0.75)  # median of 1x and 0.5x
    assert top["speedup_min"] == pytest.approx((1.0 + 0.4 + 0.15 - 0.01 + 0.2) * 0.5)
    assert top["nodes_per_round"] == pytest.approx(8.0) and top["prompts"] == 2
    best = best_per_length(s, pd.DataFrame({"max_new_tokens": [100, 1000], "speedup": [1.43, 1.71]}))
    assert list(best["max_new_tokens"]) == [100, 200]
    row = best.set_index("max_new_tokens").loc[100]
    assert (row["depth"], row["branch"], row["best_chain"]) == (4, 3, 6)
    assert row["tree_over_chain"] == pytest.approx((1.0 + 0.4 + 0.15 - 0.01 + 0.1) / 1.26)
    assert row["research_best_speedup"] == 1.43
    assert pd.isna(best.set_index("max_new_tokens").loc[200, "research_best_speedup"])
    assert rank_of(s, 4, 3, 0.01, "int4", 100) == (1, 8)
    assert rank_of(s, 3, 2, 0.1, "int4", 100) == (8, 8)
    assert rank_of(s, 8, 3, 0.03, "int4", 100) is None


def test_one_heatmap_with_a_length_dropdown():
    s = grid_summary(_rows())
    fig = grid_heatmaps(s, "int4")
    lengths = sorted(s["max_new_tokens"].unique())
    assert len(fig.data) == len(lengths) and [t.visible for t in fig.data] == [n == lengths[-1] for n in lengths]
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == [f"{n} new tokens" for n in lengths]
    trees = s[s["method_type"] == "FixedTree"]
    taus, branches = trees["threshold"].nunique(), trees["branch"].nunique()
    assert len(fig.data[0].y) == taus * branches and fig.data[0].y[0].startswith("τ = ")
    v = pd.DataFrame({"method": ["m", "n"], "prompt_id": ["a", "b"], "speedup": [1.5, 2.0],
                      "predicted_speedup": [1.6, 1.9], "error_speedup": [1.6 / 1.5 - 1, -0.05]})
    assert list(prediction_scatter(v).data[1].x) == [1.5, 2.0]


def test_refuses_rows_without_the_value():
    with pytest.raises(ValueError, match="lacks column"):
        grid_summary(_rows().drop(columns="speedup"))


def test_ar_spread_over_prompts_timed_twice():
    timed = pd.DataFrame({"method": ["AR", "AR", "AR", "m", "m"], "prompt_id": ["a", "a", "b", "a", "a"],
                          "max_new_tokens": 200, "wall_s": [40.0, 50.0, 45.0, 1.0, 9.0]})
    spread = ar_spread(timed)
    assert list(spread.index.get_level_values("prompt_id")) == ["a"] and spread.iloc[0] == pytest.approx(0.25)


def test_ar_steps_leave_the_prefill_out():
    timed = pd.DataFrame({"method": ["AR", "AR", "m"], "prompt_id": ["a", "b", "a"], "prompt_tokens": [100, 800, 100],
                          "wall_s": [42.0, 70.0, 9.0], "ttft_s": [2.0, 10.0, 2.0], "new_tokens": [201, 201, 201]})
    steps = ar_steps(timed)
    assert list(steps["prompt_id"]) == ["a", "b"] and list(steps["prompt_tokens"]) == [100, 800]
    assert steps["step_s"].tolist() == pytest.approx([0.2, 0.3])
    # beside the step the prediction priced for the same prompt and length (AR's wall less its prefill, per step)
    predicted = pd.DataFrame({"prompt_id": ["a", "a", "b"], "max_new_tokens": [201, 100, 201],
                              "predicted_ar_wall_s": [42.0, 1.0, 62.0], "predicted_prefill_s": [2.0, 0.0, 12.0]})
    both = ar_steps(timed, predicted)
    assert both["predicted_step_s"].tolist() == pytest.approx([0.2, 0.25])
    assert both["predicted_prefill_s"].tolist() == [2.0, 12.0] and both["ttft_s"].tolist() == [2.0, 10.0]


def _timed(walls):
    """Timed rows of policy "m" on prompt "HumanEval/0": (AR wall, policy wall) per repeat."""
    rows = []
    for r, (ar, wall) in enumerate(walls):
        rows += [{"method": "AR", "prompt_id": "HumanEval/0", "max_new_tokens": 100, "repeat": r, "wall_s": ar,
                  "ar_wall_s": ar, "speedup": 1.0},
                 {"method": "m", "prompt_id": "HumanEval/0", "max_new_tokens": 100, "repeat": r, "wall_s": wall,
                  "ar_wall_s": ar, "speedup": ar / wall}]
    return pd.DataFrame(rows)


def test_errors_by_repeat_kind_and_draft():
    predicted = pd.DataFrame({"method": ["m"], "prompt_id": ["HumanEval/0"], "max_new_tokens": [100],
                              "predicted_wall_s": [10.0], "predicted_ar_wall_s": [20.0], "predicted_speedup": [2.0]})
    e = repeat_errors(predicted, _timed([(20.0, 10.0), (30.0, 10.0), (22.0, 10.0)]))
    assert e["timed"].tolist() == ["repeat 0 alone", "repeat 1 alone", "repeat 2 alone", "median of the repeats"]
    # timed speedups 2.0, 3.0 and 2.2 against 2.0 predicted; their median is 2.2
    assert e["median_abs_error_speedup"].tolist() == pytest.approx([0.0, 1 / 3, 1 - 2 / 2.2, 1 - 2 / 2.2])
    assert draft_of("FixedTree(D=3,B=2,tau=0.1,N=128,draft_bits=4)") == "int4" and draft_of("Linear(K=5)") == "base"
    v = pd.DataFrame({"method": ["Linear(K=4,draft_bits=4)", "Linear(K=4)", "Linear(K=5)"], "prompt_id": ["HumanEval/1", "HumanEval/2", "prose/x"],
                      "abs_error_speedup": [0.1, 0.2, 0.3], "error_wall": [0.0, 0.1, -0.1],
                      "error_ar_wall": [0.0, -0.1, 0.2]})
    t = error_table(v).set_index(["text", "draft"])
    assert t.loc[("code", "int4"), "pairs"] == 1 and t.loc[("prose", "base"), "median_error_ar_wall"] == 0.2


def test_context_curves_from_stored_calibrations(tmp_path):
    from dynatree_lib.planning.calibrate import DEFAULT_NODES, Costs
    from dynatree_lib.planning.predict import Calibration

    costs = Costs(DEFAULT_NODES, tuple(0.01 for _ in DEFAULT_NODES), tuple(0.001 for _ in DEFAULT_NODES))
    curve = {"contexts": [128, 1024], "scale": [1.0, 1.25]}
    Calibration(costs, info={"draft": "int4"}, context={"target": curve}).save(tmp_path / "calibration" / "x.json")
    c = context_curves(tmp_path)
    assert c.to_dict("records") == [{"draft": "int4", "model": "target", "context": 128, "scale": 1.0},
                                    {"draft": "int4", "model": "target", "context": 1024, "scale": 1.25}]
    assert context_curves(tmp_path / "none").empty
    from dynatree_lib.book.grid import forward_scales
    from dynatree_lib.planning.predict import Overheads

    Calibration(costs, Overheads(0.0, 0.0, 0.0, {"ar_forward_s": 0.012}), info={"draft": "base"}).save(
        tmp_path / "calibration" / "y.json")
    f = forward_scales(tmp_path).set_index("draft")
    assert f.loc["base", "forward_scale"] == pytest.approx(1.2) and f.loc["int4", "forward_scale"] == 1.0
    assert f.loc["base", "target_run_scale"] == pytest.approx(1.2)  # no tree runs' forwards stored: AR's scale


def test_part_errors_split_the_policy_wall():
    from dynatree_lib.book.grid import part_errors

    timed = pd.DataFrame({"method": ["AR", "m(draft_bits=4)", "m(draft_bits=4)", "Linear(K=5)"],
                          "prompt_id": "a", "max_new_tokens": 100, "wall_s": [30.0, 10.0, 12.0, 20.0],
                          "ttft_s": [1.0, 1.0, 1.0, 2.0], "draft_forward_s": [0.0, 3.0, 3.0, 8.0],
                          "target_forward_s": [28.0, 6.0, 8.0, 10.0]})
    timed["method"] = timed["method"].replace({"m(draft_bits=4)": "Linear(K=5,draft_bits=4)"})
    predicted = pd.DataFrame({"method": ["Linear(K=5,draft_bits=4)", "Linear(K=5)"], "prompt_id": "a",
                              "max_new_tokens": 100, "predicted_prefill_s": [1.5, 2.0],
                              "predicted_draft_s": [3.0, 4.0], "predicted_verify_s": [6.0, 8.0],
                              "predicted_overhead_s": [1.0, 2.0]})
    e = part_errors(timed, predicted).set_index(["draft", "part"])
    # the int4 pair: median of its two repeats (wall 11, target forwards 7), AR left out
    assert e.loc[("int4", "prefill"), "error"] == pytest.approx(0.5)
    assert e.loc[("int4", "verify forwards"), "timed_s"] == pytest.approx(6.0)
    assert e.loc[("int4", "outside forwards"), "timed_s"] == pytest.approx(1.0)
    assert e.loc[("base", "draft forwards"), "error"] == pytest.approx(-0.5) and e["pairs"].max() == 1
