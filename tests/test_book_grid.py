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


def test_the_chapter_verdict_ranks_and_grid_facts():
    from dynatree_lib.book.grid import grid_facts, research_length, research_ranks, verdict_numbers

    rows = _rows().assign(calibration_date="2026-11-29T09:20:34+00:00")
    rows["prompt_id"] = rows["prompt_id"].map({"a": "HumanEval/0", "b": "prose/x"})
    s = grid_summary(rows)
    best_grid = best_per_length(s)
    research_best = {"depth": 4, "branch": 3, "threshold": 0.01, "max_new_tokens": 500, "speedup": 1.79}
    assert research_length(s, research_best) == 200  # not in the grid: its longest length
    assert research_length(s, {**research_best, "max_new_tokens": 100}) == 100
    n = verdict_numbers(s, best_grid, "int4", research_best)
    assert (n["best_depth"], n["best_branch"], n["best_threshold"], n["r_tokens"]) == (4, 3, 0.01, 200)
    assert n["best_speedup"] == pytest.approx(1.74 * 0.75) and n["best_worst_prompt"] == pytest.approx(1.74 * 0.5)
    assert (n["r_rank"], n["r_of"]) == (1, 8)
    assert (n["lead_min"], n["lead_max"]) == (pytest.approx(1.64 / 1.26), pytest.approx(1.74 / 1.26))
    assert all(type(v) in (int, float) for v in n.values())  # glue writes Python numbers as the page formats them
    worst = verdict_numbers(s, best_grid, "int4", {**research_best, "depth": 3, "branch": 2, "threshold": 0.1})
    assert (worst["r_rank"], worst["r_of"]) == (8, 8)
    with pytest.raises(ValueError, match="no fixed trees of draft 'base'"):
        verdict_numbers(s, best_grid, "base", research_best)
    ranks = research_ranks(s, best_grid, research_best)
    assert ranks.to_dict("records") == [{"draft": "int4", "new tokens": 200, "research shape's rank": 1,
                                         "of trees": 8, "tree over chain, lowest": pytest.approx(1.64 / 1.26),
                                         "tree over chain, highest": pytest.approx(1.74 / 1.26)}]
    facts = grid_facts(rows)
    assert facts == {"policies": 10, "lengths": "100, 200", "prompts": 2, "kinds": "1 code, 1 prose",
                     "runs": len(rows), "drafts": "int4", "measured": "predicted", "calibrated": "2026-11-29"}


def test_sweep_facts_and_the_projection_sentence(tmp_path):
    from dynatree_lib.book.grid import projection_sentence, research_sized, sweep_facts

    spent = pd.DataFrame({"kind": ["target", "replay"], "draft": ["", "int4"], "seconds": [1800.0, 3600.0],
                          "batch": [2, 4], "threads": [1, 1], "max_new_tokens": [1000, 1000],
                          "date_utc": ["2026-01-01T02:00:00+00:00", "2026-01-01T03:00:00+00:00"]})
    f = sweep_facts(spent)
    # the target unit ran as one of a batch of 2 (started at 01:00); the replay unit ended at 03:00
    assert f["hours"] == pytest.approx(2.0) and f["worker_hours"] == pytest.approx(1.5)
    assert f["target_hours"] == pytest.approx(0.5) and (f["target_batch"], f["replay_batch"]) == (2, 4)
    assert (f["threads"], f["replay_drafts"]) == ("1", "int4")
    assert research_sized(spent, tmp_path) is None
    assert "grid_batching.py" in projection_sentence(None)
    plan = pd.DataFrame({"batched_h": [1.0, 0.5], "one_at_a_time_h": [2.0, 1.0]})
    assert "predicted to take 1.5 h batched, against 3.0 h one unit at a time" in projection_sentence(plan)


def test_validation_numbers_and_ar_steps_by_kind():
    from dynatree_lib.book.grid import ar_step_table, validation_numbers

    check = pd.DataFrame({"abs_error_speedup": [0.02, 0.04, 0.1], "error_speedup": [0.02, -0.04, 0.1],
                          "error_wall": [0.0, 0.01, -0.02], "error_ar_wall": [0.01, 0.02, 0.03]})
    timed = _timed([(20.0, 10.0), (30.0, 10.0), (22.0, 10.0)]).assign(git_commit="224d052abc")
    v = validation_numbers(check, timed)
    assert (v["pairs"], v["repeats"], v["timed_commits"]) == (3, 3, "224d052")
    assert v["median_abs_error_speedup"] == pytest.approx(0.04) and v["max_abs_error_speedup"] == 0.1
    assert v["spread_median"] == pytest.approx(0.5) and v["spread_prompts"] == 1  # AR walls 20 to 30
    once = validation_numbers(check, timed[timed["repeat"] == 0])
    assert once["spread_prompts"] == 0 and once["spread_median"] != once["spread_median"]  # nan: none timed twice
    ar = pd.DataFrame({"method": "AR", "prompt_id": ["HumanEval/1", "HumanEval/1", "HumanEval/2", "prose/x"],
                       "prompt_tokens": [100, 100, 300, 800], "wall_s": [42.0, 44.0, 62.0, 70.0],
                       "ttft_s": [2.0, 4.0, 2.0, 10.0], "new_tokens": 201})
    t = ar_step_table(ar).set_index("text")
    assert t.loc["code", "runs"] == 3 and t.loc["code", "step_s"] == pytest.approx(0.2)
    assert (t.loc["code", "fastest"], t.loc["code", "slowest"]) == (pytest.approx(0.2), pytest.approx(0.3))
    assert t.loc["code", "prompt_tokens"] == 100 and t.loc["prose", "ttft_s"] == 10.0
    assert "predicted_step_s" not in t
    predicted = pd.DataFrame({"prompt_id": ["HumanEval/1", "HumanEval/2", "prose/x"], "max_new_tokens": 201,
                              "predicted_ar_wall_s": [42.0, 52.0, 62.0], "predicted_prefill_s": [2.0, 2.0, 12.0]})
    t = ar_step_table(ar, predicted).set_index("text")
    assert t.loc["code", "predicted_step_s"] == pytest.approx(0.2)  # median of 0.2, 0.2, 0.25
    assert t.loc["prose", "predicted_prefill_s"] == 12.0


def test_context_figure_one_line_per_model_and_calibration():
    from dynatree_lib.book.grid import context_figure

    curves = pd.DataFrame({"draft": ["base", "base", "int4", "int4"], "model": ["target", "draft"] * 2,
                           "context": [128, 128, 128, 128], "scale": [1.0, 1.0, 1.0, 1.0]})
    fig = context_figure(curves)
    assert sorted(t.name for t in fig.data) == ["draft (base calibration)", "draft (int4 calibration)",
                                               "target (base calibration)", "target (int4 calibration)"]
    assert {t.line.dash for t in fig.data} == {"solid", "dash"}


def test_load_checked_refuses_a_grid_without_its_timed_check(tmp_path):
    from dynatree_lib.book.grid import load_checked

    with pytest.raises(FileNotFoundError, match="benchmarks/grid.py writes one"):
        load_checked(tmp_path / "grid.csv")
    pd.DataFrame({"pair": ["embedded"], "prompt_id": ["HumanEval/0"], "speedup": [1.5]}).to_csv(
        tmp_path / "grid.csv", index=False)
    with pytest.raises(FileNotFoundError, match="no timed validation beside"):
        load_checked(tmp_path / "grid.csv")
    folder = tmp_path / "replay" / "embedded"
    folder.mkdir(parents=True)
    pd.DataFrame({"method": ["Linear(K=5)"], "prompt_id": ["HumanEval/0"], "speedup": [1.4]}).to_csv(
        folder / "grid_validation.csv", index=False)
    rows, check = load_checked(tmp_path / "grid.csv")
    assert len(rows) == 1 and check["speedup"].tolist() == [1.4]
