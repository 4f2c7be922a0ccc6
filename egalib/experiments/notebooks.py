"""The notebooks as files: their Colab set-up cell, made from one template, and the executed
copies published for readers in docs/notebooks/.

The repository's URL has one place, pyproject.toml's `[project.urls] Repository`: a fork changes
it there and runs `python -m egalib colab-cell`, which writes the set-up cell of notebooks 01-06
from it. `python -m egalib publish` (`make publish`) executes the notebooks at the `demo` size,
reusing the demo's finished runs, and writes them with their outputs to docs/notebooks/, where
GitHub renders them; widget state is dropped (a reader sees the controls' text form).
"""

import re
from pathlib import Path

from ..files import atomic_write_text
from .demo import NOTEBOOK_DIR, notebook_paths

REPO_ROOT = NOTEBOOK_DIR.parent
PUBLISHED = REPO_ROOT / "docs" / "notebooks"
INJECTED = "injected-parameters"  # papermill's tag of the cell it adds
COLAB_CELL = """\
# On Colab: fetch egalib and install it, then work from its notebooks folder (the GPU is used
# automatically when the runtime has one); set `profile = "colab"` below. Elsewhere this cell
# does nothing. The URL comes from pyproject.toml (`python -m egalib colab-cell` writes it here).
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    REPO, HOME = "{url}", "/content/egalib"
    if not os.path.isdir(HOME):
        subprocess.run(["git", "clone", "--depth", "1", REPO, HOME], check=True)
        install = [sys.executable, "-m", "pip", "install", "-q", "-e", HOME + "[notebooks,paper]"]
        subprocess.run(install, check=True)
    sys.path.insert(0, HOME)
    os.chdir(os.path.join(HOME, "notebooks"))
    check = "import egalib; print(egalib.__version__)"
    found = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    if found.returncode != 0:
        why = (found.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"egalib did not install from {{REPO}} ({{why}}); rerun this cell.")
    print(f"egalib {{found.stdout.strip()}} is installed from {{REPO}}.")"""


def repository_url() -> str:
    """`Repository = "..."` of pyproject.toml's [project.urls]."""
    found = re.search(r'^Repository = "([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    if found is None:
        raise ValueError(
            'pyproject.toml has no [project.urls] Repository = "..." line; add '
            "the repository's URL there."
        )
    return found.group(1)


# what Colab can clone (it holds no SSH key) and the cell's Python string can hold as it is
CLONE_URL = re.compile(r"https://[^\s\"'\\]+")


def colab_cell(url: str) -> str:
    if not CLONE_URL.fullmatch(url):
        raise ValueError(
            f"{url!r} is not a URL that the notebooks' Colab cell can clone; give an https:// URL "
            "without spaces, quotes or backslashes, e.g. https://github.com/<owner>/egalib."
        )
    return COLAB_CELL.format(url=url)


def write_colab_cells(url: str | None = None) -> list[Path]:
    """Make the first code cell of every notebook the set-up cell for `url` (default: the
    repository's); the notebooks whose cell changed are returned."""
    import nbformat

    cell, changed = colab_cell(url or repository_url()), []
    for path in notebook_paths():
        notebook = nbformat.read(path, as_version=4)
        first = next(c for c in notebook.cells if c.cell_type == "code")
        if first.source != cell:
            first.source = cell
            atomic_write_text(path, nbformat.writes(notebook) + "\n")
            changed.append(path)
    return changed


def code_cells(path: Path) -> list[str]:
    """The sources of a notebook's code cells, without the cell papermill injects."""
    import nbformat

    cells = nbformat.read(path, as_version=4).cells
    return [
        c.source
        for c in cells
        if c.cell_type == "code" and INJECTED not in c.metadata.get("tags", [])
    ]


def listed(value) -> list | None:
    """A notebook parameter that holds a list, as papermill's command line may give it:
    `-p seeds 0` or `-p methods ega` pass one value, which stands for a list of that one (seed 0
    alone, not the profile's seeds because 0 is false). None stays None: the profile's."""
    if value is None:
        return None
    return list(value) if isinstance(value, list | tuple) else [value]


WIDGET = "application/vnd.jupyter.widget-view+json"


def for_readers(notebook, runs_dir: Path | None = None):
    """An executed notebook without what a reader does not need: widget state and widget outputs
    (their text form is a repr such as `VBox(children=...)`; the notebooks print their choices
    as text beside them), papermill's and the kernel's per-cell timings, and the executing
    machine's absolute `runs_dir` (shown as the notebooks' own default, ../runs)."""
    notebook["metadata"].pop("widgets", None)
    notebook["metadata"].pop("papermill", None)
    local = (lambda text: text.replace(str(runs_dir), "../runs")) if runs_dir else (lambda t: t)
    for cell in notebook["cells"]:
        for key in ("papermill", "execution"):
            cell.get("metadata", {}).pop(key, None)
        cell["source"] = local(cell["source"]).rstrip("\n")  # as `ruff format` leaves a cell
        if "outputs" in cell:
            cell["outputs"] = [o for o in cell["outputs"] if WIDGET not in o.get("data", {})]
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            for kind, text in data.items():
                if isinstance(text, str) and kind.startswith("text/"):
                    data[kind] = local(text)
            if isinstance(output.get("text"), str):
                output["text"] = local(output["text"])
    return notebook


def publish(executed: list[Path], out: Path = PUBLISHED) -> list[Path]:
    """Write the executed notebooks, made `for_readers`, to `out` (docs/notebooks/)."""
    import nbformat

    written = []
    for path in executed:
        target, runs_dir = out / Path(path).name, Path(path).resolve().parents[1]
        readable = for_readers(nbformat.read(path, 4), runs_dir)
        atomic_write_text(target, nbformat.writes(readable) + "\n")
        written.append(target)
    return written
