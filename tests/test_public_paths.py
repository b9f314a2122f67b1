"""Stored rows and published pages name files the same way on every machine, never by a machine's absolute path."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dynatree_lib.models.provenance import provenance, public_path, row_provenance, scrub_paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path, public", [
    ("/root/.cache/dynatree/models/qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-1.5b-instruct"),
    ("/tmp/bench/data/results", "data/results"),  # a worktree elsewhere names the same folder
    ("/work/main/benchmarks/goal.py", "benchmarks/goal.py"),
    ("EleutherAI/pythia-2.8b", "EleutherAI/pythia-2.8b"),  # a hub id is already public
    ("data/results", "data/results"),
])
def test_public_path(path, public):
    assert public_path(path) == public


def test_scrub_keeps_labels_prompt_ids_and_units():
    text = "DynaTree-P3(D=5..8,B=1/2/3,conf=0.9/0.4) HumanEval/10 tok/s ~/.cache/x/y"
    assert scrub_paths(text) == text
    assert scrub_paths('{"out": "/tmp/run/data/results"} --out=/a/b/c.csv') == '{"out": "data/results"} --out=c.csv'


def test_rows_written_now_hold_no_machine_path(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/somewhere/checkout/benchmarks/goal.py", "--out", "/somewhere/checkout/data/x"])
    info = provenance(params={"out": "/home/me/dynatree/data/results", "note": "B=1/2/3"})
    row = row_provenance(info)
    assert info["argv"] == "benchmarks/goal.py --out data/x"
    assert json.loads(row["params"]) == {"out": "data/results", "note": "B=1/2/3"}


def test_stored_results_hold_no_machine_path():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "scrub_paths.py"), "--check"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_checkout_under_a_folder_named_like_a_top_folder(monkeypatch):
    # /srv/data/dynatree/data/results: the top-folder rule alone would publish "data/dynatree/data/results/..."
    from dynatree_lib.models import provenance as prov
    monkeypatch.setattr(prov, "REPO", Path("/srv/data/dynatree"))
    assert public_path("/srv/data/dynatree/data/results/goal.csv") == "data/results/goal.csv"
    assert public_path("/tmp/bench/data/results/goal.csv") == "data/results/goal.csv"
