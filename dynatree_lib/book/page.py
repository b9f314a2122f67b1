"""What a chapter shows, in the book's one form: numbered, captioned tables and figures, readable numbers.

    table(df, "tab-speed", "Caption ...")   Markdown for a cell to display: a MyST {table} (numbered, captioned,
                                            referenced from the text as {numref}`tab-speed`)
    figure(fig, "fig-speed")                glues a plotly figure for a {glue:figure} block that numbers it
    figure(fig, "fig-x", "Caption ...")     the same, with the block displayed as the cell's output
    glue_values({"name": value, ...})       glues each value for a {glue:text} role in the chapter's prose
    mib(bytes), times(x), share(x)          how the book writes memory, speedups and shares

Chapters are executed by papermill and rendered by Jupyter Book (MyST-NB): a cell's Markdown output is parsed as
MyST (nb_render_markdown_format in _config.yml), so the table directive in `table`'s output is numbered like one
written in a page.
"""
from __future__ import annotations

import os

import pandas as pd


def times(x: float) -> str:
    """A speedup: '2.22x' ('' when missing)."""
    return "" if pd.isna(x) else f"{x:.2f}x"


def share(x: float) -> str:
    return "" if pd.isna(x) else f"{x:.0%}"


def mib(n: float) -> str:
    """Bytes as MiB or GiB, e.g. '6.3 GiB'."""
    if pd.isna(n):
        return ""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _missing(value) -> bool:
    return isinstance(value, float) and pd.isna(value)


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.3g}"
    return str(value).replace("|", "\\|")


def table(df: pd.DataFrame, name: str, caption: str, formats: dict | None = None) -> str:
    """`df` as a numbered, captioned MyST table (Markdown). `formats` maps a column to a function that writes its
    values (e.g. {"Speedup": page.times}); other floats get three significant digits; a missing value is blank."""
    if df.empty:
        raise ValueError(f"table {name!r} has no rows")
    cells = formatted(df, formats)
    lines = [f":::{{table}} {caption}", f":name: {name}", "",
             "| " + " | ".join(map(str, cells.columns)) + " |", "|" + "---|" * len(cells.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines + [":::"])


def formatted(df: pd.DataFrame, formats: dict | None = None) -> pd.DataFrame:
    """`df` as the strings a table shows (see `table`'s `formats`)."""
    formats = formats or {}
    return pd.DataFrame({c: ["" if _missing(v) else formats[c](v) if c in formats else _cell(v) for v in df[c]]
                         for c in df.columns})


def glue_values(values: dict) -> None:
    """Glue every value under its name for the {glue:text} roles of the chapter's prose; nothing is displayed here."""
    from myst_nb import glue

    for name, value in values.items():
        glue(name, value, display=False)


def live_jupyter() -> bool:
    """True inside a kernel started by a Jupyter server (JupyterLab, Notebook), which sets JPY_SESSION_NAME;
    papermill and nbclient, which execute the book, do not. Widgets need a live frontend to mean anything."""
    return bool(os.environ.get("JPY_SESSION_NAME"))


class _FigureHtml:
    """A plotly figure as the HTML the book embeds (its div and Plotly.newPlot call; plotly.js itself is served once
    per page from _static, scripts/strip_plotlyjs.py adds the reference). Glued as this object, not as the figure:
    a plotly figure displays itself through `_ipython_display_`, which leaves MyST-NB's glue an empty record."""

    def __init__(self, fig):
        self.html = fig.to_html(full_html=False, include_plotlyjs=False,
                                default_height=f"{fig.layout.height or 450}px")

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": self.html}


def figure(fig, name: str, caption: str | None = None) -> None:
    """Glue a plotly figure under `name` for a {glue:figure} block, which numbers and captions it. In the book nothing
    is displayed where the figure is computed (the block shows it); in a live JupyterLab session, where no block is
    rendered, the cell shows the figure itself. With `caption`, the block is displayed right here as the cell's
    Markdown output (for a figure that only some runs draw, whose block cannot stand in a Markdown cell)."""
    from IPython.display import Markdown, display
    from myst_nb import glue

    glue(name, _FigureHtml(fig), display=False)
    if live_jupyter():
        display(fig)
    if caption is not None:
        display(Markdown(f"```{{glue:figure}} {name}\n:name: {name}\n\n{caption}\n```"))
