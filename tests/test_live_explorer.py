"""The live tree explorer where its readers meet it: JupyterLab serves the repository, headless Chromium opens
chapter 01 (a copy whose parameters name a tiny random model pair), runs every cell, drags the explorer's depth
slider to its minimum and sees the tree figure redrawn for the new depth.

Chromium is driven over its DevTools protocol (websocket-client, `Runtime.evaluate` in the page, trusted mouse events
through `Input.dispatchMouseEvent`); JupyterLab exposes its application object to the page
(`--LabApp.expose_app_in_browser`, as JupyterLab's own UI tests do), so the test runs the notebook with the command
that the Run menu runs. The chapter's `widgets` parameter keeps its default (None): the sliders must appear because
the kernel runs under a Jupyter server, as for a reader. A screenshot of the page after the slider move is saved to
test-artifacts/live_explorer.png (live_explorer_failed.png and the server's log when it fails in the browser).
"""
from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

import nbformat
import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.embedded]  # embedded: the tiny models borrow its tokenizer

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHAPTER = ROOT / "notebooks" / "01_tree_structure.ipynb"
# The stock tiny models are nearly uniform over a 151,936-token vocabulary, so the chapter's threshold (0.03) would
# prune every node below the first level and a deeper slider setting would draw the same tree. Logits this sharp
# make the draft nearly certain of its top token: the depth-5 tree is a chain of five nodes.
SHARPEN = 60.0
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
    "--remote-debugging-port=0", "--remote-allow-origins=*",
]
SERVER_START_S = 90
PAGE_READY_S = 120  # JupyterLab loaded, the notebook open and its kernel started
RUN_ALL_S = 240
REDRAW_S = 60
DRAG_TRIES = 3


def _tiny_model_folder(folder: Path) -> Path:
    """A random one-layer Qwen2 (hidden 32) with sharpened logits, saved with the embedded pair's tokenizer beside
    it: a model folder that `load_pair(target=folder, draft=folder)` reads in seconds like any other."""
    from dynatree_lib.models.embedded import fetch_embedded
    from tiny import tiny_model

    source = fetch_embedded()["target"]
    vocab = json.loads((source / "config.json").read_text())["vocab_size"]  # the tokenizer's model vocabulary
    model = tiny_model("qwen2", seed=0, vocab=vocab, layers=1, dtype=torch.float32)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(SHARPEN)
    model.config.max_position_embeddings = 1024  # the chapter's prompt, the played generation and deep trees fit
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)
    return folder


def _parameterised_chapter(folder: Path, model: Path) -> Path:
    """Chapter 01 with papermill's injected-parameters cell naming the tiny pair, written into `folder`."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(CHAPTER)),
                               dict(target=str(model), draft=str(model), dtype="float32", smoke=True))
    path = folder / CHAPTER.name
    nbformat.write(nb, path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


def _stop(proc: subprocess.Popen, group: bool) -> None:
    """End a process started here (with its process group when `group`): SIGTERM, then SIGKILL after 30 s."""
    send = (lambda sig: os.killpg(proc.pid, sig)) if group else proc.send_signal
    with suppress(ProcessLookupError):  # the group may have gone with its leader
        send(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def _jupyter_lab(root: Path, state: Path):
    """A JupyterLab server on `root` (no browser of its own, a random token, settings and workspaces kept under
    `state`); yields (base URL, token). SIGTERM at the end makes the server shut its kernels down."""
    port, token = _free_port(), secrets.token_hex(16)
    log = state / "jupyter.log"
    # No news feed: the server makes no request outside this machine and no toast asks about it on the screenshot.
    notifications = state / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notifications.parent.mkdir(parents=True)
    notifications.write_text(json.dumps({"fetchNews": "false"}))
    # A reader's environment: no renderer forced by the book build, no papermill settings; tiny models want no threads.
    env = {k: v for k, v in os.environ.items() if k not in {"PLOTLY_RENDERER", "PAPERMILL_ARGS", "EXECUTE"}}
    env.update(JUPYTER_CONFIG_DIR=str(state / "config"), JUPYTER_RUNTIME_DIR=str(state / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(state / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--LabApp.expose_app_in_browser=True"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert proc.poll() is None, f"jupyter lab exited with {proc.returncode}:\n{_tail(log)}"
            with suppress(OSError):
                request = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(request, timeout=5) as reply:
                    if reply.status == 200:
                        break
            assert time.monotonic() < deadline, f"jupyter lab did not answer in {SERVER_START_S} s:\n{_tail(log)}"
            time.sleep(0.5)
        yield url, token
    finally:
        _stop(proc, group=False)


class DevTools:
    """The smallest client of Chromium's DevTools protocol: one page, commands answered in order, events ignored
    (no domain is enabled, so none arrive but the odd target notice)."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.last_id = 0

    def call(self, method: str, **params):
        self.last_id += 1
        self.ws.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"{details.get('exception', {}).get('description', details)}\nin: {expression}")
        return result["result"].get("value")

    def wait(self, expression: str, what: str, timeout: float):
        """Evaluate `expression` every half second until it is truthy; return that value. An evaluation that fails
        (a page still loading has no context to evaluate in) counts as not yet, and is reported on timeout."""
        deadline, value = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError as e:
                value = e
            if value and not isinstance(value, RuntimeError):
                return value
            time.sleep(0.5)
        raise AssertionError(f"no {what} after {timeout} s (last seen: {value!r})")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


@contextmanager
def _chromium(exe: str, profile: Path):
    """Headless Chromium with a fresh profile and a DevTools port of its choosing; yields a DevTools client of its
    blank page. The whole process group (renderers, GPU and network services) is ended afterwards."""
    proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    devtools = None
    try:
        port_file = profile / "DevToolsActivePort"  # Chromium writes the port it picked here
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert proc.poll() is None, f"chromium exited with {proc.returncode}"
            assert time.monotonic() < deadline, "chromium opened no DevTools port in 30 s"
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            pages = [t for t in json.load(reply) if t["type"] == "page"]
        devtools = DevTools(pages[0]["webSocketDebuggerUrl"])
        yield devtools
    finally:
        if devtools is not None:
            devtools.ws.close()
        _stop(proc, group=True)


def _panel(path: str) -> str:
    """JavaScript for the notebook panel of `path` (relative to the server's root), undefined until it is open."""
    return (f"Array.from(window.jupyterapp?.shell.widgets('main') ?? [])"
            f".find(w => w.context?.path === {json.dumps(path)})")


def _explorer_cell(path: str) -> str:
    return f"{_panel(path)}.content.widgets.find(c => c.model.sharedModel.getSource().includes('treeviz.explorer('))"


def _figure_state(path: str) -> str:
    """JavaScript: what the explorer cell shows, read off the drawn page: its sliders' names, its tree figure's title
    and the number of points drawn (nodes, pruned candidates, bonus token); null while no figure is drawn."""
    return f"""(() => {{
        const cell = {_explorer_cell(path)};
        const plot = cell?.node.querySelector('.js-plotly-plot');
        const title = plot?.querySelector('.gtitle')?.textContent;
        const points = plot ? plot.querySelectorAll('.scatterlayer path.point').length : 0;
        if (!title || !points) return null;
        const labels = cell.node.querySelectorAll('.widget-slider .widget-label');
        return {{sliders: Array.from(labels).map(l => l.textContent), title, points}};
    }})()"""


def _run_chapter(devtools: DevTools, path: str) -> None:
    """Run every cell with JupyterLab's Run All command and fail with the cells' errors, if any."""
    devtools.evaluate(f"""(() => {{
        const app = window.jupyterapp;
        app.shell.activateById({_panel(path)}.id);
        window.__ran = null;
        app.commands.execute('notebook:run-all-cells').then(ok => {{ window.__ran = String(ok); }},
                                                            err => {{ window.__ran = 'failed: ' + err; }});
    }})()""")
    ran = devtools.wait("window.__ran", "end of Run All", RUN_ALL_S)
    errors = devtools.evaluate(f"""{_panel(path)}.content.widgets.flatMap((cell, i) => cell.model.type !== 'code'
        ? [] : cell.model.outputs.toJSON().filter(o => o.output_type === 'error')
                   .map(o => `cell ${{i}}: ${{o.ename}}: ${{o.evalue}}`))""")
    assert ran == "true" and not errors, f"Run All ended with {ran}: {errors}"


def _drag_to_minimum(devtools: DevTools, path: str, description: str) -> None:
    """Drag the handle of the explorer's slider `description` past the left end of its track, as a mouse would.

    JupyterLab keeps adjusting the notebook's scroll position for a while after Run All (outputs still render and
    change the heights of the cells above), so the handle is first brought into view and held still: the mouse is
    pressed only where the page reports the handle itself, and a drag that the slider did not feel is made again."""
    slider = (f"Array.from({_explorer_cell(path)}.node.querySelectorAll('.widget-slider'))"
              f".find(s => s.querySelector('.widget-label')?.textContent === {json.dumps(description)})")
    readout = f"{slider}.querySelector('.widget-readout').textContent"
    start = devtools.evaluate(readout)
    for _ in range(DRAG_TRIES):
        box = devtools.wait(f"""(() => {{
            const s = {slider};
            s.scrollIntoView({{block: 'center'}});
            const handle = s.querySelector('.noUi-handle'), r = handle.getBoundingClientRect();
            const track = s.querySelector('.noUi-target').getBoundingClientRect();
            const box = {{x: r.x + r.width / 2, y: r.y + r.height / 2, left: track.left}};
            const same = JSON.stringify(box) === window.__handle;
            window.__handle = JSON.stringify(box);
            return same && handle.contains(document.elementFromPoint(box.x, box.y)) ? box : null;
        }})()""", f"{description} slider's handle held still in view", REDRAW_S)
        x, y, end = box["x"], box["y"], box["left"] - 30
        devtools.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        devtools.call("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", buttons=1,
                      clickCount=1)
        for step in range(1, 11):
            devtools.call("Input.dispatchMouseEvent", type="mouseMoved", x=x + (end - x) * step / 10, y=y,
                          button="left", buttons=1)
        devtools.call("Input.dispatchMouseEvent", type="mouseReleased", x=end, y=y, button="left", buttons=0,
                      clickCount=1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if devtools.evaluate(readout) != start:
                return
            time.sleep(0.5)
    raise AssertionError(f"the {description} slider kept its value {start!r} after {DRAG_TRIES} drags")


def test_depth_slider_redraws_the_tree_in_jupyterlab(kernel, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is missing (scripts/install_chromium.sh installs it)")
    if importlib.util.find_spec("jupyterlab") is None or importlib.util.find_spec("websocket") is None:
        pytest.skip("jupyterlab or websocket-client is missing from this environment")
    model = _tiny_model_folder(tmp_path / "tiny-qwen2")
    ARTIFACTS.mkdir(exist_ok=True)
    # The server serves the repository, so the copy lives inside it, in the ignored artifacts folder.
    folder = ARTIFACTS / f"live-explorer-{secrets.token_hex(4)}"
    folder.mkdir()
    try:
        path = _parameterised_chapter(folder, model).relative_to(ROOT).as_posix()
        (tmp_path / "profile").mkdir()
        with _jupyter_lab(ROOT, tmp_path) as (url, token), _chromium(chromium, tmp_path / "profile") as devtools:
            try:
                devtools.call("Page.navigate", url=f"{url}/lab/tree/{quote(path)}?token={token}")
                kernel_name = devtools.wait(f"""(() => {{
                    const panel = {_panel(path)};
                    const k = panel?.context.isReady && panel.sessionContext.session?.kernel;
                    return k && k.status === 'idle' ? k.name : null;
                }})()""", "open notebook with an idle kernel", PAGE_READY_S)
                assert kernel_name == kernel
                _run_chapter(devtools, path)
                devtools.evaluate(f"{_explorer_cell(path)}.node.scrollIntoView({{block: 'start'}})")
                before = devtools.wait(_figure_state(path), "tree figure under the explorer's sliders", REDRAW_S)
                assert before["sliders"] == ["depth", "branch", "threshold"], before
                _drag_to_minimum(devtools, path, "depth")
                after = devtools.wait(f"(s => s && s.title !== {json.dumps(before['title'])} ? s : null)"
                                      f"({_figure_state(path)})", "redrawn tree figure after the slider move",
                                      REDRAW_S)
                devtools.evaluate(f"{_explorer_cell(path)}.node.scrollIntoView({{block: 'start'}})")
                time.sleep(1)  # plotly draws a figure that scrolled into view
                devtools.screenshot(ARTIFACTS / "live_explorer.png")
            except BaseException:
                with suppress(Exception):
                    devtools.screenshot(ARTIFACTS / "live_explorer_failed.png")
                    shutil.copy(tmp_path / "jupyter.log", ARTIFACTS / "live_explorer_failed_jupyter.log")
                raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    # The slider's minimum is depth 1: the figure is the FixedTree(depth=1) tree, one level instead of five.
    assert "FixedTree(depth=1" in after["title"], (before, after)
    assert after["points"] < before["points"], (before, after)
