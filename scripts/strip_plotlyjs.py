"""Removes the plotly.js library that plotly's "notebook" renderer inlines into executed notebooks (4.8 MB per
chapter), so that the book serves ONE copy of it from `_static/plotly.min.js`; scripts/build_book.sh runs this on
the staged copies of the executed notebooks (never on notebooks/*.ipynb) and copies plotly.min.js into _static.

    python scripts/strip_plotlyjs.py --static-rel ../_static/plotly.min.js NOTEBOOK.ipynb...

In every text/html output (a glued one included):
- an inlined plotly.js bundle (<script>/** plotly.js vX ...</script>) is replaced by
  <script src="STATIC_REL"></script> the first time in a notebook and dropped after that;
- external <script src="http(s)://..."> tags (the renderer adds MathJax from a CDN to each figure) are dropped:
  the book is offline and vendors its own MathJax;
- a figure (Plotly.newPlot) met before any reference to plotly.js gets the reference prepended, so a figure
  never runs before the library is loaded.
The figure <div> and its Plotly.newPlot call are kept as they are. Prints what it changed, per notebook.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

from dynatree_lib.models.provenance import atomic_path

SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S | re.I)
SRC = re.compile(r"""\bsrc\s*=\s*["']([^"']*)["']""", re.I)
# The bundle's banner ("/**\n* plotly.js v4.1.1"); the size check guards against a short script that merely
# mentions plotly.js.
BUNDLE = re.compile(r"^\s*/\*\*?\s*\*?\s*plotly\.js v\d", re.S)
BUNDLE_MIN_CHARS = 100_000


def is_plotly_bundle(body: str) -> bool:
    return len(body) >= BUNDLE_MIN_CHARS and bool(BUNDLE.match(body))


def strip_html(html: str, reference: str, state: dict) -> str:
    """One text/html output; `state["referenced"]` says whether plotly.js is already loaded on the page."""
    out, pos = [], 0
    for m in SCRIPT.finditer(html):
        attrs, body = m.group(1), m.group(2)
        src = SRC.search(attrs)
        replacement = None
        if src is None and is_plotly_bundle(body):
            replacement = "" if state["referenced"] else reference
            state["referenced"] = True
            state["bundles"] += 1
        elif src is not None and re.match(r"(https?:)?//", src.group(1)):
            replacement = ""
            state["external"].append(src.group(1))
        elif src is not None and src.group(1).endswith("plotly.min.js"):
            state["referenced"] = True
        elif src is None and "Plotly.newPlot" in body and not state["referenced"]:
            replacement = reference + m.group(0)
            state["referenced"] = True
            state["prepended"] += 1
        if replacement is not None:
            out.append(html[pos:m.start()])
            out.append(replacement)
            pos = m.end()
    out.append(html[pos:])
    return "".join(out)


def strip_notebook(path: Path, static_rel: str) -> dict:
    nb = nbformat.read(path, as_version=4)
    reference = f'<script src="{static_rel}"></script>'
    state = {"referenced": False, "bundles": 0, "prepended": 0, "external": []}
    before = path.stat().st_size
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            # a cell's own HTML, and HTML that MyST-NB's glue recorded for a {glue:figure} block
            for key in [k for k in data if k == "text/html" or k.endswith("/text/html")]:
                html = data[key]
                text = "".join(html) if isinstance(html, list) else html
                new = strip_html(text, reference, state)
                if new != text:
                    data[key] = new
    with atomic_path(path) as tmp:
        nbformat.write(nb, tmp)
    state["bytes_before"], state["bytes_after"] = before, path.stat().st_size
    return state


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--static-rel", default="../_static/plotly.min.js",
                        help="URL of plotly.min.js relative to the notebook's HTML page")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        s = strip_notebook(path, args.static_rel)
        print(f"strip_plotlyjs: {path.name}: {s['bytes_before'] / 1e6:.2f} MB -> {s['bytes_after'] / 1e6:.2f} MB "
              f"({s['bundles']} inlined plotly.js removed, {len(s['external'])} external scripts dropped"
              f"{', reference added before the first figure' if s['prepended'] else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
