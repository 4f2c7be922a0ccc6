"""Notebook 02 as a reader meets it: JupyterLab in headless Chromium, every cell run there.

JupyterLab starts on 127.0.0.1 with a token, the browser opens notebook 02 (its parameters set
to the `smoke` size), runs all cells through JupyterLab's own command and checks that no cell
shows an error, that the ipywidgets controls render and that the figures are displayed. The
screenshot goes to runs/browser/, which CI keeps. The browser is Debian's `chromium`, driven by
playwright through `executable_path` (no browser download). Without either the test skips with
its reason, except under CI (CI=true), where it must run.
"""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from egalib.experiments.notebooks import code_cells

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "runs" / "browser" / "02_distillation.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if CHROMIUM is None:
        return "no chromium on PATH (apt-get install chromium)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 with a token, serving a prepared copy of notebook 02:
    the notebook's URL and its number of code cells."""
    if (why := _missing()) is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI, but {why}")
        pytest.skip(why)
    import papermill

    runs = tmp_path / "runs"
    parameters = {"profile": "smoke", "runs_dir": str(runs), "methods": ["vanilla", "ega"]}
    papermill.execute_notebook(
        str(REPO / "notebooks" / "02_distillation.ipynb"),
        str(tmp_path / "02_distillation.ipynb"),
        parameters=parameters,
        prepare_only=True,
        cwd=str(REPO / "notebooks"),
    )
    cells = len(code_cells(tmp_path / "02_distillation.ipynb")) + 1  # and the injected one
    # every cell rendered (JupyterLab draws only the visible ones by default), so that each
    # cell's prompt and outputs can be checked
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={tmp_path}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=",
        "--ServerApp.open_browser=False",
        "--allow-root",
        f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
    ]
    log = open(tmp_path / "jupyter.log", "wb")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}  # no user settings
    server = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO / "notebooks"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if server.poll() is not None:
                break
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start: " + (tmp_path / "jupyter.log").read_text())
        yield f"{url}/lab/tree/02_distillation.ipynb?token={token}", cells
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


ALL_RUN = """(count) => {
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
  return prompts.length === count && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""


def test_notebook_02_runs_in_jupyterlab_in_a_real_browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        url, cells = lab
        page.goto(url)
        page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=120_000)
        page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
        idle = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
        page.get_by_text("| Idle").wait_for(timeout=120_000)  # the kernel is connected
        # not awaited: the command's promise settles only when every cell has run
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        page.wait_for_function(ALL_RUN, arg=cells, timeout=600_000, polling=1000)
        page.wait_for_selector(idle, state="attached", timeout=60_000)

        error = "application/vnd.jupyter.error"
        errors = page.locator(f".jp-OutputArea-output[data-mime-type='{error}']")
        assert errors.count() == 0, errors.first.inner_text()[:2000]
        widgets = page.locator(
            ".jp-OutputArea-output .widget-dropdown, .jp-OutputArea-output .widget-select-multiple"
        )
        assert widgets.count() >= 2, "the ipywidgets controls did not render"
        assert page.get_by_text("Error displaying widget").count() == 0
        images = page.locator(".jp-RenderedImage img")
        assert images.count() >= 1, "no figure was displayed"
        widths = images.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
        assert min(widths) > 100, widths

        widgets.first.scroll_into_view_if_needed()
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
        browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
