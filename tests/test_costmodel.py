"""HardwareAware and its cost model: exactness, planner decisions on synthetic cost curves, the acceptance
estimator, interpolation, and the calibration cache."""
import dataclasses
import functools
import json
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st

from dynatree_lib import Autoregressive, FixedTree, HardwareAware, PlannedTree, generate, label
from dynatree_lib.planning import calibrate, planner
from dynatree_lib.methods import hardware
from dynatree_lib.core import kvcache
from dynatree_lib.bench import parse_method
from dynatree_lib.core.draft import DraftState
from dynatree_lib.core.tree import from_parents
from tiny import ARCHS, DRAFTS, VOCAB, reference_greedy, tiny_pair

NODES = calibrate.DEFAULT_NODES


def flat(seconds):
    return tuple(seconds for _ in NODES)


@pytest.fixture(autouse=True, scope="module")
def private_cache(tmp_path_factory):
    """Calibrations of the tiny models go to a temporary cache, never to the user's."""
    saved = os.environ.get("DYNATREE_CACHE")
    os.environ["DYNATREE_CACHE"] = str(tmp_path_factory.mktemp("dynatree-cache"))
    calibrate._CALIBRATIONS.clear()
    yield
    calibrate._CALIBRATIONS.clear()
    if saved is None:
        del os.environ["DYNATREE_CACHE"]
    else:
        os.environ["DYNATREE_CACHE"] = saved


@pytest.fixture
def fake_costs(monkeypatch, tmp_path):
    """Make the next calibrations return the given Costs (in a fresh cache), to drive HardwareAware end to end."""
    monkeypatch.setenv("DYNATREE_CACHE", str(tmp_path))
    calibrate._CALIBRATIONS.clear()

    def use(costs, delay_s=0.0):
        def measure(pair, **settings):
            time.sleep(delay_s)
            return costs

        monkeypatch.setattr(calibrate, "measure_costs", measure)

    yield use
    calibrate._CALIBRATIONS.clear()  # the fake curves must not leak into later tests


@functools.lru_cache(maxsize=None)
def _reference(arch, prompt, n):
    return tuple(reference_greedy(tiny_pair(arch, "same").target, list(prompt), n))


def reference(arch, prompt, n):
    return list(_reference(arch, tuple(prompt), n))


# ---------------------------------------------------------------------------------------------------------------------
# Exactness, with real calibrations of the tiny models

methods = st.builds(
    PlannedTree, max_depth=st.integers(1, 8), max_branch=st.integers(1, 3),
    max_nodes=st.integers(1, 64),
    threshold=st.sampled_from([0.0, 0.03]), warmup_rounds=st.integers(0, 3), probe_every=st.integers(1, 6),
    prior_accept=st.sampled_from([0.0, 0.3, 0.9]),  # 0: plain steps right after warm-up, then probes
    adapt_costs=st.booleans(), allow_ar=st.booleans(),
)


@pytest.mark.parametrize("draft_kind", DRAFTS)
@pytest.mark.parametrize("arch", ARCHS)
@given(method=methods, prompt=st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=20), n=st.integers(1, 30))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(method=PlannedTree(max_depth=1, max_branch=1, max_nodes=1, threshold=0.03, warmup_rounds=0, probe_every=1,
                            prior_accept=0.0, adapt_costs=False, allow_ar=False), prompt=[68, 30], n=3)
def test_hardware_aware_equals_greedy(arch, draft_kind, method, prompt, n):
    out = generate(tiny_pair(arch, draft_kind), prompt, method, n, stop_at_eos=False)
    assert out.token_ids == reference(arch, prompt, n), label(method)
    assert sum(r["committed"] for r in out.trace) == n - 1
    for i, r in enumerate(out.trace):
        assert 0 <= r["accepted"] <= r["depth"] and r["committed"] == r["accepted"] + 1
        if r["plan_depth"] == 0:
            assert r["nodes"] == 0, r  # a plain step drafts nothing
        if method.threshold == 0:  # no pruning: the drafted tree is exactly the planned shape (threshold pruning
            # may legitimately empty a planned tree, as in the pinned example below)
            assert (r["nodes"], r["depth"]) == (r["plan_nodes"], r["plan_depth"]), r
        if r["plan_reason"] in ("warmup", "probe") or not method.allow_ar:
            assert r["plan_depth"] > 0 or r["plan_reason"] == "last", r
        assert (r["plan_reason"] == "warmup") == (i < method.warmup_rounds and r["plan_reason"] != "last")
    assert out.stats["ar_rounds"] == sum(r["plan_depth"] == 0 and r["plan_reason"] != "last" for r in out.trace)


confident = st.builds(HardwareAware, max_depth=st.integers(1, 40),
                      max_branch=st.integers(1, 3), max_nodes=st.integers(1, 64), allow_ar=st.booleans())


@pytest.mark.parametrize("draft_kind", DRAFTS)
@pytest.mark.parametrize("arch", ARCHS)
@given(method=confident, prompt=st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=20), n=st.integers(1, 40))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_confidence_shapes_equal_greedy(arch, draft_kind, method, prompt, n):
    out = generate(tiny_pair(arch, draft_kind), prompt, method, n, stop_at_eos=False)
    assert out.token_ids == reference(arch, prompt, n), label(method)
    assert all(r["depth"] <= method.max_depth and r["nodes"] <= method.max_nodes for r in out.trace)
    if not method.allow_ar:  # every round drafts, but the last (it may have had a single token left to commit)
        assert all(r["nodes"] > 0 for r in out.trace[:-1])


def test_confidence_shapes_are_priced_with_the_calibrated_curves():
    """Seeded from linear cost curves, phase 4's lines are those lines, and its rate is the planner's expected rate
    at the prior acceptance: a level and a node are priced as this machine's curves say from the first round on."""
    costs = calibrate.Costs(NODES, tuple(0.5 + 0.02 * n for n in NODES), tuple(0.1 + 0.04 * n for n in NODES))
    method = HardwareAware(max_branch=2)
    shaped = hardware._Calibrated(method, costs)
    chooser = planner.Planner(costs, 8, 2, method.max_nodes)
    rate = chooser.best(planner.rank_accept_prior(0.8, 8, 2)).expected_tps
    assert shaped.rate == pytest.approx(rate)
    assert shaped.verify.slope() == pytest.approx(0.02) and shaped.draft.slope() == pytest.approx(0.04)
    assert shaped.level_tokens(3) == pytest.approx(rate * (0.1 + 0.04 * 3))
    assert shaped.node_floor() == pytest.approx(min(max(rate * 0.06, 0.005), 0.5))
    # a dearer draft raises the price of a level: the same worth then buys fewer levels
    dear = hardware._Calibrated(method, calibrate.Costs(NODES, costs.verify_s, tuple(4 * t for t in costs.draft_s)))
    assert dear.level_tokens(1) / dear.rate > 3.9 * shaped.level_tokens(1) / shaped.rate


@pytest.mark.parametrize("method", [HardwareAware(), PlannedTree(adapt_costs=False)], ids=label)
def test_sampling_runs_and_is_reproducible(method):
    pair = tiny_pair("qwen2", "perturbed")
    # PlannedTree: measured timings would change the trees, hence the draws; HardwareAware ignores the clock when
    # sampling
    runs = [generate(pair, [3, 1, 4], method, 20, stop_at_eos=False, temperature=0.8, seed=7) for _ in range(2)]
    assert len(runs[0].token_ids) == 20 and runs[0].token_ids == runs[1].token_ids


# ---------------------------------------------------------------------------------------------------------------------
# End to end on synthetic cost curves: the plans follow the draft's quality


@pytest.mark.parametrize("arch", ARCHS)
def test_good_cheap_draft_grows_deep_trees(arch, fake_costs):
    fake_costs(calibrate.Costs(NODES, flat(1.0), flat(0.02)))
    prompt = [5, 9, 2]
    out = generate(tiny_pair(arch, "same"), prompt, PlannedTree(adapt_costs=False), 60,
                   stop_at_eos=False)
    assert out.token_ids == reference(arch, prompt, 60)
    planned = [r for r in out.trace if r["plan_reason"] == "plan"]
    assert planned and all(r["plan_depth"] >= 4 for r in planned[:-2])  # the last rounds are capped by what is left
    assert out.stats["ar_rounds"] == 0
    assert out.stats["tokens_per_round"] > 4


@pytest.mark.parametrize("arch", ARCHS)
def test_failing_draft_falls_back_to_plain_steps_and_probes(arch, fake_costs):
    fake_costs(calibrate.Costs(NODES, flat(1.0), flat(0.3)))
    prompt = [5, 9, 2]
    method = PlannedTree(adapt_costs=False, probe_every=5)
    out = generate(tiny_pair(arch, "unrelated"), prompt, method, 60, stop_at_eos=False)
    assert out.token_ids == reference(arch, prompt, 60)
    reasons = [r["plan_reason"] for r in out.trace]
    assert out.stats["ar_rounds"] >= 0.7 * len(out.trace)
    assert out.stats["probe_rounds"] >= 2
    for i, reason in enumerate(reasons):  # a probe comes after exactly probe_every plain steps in a row
        if reason == "probe":
            before = [r["plan_depth"] for r in out.trace[i - method.probe_every - 1: i]]
            assert before[0] > 0 and before[1:] == [0] * method.probe_every, before
    for r in out.trace:
        if r["plan_depth"] == 0 and r["plan_reason"] == "plan":
            assert r["plan_tree_tps"] <= r["plan_ar_tps"]  # the trace says why


def test_drafted_trees_have_the_planned_shapes():
    """The shape model (fixed_widths) is what draft_tree really grows, for every candidate."""
    pair = tiny_pair("llama", "perturbed")
    method = PlannedTree(max_depth=4, max_nodes=20)
    run = SimpleNamespace(pair=pair)
    sizing = hardware._Sizing(method, calibrate.Costs(NODES, flat(1.0), flat(0.1)), run)
    shapes = planner.tree_shapes(4, 3, 20)
    assert any(sum(s.widths) < sum(planner.fixed_widths(s.depth, s.branch, 20)) for s in shapes)  # budget-cut shapes
    for shape in shapes:
        plan = planner.RoundPlan(shape.depth, shape.branch, shape.nodes, shape.widths, 1.0, 1.0, 1.0, 1.0, 1.0)
        sizing.choose = lambda max_depth: (plan, "plan")
        state = DraftState(kvcache.new_cache(pair.draft), pending=[7, 8, 9])
        tree = sizing.propose(state, 8).tree
        assert tuple(torch.bincount(tree.depth)[1:].tolist()) == shape.widths, shape


def test_without_plain_steps_it_always_drafts(fake_costs):
    fake_costs(calibrate.Costs(NODES, flat(1.0), flat(0.3)))
    method = PlannedTree(allow_ar=False)
    out = generate(tiny_pair("llama", "unrelated"), [1, 2], method, 30, stop_at_eos=False)
    assert out.token_ids == reference("llama", [1, 2], 30)
    assert all(r["nodes"] > 0 for r in out.trace[:-1]) and out.stats["ar_rounds"] == 0


def test_calibration_time_is_left_out_of_the_timings(fake_costs):
    delay = 1.0
    fake_costs(calibrate.Costs(NODES, flat(1.0), flat(0.02)), delay_s=delay)
    pair = tiny_pair("gpt_neox", "same")
    started = time.perf_counter()
    first = generate(pair, [1, 2, 3], HardwareAware(), 5, stop_at_eos=False)
    outside = time.perf_counter() - started - first.stats["wall_s"]
    assert first.stats["calibration_s"] >= delay and outside >= delay  # timed, but not as decoding
    again = generate(pair, [1, 2, 3], HardwareAware(), 5, stop_at_eos=False)
    assert again.stats["calibration_s"] < delay  # in-process: paid once


# ---------------------------------------------------------------------------------------------------------------------
# Planner on synthetic cost curves


def test_expensive_draft_and_low_acceptance_choose_plain_steps():
    costs = calibrate.Costs(NODES, flat(1.0), flat(1.0))
    plan = planner.plan_round(costs, planner.rank_accept_prior(0.1))
    assert (plan.depth, plan.nodes, plan.expected_tokens) == (0, 0, 1.0)
    assert plan.tree_tps < plan.ar_tps == plan.expected_tps == 1.0
    assert isinstance(hardware.as_method(plan), Autoregressive)


def test_cheap_draft_and_high_acceptance_choose_a_deep_tree():
    plan = planner.plan_round(calibrate.Costs(NODES, flat(1.0), flat(0.01)), planner.rank_accept_prior(0.9))
    assert plan.depth >= 6 and plan.expected_tps > 3 * plan.ar_tps
    tree = hardware.as_method(plan, threshold=0.0)
    assert isinstance(tree, FixedTree) and (tree.depth, tree.branch, tree.max_nodes) == (
        plan.depth, plan.branch, plan.nodes)


def test_verify_knee_caps_the_tree_size():
    cheap_draft, accept = flat(0.01), planner.rank_accept_prior(0.8)
    knee = planner.plan_round(calibrate.Costs(NODES, (1, 1, 1, 1, 1, 4, 16), cheap_draft), accept)  # flat to 16 tree nodes
    assert knee.depth >= 3 and 1 + knee.nodes <= 16
    no_knee = planner.plan_round(calibrate.Costs(NODES, flat(1.0), cheap_draft), accept)
    assert 1 + no_knee.nodes > 16  # the same acceptance on flat hardware uses a bigger tree


def test_zero_acceptance_never_drafts_and_max_depth_is_respected():
    costs = calibrate.Costs(NODES, (1, 1.1, 1.2, 1.4, 2, 3, 5), flat(0.001))
    chooser = planner.Planner(costs)
    assert chooser.best(np.zeros((8, 3))).depth == 0
    assert chooser.best(np.zeros((8, 3)), allow_ar=False).depth >= 1
    for max_depth in range(0, 9):
        assert chooser.best(planner.rank_accept_prior(0.95), max_depth=max_depth).depth <= max_depth
    with pytest.raises(ValueError, match="rank_accept"):
        chooser.best(np.zeros((3, 3)))


@given(
    verify=st.lists(st.floats(0.01, 2.0), min_size=7, max_size=7),
    draft=st.lists(st.floats(0.0, 2.0), min_size=7, max_size=7),
    r=st.lists(st.floats(0.0, 0.6), min_size=12, max_size=12),
    scales=st.tuples(st.floats(0.2, 5.0), st.floats(0.2, 5.0), st.floats(0.0, 0.5)),
)
@settings(max_examples=40, deadline=None)
def test_planner_picks_the_best_rate_by_brute_force(verify, draft, r, scales):
    costs = calibrate.Costs(NODES, calibrate.monotone(sorted(verify)), calibrate.monotone(sorted(draft)))
    rank_accept = np.array(r).reshape(4, 3)
    draft_scale, verify_scale, overhead = scales
    plan = planner.Planner(costs, max_depth=4, max_branch=3, max_nodes=20).best(
        rank_accept, draft_scale=draft_scale, verify_scale=verify_scale, overhead_s=overhead)

    def rate(shape):
        seconds = (draft_scale * (costs.draft(1) + sum(costs.draft(w) for w in shape.widths[:-1]))
                   + verify_scale * costs.verify(1 + shape.nodes) + overhead)
        return planner.expected_tokens(shape.widths, rank_accept) / seconds

    best_tree = max(rate(s) for s in planner.tree_shapes(4, 3, 20))
    ar = 1 / (verify_scale * costs.verify(1) + overhead)
    assert plan.tree_tps == pytest.approx(best_tree) and plan.ar_tps == pytest.approx(ar)
    assert plan.expected_tps == pytest.approx(max(best_tree, ar))
    if plan.depth:
        assert plan.expected_tokens == pytest.approx(planner.expected_tokens(plan.widths, rank_accept))


def test_expected_tokens_by_hand():
    r = np.array([[0.5, 0.2], [0.6, 0.1]])
    # Level 1: two children, a1 = 0.5 + 0.2; level 2: one child under two parents (c = 0.5), a2 = 0.5 * 0.6.
    assert planner.expected_tokens((2, 1), r) == pytest.approx(1 + 0.7 + 0.7 * 0.3)
    assert planner.expected_tokens((1, 1), r) == pytest.approx(1 + 0.5 + 0.5 * 0.6)
    assert planner.expected_tokens((), r) == 1.0
    assert planner.expected_tokens((1,), np.ones((1, 1))) == 2.0


def test_fixed_widths_and_shapes():
    assert planner.fixed_widths(8, 2, 64) == (2, 4, 8, 16, 32, 2)
    assert planner.fixed_widths(3, 1, 64) == (1, 1, 1)
    assert planner.fixed_widths(5, 3, 10) == (3, 7)
    shapes = planner.tree_shapes(8, 3, 64)
    assert len({s.widths for s in shapes}) == len(shapes)
    assert all(s.depth <= 8 and s.nodes <= 64 and planner.fixed_widths(s.depth, s.branch, s.nodes) == s.widths
               for s in shapes)
    assert any(s.nodes == 15 for s in shapes) and any(s.nodes == 16 for s in shapes)


# ---------------------------------------------------------------------------------------------------------------------
# Acceptance statistics


def test_rank_observations():
    # root -> 10, 11 ; 10 -> 12, 13 ; 11 has no children
    tree = from_parents([0, 10, 11, 12, 13], [-1, 0, 0, 1, 1])
    assert planner.rank_observations(tree, [10, 13]) == [(1, 2, 1), (2, 2, 2)]  # 13 is a leaf: nothing more seen
    assert planner.rank_observations(tree, [10]) == [(1, 2, 1), (2, 2, 0)]  # 10 had children, none was right
    assert planner.rank_observations(tree, [11]) == [(1, 2, 2)]
    assert planner.rank_observations(tree, []) == [(1, 2, 0)]
    assert planner.rank_observations(from_parents([0], [-1]), []) == []


def test_acceptance_estimates_converge_and_unseen_cells_inherit():
    acc = planner.Acceptance(max_depth=3, max_branch=3, prior=0.5, prior_weight=2.0, decay=0.995)
    outcomes = [1, 1, 2, 1, 0, 1, 2, 1, 1, 0] * 60  # rank 1: 60 %, rank 2: 20 %, none of the two: 20 %
    for rank in outcomes:
        acc.update([(1, 2, rank)])
    r = acc.rank_accept()
    assert r[0, 0] == pytest.approx(0.6, abs=0.05) and r[0, 1] == pytest.approx(0.2, abs=0.05)
    assert r[0, 2] == pytest.approx(0.125)  # rank 3 was never drafted: still the prior 0.5 * 0.5^2
    assert np.allclose(r[1:], r[0])  # levels 2 and 3 never reached: they inherit level 1
    acc.update([(2, 1, 0)] * 20)  # level 2 fails whenever tried; only rank 1 was drafted there
    r2 = acc.rank_accept()
    assert np.allclose(r2[0], r[0]) and r2[1, 0] < 0.2 and r2[1, 1] == pytest.approx(r[0, 1])
    assert np.allclose(r2[2], r2[1])
    acc.update([(9, 3, 1)])  # beyond max_depth: ignored
    assert np.allclose(acc.rank_accept(), r2)


def test_acceptance_forgets_with_decay():
    acc = planner.Acceptance(max_depth=1, max_branch=1, prior=0.5, prior_weight=1.0, decay=0.8)
    for _ in range(50):
        acc.update([(1, 1, 1)])
    assert acc.rank_accept()[0, 0] > 0.9
    for _ in range(30):
        acc.update([(1, 1, 0)])
    # About 1 / (1 - decay) = 5 recent observations count, all failures, against the prior's weight of 1.
    assert acc.rank_accept()[0, 0] == pytest.approx(0.5 / 6, abs=0.01)


# ---------------------------------------------------------------------------------------------------------------------
# Cost curves and calibration


def test_interpolation():
    xs, ys = (1, 2, 4, 8), (1.0, 1.0, 2.0, 6.0)
    for x, y in zip(xs, ys):
        assert calibrate.interpolate(xs, ys, x) == y
    assert calibrate.interpolate(xs, ys, 3) == pytest.approx(1.5)
    assert calibrate.interpolate(xs, ys, 6) == pytest.approx(4.0)
    assert calibrate.interpolate(xs, ys, 10) == pytest.approx(8.0)  # the last segment's slope continues
    assert calibrate.interpolate(xs, ys, 0.5) == 1.0
    assert calibrate.interpolate((1, 2), (2.0, 1.0), 5) == 1.0  # never extrapolates downwards
    assert calibrate.interpolate((4,), (3.0,), 100) == 3.0
    points = [0.5, 1, 3, 6, 10]  # an array in, an array out (the predictions price every AR step at once)
    assert calibrate.interpolate(xs, ys, points).tolist() == [1.0, 1.0, 1.5, 4.0, 8.0]
    costs = calibrate.Costs(xs, ys, (0.5, 0.5, 0.5, 1.5))
    assert costs.verify(3) == pytest.approx(1.5) and costs.draft(6) == pytest.approx(1.0)
    assert list(costs.frame().columns) == ["nodes", "verify_s", "draft_s", "draft_over_verify"]
    assert calibrate.Costs.from_dict(costs.to_dict()) == costs
    assert calibrate.monotone((3.0, 1.0, 2.0, 5.0, 4.0)) == (1.0, 1.0, 2.0, 4.0, 4.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(nodes=(1, 4), verify_s=(1.0,)), "verify_s"),
    (dict(nodes=(4, 2), verify_s=(1.0, 2.0)), "nodes"),
    (dict(nodes=(0, 2), verify_s=(1.0, 2.0)), "nodes"),
    (dict(nodes=(1, 2), verify_s=(1.0, 2.0), draft_s=(1.0, -1.0)), "draft_s"),
])
def test_costs_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        calibrate.Costs(**kwargs)
    with pytest.raises(ValueError, match="without a draft"):
        calibrate.Costs((1,), (1.0,)).draft(1)


def test_measure_costs_on_tiny_models():
    pair = tiny_pair("qwen2", "unrelated")
    costs = calibrate.measure_costs(pair, nodes=(1, 8, 32), prefix_len=16, repeats=2)
    assert costs.nodes == (1, 8, 32) and len(costs.draft_s) == 3
    assert all(t > 0 for t in costs.verify_s + costs.draft_s)
    assert list(costs.verify_s) == sorted(costs.verify_s)  # made monotone
    info = costs.info
    assert len(info["raw_verify_s"]) == 3 and len(info["loadavg_before"]) == 3
    assert info["torch_threads"] == torch.get_num_threads() and info["torch_version"] == torch.__version__
    with pytest.raises(ValueError, match="context"):
        calibrate.measure_costs(pair, nodes=(1, 64), prefix_len=250)
    with pytest.raises(ValueError, match="repeats"):
        calibrate.measure_costs(pair, repeats=0)


def test_calibration_is_cached_on_disk_and_in_process(tmp_path, monkeypatch):
    pair = tiny_pair("llama", "unrelated")
    calls = []
    real = calibrate.measure_costs

    def counting(pair, **settings):
        calls.append(settings)
        return real(pair, **settings)

    monkeypatch.setattr(calibrate, "measure_costs", counting)
    monkeypatch.setattr(calibrate.os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # a quiet machine: stored ones are kept
    settings = dict(nodes=(1, 4, 16), prefix_len=8, repeats=1, cache_dir=tmp_path)
    first = calibrate.load_or_measure_costs(pair, **settings)
    assert len(calls) == 1
    path = calibrate.calibration_path(calibrate.calibration_key(pair, (1, 4, 16), 8, 1), tmp_path)
    saved = json.loads(path.read_text())
    assert saved["key"]["torch_threads"] == torch.get_num_threads()
    assert {"date_utc", "cpu", "torch_version", "loadavg_before", "raw_verify_s"} <= set(saved["costs"]["info"])

    assert calibrate.load_or_measure_costs(pair, **settings) is first  # in-process
    calibrate._CALIBRATIONS.clear()
    monkeypatch.setattr(calibrate, "measure_costs", lambda *a, **k: pytest.fail("re-measured a cached calibration"))
    assert calibrate.load_or_measure_costs(pair, **settings) == first  # from disk

    monkeypatch.setattr(calibrate, "measure_costs", counting)
    calibrate.load_or_measure_costs(pair, **{**settings, "prefix_len": 9})  # other settings: another calibration
    assert len(calls) == 2
    calibrate.load_or_measure_costs(pair, **settings, refresh=True)
    assert len(calls) == 3
    calibrate._CALIBRATIONS.clear()
    path.write_text("{not json")
    calibrate.load_or_measure_costs(pair, **settings)  # unreadable: measured again
    assert len(calls) == 4 and json.loads(path.read_text())["key"] == saved["key"]
    calibrate._CALIBRATIONS.clear()


def test_stale_or_loaded_calibrations_are_measured_again(tmp_path, monkeypatch):
    pair = tiny_pair("llama", "unrelated")
    settings = dict(nodes=(1, 4), prefix_len=8, repeats=1, cache_dir=tmp_path)
    monkeypatch.setattr(calibrate.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    fresh = calibrate.load_or_measure_costs(pair, **settings)
    assert calibrate.stale_reason(fresh) is None
    path = calibrate.calibration_path(calibrate.calibration_key(pair, (1, 4), 8, 1), tmp_path)

    def rewrite(**info):
        data = json.loads(path.read_text())
        data["costs"]["info"].update(info)
        path.write_text(json.dumps(data))
        calibrate._CALIBRATIONS.clear()

    calls = []
    real = calibrate.measure_costs
    monkeypatch.setattr(calibrate, "measure_costs", lambda p, **k: calls.append(k) or real(p, **k))
    rewrite(date_utc="2020-01-01T00:00:00+00:00")
    assert "days old" in calibrate.stale_reason(calibrate.Costs.from_dict(json.loads(path.read_text())["costs"]))
    calibrate.load_or_measure_costs(pair, **settings)
    assert len(calls) == 1  # too old: measured again
    rewrite(loadavg_before=[9.0, 9.0, 9.0])
    calibrate.load_or_measure_costs(pair, **settings)
    assert len(calls) == 2  # taken under load: measured again
    calibrate.load_or_measure_costs(pair, **settings)
    assert len(calls) == 2  # the new one is quiet and in memory
    calibrate._CALIBRATIONS.clear()
    calibrate.load_or_measure_costs(pair, **settings)
    assert len(calls) == 2  # and on disk
    rewrite(cpu="Some Other CPU")
    assert "another CPU" in calibrate.stale_reason(calibrate.Costs.from_dict(json.loads(path.read_text())["costs"]))
    calibrate.load_or_measure_costs(pair, **settings)
    assert len(calls) == 3  # from another machine: measured again
    assert calibrate.stale_reason(calibrate.Costs((1,), (1.0,))) == "no date or load recorded"
    calibrate._CALIBRATIONS.clear()


def test_calibration_key_follows_what_costs_depend_on():
    same, perturbed, unrelated = (tiny_pair("llama", kind) for kind in DRAFTS)
    key = calibrate.calibration_key(same)
    assert calibrate.calibration_key(perturbed) == key  # other weights, same architecture: same costs
    assert calibrate.calibration_key(unrelated) != key
    assert calibrate.calibration_key(tiny_pair("qwen2", "same")) != key
    assert calibrate.calibration_key(same, prefix_len=64) != key
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads != 1 else 2)
    try:
        assert calibrate.calibration_key(same) != key
    finally:
        torch.set_num_threads(threads)
    assert calibrate.calibration_nodes(64) == NODES and calibrate.calibration_nodes(100) == NODES + (128,)


def test_calibration_key_tells_cpus_with_and_without_bf16_apart(monkeypatch):
    pair = tiny_pair("llama", "same")
    keys = []
    for native in (True, False):  # the same CPU model name, with and without bf16 arithmetic
        monkeypatch.setattr(calibrate, "native_bf16_matmul", lambda native=native: native)
        keys.append(calibrate.calibration_key(pair))
    assert keys[0] != keys[1]


# ---------------------------------------------------------------------------------------------------------------------
# Parameters


@pytest.mark.parametrize("cls, name, value", [
    *((PlannedTree, name, value) for name, value in [
        ("max_depth", 0), ("max_branch", 0), ("max_nodes", 0), ("threshold", 1.0), ("warmup_rounds", -1),
        ("probe_every", 0), ("prior_accept", 1.0), ("prior_weight", 0), ("decay", 0.0), ("decay", 1.5),
        ("adapt_costs", "yes"), ("allow_ar", None), ("max_depth", 2.0), ("draft_bits", 2)]),
    *((HardwareAware, name, value) for name, value in [
        ("max_depth", 0), ("max_branch", 0), ("max_nodes", 0), ("allow_ar", None), ("max_depth", 2.0),
        ("draft_bits", 2), ("shapes", "chain")]),
])
def test_bad_parameters_are_refused(cls, name, value):
    with pytest.raises(ValueError, match=name):
        cls(**{name: value})


def test_labels_and_the_old_spelling():
    assert label(HardwareAware()) == "HardwareAware" and label(PlannedTree()) == "PlannedTree"
    assert parse_method(label(PlannedTree(draft_bits=4))) == PlannedTree(draft_bits=4)
    with pytest.warns(DeprecationWarning, match="PlannedTree"):  # the fixed planner was a mode of HardwareAware
        assert HardwareAware(shapes="fixed", draft_bits=4) == PlannedTree(draft_bits=4)
    with pytest.warns(DeprecationWarning, match="threshold"):  # a planner setting the shaped tree never read
        assert HardwareAware(shapes="confidence", threshold=0.0) == HardwareAware()


@given(method=st.one_of(methods, confident), draft_bits=st.sampled_from([None, 4, 8]))
@settings(max_examples=30, deadline=None)
def test_label_round_trip(method, draft_bits):
    method = dataclasses.replace(method, draft_bits=draft_bits)
    assert parse_method(label(method)) == method


def test_quantized_draft_is_exact_and_calibrated_separately():
    pair = tiny_pair("llama", "perturbed")
    out = generate(pair, [4, 2], HardwareAware(draft_bits=8), 20, stop_at_eos=False)
    assert out.token_ids == reference("llama", [4, 2], 20)
    assert calibrate.calibration_key(pair.with_draft_bits(8)) != calibrate.calibration_key(pair)


def test_plan_table_follows_costs_and_acceptance():
    nodes = (1, 4, 16, 64)
    cheap = calibrate.Costs(nodes, (0.2, 0.21, 0.22, 0.3), (0.01, 0.01, 0.012, 0.02))
    dear = calibrate.Costs(nodes, (0.2, 0.4, 1.0, 3.0), (0.2, 0.4, 1.0, 3.0))  # draft as dear as the target
    t = planner.plan_table(cheap, [0.3, 0.95], max_depth=6, max_branch=2, max_nodes=32)
    assert list(t["p"]) == [0.3, 0.95]
    assert (t["depth"] > 0).all() and t["depth"].iloc[1] > t["depth"].iloc[0]  # more acceptance: a deeper tree
    assert (t["expected speedup over AR"] > 1).all()
    d = planner.plan_table(dear, [0.3], max_depth=6, max_branch=2, max_nodes=32)
    assert d["depth"].iloc[0] == 0 and d["expected speedup over AR"].iloc[0] == pytest.approx(1.0)
    best = planner.plan_round(cheap, planner.rank_accept_prior(0.95, 6, 2), max_depth=6, max_branch=2, max_nodes=32)
    assert (t["depth"].iloc[1], t["nodes"].iloc[1]) == (best.depth, best.nodes)
