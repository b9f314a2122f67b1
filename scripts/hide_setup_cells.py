"""Tags the setup cells of staged notebooks "remove-cell", so that a chapter's page opens with its narrative:

    python scripts/hide_setup_cells.py NOTEBOOK.ipynb...

A setup cell is papermill's parameters cell (tag "parameters"), the cell papermill injects ("injected-parameters"),
or a cell tagged "setup" in the notebook (its imports). The cells still run and stay in the downloadable notebook;
scripts/build_book.sh runs this on the staged copies only, never on notebooks/*.ipynb.
"""
from __future__ import annotations

import sys

import nbformat

SETUP_TAGS = {"parameters", "injected-parameters", "setup"}


def hide(path: str) -> int:
    nb = nbformat.read(path, as_version=4)
    hidden = 0
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if SETUP_TAGS & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
            hidden += 1
    nbformat.write(nb, path)
    return hidden


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"hide_setup_cells: {name}: {hide(name)} setup cell(s) removed from the page")
