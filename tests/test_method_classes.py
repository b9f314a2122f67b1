"""One algorithm per class (issue 24): every field of every method class is read by its algorithm, the classes that
were split decode exactly as before, and their old spellings still work with a DeprecationWarning.

`method_traces_before.json` was recorded by `method_traces.py` on the code before DynaTree and HardwareAware were
split (the same old spellings, the same tiny pair, a fake clock and fixed cost curves)."""
import dataclasses
import functools
import json
import warnings
from pathlib import Path

import pytest

import dynatree_lib as dt
from dynatree_lib.methods import method_from_row, upgrade_record
from dynatree_lib.methods.names import method_classes
from method_traces import CASES, PROMPT, method_of, record
from tiny import sharp_pair

BEFORE = json.loads((Path(__file__).parent / "method_traces_before.json").read_text())
N = 16

# Per class: the instance each field is changed from (a class's own defaults unless given), and per field the new
# value, with the settings that must hold for that field to matter (a budget switch needs a budget that binds).
LINEAR = dt.Linear(3)
WINDOWED = {"method": LINEAR, "cache_size": 8}
DEEP = {"extend_threshold": 0.0, "stop_threshold": 0.0}  # every path may grow past base_depth
CONFIDENT = {"high_conf": 0.3, "low_conf": 0.1}  # most nodes count as confident: min_branch is what they get
# Prompts on which the tiny pair's text repeats itself so that the n-gram settings matter (found by a search)
PROMPTS = {dt.PromptLookup: [3, 4, 5, 0, 1, 5, 5, 2, 0, 5, 2, 5], dt.HybridTree: [3, 4, 5, 0, 1, 5, 5, 2, 0, 5, 2, 5],
           dt.HFPromptLookup: [5, 2, 0, 3, 5, 4, 0, 1, 4, 3, 2, 3, 5, 0, 3, 0, 2, 5, 4, 4, 4, 3]}
CHANGES = {
    dt.Linear: {"k": 6},
    dt.FixedTree: {"depth": 3, "branch": 3, "threshold": 0.2, "max_nodes": 4},
    dt.AdaptiveTree: {"phase": 1, "high_conf": 0.5, "low_conf": 0.2, "min_branch": (2, CONFIDENT),
                      "default_branch": 3, "max_branch": 4, "base_depth": 3, "max_depth": (6, DEEP),
                      "stop_threshold": 0.3, "extend_threshold": (0.0, {"stop_threshold": 0.0}), "learning_rate": (0.3, {}),
                      "target_acceptance": (0.2, {"learning_rate": 0.1}),
                      "window": (1, {"learning_rate": 0.2, "target_acceptance": 0.4}), "max_nodes": 6,
                      "threshold": 0.2, "pruning": False, "node_budget": (False, {"max_nodes": 6})},
    dt.DynaTree: {"high_conf": 0.45, "low_conf": 0.1, "min_branch": (2, CONFIDENT), "default_branch": 3,
                  "max_branch": 4, "max_depth": 2, "max_nodes": 3, "node_budget": (False, {"max_nodes": 3}),
                  "staged": False, "draft_context": 4},
    dt.HardwareAware: {"max_depth": 2, "max_branch": 1, "max_nodes": 3, "allow_ar": False},
    dt.PlannedTree: {"max_depth": (1, {"prior_accept": 0.9}), "max_branch": 1, "max_nodes": 3, "threshold": 0.2, "warmup_rounds": 0,
                     "probe_every": (1, {"prior_accept": 0.0, "warmup_rounds": 0}), "prior_accept": 0.05,
                     "prior_weight": 50.0, "decay": 0.3, "adapt_costs": False,
                     "allow_ar": (False, {"prior_accept": 0.0, "warmup_rounds": 0})},
    dt.TopNTree: {"max_nodes": 5, "max_depth": 2, "topk": 2},
    dt.PromptLookup: {"max_ngram": 1, "k": 2, "branches": 3},
    dt.HybridTree: {"tree": LINEAR, "max_ngram": 1, "k": 2, "branches": 3},
    dt.Streaming: {"method": (dt.FixedTree(), WINDOWED), "cache_size": (6, WINDOWED), "sink_tokens": (1, WINDOWED),
                   "slack": (0, WINDOWED)},
    dt.HFAssisted: {"num_assistant_tokens": 2},
    dt.HFPromptLookup: {"k": 2, "max_ngram": 1},
}
DRAFT_OPTIONS = {"draft_bits": 8, "draft_vocab": 32}  # every class that has them reads them: another draft copy


def changes(cls) -> dict:
    own = dict(CHANGES.get(cls, {}))
    own.update({name: value for name, value in DRAFT_OPTIONS.items() if name in valid(cls)})
    return {name: change if isinstance(change, tuple) else (change, {}) for name, change in own.items()}


def valid(cls) -> set:
    return {f.name for f in dataclasses.fields(cls)}


@functools.lru_cache(maxsize=None)
def observe(method):
    prompt = PROMPTS.get(type(method), PROMPT)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # today's spellings only
        return json.dumps(record(sharp_pair("llama", "perturbed"), method, n=N, masks=True, prompt=prompt))


def test_every_class_lists_every_field():
    for name, cls in method_classes().items():
        assert set(changes(cls)) == valid(cls), (name, valid(cls) ^ set(changes(cls)))


FIELD_CASES = [(cls, name) for cls in method_classes().values() for name in changes(cls)]


@pytest.mark.parametrize("cls, name", FIELD_CASES, ids=[f"{c.__name__}.{n}" for c, n in FIELD_CASES])
def test_every_field_changes_what_is_drafted(cls, name):
    value, base = changes(cls)[name]
    before = cls(**base)
    after = dataclasses.replace(before, **{name: value})
    assert getattr(before, name) != value
    assert observe(before) != observe(after), f"{dt.label(after)} drafts as {dt.label(before)}: {name} is not read"


def test_split_classes_decode_exactly_as_before():
    pair = sharp_pair("llama", "perturbed")
    for name, spelling, seed in CASES:
        assert record(pair, method_of(spelling), seed) == BEFORE[name], name


@pytest.mark.parametrize("old, new", [
    ("DynaTree(phase=3)", dt.AdaptiveTree()),
    ("DynaTree(phase=1, base_depth=4, pruning=False)", dt.AdaptiveTree(phase=1, base_depth=4, pruning=False)),
    ("DynaTree(phase=4, max_depth=32, base_depth=5, window=10, threshold=0.03)", dt.DynaTree()),
    ("HardwareAware(shapes='fixed', draft_bits=4)", dt.PlannedTree(draft_bits=4)),
    ("HardwareAware(shapes='confidence', prior_accept=0.5)", dt.HardwareAware()),
])
def test_old_spellings_warn_and_mean_the_new_classes(old, new):
    with pytest.warns(DeprecationWarning, match=type(new).__name__):
        method = eval(old, vars(dt))  # a fixed list of test spellings
    assert method == new


@pytest.mark.parametrize("bad, message", [
    ("DynaTree(phase=5)", "phase"), ("HardwareAware(shapes='chain')", "shapes"),
    ("AdaptiveTree(phase=4)", "DynaTree"), ("AdaptiveTree(phase=1, window=3)", "window"),
    ("DynaTree(draft_context=0)", "draft_context"),
])
def test_values_a_class_would_ignore_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        eval(bad, vars(dt))  # a fixed list of test spellings


def test_stored_rows_load_into_todays_classes_silently():
    research = {"base_depth": 4, "draft_bits": None, "learning_rate": 0.01, "max_depth": 8, "node_budget": True,
                "phase": 2, "pruning": True, "stop_threshold": 0.1, "threshold": 0.03, "window": 10, "high_conf": 0.9}
    shaped = dict(research, phase=4, max_depth=32, base_depth=5, draft_bits=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert method_from_row("DynaTree", research) == dt.AdaptiveTree(phase=2, base_depth=4)
        assert method_from_row("DynaTree", shaped) == dt.DynaTree(draft_bits=4)
        assert method_from_row("HardwareAware", {"shapes": "fixed", "max_depth": 8, "threshold": 0.0,
                                                 "draft_bits": 4}) == dt.PlannedTree(draft_bits=4)
        assert method_from_row("HardwareAware", {"shapes": "confidence", "max_depth": 32, "threshold": 0.0,
                                                 "draft_bits": None}) == dt.HardwareAware()
        nested = {"method": {"method_type": "DynaTree", "method_params": {"phase": 3}}, "cache_size": 64}
        assert method_from_row("Streaming", nested) == dt.Streaming(dt.AdaptiveTree(), cache_size=64)
        assert upgrade_record("Linear", {"k": 4}) == ("Linear", {"k": 4})  # classes that were not split: as stored


def test_streaming_drafts_with_the_draft_copy_its_method_asks_for():
    from dynatree_lib.core.loop import running_pair

    pair = sharp_pair("llama", "perturbed")
    assert running_pair(pair, dt.Streaming(dt.Linear(3, draft_bits=8))).draft is not pair.draft
