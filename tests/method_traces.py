"""Record what a method drafts on tiny models, independent of how the library is organised: every forward the target
and the draft receive (input ids and positions), the output tokens and the trace's decision fields. The clock is a
fake counter (one millisecond per read) and the hardware planner's calibration is a fixed cost curve, so decisions
that depend on measured time are reproducible. `python tests/method_traces.py OUT.json` writes the recording that
tests/test_method_classes.py compares with (made on the code before the method classes were split)."""
from __future__ import annotations

import json
import sys
import time
import warnings
from contextlib import contextmanager

import torch

import dynatree_lib as dt
from dynatree_lib.planning import calibrate
from tiny import sharp_pair

PROMPT = [5, 17, 3, 42, 5, 17, 3, 9, 11, 5, 17]
N = 40
# Each case: (name, method spelling as before the split, sampling seed or None for greedy). The recording predates
# staged drafting, today DynaTree's default with an unquantized draft: its DynaTree cases spell staged=False.
CASES = [
    ("dynatree", "DynaTree(staged=False)", None),
    ("dynatree_tuned", "DynaTree(max_nodes=12, high_conf=0.5, low_conf=0.2, max_branch=4, staged=False)", None),
    ("dynatree_sampled", "DynaTree(staged=False)", 3),
    ("phase1", "DynaTree(phase=1)", None),
    ("phase2", "DynaTree(phase=2)", None),
    ("phase3", "DynaTree(phase=3)", None),
    ("phase3_ablation", "DynaTree(phase=3, pruning=False, node_budget=False, window=3, learning_rate=0.1)", None),
    ("phase3_sampled", "DynaTree(phase=3)", 3),
    ("hardware", "HardwareAware()", None),
    ("hardware_fixed", "HardwareAware(shapes='fixed')", None),
    ("hardware_fixed_noar", "HardwareAware(shapes='fixed', allow_ar=False, threshold=0.05)", None),
    ("topn", "TopNTree(max_nodes=10)", None),
    ("hybrid", "HybridTree(DynaTree(phase=3))", None),
    ("streaming", "Streaming(DynaTree(staged=False), cache_size=16)", None),
]
COSTS = calibrate.Costs((1, 2, 4, 8, 16, 32, 64), (0.010, 0.011, 0.012, 0.014, 0.018, 0.026, 0.042),
                        (0.0005, 0.0006, 0.0007, 0.0009, 0.0012, 0.002, 0.004))
KEYS = ("nodes", "depth", "accepted", "committed", "high_conf", "conf_high", "conf_mid", "conf_low", "stopped",
        "extended", "abar", "plan_depth", "plan_branch", "plan_nodes", "plan_reason", "candidates", "ngram",
        "ngram_nodes")


@contextmanager
def fake_clock():
    ticks = [0.0]

    def tick():
        ticks[0] += 0.001
        return ticks[0]

    saved, time.perf_counter = time.perf_counter, tick
    try:
        yield
    finally:
        time.perf_counter = saved


def record(pair, method, seed=None, n=N, masks=False, prompt=PROMPT):
    """What `method` does on `pair`: tokens, trace decisions and every forward's inputs (with `masks`, also the
    attention mask's shape, which tells how many cache slots a forward attends over)."""
    fed = {"target": [], "draft": []}

    def hook(role):
        def pre(module, args, kwargs):
            pos, mask = kwargs.get("position_ids"), kwargs.get("attention_mask")
            seen = [kwargs["input_ids"][0].tolist(), None if pos is None else pos[0].tolist()]
            fed[role].append(seen + ([None if mask is None else list(mask.shape)] if masks else []))
        return pre

    hooks = [pair.target.register_forward_pre_hook(hook("target"), with_kwargs=True)]
    if pair.draft is not pair.target:
        hooks.append(pair.draft.register_forward_pre_hook(hook("draft"), with_kwargs=True))
    import dynatree_lib.methods.hardware as hardware
    saved = hardware.load_or_measure_costs
    hardware.load_or_measure_costs = lambda *a, **k: COSTS
    try:
        with fake_clock():
            out = dt.generate(pair, prompt, method, n, stop_at_eos=False,
                              temperature=0.0 if seed is None else 1.0, seed=seed)
    finally:
        hardware.load_or_measure_costs = saved
        for h in hooks:
            h.remove()
    trace = [{k: r[k] for k in KEYS if k in r} for r in out.trace]
    return {"tokens": out.token_ids, "trace": trace, "fed": fed}


def method_of(spelling):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return eval(spelling, {name: getattr(dt, name) for name in dt.__all__})  # a fixed list of test spellings


def record_all():
    pair = sharp_pair("llama", "perturbed")
    return {name: record(pair, method_of(spelling), seed) for name, spelling, seed in CASES}


if __name__ == "__main__":
    json.dump(record_all(), open(sys.argv[1], "w"))
