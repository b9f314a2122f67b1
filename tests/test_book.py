"""End-to-end checks of the book: strict build of a notebook subset in smoke mode, then a headless-Chromium look
at built pages to prove that plotly figures and math render in the static HTML offline (plotly.js is served once
from _static/plotly.min.js, MathJax is vendored under book/_static), and checks of what a reader downloads:
page and site sizes, self-contained links, code lines that fit the column, no setup log in any chapter.

The subset is the first two numbered notebooks that use plotly, or BOOK_TEST_NOTEBOOKS="01 02" to choose.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from html import unescape
from pathlib import Path
from urllib.parse import unquote

import pytest

from nbchecks import long_code_lines, setup_log_hits

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # Virtual time lets the page's scripts (plotly) finish before the DOM is dumped or the screenshot taken.
    "--virtual-time-budget=10000",
]
PAGE_LIMIT = 600_000  # bytes per page: a chapter must not cost a reader more than this to open
SITE_LIMIT = 20_000_000  # bytes for the whole built site
CODE_WIDTH = 100  # characters of a code line that the text column shows without cutting it off


def _default_subset() -> str:
    numbered = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not numbered:
        pytest.fail("no notebooks/[0-9][0-9]_*.ipynb to build")
    # a chapter's plotly figures are shown by {glue:figure} blocks (book.page.figure), not named in its code
    with_plotly = [nb for nb in numbered if "glue:figure" in nb.read_text(encoding="utf-8")]
    return " ".join(nb.stem for nb in (with_plotly or numbered)[:2])


def _notebook_long_lines() -> list[str]:
    """'notebook cell N: width' for every code line of the committed notebooks wider than CODE_WIDTH."""
    found = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for index, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                found += [f"{path.stem} cell {index}: {len(line)}" for line in source.splitlines()
                          if len(line.rstrip()) > CODE_WIDTH]
    return found


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    env = {k: v for k, v in os.environ.items() if k not in {"PAPERMILL_ARGS", "EXECUTE"}}
    env.update(
        NOTEBOOKS=os.environ.get("BOOK_TEST_NOTEBOOKS") or _default_subset(),
        SMOKE="1",
        SKIP_SETUP="1",  # pytest already runs inside the set-up venv
        BUILD_DIR=str(out / "build"),
        EXECUTED_DIR=str(out / "executed"),  # leave notebooks/executed/ (the full run's) alone
    )
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_book.sh")], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=3600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"build_book.sh failed (exit {proc.returncode}):\n{log[-6000:]}"
    index = Path(proc.stdout.strip().splitlines()[-1])
    assert index == out / "build" / "_build" / "html" / "index.html", log[-2000:]
    return index


def test_book_builds_strict(built_book: Path):
    # build_book.sh passes -W, so exit 0 above means no Sphinx warning; here the output itself.
    html = built_book.parent
    assert built_book.is_file()
    assert (html / "book" / "intro.html").is_file()
    assert (html / "book" / "references.html").is_file()
    assert list((html / "notebooks").glob("*.html")), "no notebook page was rendered"


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "install_chromium.sh")],
                              capture_output=True, text=True, timeout=1200)
        exe = shutil.which("chromium")
        if exe is None:
            pytest.skip(f"chromium is missing and could not be installed: {(proc.stdout + proc.stderr)[-1000:]}")
    return exe


def _run_chromium(exe: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: no state leaks between runs
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=180)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_plotly_figure_renders_in_chromium(built_book: Path, chromium: str):
    pages = sorted((built_book.parent / "notebooks").glob("*.html"))
    with_figures = [p for p in pages if "plotly-graph-div" in p.read_text(encoding="utf-8")]
    assert len(with_figures) >= 2, f"need plotly figures on two chapters, found {[p.name for p in with_figures]}"

    ARTIFACTS.mkdir(exist_ok=True)
    for page in with_figures[:2]:
        dom = _run_chromium(chromium, "--dump-dom", page.as_uri())
        assert dom.returncode == 0, dom.stderr[-2000:]
        # plotly.js draws into these only when it actually ran; the saved HTML has neither.
        assert 'class="plot-container plotly"' in dom.stdout, f"plotly did not render in {page.name}"
        assert 'class="main-svg"' in dom.stdout

        shot = ARTIFACTS / f"book_plotly_{page.stem}.png"
        shot.unlink(missing_ok=True)
        proc = _run_chromium(chromium, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars",
                             page.as_uri())
        assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
        assert _png_size(shot) == (1280, 2000)
        # A blank page compresses to a few KB; text plus a figure is far larger.
        assert shot.stat().st_size > 30_000, f"screenshot of {page.name} is suspiciously small: {shot.stat().st_size} B"


def test_math_renders_offline(built_book: Path, chromium: str):
    # MathJax is vendored under book/_static (no CDN): it typesets into <mjx-container> elements when it ran.
    dom = _run_chromium(chromium, "--dump-dom", (built_book.parent / "book" / "method.html").as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<mjx-container" in dom.stdout, "MathJax did not typeset book/method.html"


def test_plotly_js_once_per_site(built_book: Path):
    html = built_book.parent
    copies = sorted(str(p.relative_to(html)) for p in html.rglob("plotly*.js"))
    assert copies == ["_static/plotly.min.js"], copies
    # The download button's notebooks are the committed ones: no outputs, so no second copy of any figure.
    for source in (html / "_sources" / "notebooks").glob("*.ipynb"):
        cells = json.loads(source.read_text(encoding="utf-8"))["cells"]
        assert not any(c.get("outputs") for c in cells), f"{source.name} in _sources carries outputs"
    pages = sorted((html / "notebooks").glob("*.html"))
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"\*\s*plotly\.js v\d", text), f"{page.name} still inlines plotly.js"
        if "plotly-graph-div" in text:
            assert '<script src="../_static/plotly.min.js"></script>' in text, f"{page.name} never loads plotly.js"


def test_pages_and_site_are_light(built_book: Path):
    html = built_book.parent
    sizes = {str(p.relative_to(html)): p.stat().st_size for p in html.rglob("*.html")}
    heavy = {page: size for page, size in sizes.items() if size > PAGE_LIMIT}
    assert not heavy, f"pages over {PAGE_LIMIT} bytes: {heavy}"
    total = sum(p.stat().st_size for p in html.rglob("*") if p.is_file())
    assert total <= SITE_LIMIT, f"the site is {total} bytes (limit {SITE_LIMIT})"


_RESOURCE = re.compile(r"<(script|link|img|iframe|source)\b[^>]*?\b(src|href)=[\"']([^\"']+)[\"']", re.I)
_LINK = re.compile(r"\b(?:href|src)=[\"']([^\"']+)[\"']", re.I)


def test_site_is_self_contained(built_book: Path):
    """A static host can serve the folder as is: relative links only, each to a file that is there, and nothing
    loaded from another server."""
    html = built_book.parent
    problems = []
    for page in html.rglob("*.html"):
        if page.parent.name == "_static":
            continue  # the theme's Jinja macro files, not pages
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(html)
        for url in _LINK.findall(text):
            if url.startswith(("file:", "/")) and not url.startswith("//"):
                problems.append(f"{name}: absolute link {url}")
            elif not re.match(r"([a-z][a-z0-9+.-]*:|//|#)", url, re.I):
                target = unquote(url.split("#")[0].split("?")[0])
                if target and not (page.parent / target).exists():
                    problems.append(f"{name}: broken link {url}")
        for tag, _, url in _RESOURCE.findall(text):
            if re.match(r"(https?:)?//", url):
                problems.append(f"{name}: <{tag}> from another server: {url}")
    assert not problems, "\n".join(problems[:30])


def test_no_local_paths_in_pages(built_book: Path):
    html = built_book.parent
    local = [str(ROOT), str(Path.home()), str(built_book.parents[3])]
    found = [f"{p.relative_to(html)}: {path}" for p in html.rglob("*.html")
             for path in local if path in p.read_text(encoding="utf-8")]
    assert not found, "\n".join(found[:30])


def test_notebook_code_lines_fit_the_column():
    """The committed notebooks themselves (fast, no build): every code line, parameters cells included."""
    found = _notebook_long_lines()
    assert not found, f"code lines over {CODE_WIDTH} characters: " + ", ".join(found[:40])


def test_code_lines_fit_the_column(built_book: Path):
    found = []
    for page in sorted((built_book.parent / "notebooks").glob("*.html")):
        found += [f"{page.stem}: {len(line)}: {line[:80]}" for line in long_code_lines(page.read_text("utf-8"),
                                                                                       CODE_WIDTH)]
    assert not found, f"code lines over {CODE_WIDTH} characters:\n" + "\n".join(found[:40])


# After layout, every code cell whose text is wider than its box (a reader would have to scroll it sideways).
_OVERFLOW_PROBE = """<script>
window.addEventListener("load", () => {
  const wide = [...document.querySelectorAll("div.cell_input pre")].filter(p => p.scrollWidth > p.clientWidth + 1)
    .map(p => p.textContent.split("\\n").reduce((a, l) => (l.length > a.length ? l : a), ""));
  document.body.setAttribute("data-overflow", JSON.stringify(wide));
});
</script>"""


def test_code_cells_fit_the_column_in_chromium(built_book: Path, chromium: str):
    """Laid out by a browser at a laptop's width (1280 px, both sidebars shown), no code cell scrolls sideways: the
    width the character test above allows really fits the column the theme gives it."""
    pages = sorted((built_book.parent / "notebooks").glob("*.html"))
    assert pages
    found = {}
    for page in pages:
        probe = page.with_name(f"_probe_{page.name}")  # beside the page: its relative links to _static still work
        probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _OVERFLOW_PROBE + "</body>"), "utf-8")
        try:
            dom = _run_chromium(chromium, "--window-size=1280,2000", "--dump-dom", probe.as_uri())
        finally:
            probe.unlink()
        assert dom.returncode == 0, dom.stderr[-2000:]
        match = re.search(r'data-overflow="([^"]*)"', dom.stdout)
        assert match, f"the overflow probe did not run on {page.name}"
        wide = json.loads(unescape(match.group(1)))
        if wide:
            found[page.stem] = [f"{len(line)}: {line[:80]}" for line in wide]
    assert not found, found


def test_executed_notebooks_show_no_setup_log(built_book: Path):
    executed = sorted((built_book.parents[3] / "executed").glob("*.ipynb"))
    assert executed, "the fixture's executed notebooks are missing"
    hits = {nb.name: setup_log_hits(nb) for nb in executed}
    assert not any(hits.values()), {name: found[:5] for name, found in hits.items() if found}


# A Markdown table that a page shows as text: a row of pipes and dashes (em dashes once typography has run on it).
_RAW_TABLE = re.compile(r"\|\s*(?::?-{3,}:?|[—–]{1,2})\s*\|")
# The project's own history: readers need results and reasons. Provenance lines ("commit abc1234, 2026-11-29") stay.
_HISTORY = re.compile(r"\b(?:issue|session)s? \d+|\b(?:before|after) (?:commit|the fix)\b|project's (?:target|goal)",
                      re.I)


def _page_text(page: Path) -> str:
    """A page's visible text: scripts, styles and tags removed."""
    html = page.read_text(encoding="utf-8")
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S | re.I)
    return unescape(re.sub(r"<[^>]+>", " ", html))


def test_raw_table_pattern_knows_a_raw_table():
    assert _RAW_TABLE.search("| method | speedup |\n|---|---|")
    assert _RAW_TABLE.search("| method | speedup | |—|—|")
    assert not _RAW_TABLE.search("tokens | per round - fast")


def test_no_page_shows_a_markdown_table_as_text(built_book: Path):
    pages = sorted(built_book.parent.rglob("*.html"))
    found = [f"{p.relative_to(built_book.parent)}: {m.group(0)}" for p in pages
             for m in [_RAW_TABLE.search(_page_text(p))] if m]
    assert not found, "tables that did not render:\n" + "\n".join(found)


def _book_sources() -> list[Path]:
    """Everything that becomes text on a page: notebooks, book pages, the library's page-writing helpers."""
    return (sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + sorted((ROOT / "book").glob("*.md"))
            + sorted((ROOT / "dynatree_lib" / "book").glob("*.py")) + [ROOT / "scripts" / "headline.py"])


def test_history_pattern_knows_history():
    for text in ("(issue 10's session 11 note)", "before commit 3c57d53", "The project's target was 3x"):
        assert _HISTORY.search(text), text
    assert not _HISTORY.search("measured at commit 5fca404 on 2026-11-29")


def test_no_development_history_in_book_sources():
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in _book_sources()
             for m in _HISTORY.finditer(p.read_text(encoding="utf-8"))]
    assert not found, "development history in the book's text:\n" + "\n".join(found)


def test_no_control_characters_in_book_sources():
    """A Python string written without r"" turns LaTeX's \\text and \\bar into a tab and a backspace: math that
    renders as "ext{node}" on the page."""
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()[:60]!r}" for p in _book_sources()
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"[\x00-\x09\x0b-\x1f]", line)]
    assert not found, "control characters in the book's text:\n" + "\n".join(found)


def test_no_development_history_in_pages(built_book: Path):
    found = [f"{p.relative_to(built_book.parent)}: {m.group(0)}" for p in sorted(built_book.parent.rglob("*.html"))
             for m in _HISTORY.finditer(_page_text(p))]
    assert not found, "development history on a page:\n" + "\n".join(found)


# After layout, the headline table's overflow (a reader would have to scroll it sideways) and its width.
_TABLE_PROBE = """<script>
window.addEventListener("load", () => {
  const t = document.getElementById("headline-table");
  const box = t && t.closest(".pst-scrollable-table-container, .table-wrapper") || (t && t.parentElement);
  document.body.setAttribute("data-table", JSON.stringify(
    t ? {scroll: box.scrollWidth, client: box.clientWidth, table: t.getBoundingClientRect().width} : null));
});
</script>"""


def test_intro_headline_table_fits_1000px(built_book: Path, chromium: str):
    """The intro's headline table shows every column at a 1,000 px window: no sideways scrolling."""
    page = built_book.parent / "book" / "intro.html"
    probe = page.with_name("_probe_intro.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _TABLE_PROBE + "</body>"), "utf-8")
    try:
        dom = _run_chromium(chromium, "--window-size=1000,2000", "--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    match = re.search(r'data-table="([^"]*)"', dom.stdout)
    assert match, "the table probe did not run on the intro"
    size = json.loads(unescape(match.group(1)))
    assert size is not None, "the intro has no table named headline-table"
    assert size["scroll"] <= size["client"] + 1, size


WORD_LIMIT = 2500  # words of paragraphs and lists a chapter may hold: what a reader in a hurry reads


def _prose_words(page: Path) -> int:
    """Words in a page's paragraphs and list items (tables, code and figures aside)."""
    html = page.read_text(encoding="utf-8")
    # Sphinx writes a table cell's text as a paragraph (<td><p>2.22x</p></td>): tables go before paragraphs are read.
    html = re.sub(r"<(script|style|table)\b.*?</\1>", " ", html, flags=re.S | re.I)
    article = re.search(r'<article class="bd-article"[^>]*>(.*?)</article>', html, re.S)
    items = re.findall(r"<(?:p|li)\b[^>]*>(.*?)</(?:p|li)>", article.group(1) if article else html, re.S)
    return len(unescape(re.sub(r"<[^>]+>", " ", " ".join(items))).split())


def test_prose_word_count_counts_paragraphs_and_lists(tmp_path):
    page = tmp_path / "p.html"
    page.write_text('<article class="bd-article"><p>one two</p><ul><li>three</li></ul><table><tr><td><p>x y</p></td>'
                    '</tr></table><script>var a = "b c";</script></article>', "utf-8")
    assert _prose_words(page) == 3


def test_chapters_are_short(built_book: Path):
    pages = sorted((built_book.parent / "notebooks").glob("*.html")) + [built_book.parent / "book" / "intro.html"]
    long = {p.stem: n for p in pages if (n := _prose_words(p)) > WORD_LIMIT}
    assert not long, f"pages over {WORD_LIMIT} words of paragraphs and lists: {long}"


# How a chapter shows a figure or a table: only through dynatree_lib.book.page (page.figure + a {glue:figure}
# block, page.table), which number and caption them. Anything else a code cell displays is Markdown (prose, notes,
# placeholders) or a widget (treeviz.explorer).
_UNNUMBERED = re.compile(r"\.show\(\)|\bdisplay\((?!Markdown\(|treeviz\.explorer\()[^)\n]*")
_FIGURE_CALL = re.compile(r'page\.figure\(\s*[^,()]+(?:\([^()]*\))?,\s*"(?P<name>fig-[\w-]+)"\s*(?P<caption>,)?')


def _unnumbered_in(cells: list[dict]) -> list[str]:
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    found = [m.group(0) for m in _UNNUMBERED.finditer(code)]
    for m in _FIGURE_CALL.finditer(code):
        name = re.escape(m.group("name"))
        if not m.group("caption") and not re.search(rf"```{{glue:figure}} {name}\n:name: {name}\n\n\S", text):
            found.append(f"{m.group('name')} has no captioned {{glue:figure}} block")
    return found


def test_unnumbered_pattern_knows_unnumbered_output():
    cell = lambda kind, text: {"cell_type": kind, "source": [text]}  # noqa: E731
    assert _unnumbered_in([cell("code", "fig.show()")])
    assert _unnumbered_in([cell("code", "display(df)")])
    assert _unnumbered_in([cell("code", 'page.figure(fig, "fig-a")')])  # no caption block anywhere
    assert not _unnumbered_in([cell("code", 'page.figure(fig, "fig-a")'),
                               cell("markdown", "```{glue:figure} fig-a\n:name: fig-a\n\nA caption.\n```")])
    assert not _unnumbered_in([cell("code", 'page.figure(make(x), "fig-b", "A caption.")')])
    assert not _unnumbered_in([cell("code", 'display(Markdown(page.table(df, "tab-a", "Caption.")))')])


def test_every_figure_and_table_is_numbered_and_captioned():
    found = {}
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        hits = _unnumbered_in(json.loads(path.read_text(encoding="utf-8"))["cells"])
        if hits:
            found[path.stem] = hits
    assert not found, f"figures or tables shown without a number and caption (use book.page): {found}"


def test_every_figure_and_table_in_pages_is_numbered(built_book: Path):
    """On the built pages: every table has a numbered caption, every plotly figure sits in a numbered figure."""
    found = []
    for page in sorted((built_book.parent / "notebooks").glob("*.html")):
        html = page.read_text(encoding="utf-8")
        found += [f"{page.stem}: table {t[:60]!r}" for t in re.findall(r"<table\b.*?</table>", html, re.S)
                  if "caption-number" not in t]
        figures = [(m.start(), m.end(), "caption-number" in m.group(0))
                   for m in re.finditer(r"<figure\b.*?</figure>", html, re.S)]
        for div in re.finditer(r'class="plotly-graph-div"', html):
            if not any(a <= div.start() < b and numbered for a, b, numbered in figures):
                found.append(f"{page.stem}: a plotly figure outside a numbered figure")
    assert not found, "\n".join(found)
