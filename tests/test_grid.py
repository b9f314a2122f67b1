"""The grid on Ray (2 local workers, tiny models): replay units stored atomically, every policy x length from
storage equal to generate, predicted speed with a calibration, timed validation, a failing unit recorded without
stopping the sweep, and an interrupted sweep resumed with nothing lost or repeated."""

import pandas as pd
import pytest
import torch

from dynatree_lib import FixedTree, Linear, generate, label
from dynatree_lib.bench import grid, gridrun
from dynatree_lib.planning.predict import Calibration
from tiny import tiny_pair

ray = pytest.importorskip("ray")
METHODS = [FixedTree(3, 2, 0.01), FixedTree(5, 3, 0.05), FixedTree(8, 4, 0.1, 16), Linear(4)]
LENGTHS = (12, 30)
BAD = [10**6]  # a token id outside the vocabulary: that prompt's units fail


def tiny_loader(name):
    _, arch, kind = name.split("-")
    return tiny_pair(arch, kind)


@pytest.fixture(scope="module")
def cluster():
    started = gridrun.init_ray(workers=2)
    yield
    if started:
        ray.shutdown()


def mtimes(root):
    return {p.name: p.stat().st_mtime_ns for p in (root / "units").glob("*.pt")}


def test_sweep_resume_and_failures(cluster, tmp_path):
    prompts = [("a", [1, 2, 3]), ("b", [40, 41]), ("c", BAD), ("d", [7, 7, 7, 7])]
    kw = dict(root=tmp_path, loader=tiny_loader, drafts=("base",), lengths=LENGTHS, methods=METHODS, progress=False,
              calibrate=False)
    # 1. interrupted (as by Ctrl-C) after 2 finished replay units: what finished is stored, nothing half-written
    with pytest.raises(KeyboardInterrupt):
        gridrun.run_grid("tiny-llama-perturbed", prompts, stop_after=2, **kw)
    first = mtimes(tmp_path)
    assert 1 <= len(first) <= 3 and not list(tmp_path.rglob("*.tmp"))
    # 2. resumed: finished units are skipped (not recomputed), the bad prompt's units fail and are recorded
    report = gridrun.run_grid("tiny-llama-perturbed", prompts, **kw)
    status = {r["key"]: r["status"] for r in report["replay"]}
    assert sorted(status.values()).count("error") == 1 and sorted(status.values()).count("skipped") >= 1
    assert all(mtimes(tmp_path)[k] == v for k, v in first.items())
    errors = list((tmp_path / "errors").glob("*.json"))
    assert {e.name.split("__")[0] for e in errors} == {"target", "replay"}
    # 3. fixed and rerun: only the failed unit runs, its error records go
    prompts[2] = ("c", [5, 6])
    report = gridrun.run_grid("tiny-llama-perturbed", prompts, **kw)
    assert [r["status"] for r in report["replay"]].count("done") == 1
    assert not list((tmp_path / "errors").glob("*.json")) and len(mtimes(tmp_path)) == 4
    # 4. the table: every method x length x prompt, equal to generate
    df = pd.read_csv(tmp_path / "grid.csv", dtype={"prompt_id": str})
    assert len(df) == 4 * len(METHODS) * len(LENGTHS) and set(df["measurement"]) == {"replayed"}
    assert df["git_commit"].notna().all()
    pair = tiny_loader("tiny-llama-perturbed")
    for pid, prompt in prompts[:2]:
        for m in METHODS:
            out = generate(pair, prompt, m, 30, stop_at_eos=False)
            row = df[(df.prompt_id == pid) & (df.method == label(m)) & (df.max_new_tokens == 30)].iloc[0]
            assert row["rounds"] == out.stats["rounds"] and row["drafted_nodes"] == out.stats["drafted_nodes"]
            assert row["tokens_per_round"] == pytest.approx(out.stats["tokens_per_round"])
    # 5. what the units cost: one row per stored target and replay unit, seconds from the workers
    costs = gridrun.unit_costs(tmp_path)
    assert sorted(costs["kind"].value_counts().items()) == [("replay", 4), ("target", 4)]
    assert (costs["seconds"] > 0).all() and (costs[costs.kind == "replay"]["starts"] > 0).all()


def test_a_batched_sweep_stores_the_same_grid(cluster, tmp_path):
    """Target continuations decoded 3 prompts at a time and supersets drafted 4 starts at a time give the table of
    the one-at-a-time sweep; a bad prompt in a batch fails alone (its batch-mates' targets are stored)."""
    prompts = [("a", [1, 2, 3]), ("b", [40, 41]), ("c", BAD), ("d", [7, 7, 7, 7]), ("e", [9])]
    kw = dict(loader=tiny_loader, drafts=("base",), lengths=LENGTHS, methods=METHODS, progress=False, calibrate=False)
    gridrun.run_grid("tiny-qwen2-perturbed", prompts, root=tmp_path / "one", **kw)
    many = gridrun.run_grid("tiny-qwen2-perturbed", prompts, root=tmp_path / "many", target_batch=3, replay_batch=4,
                            **kw)
    assert [r["status"] for r in many["target"]].count("error") == 1
    targets = {f: sorted((tmp_path / f / "target").glob("*.pt")) for f in ("one", "many")}
    assert [p.name for p in targets["one"]] == [p.name for p in targets["many"]] and len(targets["one"]) == 4
    assert max(torch.load(p)["batch"] for p in targets["many"]) > 1
    cols = ["prompt_id", "method", "max_new_tokens", "rounds", "drafted_nodes", "accepted_nodes"]
    a, b = (pd.read_csv(tmp_path / f / "grid.csv", dtype={"prompt_id": str})[cols].sort_values(cols[:3])
            .reset_index(drop=True) for f in ("one", "many"))
    assert len(a) == 4 * len(METHODS) * len(LENGTHS)
    pd.testing.assert_frame_equal(a, b)


def test_batched_replay_drafts_with_a_quantized_drafts_dense_copy():
    """In batches a quantized draft drafts through its dense copy (one per draft, reused); one at a time, and for a
    float draft, through the draft itself. The dense copy drafts the int4 kernel's supersets, not the float draft's."""
    from dynatree_lib.bench.supersets import SupersetDrafter, greedy_continuation
    from dynatree_lib.models.quant import is_quantized

    base = tiny_loader("tiny-qwen2-perturbed")
    pair = base.with_draft_bits(4)
    assert grid.replay_draft(pair, 1) is pair.draft and grid.replay_draft(base, 8) is base.draft
    dense = grid.replay_draft(pair, 8)
    assert is_quantized(pair.draft) and not is_quantized(dense) and grid.replay_draft(pair, 32) is dense
    ids = [5, 6, 7, 8]
    target = greedy_continuation(base, ids, 40)
    drafted = {name: [drafter(s) for s in range(1, 30)] for name, drafter in (
        ("int4", SupersetDrafter(pair.draft, ids, target)), ("dense", SupersetDrafter(dense, ids, target, batch=8)),
        ("float", SupersetDrafter(base.draft, ids, target, batch=8)))}
    for a, b in zip(drafted["int4"], drafted["dense"]):  # float32 here: the same trees, to rounding
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.parents, b.parents)
        torch.testing.assert_close(a.logp, b.logp, rtol=0, atol=1e-4)
    assert any(not torch.equal(a.tokens, b.tokens) for a, b in zip(drafted["int4"], drafted["float"]))


def test_acceptance_hours_span_the_units_from_first_start_to_last_end():
    costs = pd.DataFrame({"kind": ["target", "target", "replay"], "draft": ["", "", "int4"], "batch": [2, 2, 32],
                          "seconds": [900.0, 900.0, 1800.0], "date_utc": ["2026-01-01T01:00:00+00:00",
                                                                          "2026-01-01T01:00:01+00:00",
                                                                          "2026-01-01T02:00:00+00:00"]})
    # the batch of two started at 00:30 (2 x 900 s before it was saved); the last unit (1800 s) ended at 02:00
    assert gridrun.acceptance_hours(costs) == pytest.approx(1.5)


def test_batched_projection_scales_each_part_by_its_measured_ratio():
    costs = pd.DataFrame({"kind": ["target", "replay"], "draft": ["", "int4"], "max_new_tokens": [100, 100],
                          "seconds": [40.0, 50.0]})  # per token: target 0.4 s, int4 replay 0.5 s
    batching = pd.DataFrame({"measure": ["target", "target", "replay", "replay", "replay", "replay"],
                             "draft": [None, None, "int4", "int4", "base", "base"], "batch": [1, 4, 1, 32, 1, 32],
                             "s_per_token": [0.4, 0.1, 0.6, 0.2, 1.2, 0.3]})
    t = gridrun.projection(costs, batching, 30, 1000, ["int4", "base"], 2, 4, 32).set_index("part")
    hours = 30 * 1000 / 2 / 3600
    assert t.loc["target", "one_at_a_time_h"] == pytest.approx(0.4 * hours)
    assert t.loc["target", "batched_h"] == pytest.approx(0.1 * hours)  # 4x faster batched
    assert t.loc["replay (int4)", "batched_h"] == pytest.approx(0.5 / 3 * hours)
    # no stored bf16 unit: int4's stored cost times the drafts' one-at-a-time ratio (2x), then 4x faster batched
    assert t.loc["replay (base)", "one_at_a_time_h"] == pytest.approx(1.0 * hours)
    assert t.loc["replay (base)", "batched_h"] == pytest.approx(0.25 * hours)
    with pytest.raises(ValueError, match="batch 8"):
        gridrun.projection(costs, batching, 30, 1000, ["int4"], 2, 8, 32)
    assert gridrun._per_token(batching, "target", "", 3) == pytest.approx(0.4 - 2 / 3 * 0.3)  # between 1 and 4
    # units stored from batches are priced at their one-at-a-time cost first: the same projection
    batched = costs.assign(seconds=[10.0, 50.0 / 3], batch=[4, 32])
    pd.testing.assert_frame_equal(gridrun.projection(batched, batching, 30, 1000, ["int4", "base"], 2, 4, 32),
                                  t.reset_index())


@pytest.mark.slow  # calibrates the tiny pair and times runs: over a minute on the 2-core machine
def test_calibrated_sweep_with_timed_validation(cluster, tmp_path):
    prompts = [("p0", [3, 1, 4, 1, 5]), ("p1", [2, 7, 1, 8])]
    report = gridrun.run_grid("tiny-qwen2-unrelated", prompts, root=tmp_path, loader=tiny_loader, drafts=("base",),
                           lengths=LENGTHS, methods=METHODS, validate=3, validate_length=30, repeats=2,
                           progress=False)
    assert report["calibration"][0]["status"] == "done"
    calib = Calibration.load(next((tmp_path / "calibration").glob("*.json")))
    assert calib.context["target"]["contexts"] == [128]  # 512.. are past the tiny model's 256 positions
    timed = pd.read_csv(next((tmp_path / "timed").glob("*.csv")))
    assert timed["repeat"].tolist() == [0, 0, 1, 1] and timed["method"].iloc[0] == timed["method"].iloc[2] == "AR"
    df = pd.read_csv(tmp_path / "grid.csv", dtype={"prompt_id": str})
    assert set(df["measurement"]) == {"predicted"} and (df["predicted_speedup"] > 0).all()
    assert (df["speedup"] == df["predicted_speedup"]).all() and df["calibration_hardware"].notna().all()
    v = pd.read_csv(tmp_path / "grid_validation.csv")
    assert len(v) >= 2 and report["validation"]["pairs"] == len(v)
    assert v["abs_error_speedup"].notna().all()
    # stored calibration is reused: a second sweep measures nothing new and checks its table against stored timings
    again = gridrun.run_grid("tiny-qwen2-unrelated", prompts, root=tmp_path, loader=tiny_loader, drafts=("base",),
                          lengths=LENGTHS, methods=METHODS, progress=False)
    assert {r["status"] for r in again["replay"] + again["calibration"]} == {"skipped"}
    assert again["validation"]["pairs"] == len(v)  # checked again against the runs timed before


def test_units_and_methods():
    assert len([m for m in grid.grid_methods() if isinstance(m, FixedTree)]) == 90
    u = grid.Unit("replay", "qwen2.5-coder-1.5b/0.5b", "HumanEval/0", 1000, draft="int4", prompt="def f():")
    assert "/" not in u.key and u.key.startswith("qwen2.5-coder-1.5b-0.5b__int4__HumanEval-0__1000")
    assert u.target_unit().key == "qwen2.5-coder-1.5b-0.5b__HumanEval-0__1000"
    timed = gridrun.validation_units("p", [("a", "x"), ("b", "y")], ["base", "int4"], grid.grid_methods(), 4, 200)
    assert [t.draft for t in timed] == ["base", "int4", "base", "int4"] and "draft_bits=4" in timed[3].method
    assert [t.prompt_id for t in timed] == ["a", "a", "b", "b"]
    mixed = [(f"code{i}", "") for i in range(20)] + [(f"prose{i}", "") for i in range(10)]
    spread = gridrun.validation_units("p", mixed, ["int4"], grid.grid_methods(), 20, 100)
    assert sum(t.prompt_id.startswith("prose") for t in spread) == 6  # every kind of text, not the first 20 prompts


def test_an_interrupt_removes_only_the_cancelled_units_temporary_files(cluster, tmp_path):
    mine = grid.Unit("replay", "p", "a", 30, draft="base")
    other = grid.Unit("replay", "p", "b", 30, draft="base")  # a concurrent sweep on the same root is writing this
    left = [mine.path(tmp_path), mine.target_unit().path(tmp_path), mine.error_path(tmp_path)]
    kept = [other.path(tmp_path), other.error_path(tmp_path)]
    for path in left + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_name(f".{path.name}.1234.tmp").write_text("partial")
    gridrun._remove_partial_writes(tmp_path, {ray.put(None): mine})
    assert sorted(p.name for p in tmp_path.rglob("*.tmp")) == sorted(f".{p.name}.1234.tmp" for p in kept)
