"""book.page: how a chapter shows a figure, in the book and in a live JupyterLab session."""
import IPython.display
import myst_nb

from dynatree_lib.book import page


def test_figure_is_glued_and_shows_itself_only_in_a_live_session(monkeypatch):
    glued, shown = [], []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: glued.append((name, display)))
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj.data))
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    page.figure(object(), "fig-a")  # the book (papermill): the {glue:figure} block shows it
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/u/01_tree_structure.ipynb")
    page.figure(object(), "fig-b")  # JupyterLab: no block is rendered there, the cell shows it
    assert glued == [("fig-a", False), ("fig-b", True)] and not shown
    page.figure(object(), "fig-c", "A caption.")
    assert shown == ["```{glue:figure} fig-c\n:name: fig-c\n\nA caption.\n```"]
