"""The documentation site (`make docs`) as a reader meets it: built by Sphinx from README, docs/
and the executed notebooks without executing them, then opened in headless Chromium."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_notebook
from test_browser import CHROMIUM, _missing

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "docs" / "notebooks").glob("0*.ipynb"))


def figures_in(path: Path) -> int:
    cells = read_notebook(path).cells
    return sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if (why := _missing()) is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the site's browser test must run in CI, but {why}")
        pytest.skip(why)
    out = tmp_path_factory.mktemp("site")
    build = [sys.executable, "-m", "sphinx", "-q", "-b", "html", str(REPO / "docs"), str(out)]
    done = subprocess.run(build, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_site_follows_the_tutorial_s_path_and_shows_every_notebook_s_figures(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto((site / "index.html").as_uri())
        assert "egalib" in page.title()
        order = [a.get_attribute("href") for a in page.locator("a.reference.internal").all()]
        pages = [h for h in order if h and h.startswith("notebooks/0")]
        assert pages[: len(NOTEBOOKS)] == [f"notebooks/{nb.stem}.html" for nb in NOTEBOOKS]
        expected = {notebook.stem: figures_in(notebook) for notebook in NOTEBOOKS}
        assert sum(expected.values()) > 0
        for notebook in NOTEBOOKS:
            page.goto((site / "notebooks" / f"{notebook.stem}.html").as_uri())
            page.wait_for_load_state("load")
            loaded = page.evaluate(
                "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length"
            )
            assert loaded >= expected[notebook.stem], notebook.name
            text = page.inner_text("body")
            assert "Traceback" not in text and "VBox(children" not in text
            if notebook.stem == "02_distillation":  # the controls, as their text summary
                assert "the controls now: teacher ssl-fmnist" in text
        page.goto((site / "glossary.html").as_uri())
        assert "Pearson correlation" in page.inner_text("body")
        browser.close()


def test_the_formulas_are_typeset_offline(site):
    """MathJax ships inside the site: no CDN, so a reader offline sees formulas, not TeX."""
    from playwright.sync_api import sync_playwright

    html = (site / "notebooks" / "01_graph_building.html").read_text()
    assert "\\(E_t = " in html and "cdn." not in html.split("MathJax.js")[0][-200:]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.route("http*://**", lambda route: route.abort())  # offline, as in CI
        page.goto((site / "notebooks" / "01_graph_building.html").as_uri())
        typeset = "document.querySelectorAll('.MathJax, .MathJax_Display').length"
        page.wait_for_function(f"{typeset} > 0", timeout=60_000)
        page.wait_for_function("!document.body.innerText.includes('\\\\(E_t')", timeout=60_000)
        browser.close()
