"""End-to-end checks of the book: strict build of a notebook subset in smoke mode, then a headless-Chromium look
at built pages to prove that plotly figures and math render in the static HTML offline (plotly.js is embedded
in the notebook outputs, MathJax is vendored under book/_static).

The subset is the first numbered notebook that uses plotly, or BOOK_TEST_NOTEBOOKS="01 02" to choose.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # Virtual time lets the page's scripts (plotly) finish before the DOM is dumped or the screenshot taken.
    "--virtual-time-budget=10000",
]


def _default_subset() -> str:
    numbered = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not numbered:
        pytest.fail("no notebooks/[0-9][0-9]_*.ipynb to build")
    with_plotly = [nb for nb in numbered if "plotly" in nb.read_text(encoding="utf-8")]
    return (with_plotly or numbered)[0].stem


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
    page = next((p for p in pages if "plotly-graph-div" in p.read_text(encoding="utf-8")), None)
    assert page is not None, f"no built notebook page holds a plotly figure: {[p.name for p in pages]}"

    dom = _run_chromium(chromium, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    # plotly.js draws into these only when it actually ran; the saved HTML has neither.
    assert 'class="plot-container plotly"' in dom.stdout, f"plotly did not render in {page.name}"
    assert 'class="main-svg"' in dom.stdout

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "book_plotly.png"
    shot.unlink(missing_ok=True)
    proc = _run_chromium(chromium, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars",
                         page.as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    assert _png_size(shot) == (1280, 2000)
    # A blank page compresses to a few KB; text plus a figure is far larger.
    assert shot.stat().st_size > 30_000, f"screenshot is suspiciously small: {shot.stat().st_size} B"


def test_math_renders_offline(built_book: Path, chromium: str):
    # MathJax is vendored under book/_static (no CDN): it typesets into <mjx-container> elements when it ran.
    dom = _run_chromium(chromium, "--dump-dom", (built_book.parent / "book" / "method.html").as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<mjx-container" in dom.stdout, "MathJax did not typeset book/method.html"
