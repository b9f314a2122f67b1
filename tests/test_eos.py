"""EOS inside the output: every method stops right after the first EOS, with AR's output cut there."""
import time

import pytest

from dynatree_lib import (AdaptiveTree, Autoregressive, DynaTree, FixedTree, HardwareAware, HFAssisted,
                          HFPromptLookup, HybridTree, Linear, ModelPair, PromptLookup, Streaming, TopNTree, generate, label)
from dynatree_lib.planning import calibrate
from tiny import perturbed, tiny_model

PROMPT = [3, 14, 15, 92 % 90, 65, 35, 89, 79, 3, 14, 15]
N = 40
NODES = calibrate.DEFAULT_NODES

METHODS = [Autoregressive(), Linear(4), FixedTree(depth=4, branch=2, threshold=0.0), DynaTree(), TopNTree(),
           PromptLookup(), HybridTree(), Streaming(Linear(4), cache_size=16, sink_tokens=2),
           HardwareAware(), HFAssisted(), HFPromptLookup()]


@pytest.fixture(scope="module")
def pair():
    target = tiny_model("llama", seed=0)
    return ModelPair(target=target, draft=perturbed(target, 0.5, seed=1))


@pytest.fixture
def eos_inside(pair, monkeypatch, tmp_path):
    """Make a token that AR emits mid-output (first at index >= 5) the EOS, on the model's config and its
    generation_config; monkeypatch restores both. Also fake cost curves for HardwareAware (no calibration)."""
    monkeypatch.setenv("DYNATREE_CACHE", str(tmp_path))
    calibrate._CALIBRATIONS.clear()
    costs = calibrate.Costs(NODES, tuple(1.0 for _ in NODES), tuple(0.05 for _ in NODES))
    monkeypatch.setattr(calibrate, "measure_costs", lambda pair, **settings: costs)
    for cfg in (pair.target.config, pair.target.generation_config):
        monkeypatch.setattr(cfg, "eos_token_id", None)
    full = generate(pair, PROMPT, Autoregressive(), N).token_ids
    index = next(i for i in range(5, N) if full[i] not in full[:i])
    eos = full[index]
    for cfg in (pair.target.config, pair.target.generation_config):
        monkeypatch.setattr(cfg, "eos_token_id", eos)
    yield eos, full, full[: index + 1]
    calibrate._CALIBRATIONS.clear()


@pytest.mark.parametrize("method", METHODS, ids=label)
def test_greedy_stops_right_after_the_first_eos(pair, eos_inside, method):
    eos, full, cut = eos_inside
    out = generate(pair, PROMPT, method, N)
    if isinstance(method, Streaming):  # under its own cache policy, compared with Streaming AR
        full = generate(pair, PROMPT, Streaming(Autoregressive(), 16, 2), N, stop_at_eos=False).token_ids
        cut = full[: full.index(eos) + 1]
    assert out.token_ids == cut
    assert out.token_ids[-1] == eos and eos not in out.token_ids[:-1]
    assert out.stats["new_tokens"] == len(cut)
    assert generate(pair, PROMPT, method, N, stop_at_eos=False).token_ids == full  # stop_at_eos=False ignores it


# AdaptiveTree(phase=3), not DynaTree(): a greedy DynaTree() run's tree shapes follow measured times, so its EOS and
# no-EOS runs could differ in what they draft.
@pytest.mark.parametrize("method", [Autoregressive(), Linear(4), FixedTree(depth=3, branch=2), AdaptiveTree(phase=3),
                                    TopNTree(), PromptLookup(), HybridTree()], ids=label)
def test_sampling_stops_right_after_the_first_eos(pair, eos_inside, method):
    eos, _, _ = eos_inside
    kwargs = dict(temperature=0.8, seed=1234)
    free = generate(pair, PROMPT, method, N, stop_at_eos=False, **kwargs).token_ids
    out = generate(pair, PROMPT, method, N, **kwargs).token_ids
    if eos in free:  # the same draws up to the first EOS, then nothing
        assert out == free[: free.index(eos) + 1]
    else:
        assert out == free
