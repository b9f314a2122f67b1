"""book.page: how a chapter shows a figure and glues numbers and code for its prose, in the book and in JupyterLab."""
import IPython.display
import myst_nb
import numpy as np
import plotly.graph_objects as go
import pytest

from dynatree_lib.book import page


def test_figure_glues_its_html_and_shows_itself_only_in_a_live_session(monkeypatch):
    glued, shown = [], []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: glued.append(
        (name, value._repr_mimebundle_()["text/html"], display)))
    monkeypatch.setattr(IPython.display, "display", shown.append)
    fig = go.Figure(go.Bar(x=["a"], y=[1]))
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    page.figure(fig, "fig-a")  # the book (papermill): the {glue:figure} block shows it, nothing here
    (name, html, display), = glued
    assert name == "fig-a" and not display and not shown
    assert "Plotly.newPlot" in html and "plotly.js v" not in html  # the figure, not the library
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/u/01_tree_structure.ipynb")
    page.figure(fig, "fig-b")  # JupyterLab: no block is rendered there, the cell shows the figure
    assert shown == [fig]
    page.figure(fig, "fig-c", "A caption.")
    assert shown[-1].data == "```{glue:figure} fig-c\n:name: fig-c\n\nA caption.\n```"


def test_strip_plotlyjs_gives_a_glued_figure_the_library(tmp_path):
    import importlib.util
    from pathlib import Path

    import nbformat

    script = Path(__file__).resolve().parents[1] / "scripts" / "strip_plotlyjs.py"
    spec = importlib.util.spec_from_file_location("strip_plotlyjs", script)
    strip = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(strip)
    nb = nbformat.v4.new_notebook()
    html = page._FigureHtml(go.Figure(go.Bar(x=["a"], y=[1]))).html
    nb.cells.append(nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output(
        "display_data", data={"application/papermill.record/text/html": html},
        metadata={"scrapbook": {"name": "fig-a", "mime_prefix": "application/papermill.record/"}})]))
    path = tmp_path / "c.ipynb"
    nbformat.write(nb, path)
    assert strip.strip_notebook(path, "../_static/plotly.min.js")["prepended"] == 1
    glued = nbformat.read(path, as_version=4).cells[0].outputs[0].data["application/papermill.record/text/html"]
    assert glued.startswith('<script src="../_static/plotly.min.js"></script>') or \
        glued.index("plotly.min.js") < glued.index("Plotly.newPlot")


def test_glue_numbers_glues_what_glue_text_can_format(monkeypatch):
    from IPython.core.formatters import format_display_data
    from myst_nb.core.variables import format_plain_text

    glued = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: glued.append((name, value, display)))
    page.glue_numbers({"wins": np.int64(2), "gain": np.float64(0.25), "conf": "0.9/0.4",
                       "method": page.inline_code("Linear(6)")}, "p3_")
    assert [(name, display) for name, _, display in glued] == [
        ("p3_wins", False), ("p3_gain", False), ("p3_conf", False), ("p3_method", False)]
    text = {name: format_display_data(value)[0]["text/plain"] for name, value, _ in glued}
    assert format_plain_text(text["p3_gain"], "+.0%") == "+25%" and format_plain_text(text["p3_wins"], "s") == "2"
    assert format_plain_text(text["p3_conf"], "s") == "0.9/0.4"
    with pytest.raises(ValueError):  # what {glue:text}`p3_gain:+.0%` would meet, glued as numpy's own scalar
        format_plain_text(format_display_data(np.float64(0.25))[0]["text/plain"], "+.0%")
    with pytest.raises(TypeError, match="p3_rows"):
        page.glue_numbers({"rows": [1, 2]}, "p3_")


@pytest.mark.parametrize("text", ["Linear(6)", "x = `y`", "``double``", " padded ", "'\\n    return x'"])
def test_inline_code_shows_any_text_exactly(text):
    from markdown_it import MarkdownIt

    (code,) = [t for t in MarkdownIt("commonmark").parseInline(page.inline_code(text).data)[0].children
               if t.type == "code_inline"]
    assert code.content == text


@pytest.mark.parametrize("text", ["def f():\n    return 1", "Use\n```python\nx = 1\n```\nthen ````more````"])
def test_code_block_holds_fences_of_its_own(text):
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(page.code_block(text, "python").data)
    assert [(t.type, t.info, t.content) for t in tokens] == [("fence", "python", text + "\n")]
