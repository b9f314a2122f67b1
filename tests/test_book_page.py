"""book.page: how a chapter shows a figure, in the book and in a live JupyterLab session."""
import IPython.display
import myst_nb
import plotly.graph_objects as go

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


def test_glue_all_glues_every_number_undisplayed(monkeypatch):
    glued = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: glued.append((name, value, display)))
    page.glue_all({"a": 1.5, "b": "code"})
    assert glued == [("a", 1.5, False), ("b", "code", False)]
