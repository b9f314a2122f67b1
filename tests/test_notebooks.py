"""The book's notebooks: structure checks (fast, no model) and a smoke execution of each with papermill.

Every numbered notebook (notebooks/[0-9][0-9]_*.ipynb) is picked up automatically. The smoke run passes
`smoke=True`, as scripts/build_book.sh does in its fast mode, and fails when any cell raises; it loads the embedded
pair, hence the markers. NOTEBOOK_TEST="01 02" restricts the smoke runs to notebooks whose names start so.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
KERNEL = "dynatree"
# Every notebook's parameters cell defines these (papermill overrides them; the book's scripts rely on them).
SHARED_PARAMETERS = {"target", "draft", "device", "dtype", "run_experiments", "smoke"}


def _ids(paths):
    return [p.stem for p in paths]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_structure(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "first cell must be a '# Title'"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assigned = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert SHARED_PARAMETERS <= assigned, f"parameters cell lacks {sorted(SHARED_PARAMETERS - assigned)}"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "commit notebooks with outputs stripped"
            ast.parse(cell.source)  # a syntax error would only show up at execution otherwise
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL


@pytest.fixture(scope="module")
def kernel():
    from jupyter_client.kernelspec import find_kernel_specs

    if KERNEL not in find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL,
                        "--display-name", "Python (dynatree)"], check=True, capture_output=True)
    return KERNEL


def _selected(paths):
    wanted = os.environ.get("NOTEBOOK_TEST", "").split()
    return [p for p in paths if not wanted or any(p.name.startswith(w) for w in wanted)]


@pytest.mark.embedded
@pytest.mark.slow
@pytest.mark.parametrize("path", _selected(NOTEBOOKS), ids=_ids(_selected(NOTEBOOKS)))
def test_notebook_runs_in_smoke_mode(path: Path, kernel, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("PLOTLY_RENDERER", "notebook")  # as the book build renders figures
    out = tmp_path / path.name
    # Raises PapermillExecutionError (naming the cell and the exception) when any cell fails.
    papermill.execute_notebook(str(path), str(out), parameters={"smoke": True}, kernel_name=kernel,
                               cwd=str(ROOT / "notebooks"), progress_bar=False)
    executed = nbformat.read(out, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
