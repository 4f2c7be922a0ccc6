"""The notebooks as files: one Colab set-up cell from one URL, and the published executed copies
in docs/notebooks/ with the same code as the sources."""

import re

import pytest
from helpers import read_notebook

from egalib.experiments import demo, notebooks

SOURCES = notebooks.notebook_paths()


def test_the_repository_url_has_one_place_and_every_notebook_clones_it():
    url = notebooks.repository_url()
    assert url.startswith("https://")
    cell = notebooks.colab_cell(url)
    assert f'REPO, HOME = "{url}"' in cell and "did not install" in cell
    assert len(SOURCES) == 6
    for path in SOURCES:
        first = next(c for c in read_notebook(path).cells if c.cell_type == "code")
        assert first.source == cell, f"{path.name}: run `python -m egalib colab-cell`"


def test_a_fork_changes_the_url_once_and_the_cells_follow(tmp_path, monkeypatch):
    for path in SOURCES:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(notebooks, "notebook_paths", lambda: sorted(tmp_path.glob("*.ipynb")))
    fork = "https://github.com/someone/egalib-fork"
    assert len(notebooks.write_colab_cells(fork)) == 6
    for path in tmp_path.glob("*.ipynb"):
        first = next(c for c in read_notebook(path).cells if c.cell_type == "code")
        assert f'"{fork}"' in first.source
    assert notebooks.write_colab_cells(fork) == []  # already written: nothing changes


def test_a_url_the_colab_cell_cannot_clone_is_refused_and_no_notebook_changes(
    tmp_path, monkeypatch
):
    for path in SOURCES:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(notebooks, "notebook_paths", lambda: sorted(tmp_path.glob("*.ipynb")))
    before = {path: path.read_bytes() for path in tmp_path.glob("*.ipynb")}
    # a typo, a quote that ended the cell's string (a syntax error in all six), an SSH address
    for url in ("notaurl", 'https://example.org/a"b', "git@github.com:a/b.git", "https://a b"):
        with pytest.raises(ValueError, match="is not a URL that the notebooks' Colab cell can"):
            notebooks.write_colab_cells(url)
    assert {path: path.read_bytes() for path in tmp_path.glob("*.ipynb")} == before


def test_a_list_parameter_given_as_one_value_is_a_list_of_it():
    assert notebooks.listed(None) is None  # the profile's
    assert notebooks.listed(0) == [0]  # seed 0 alone, though 0 is false
    assert notebooks.listed("ega") == ["ega"]  # not "e", "g", "a"
    assert notebooks.listed((1, 2)) == [1, 2] and notebooks.listed([]) == []


def test_the_install_check_of_the_colab_cell_is_one_sentence():
    namespace = {}
    cell = notebooks.colab_cell("https://example.org/x")
    assert cell.count("raise RuntimeError(") == 1 and "rerun this cell." in cell
    exec(compile(cell, "colab", "exec"), namespace)  # not on Colab: does nothing
    assert "REPO" not in namespace


def test_a_notebook_made_for_readers_shows_no_machine_path_and_passes_ruff_format(tmp_path):
    import subprocess
    import sys

    import nbformat

    runs_dir = tmp_path / "runs"
    executed = nbformat.v4.new_notebook()
    injected = f'# Parameters\nprofile = "demo"\nruns_dir = "{runs_dir}"\n'  # papermill's
    executed.cells = [nbformat.v4.new_code_cell(injected)]
    executed.cells[0].outputs = [nbformat.v4.new_output("stream", text=f"written: {runs_dir}/x\n")]
    readable = notebooks.for_readers(executed, runs_dir)
    assert readable.cells[0].source == '# Parameters\nprofile = "demo"\nruns_dir = "../runs"'
    assert readable.cells[0].outputs[0].text == "written: ../runs/x\n"
    path = tmp_path / "published.ipynb"
    path.write_text(nbformat.writes(readable))
    ruff = [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", str(path)]
    # was 1: `make publish` wrote executed copies that `make lint` then refused
    assert subprocess.run(ruff, capture_output=True).returncode == 0


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_each_published_notebook_has_its_sources_code_and_its_outputs(source):
    published = notebooks.PUBLISHED / source.name
    assert published.is_file(), f"run `make publish` to write {published}"
    assert notebooks.code_cells(published) == notebooks.code_cells(source), (
        f"{published} drifted from {source}: run `make publish`"
    )
    notebook = read_notebook(published)
    injected = [c for c in notebook.cells if notebooks.INJECTED in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'profile = "demo"' in injected[0].source
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs and not any(o.output_type == "error" for o in outputs)
    assert "widgets" not in notebook.metadata
    assert published.stat().st_size < 3_000_000  # figures as PNG, no widget state


def test_published_notebooks_show_their_figures():
    images = sum(
        1
        for path in notebooks.PUBLISHED.glob("*.ipynb")
        for c in read_notebook(path).cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    )
    assert images >= 6


# A measured value in prose goes stale; parameters, formula constants and the values derived
# from them (partners per image: (B - 1) / classes) may be typed. These are the ones the
# notebooks use; a new one is added here only if it is not a measurement.
TYPED_CONSTANTS = {"0.05", "0.03", "0.1", "0.3", "0.63", "6.3", "1.5", "0.7", "95 %"}
MEASURED = re.compile(r"[±]\s*\d|\d+\.\d+|\d+(?:\.\d+)?\s?%|\b\d+(?:\.\d+)?\s?s\b")


@pytest.mark.parametrize("path", demo.notebook_paths(), ids=lambda p: p.name)
def test_no_measured_number_is_typed_into_a_notebook_s_prose(path):
    """Sentences that state a result are generated from the runs in code cells; the markdown
    cells hold no number that a run measures."""
    typed = []
    for index, cell in enumerate(read_notebook(path).cells):
        if cell.cell_type != "markdown":
            continue
        text = re.sub(r"`[^`]*`|\$[^$]*\$|\]\([^)]*\)", "", cell.source)  # code, maths, links
        found = [m.group(0) for m in MEASURED.finditer(text)]
        typed += [(index, number) for number in found if number not in TYPED_CONSTANTS]
    assert typed == [], f"{path.name}: measured numbers typed into markdown cells: {typed}"


@pytest.mark.parametrize("path", sorted(notebooks.PUBLISHED.glob("0*.ipynb")), ids=lambda p: p.name)
def test_a_published_notebook_names_no_path_of_the_machine_that_ran_it(path):
    text = path.read_text()
    for machine_only in ("/work/", "/tmp/", "/root/", "/home/", "np.int64(", "np.float64("):
        assert machine_only not in text, f"{path.name} shows {machine_only!r}"
