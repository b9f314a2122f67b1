"""Checks of executed notebooks and of the built book's HTML, shared by test_setup_logs.py and test_book.py, and the
name of the notebooks' Jupyter kernel (the `kernel` fixture in conftest.py installs it)."""
from __future__ import annotations

import html as html_lib
import re
from pathlib import Path

import nbformat

# The kernel every notebook names in its metadata (test_notebooks.py checks it; papermill runs it).
KERNEL = "dynatree"

# Setup noise that must never reach a chapter: pip's log, download progress, terminal escape codes, tqdm bars.
SETUP_LOG_PATTERNS = {
    "Downloading": re.compile(r"Downloading"),
    "pip": re.compile(r"\bpip\b"),
    "Looking in indexes": re.compile(r"Looking in (indexes|links)"),
    "Successfully downloaded": re.compile(r"Successfully (downloaded|installed)"),
    "ANSI escape": re.compile(r"\x1b\["),
    "progress bar": re.compile(r"\d+%\|[^|\n]*\|"),
    "dynatree: downloading": re.compile(r"dynatree: downloading"),
}


def _output_texts(output) -> list[str]:
    """What a reader sees as plain text of one output: streams, and text/plain of results and displays. (HTML and
    Markdown outputs are authored by the notebook and may legitimately mention pip.)"""
    if output.get("output_type") == "stream":
        text = output.get("text", "")
        return ["".join(text) if isinstance(text, list) else text]
    if output.get("output_type") in ("display_data", "execute_result"):
        text = output.get("data", {}).get("text/plain")
        if text is not None:
            return ["".join(text) if isinstance(text, list) else text]
    return []


def setup_log_hits(notebook) -> list[str]:
    """Every setup-log match in the outputs of an executed notebook (a path or a NotebookNode), as
    'cell N: <pattern>: <context>' strings; empty when the outputs are clean."""
    nb = nbformat.read(notebook, as_version=4) if isinstance(notebook, (str, Path)) else notebook
    hits = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            for text in _output_texts(output):
                for name, pattern in SETUP_LOG_PATTERNS.items():
                    m = pattern.search(text)
                    if m:
                        context = text[max(0, m.start() - 40):m.end() + 40].replace("\n", " ")
                        hits.append(f"cell {index}: {name}: {context!r}")
    return hits


_INPUT_PRE = re.compile(r'<div class="cell_input[^"]*">.*?<pre[^>]*>(.*?)</pre>', re.S)
_TAG = re.compile(r"<[^>]+>")


def input_code_lines(page_html: str) -> list[str]:
    """The code lines of every input cell of a built notebook page, as the reader sees them (highlighting removed)."""
    lines = []
    for m in _INPUT_PRE.finditer(page_html):
        lines += html_lib.unescape(_TAG.sub("", m.group(1))).splitlines()
    return lines


def long_code_lines(page_html: str, width: int = 100) -> list[str]:
    return [line for line in input_code_lines(page_html) if len(line.rstrip()) > width]
