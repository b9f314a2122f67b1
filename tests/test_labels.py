"""Method identity without a parser: every method reads back from its constructor string (methods.names.describe,
what label() gives), old label spellings still read (with a DeprecationWarning), stored rows are keyed by their
method's type and parameters, and display names are short and unique within a table."""
import dataclasses
import glob
import json
import warnings

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dynatree_lib import (AdaptiveTree, Autoregressive, DynaTree, FixedTree, HardwareAware, HFAssisted, HFGenerate,
                          HFPromptLookup, HybridTree, Linear, PlannedTree, PromptLookup, Streaming, TopNTree, label)
from dynatree_lib.bench import parse_method, parse_methods, read_results
from dynatree_lib.bench.specs import MAX_METHODS, row_methods
from dynatree_lib.bench.storage import KEY, config_key, stored_keys
from dynatree_lib.methods.names import describe, display_name, display_names, from_record, identity

probs = st.integers(0, 99).map(lambda i: i / 100)
bits = st.sampled_from([None, 4, 8])
vocab = st.sampled_from([None, 64, 1000])
small = st.integers(1, 12)

linears = st.builds(Linear, k=small, draft_bits=bits, draft_vocab=vocab)
fixeds = st.builds(FixedTree, depth=small, branch=small, threshold=probs, max_nodes=st.integers(1, 200),
                   draft_bits=bits, draft_vocab=vocab)
topns = st.builds(TopNTree, max_nodes=st.integers(1, 64), max_depth=small, topk=small, draft_bits=bits,
                  draft_vocab=vocab)


@st.composite
def adaptive_trees(draw):
    lo, hi = sorted((draw(probs), draw(probs)))
    b = sorted(draw(st.lists(st.integers(1, 4), min_size=3, max_size=3)))
    base, phase = draw(st.integers(1, 6)), draw(st.sampled_from([1, 2, 3]))
    later = {"max_depth": draw(st.integers(base, 12))} if phase >= 2 else {}  # a phase refuses later phases' settings
    later.update({"window": draw(small)} if phase == 3 else {})
    return AdaptiveTree(phase=phase, high_conf=hi, low_conf=lo, min_branch=b[0], default_branch=b[1], max_branch=b[2],
                        base_depth=base, max_nodes=draw(st.integers(1, 200)), threshold=draw(probs),
                        pruning=draw(st.booleans()), node_budget=draw(st.booleans()), draft_bits=draw(bits),
                        draft_vocab=draw(vocab), **later)


@st.composite
def dynatrees(draw):
    lo, hi = sorted((draw(probs), draw(probs)))
    b = sorted(draw(st.lists(st.integers(1, 4), min_size=3, max_size=3)))
    return DynaTree(high_conf=hi, low_conf=lo, min_branch=b[0], default_branch=b[1], max_branch=b[2],
                    max_depth=draw(st.integers(1, 40)), max_nodes=draw(st.integers(1, 200)),
                    node_budget=draw(st.booleans()), draft_bits=draw(bits), draft_vocab=draw(vocab))


trees = st.one_of(linears, fixeds, topns, adaptive_trees(), dynatrees())
lookups = st.builds(PromptLookup, max_ngram=small, k=small, branches=st.integers(1, 4))
hybrids = st.builds(HybridTree, tree=trees, max_ngram=small, k=small, branches=st.integers(1, 4))
hardware = st.one_of(
    st.builds(HardwareAware, max_depth=small, max_nodes=st.integers(1, 128), allow_ar=st.booleans(), draft_bits=bits),
    st.builds(PlannedTree, max_depth=small, max_nodes=st.integers(1, 128), threshold=probs,
              prior_weight=st.integers(1, 9).map(float), adapt_costs=st.booleans(), draft_bits=bits))
hf = st.one_of(st.builds(HFAssisted, num_assistant_tokens=st.one_of(st.none(), small), draft_bits=bits),
               st.builds(HFPromptLookup, k=small, max_ngram=small), st.just(HFGenerate()))
inner = st.one_of(st.just(Autoregressive()), trees, lookups, hybrids, hardware)


@st.composite
def streamings(draw):
    size = draw(st.integers(2, 2048))
    return Streaming(draw(inner), cache_size=size, sink_tokens=draw(st.integers(0, size - 1)),
                     slack=draw(st.one_of(st.none(), st.integers(0, 64))))


methods = st.one_of(st.just(Autoregressive()), trees, lookups, hybrids, hardware, hf, streamings())


@given(methods)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_method_reads_back_from_its_constructor_string_and_its_record(method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # today's spelling never warns
        assert parse_method(describe(method)) == method, describe(method)
    assert label(method) == describe(method)
    kind, params = identity(method)
    assert from_record(kind, json.loads(params)) == method
    assert display_name(method)


def test_constructor_syntax_as_a_person_types_it():
    assert parse_methods("AR, DynaTree, HFAssisted") == [Autoregressive(), DynaTree(), HFAssisted()]
    assert parse_method("DynaTree(draft_bits=4)") == DynaTree(draft_bits=4)
    assert parse_method("Linear(k=5, draft_bits=4)") == Linear(5, draft_bits=4)
    assert parse_method("Streaming(method=Linear(k=4), cache_size=512)") == Streaming(Linear(4), cache_size=512)
    assert parse_method("Streaming(Linear(4), 512)") == Streaming(Linear(4), cache_size=512)
    assert parse_methods("Linear(k=[4, 5, 6])") == [Linear(4), Linear(5), Linear(6)]
    assert parse_methods("FixedTree(depth=range(3, 5), branch=[2, 3])") == [
        FixedTree(3, 2), FixedTree(3, 3), FixedTree(4, 2), FixedTree(4, 3)]
    assert describe(DynaTree(draft_bits=4)) == "DynaTree(draft_bits=4)" and describe(Autoregressive()) == "AR"
    assert describe(AdaptiveTree(phase=2)) == "AdaptiveTree(phase=2)"


@pytest.mark.parametrize("spec, message", [
    ("FixedTree(depth=5, depth=6)", "depth is given twice"),
    ("FixedTree(D=5,D=6)", "depth is given twice"),
    ("FixedTree(dept=5)", "no parameter 'dept'; its parameters: depth, branch, threshold"),
    ("Nope(k=1)", "unknown method 'Nope'; known: AR, AdaptiveTree, Autoregressive"),
    ("__import__('os').system('true')", "is not a method"),
    ("Linear(k=len([1]))", "unknown method 'len'"),
    ("Linear(K=range(1, 1000000001))", f"1,000,000,000 methods; at most {MAX_METHODS}"),
    ("Linear(k=range(1, 10**9))", "range"),
    ("FixedTree(depth=range(1, 40), branch=range(1, 40))", f"1,521 methods; at most {MAX_METHODS}"),
    ("Linear(k=0)", "k must"),
    ("Linear(k=", "not a method spec"),
    ("Linear(**{'k': 3})", r"\*\* arguments"),
    ("Linear(1, 2, 3, 4)", "at most 3 positional"),
    ("", "non-empty string"),
])
def test_bad_specs_are_refused_with_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_methods(spec)


@pytest.mark.parametrize("old, method", [
    ("Linear(K=5,draft_bits=4)", Linear(5, draft_bits=4)),
    ("FixedTree(D=5,B=2,tau=0.03,N=128)", FixedTree()),
    ("DynaTree(phase=3, draft_bits=4)", AdaptiveTree(draft_bits=4)),  # the class that was split
    ("HardwareAware(max_depth=8,max_branch=3,max_nodes=64,shapes='fixed',draft_bits=4)", PlannedTree(draft_bits=4)),
    ("TopNTree(N=32,D=8,k=8)", TopNTree()),
    ("Streaming(Linear(K=6),cache=64,sinks=4)", Streaming(Linear(6), cache_size=64)),
    ("Streaming(AR,cache=64,sinks=4)", Streaming(Autoregressive(), cache_size=64)),
    ("HFPromptLookup(K=10,n=2)", HFPromptLookup()),
    ("PromptLookup(n=3,K=8,b=2)", PromptLookup(branches=2)),
    ("HFAssisted(K=5)", HFAssisted(5)),
    ("TopNTree(nodes=16)", TopNTree(max_nodes=16)),
])
def test_old_label_spellings_still_read_with_a_warning(old, method):
    with pytest.warns(DeprecationWarning, match="old spelling"):
        assert parse_method(old) == method


STORED = sorted(glob.glob("data/results/*.csv"))


@pytest.mark.parametrize("path", STORED)
def test_stored_rows_rebuild_and_key_as_the_method_constructed_from_them(path):
    """Nothing stored is measured twice: every stored row's key is the key of the method rebuilt from that row."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # stored data never raises deprecation warnings
        table = read_results(path)
    if "method" not in table.columns:
        return
    rebuilt = row_methods(table)  # raises if a row cannot be rebuilt
    assert [describe(m) for m in rebuilt] == list(table["method"])
    if set(KEY) <= set(table.columns):
        keys = stored_keys(table)
        for m, row in zip(rebuilt, table.itertuples()):
            ident = {"pair": row.pair, "dtype": row.dtype, "device": row.device}
            assert config_key(m, row.prompt_id, row.max_new_tokens, ident) in keys


def test_rows_stored_under_old_spellings_key_as_new_rows(tmp_path):
    """A row written before draft_vocab existed, with renamed parameters, an untyped nested method, a former class's
    label (its type and parameters stored beside it) or an old label alone matches the same method written today."""
    old = pd.DataFrame([
        {"method": "Streaming(Linear(K=6),cache=64,sinks=4)", "method_type": "Streaming",
         "method_params": '{"cache_size": 64, "method": {"draft_bits": null, "k": 6}, "sink_tokens": 4, '
                          '"slack": null}'},
        {"method": "TopNTree(N=32,D=8,k=8)", "method_type": "TopNTree",
         "method_params": '{"draft_bits": null, "max_depth": 8, "nodes": 32, "topk": 8}'},
        {"method": "Streaming(AR,cache=64,sinks=4)", "method_type": "Streaming",
         "method_params": '{"cache_size": 64, "method": {}, "sink_tokens": 4, "slack": null}'},
        {"method": "DynaTree-P4(D<=32,B=1/2/3,conf=0.9/0.4,draft_bits=4)", "method_type": "DynaTree",
         "method_params": '{"base_depth": 5, "default_branch": 2, "draft_bits": 4, "draft_vocab": null, '
                          '"extend_threshold": 0.95, "high_conf": 0.9, "learning_rate": 0.01, "low_conf": 0.4, '
                          '"max_branch": 3, "max_depth": 32, "max_nodes": 128, "min_branch": 1, "node_budget": true, '
                          '"phase": 4, "pruning": true, "stop_threshold": 0.1, "target_acceptance": 0.85, '
                          '"threshold": 0.03, "window": 10}'},  # as data/results/speed.csv stores it
        {"method": "Linear(K=5,draft_bits=4)", "method_type": None, "method_params": None},
    ]).assign(prompt_id="p", max_new_tokens=8, pair="a/b", dtype="bfloat16", device="cpu", wall_s=1.0)
    old.to_csv(tmp_path / "x.csv", index=False)
    table = read_results(tmp_path / "x.csv")
    new = [Streaming(Linear(6), cache_size=64), TopNTree(), Streaming(Autoregressive(), cache_size=64),
           DynaTree(draft_bits=4), Linear(5, draft_bits=4)]
    assert list(table["method"]) == [label(m) for m in new]
    ident = {"pair": "a/b", "dtype": "bfloat16", "device": "cpu"}
    assert stored_keys(table) == {config_key(m, "p", 8, ident) for m in new}


def test_display_names_are_readable_and_unique_in_a_table():
    assert display_name(DynaTree(draft_bits=4)) == "DynaTree · int4 draft"
    assert display_name(DynaTree()) == "DynaTree"
    assert display_name(Linear(5, draft_bits=4)) == "Chain of 5 · int4 draft"
    assert display_name(HFAssisted(draft_bits=4)) == "transformers assisted · int4 draft"
    assert display_name(Autoregressive()) == "Plain decoding"
    assert display_name(Streaming(Linear(6), cache_size=64)) == "Chain of 6 · 64-token window"
    shown = display_names([DynaTree(draft_bits=4), DynaTree(max_depth=8, draft_bits=4), Linear(5), Linear(6)])
    assert shown == ["DynaTree · int4 draft", "DynaTree · int4 draft (max_depth=8)", "Chain of 5", "Chain of 6"]
    assert display_names([AdaptiveTree(phase=p) for p in (1, 2, 3)]) == [
        "Adaptive tree (phase=1)", "Adaptive tree (phase=2)", "Adaptive tree (phase=3)"]
    # a parameter is shown where it is not the default, and on every member where two non-defaults are swept
    sweep = [FixedTree(d, b) for d in (4, 5) for b in (2, 3)]
    assert display_names(sweep) == ["Fixed tree (depth=4)", "Fixed tree (depth=4, branch=3)", "Fixed tree",
                                    "Fixed tree (branch=3)"]
    assert display_names([FixedTree(d) for d in (3, 5, 8)]) == [
        "Fixed tree (depth=3)", "Fixed tree (depth=5)", "Fixed tree (depth=8)"]


def test_a_class_without_an_entry_is_shown_by_its_class_name():
    @dataclasses.dataclass(frozen=True)
    class Newcomer:
        depth: int = 3
        draft_bits: int | None = None
        needs_draft = True

    assert display_name(Newcomer(draft_bits=8)) == "Newcomer · int8 draft"
    assert describe(Newcomer(depth=4)) == "Newcomer(depth=4)"


def test_cli_refuses_a_bad_method_before_it_loads_the_models(monkeypatch, capsys):
    from dynatree_lib import cli

    def no_models(*args, **kwargs):
        raise AssertionError("the models were loaded before --method was read")

    monkeypatch.setattr("dynatree_lib.models.pair.load_pair", no_models)
    for spec, message in [("FixedTree(depth=5, depth=6)", "depth is given twice"),
                          ("Linear(k=range(1, 1000000001))", "at most 1000")]:
        with pytest.raises(SystemExit):
            cli.main(["generate", "x", "--method", spec])
        assert message in capsys.readouterr().err


def test_resuming_a_stored_file_written_under_old_labels_measures_nothing(tmp_path, monkeypatch):
    """speed_bf16.csv was written under the old labels (DynaTree-P4(D<=32,...)): asking run_benchmark for the same
    configurations today finds every one stored, measures none and writes nothing. Its DynaTree rows predate
    staging and are DynaTree(staged=False) today."""
    import shutil

    from dynatree_lib.bench import harness, run_benchmark

    shutil.copy("data/results/speed_bf16.csv", tmp_path / "speed_bf16.csv")
    stored = read_results(tmp_path / "speed_bf16.csv")
    row = stored.iloc[0]
    ident = {"pair": row["pair"], "dtype": row["dtype"], "device": row["device"]}

    def measured(*args, **kwargs):
        raise AssertionError("a stored configuration was measured again")

    monkeypatch.setattr(harness, "pair_info", lambda pair: ident)
    monkeypatch.setattr(harness, "encode", lambda pair, prompt: prompt)
    monkeypatch.setattr(harness, "check_inputs", lambda *args: None)
    monkeypatch.setattr(harness, "provenance", lambda *args: {"date_utc": "now"})
    monkeypatch.setattr(harness._Bench, "measure", measured)
    before = (tmp_path / "speed_bf16.csv").read_bytes()
    prompts = {pid: [1, 2, 3] for pid in stored["prompt_id"].unique()}
    pair = type("Pair", (), {"device": __import__("torch").device("cpu")})()  # never runs: nothing is measured
    df = run_benchmark(pair, [DynaTree(staged=False), HFAssisted()], prompts, 512, out=tmp_path,
                       experiment="speed_bf16", progress=False)
    assert len(df) == len(stored) and set(df["method"]) == {"AR", "DynaTree(staged=False)", "HFAssisted"}
    assert (tmp_path / "speed_bf16.csv").read_bytes() == before
