"""The book's notebooks: structure checks (fast, no model: one parameters cell, outputs stripped, at most
MAX_CODE_LINES lines of code and no functions) and a smoke execution of each with papermill.

Every numbered notebook (notebooks/[0-9][0-9]_*.ipynb) is picked up automatically. The smoke run passes
`smoke=True`, as scripts/build_book.sh does in its fast mode, and fails when any cell raises; it loads the embedded
pair, hence the markers. NOTEBOOK_TEST="01 02" restricts the smoke runs to notebooks whose names start so.
"""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import nbformat
import pytest

from nbchecks import KERNEL

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
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


# A chapter holds narrative, parameters and library calls; anything longer belongs in dynatree_lib/book, tested there.
MAX_CODE_LINES = 120


def code_lines(nb) -> int:
    """Non-blank lines of all code cells of a notebook."""
    return sum(1 for cell in nb.cells if cell.cell_type == "code" for line in cell.source.splitlines() if line.strip())


def test_notebooks_hold_calls_not_code():
    counts = {p.stem: code_lines(nbformat.read(p, as_version=4)) for p in NOTEBOOKS}
    over = {name: n for name, n in counts.items() if n > MAX_CODE_LINES}
    assert not over, (f"notebooks over {MAX_CODE_LINES} non-blank code lines (move logic into dynatree_lib/book): "
                      + ", ".join(f"{name} ({n})" for name, n in over.items()))


def test_notebooks_define_no_functions():
    """Functions and classes live in the library, where they are tested, not in a chapter."""
    found = [f"{path.stem}: {node.name}" for path in NOTEBOOKS
             for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"
             for node in ast.walk(ast.parse(cell.source))
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert not found, "functions or classes defined in notebooks: " + ", ".join(found)


# A number typed as prose: 1.79x, +31%, 0.32 x (not a format spec such as {:.0%}).
TYPED_NUMBER = re.compile(r"(?<![\w.{:])([+-]?\d+(?:\.\d+)?)\s?(x|×|%)(?!\w)")


def _research_numbers() -> set[float]:
    """Every number in dynatree_lib.book.research (tables, dicts, tuples), rounded."""
    import numbers

    import pandas as pd

    from dynatree_lib.book import research

    found: set[float] = set()

    def walk(value):
        if isinstance(value, pd.DataFrame):
            for column in value.columns:
                for item in value[column]:
                    walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, numbers.Number) and not isinstance(value, bool) and value == value:
            found.add(round(abs(float(value)), 6))

    for name in dir(research):
        if name.isupper():
            walk(getattr(research, name))
    return found


def _prose(cell) -> list[str]:
    """What a reader reads as text: a markdown cell, or the string constants of a code cell."""
    if cell.cell_type == "markdown":
        return [cell.source]
    return [node.value for node in ast.walk(ast.parse(cell.source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_research_numbers_are_computed_not_typed():
    """The research's reference numbers (dynatree_lib.book.research) reach the prose through glue
    (`page.glue_numbers({"best": research.PARAM_BEST["speedup"]})` in code, {glue:text}`best:.2f`x in Markdown), never
    typed: a typed copy goes stale."""
    numbers = _research_numbers()
    typed = []
    for path in NOTEBOOKS:
        for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
            for text in _prose(cell):
                for m in TYPED_NUMBER.finditer(text):
                    value = float(m.group(1)) / (100 if m.group(2) == "%" else 1)
                    if round(abs(value), 6) in numbers:
                        typed.append(f"{path.stem} cell {index}: {m.group(0)!r}")
    assert not typed, "research numbers typed into the prose: " + ", ".join(typed)


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
