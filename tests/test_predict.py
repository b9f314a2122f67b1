"""Predicted speed from cost curves: hand-computed answers on fake curves, a calibration's JSON round trip, the
validation table, and the overhead measurement on a tiny pair."""
import math

import pandas as pd
import pytest

from dynatree_lib import Autoregressive, FixedTree, Linear, label
from dynatree_lib.bench.replay import Round
from dynatree_lib.bench.supersets import live_replay
from dynatree_lib.planning.calibrate import DEFAULT_NODES, Costs
from dynatree_lib.planning.predict import (Calibration, Overheads, calibration_columns, error_summary,
                                           measure_overheads, predict_ar, predict_run, round_seconds, validate)
from tiny import tiny_pair


def flat(seconds):
    return tuple(seconds for _ in DEFAULT_NODES)


FLAT = Calibration(Costs(DEFAULT_NODES, flat(0.010), flat(0.001), {"date_utc": "2025-01-01", "torch_threads": 2}),
                   Overheads(round_s=0.0005, node_s=0.0001, step_s=0.0002), {"hardware": "Fake GPU"})
ROUNDS = [Round(1, (2, 4), (2,), 5, 2), Round(4, (2,), (), 1, 0), Round(5, (), (), 0, 0, False)]


def test_predicted_run_by_hand():
    r = round_seconds(ROUNDS[0], FLAT.costs, FLAT.overheads)
    assert r == pytest.approx({"draft_s": 0.002, "verify_s": 0.010, "overhead_s": 0.0011})
    assert round_seconds(ROUNDS[2], FLAT.costs, FLAT.overheads)["draft_s"] == 0  # a plain target step
    p = predict_run(ROUNDS, FLAT, prompt_tokens=4, n=6)
    assert p["predicted_wall_s"] == pytest.approx(0.010 + 0.003 + 0.030 + 0.0023)
    assert p["predicted_ar_wall_s"] == pytest.approx(0.010 + 5 * 0.0102) == predict_ar(FLAT, 4, 6)
    assert p["predicted_speedup"] == pytest.approx(0.061 / 0.0453)
    assert p["predicted_draft_s"] == pytest.approx(0.003)


def test_forwards_inside_a_run_scale_every_forward():
    slow = Calibration(FLAT.costs, Overheads(0.0005, 0.0001, 0.0002, {"ar_forward_s": 0.015}))
    assert FLAT.forward_scale == 1.0 and slow.forward_scale == pytest.approx(1.5)
    r = round_seconds(ROUNDS[0], slow.costs, slow.overheads, slow.forward_scale)
    assert r == pytest.approx({"draft_s": 0.003, "verify_s": 0.015, "overhead_s": 0.0011})  # overheads unscaled
    assert predict_ar(slow, 4, 6) == pytest.approx(0.015 + 5 * 0.0152)
    p = predict_run(ROUNDS, slow, prompt_tokens=4, n=6)
    assert p["predicted_wall_s"] == pytest.approx(1.5 * (0.010 + 0.003 + 0.030) + 0.0023)


def test_tree_runs_forwards_price_the_policy_and_ar_steps_keep_their_scale():
    """Forwards inside the calibration's tree runs (role, tokens fed, cached tokens, seconds) over the curves'
    price: the target's ran 1.2x its curve, the draft's 0.8x; AR's one-token steps ran 1.5x theirs."""
    forwards = [["target", 12, 0, 0.012], ["target", 7, 20, 0.012], ["draft", 3, 20, 0.0008],
                ["draft", 1, 21, 0.0008]]
    calib = Calibration(FLAT.costs, Overheads(0.0005, 0.0001, 0.0002, {"ar_forward_s": 0.015,
                                                                        "forwards": forwards}))
    assert calib.run_scales == pytest.approx({"target": 1.2, "draft": 0.8}) and calib.forward_scale == 1.5
    p = predict_run(ROUNDS, calib, prompt_tokens=4, n=6)
    assert p["predicted_prefill_s"] == pytest.approx(0.012) and p["predicted_verify_s"] == pytest.approx(0.036)
    assert p["predicted_draft_s"] == pytest.approx(0.8 * 0.003)
    assert predict_ar(calib, 4, 6) == pytest.approx(0.012 + 5 * (0.015 + 0.0002))  # the prefill is a policy's
    assert Calibration.from_dict(calib.to_dict()).run_scales == calib.run_scales
    assert FLAT.run_scales == {"target": 1.0, "draft": 1.0}  # not measured: forward_scale


def test_costs_scale_with_tree_size():
    linear = Calibration(Costs(DEFAULT_NODES, tuple(0.001 * n for n in DEFAULT_NODES),
                               tuple(0.0001 * n for n in DEFAULT_NODES)))
    r = round_seconds(ROUNDS[0], linear.costs)
    assert r["verify_s"] == pytest.approx(0.007)  # 1 + 6 nodes
    assert r["draft_s"] == pytest.approx(0.0005 + 0.0002)  # root forward over 5 tokens, level 1 over 2
    assert r["overhead_s"] == 0


def test_replayed_chain_with_free_drafts_speeds_up_by_tokens_per_round():
    """Free drafts, flat verify, no overheads, no prompt cost: speedup = (n - 1) / rounds."""
    calib = Calibration(Costs(DEFAULT_NODES, flat(0.01), flat(0.0)))
    pair = tiny_pair("llama", "same")  # the draft is the target: every chain is accepted
    rounds = live_replay(pair, [1, 2, 3], 25).rounds(Linear(4), 25)
    p = predict_run(rounds, calib, prompt_tokens=3, n=25)
    assert all(r.accepted == min(4, 25 - r.start - 1) for r in rounds if r.draft)
    assert p["predicted_speedup"] == pytest.approx((1 + 24) / (1 + len(rounds)))


CONTEXT = {"target": {"contexts": [100, 200], "scale": [1.0, 2.0]},
           "draft": {"contexts": [100, 200], "scale": [1.0, 1.5]}}


def test_context_curves_price_the_cache_each_forward_reads():
    """A forward on a longer cache costs what the context curve says, relative to the cache of the AR run that
    measured forward_scale (ar_context); before the first context flat, past the last the last slope continued."""
    calib = Calibration(FLAT.costs, Overheads(0.0, 0.0, 0.0, {"ar_context": 100}), {}, CONTEXT)
    assert calib.context_factors("target", [50, 100, 150, 200, 300]).tolist() == pytest.approx([1, 1, 1.5, 2, 3])
    assert calib.context_factors("draft", [150]).tolist() == pytest.approx([1.25])
    assert FLAT.context_factors("target", [10**6]).tolist() == [1.0]  # no curve: the old prediction
    # AR: steps on caches 100 and 101; a round starting after 100 committed tokens reads 200 cached tokens
    assert predict_ar(calib, 100, 3) == pytest.approx(0.010 + 0.010 * (1.0 + 1.01))
    rounds = [Round(100, (2,), (), 1, 1)]
    p = predict_run(rounds, calib, prompt_tokens=100, n=102)
    assert p["predicted_verify_s"] == pytest.approx(2 * 0.010) and p["predicted_draft_s"] == pytest.approx(1.5 * 0.001)
    assert predict_run(rounds, FLAT, prompt_tokens=100, n=102)["predicted_verify_s"] == pytest.approx(0.010)
    # relative to the AR run's cache: the same curve measured from a run on 200 cached tokens halves the target's
    late = Calibration(FLAT.costs, Overheads(0.0, 0.0, 0.0, {"ar_context": 200}), {}, CONTEXT)
    assert late.context_factors("target", [100]).tolist() == pytest.approx([0.5])


def test_context_scale_on_a_tiny_model():
    from dynatree_lib.planning.calibrate import context_scale

    pair = tiny_pair("llama", "perturbed")
    curve = context_scale(pair.target, contexts=(16, 64, 240, 1000), nodes=(1, 4), repeats=1)
    assert curve["contexts"] == [16, 64, 240]  # 1000 is past the tiny model's 256 positions
    assert curve["scale"][0] == 1.0 and all(0 < x < 100 and math.isfinite(x) for x in curve["scale"])
    with pytest.raises(ValueError, match="no context fits"):
        context_scale(pair.target, contexts=(1000,), repeats=1)


def test_calibration_json_round_trip(tmp_path):
    path = FLAT.save(tmp_path / "sub" / "calib.json")
    again = Calibration.load(path)
    assert again == FLAT and again.hardware == "Fake GPU" and again.overheads.node_s == 0.0001
    cols = calibration_columns(again)
    assert cols["measurement"] == "predicted" and cols["calibration_hardware"] == "Fake GPU"
    assert cols["calibration_date"] == "2025-01-01"
    with_context = Calibration(FLAT.costs, FLAT.overheads, FLAT.info, CONTEXT)
    assert Calibration.load(with_context.save(tmp_path / "ctx.json")).context == CONTEXT


def test_validate_error_distribution():
    predicted = pd.DataFrame({"method": ["A", "A", "B"], "prompt_id": ["0", "1", "0"], "max_new_tokens": [10] * 3,
                              "predicted_wall_s": [1.0, 2.0, 1.0], "predicted_ar_wall_s": [2.0, 3.0, 2.0],
                              "predicted_speedup": [2.0, 1.5, 2.0]})
    measured = pd.DataFrame({"method": ["AR", "A", "A", "A", "B"], "prompt_id": [0, 0, 0, 1, 9],
                             "max_new_tokens": [10] * 5, "wall_s": [2.0, 1.0, 1.5, 2.5, 1.0],
                             "ar_wall_s": [2.0, 2.0, 2.0, 3.0, 2.0], "speedup": [1.0, 2.0, 1.0, 1.2, 2.0]})
    v = validate(predicted, measured)
    assert len(v) == 2  # B was timed on another prompt; AR rows are the reference, not a pair
    row = v.set_index("prompt_id").loc["0"]
    assert row["wall_s"] == 1.25 and row["speedup"] == 1.5  # repeats combined by median
    assert row["error_speedup"] == pytest.approx(2.0 / 1.5 - 1)
    assert v.set_index("prompt_id").loc["1", "error_wall"] == pytest.approx(2.0 / 2.5 - 1)
    s = error_summary(v)
    assert s["pairs"] == 2 and s["median_abs_error_speedup"] == pytest.approx(((2 / 1.5 - 1) + (1.5 / 1.2 - 1)) / 2)
    assert error_summary(v.iloc[:0]) == {"pairs": 0}


def test_measure_overheads_on_a_tiny_pair():
    pair = tiny_pair("gpt_neox", "perturbed")
    methods = [Autoregressive(), FixedTree(2, 2, 0.0, 3), FixedTree(4, 3, 0.0, 20)]
    over = measure_overheads(pair, methods, [1, 2, 3, 4], n=24, repeats=1)
    assert over.round_s >= 0 and over.node_s >= 0 and over.step_s > 0
    small, big = (p["nodes_per_round"] for p in over.info["points"])
    assert small <= 3 < big <= 20  # the last rounds are cut to the tokens still wanted
    # tiny models: the bookkeeping of a round is a visible share of it, but well under a second
    assert 0 < over.round(20) < 1 and math.isfinite(over.step_s)
    assert label(methods[1]) != label(methods[2])
    assert 0 < over.info["ar_forward_s"] < 1  # an AR step's forward inside the run, for forward_scale
    roles = {f[0] for f in over.info["forwards"]}  # the tree runs' forwards, for run_scales; AR's left out
    assert roles == {"target", "draft"} and all(f[1] >= 1 and f[2] >= 0 and f[3] > 0 for f in over.info["forwards"])
    prefills = [f for f in over.info["forwards"] if f[2] == 0]
    assert {f[0] for f in prefills} == {"target", "draft"} and all(f[1] >= 4 for f in prefills)


def test_calibrate_costs_script_rehearsal(tmp_path):
    """scripts/calibrate_costs.py --shrink: random-weight models of the research's families at toy size, a
    Calibration JSON another machine can predict with (labelled predicted, with this machine's hardware)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "calibrate_costs.py"
    spec = importlib.util.spec_from_file_location("calibrate_costs", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--shrink", "--pairs", "pythia-2.8b-70m", "--dtype", "float32", "--repeats", "1", "--n", "8",
                        "--nodes", "1,2,4", "--prefix-len", "8", "--out", str(tmp_path)]) == 0
    calib = Calibration.load(tmp_path / "calibration_pythia-2.8b-70m_float32_base.json")
    assert calib.costs.nodes == (1, 2, 4) and calib.info["random_weights"] and calib.info["shrunk"]
    assert calib.context["target"]["contexts"][0] == 8 and calib.context["draft"]["scale"][0] == 1.0
    assert calibration_columns(calib)["calibration_hardware"] not in ("", "?")
    p = predict_run(ROUNDS, calib, prompt_tokens=4, n=6)
    assert p["predicted_wall_s"] > 0 and p["predicted_speedup"] > 0
    assert (tmp_path / "calibration_pythia-2.8b-70m_float32_base.csv").exists()
