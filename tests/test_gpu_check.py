"""scripts/gpu_check.sh, rehearsed on the CPU (--cpu-rehearsal: a slice of the exactness tests in float32 and
float16, toy model shapes, few tree sizes), and its refusal to pretend on a machine without CUDA."""
from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE = {"date_utc", "device", "device_name", "torch", "transformers", "dtype", "git_commit"}


def _read(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_gpu_check_cpu_rehearsal(tmp_path):
    env = {**os.environ, "GPU_CHECK_OUT": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu-rehearsal"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]

    exactness = _read(tmp_path / "exactness.csv")
    assert {r["dtype"] for r in exactness} == {"float32", "float16"}
    assert exactness and all(r["outcome"] == "passed" for r in exactness), log[-4000:]
    assert PROVENANCE <= exactness[0].keys()

    costs = _read(tmp_path / "costs.csv")
    assert PROVENANCE <= costs[0].keys()
    assert all(r["device"] == "cpu" and r["shrink"] == "True" for r in costs)
    assert all(r["git_commit"] and r["date_utc"] and r["torch"] == torch.__version__ for r in costs)
    ok = [r for r in costs if r["status"] == "ok"]
    # Every shape, dense and with the library's int8 (draft_bits=8), in both dtypes, at every rehearsed size.
    assert {(r["model"], r["variant"], r["dtype"]) for r in ok} == {
        (m, v, d) for m in ("pythia-2.8b", "pythia-70m", "qwen2.5-1.5b", "qwen2.5-0.5b")
        for v in ("dense", "int8-torch") for d in ("float32", "float16")}
    assert all(float(r["forward_s"]) > 0 for r in ok)
    assert {r["nodes"] for r in ok} == {"1", "4", "16"}
    # bitsandbytes needs CUDA: recorded as skipped, never as a silent gap.
    bnb = [r for r in costs if r["variant"] == "int8-bnb"]
    assert len(bnb) == 8 and all(r["status"] == "skipped" for r in bnb)

    pair = _read(tmp_path / "gpu_costs_qwen2.5-1.5b-0.5b_float16.csv")
    assert [int(r["nodes"]) for r in pair] == [1, 4, 16]
    assert {"nodes", "verify_s", "draft_s", "draft_over_verify"} <= pair[0].keys()
    assert (tmp_path / "gpu_costs_pythia-2.8b-70m_float32_draft-int8.csv").is_file()
    assert "total" in (tmp_path / "gpu_check.log").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_check_refuses_without_cuda(tmp_path):
    env = {**os.environ, "GPU_CHECK_OUT": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and "--cpu-rehearsal" in proc.stderr
    assert not any(tmp_path.iterdir()), "nothing may be written without a GPU"
