"""The experiment registry: every plan is valid, results are found (or the error says how to make them), and every
smoke preset runs end to end on a tiny pair, resumes, and loads back."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from dynatree_lib.bench import experiments as ex
from dynatree_lib.bench import with_ar
from dynatree_lib.methods.base import Linear, label
from dynatree_lib.models.pair import ModelPair
from tiny import VOCAB, tiny_pair

ROOT = Path(__file__).resolve().parents[1]


class WordTokenizer:
    """Whitespace words hashed into the tiny vocabulary: enough tokenizer for text prompts on a tiny model."""

    pad_token_id = 0
    eos_token_id = None

    def encode(self, text, add_special_tokens=False):
        return [1 + sum(map(ord, w)) % (VOCAB - 1) for w in text.split()]

    def __call__(self, text):
        return {"input_ids": self.encode(text)}

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(f"w{i}" for i in ids)


@pytest.fixture(scope="module")
def pair():
    base = tiny_pair("qwen2", "perturbed")
    return ModelPair(base.target, base.draft, WordTokenizer(), "tiny-words")  # tiny_pair is cached: don't mutate it


@pytest.mark.parametrize("preset", ex.PRESETS)
@pytest.mark.parametrize("name", ex.names())
def test_plans_are_valid(name, preset):
    p = ex.plan(name, preset)
    labels = [label(m) for m in with_ar(p.methods)]  # raises on duplicate labels
    assert len(set(labels)) == len(labels)
    assert p.prompt_ids() and len(set(p.prompt_ids())) == len(p.prompt_ids())
    assert ex.description(name)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", ex.file_name(name, preset))
    assert ex.estimate_seconds(name, preset) > 0


def test_presets_are_ordered_by_size():
    for name in ex.EXPERIMENTS:
        smoke, session, full = (ex.estimate_seconds(name, p) for p in ex.PRESETS)
        assert smoke < session < full, name
        assert max(ex.plan(name, "smoke").lengths) <= 8, name


def test_session_budget():
    """All session experiments together stay under 50 minutes on the 2-core CPU at the measured rates; growing a
    session grid past that must be a deliberate change of this number."""
    total = sum(ex.estimate_seconds(n, "session") for n in ex.EXPERIMENTS)
    assert total < 50 * 60, f"session presets estimated at {total / 60:.1f} min"
    slower = sum(ex.estimate_seconds(n, "session", ar_tokens_per_s=2.0) for n in ex.EXPERIMENTS)
    assert slower > total  # the rates are used


def test_session_contents():
    methods = {label(m) for m in ex.plan("methods").methods}
    for needed in ("HFAssisted", "HFPromptLookup", "Linear(k=4)", "Linear(k=6)", "TopNTree", "HybridTree", "PromptLookup",
                   "AdaptiveTree(phase=1", "AdaptiveTree(phase=2", "AdaptiveTree"):
        assert any(m.startswith(needed) for m in methods), needed
    assert ex.plan("methods").lengths == (128,)
    assert ex.plan("length").lengths == (64, 128, 256)
    assert len(ex.plan("param_search", "full").methods) * len(ex.plan("param_search", "full").lengths) == 450
    assert ex.plan("quality").dtype == "float32"
    assert ex.plan("int8").variants == ("base", "int8")
    assert ex.file_name("ttft_tpot_memory") == "methods"


def test_bad_names():
    with pytest.raises(ValueError, match="unknown experiment"):
        ex.plan("nope")
    with pytest.raises(ValueError, match="preset"):
        ex.plan("methods", "huge")
    with pytest.raises(ValueError, match="methods is empty"):
        ex.Plan((), (8,))
    with pytest.raises(ValueError, match="variants"):
        ex.Plan((Linear(4),), (8,), variants=("fp4",))
    with pytest.raises(ValueError, match="distinct labels"):
        ex.Plan((Linear(4), Linear(4)), (8,))


def test_missing_results_name_the_command(tmp_path):
    with pytest.raises(ex.MissingResults, match=r"python benchmarks/run_experiments.py methods --preset session"):
        ex.load_or_run("methods", out=tmp_path)
    with pytest.raises(FileNotFoundError, match="--preset full"):  # MissingResults is a FileNotFoundError
        ex.load_experiment("param_search", "full", out=tmp_path)


def test_smoke_fallback_runs_the_smoke_preset(pair, tmp_path, monkeypatch):
    from dynatree_lib.bench import sweep

    # the note goes to a notebook's display or to stdout, depending on whether an IPython shell exists in the
    # process (another test may have started one): what it says is checked where it is made
    notes = []
    monkeypatch.setattr(sweep, "_show", notes.append)
    df = ex.load_or_run("methods", pair, smoke=True, out=tmp_path)
    assert df.attrs["smoke_fallback"] and "Note (smoke mode)" in notes[0]
    assert set(df["method"]) == {label(m) for m in with_ar(ex.plan("methods", "smoke").methods)}
    assert not list(tmp_path.iterdir())  # nothing was stored in the results folder


def test_rerun_in_smoke_mode_stays_out_of_the_book_data(pair, tmp_path):
    df = ex.load_or_run("sensitivity", pair, run=True, smoke=True, out=tmp_path)
    assert set(df["max_new_tokens"]) == set(ex.plan("sensitivity", "smoke").lengths)
    assert (tmp_path / "sensitivity-smoke.csv").exists() and not (tmp_path / "sensitivity.csv").exists()


def test_dtype_is_checked(pair):
    bf16 = ModelPair(tiny_pair("qwen2", "perturbed", torch.bfloat16).target, None, pair.tokenizer, "tiny-bf16")
    with pytest.raises(ValueError, match="needs a float32 pair"):
        ex.run_experiment("quality", bf16, "smoke", progress=False)


@pytest.mark.parametrize("name", list(ex.EXPERIMENTS))
def test_smoke_preset_runs_and_resumes(name, pair, tmp_path, monkeypatch):
    df = ex.run_experiment(name, pair, "smoke", tmp_path, progress=False)
    p = ex.plan(name, "smoke")
    planned = len(with_ar(p.methods)) * len(p.prompt_ids()) * len(p.lengths) * len(p.variants)
    assert df.attrs["missing"] == 0
    assert len(df) == planned * p.repeats
    assert set(df["prompt_id"]) == set(p.prompt_ids())
    assert set(df["variant"]) == set(p.variants)
    assert (df["new_tokens"] == df["max_new_tokens"]).all()
    assert df["target_bytes"].notna().all()
    assert (tmp_path / f"{ex.file_name(name, 'smoke')}.csv").exists()
    if name == "quality":  # float32 and exact: every method reproduces AR token for token
        assert df["match_ar"].all()
    if name == "int8":
        sizes = df.groupby("variant")["target_bytes"].first()
        assert sizes["int8"] < sizes["base"]
        assert pair.target.model.layers[0].mlp.up_proj.__class__.__name__ == "Linear"  # the pair is untouched
    if name == "prompt_length":
        assert sorted(df["prompt_tokens"].unique()) == sorted(p.prompt_tokens)
    if name == "streaming":
        assert (df.loc[df["method"].str.startswith("Streaming"), "kv_compressions"] > 0).all()

    # Resume: a second run measures nothing new.
    import dynatree_lib.bench.sweep
    import dynatree_lib.bench as bench

    def fail(*args, **kwargs):
        raise AssertionError("a stored configuration was run again")

    monkeypatch.setattr(bench.harness, "generate", fail)
    monkeypatch.setattr(bench.sweep, "generate", fail)
    monkeypatch.setattr(bench.sweep, "variant_pair", fail)  # nothing pending: no variant (no int8 copy) is even built
    again = ex.run_experiment(name, pair, "smoke", tmp_path, progress=False)
    assert len(again) == len(df)
    loaded = ex.load_or_run(name, run=False, preset="smoke", out=tmp_path)
    pd.testing.assert_frame_equal(loaded, again)


def test_load_filters_to_the_plan(pair, tmp_path):
    ex.run_experiment("sensitivity", pair, "smoke", tmp_path, progress=False)
    df = ex.load_experiment("sensitivity", "smoke", tmp_path)
    # a stray row from another configuration is stored but not loaded
    path = tmp_path / "sensitivity-smoke.csv"
    raw = pd.read_csv(path, dtype={"prompt_id": str})
    stray = raw.iloc[[0]].assign(method="Linear(k=99)", method_type="Linear", method_params='{"k": 99}')
    pd.concat([raw, stray]).to_csv(path, index=False)
    assert len(ex.load_experiment("sensitivity", "smoke", tmp_path)) == len(df)
    with pytest.raises(ex.MissingResults, match="dtype"):
        ex.load_experiment("sensitivity", "smoke", tmp_path, dtype="float16")


def test_cli_list(capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run_experiments
    finally:
        sys.path.pop(0)
    run_experiments.main(["--list"])
    out = capsys.readouterr().out
    assert all(n in out for n in ex.names()) and "total" in out
    with pytest.raises(SystemExit):
        run_experiments.main([])
