"""environment.yml is the union of what `make test` installs: the Makefile's torch pins, then
pyproject.toml's core dependencies and every extra."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower()


def test_environment_yml_is_the_union_of_the_dependencies_extras_and_makefile_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    pip_set = {_name(r): r for r in project["dependencies"] + extras if _name(r) != "egalib"}
    pins = re.search(r"^TORCH_PINS := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    for pin in pins.split():
        pip_set[_name(pin)] = pin
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_name(r): r for r in pip_section if not r.startswith("-e")}
    assert listed == pip_set
    assert "-e .[dev]" in pip_section


@pytest.mark.integration
def test_the_core_needs_no_notebook_paper_or_cluster_package():
    """`pip install egalib` stays small: the extras hold Jupyter, CLIP and submitit."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    assert core == {"torch", "torchvision", "numpy", "pandas", "scipy", "tqdm"}
    extras = project["optional-dependencies"]
    assert {"jupyterlab", "papermill", "seaborn"} <= {_name(r) for r in extras["notebooks"]}
    assert {_name(r) for r in extras["paper"]} == {"open_clip_torch"}
    assert {_name(r) for r in extras["cluster"]} == {"submitit"}


@pytest.mark.integration
def test_the_loop_and_the_command_line_import_no_extra():
    """What `pip install egalib` has is enough to train and to run `python -m egalib list`: no
    module of an extra is imported until a command that needs it runs."""
    extras = [
        "matplotlib",
        "seaborn",
        "sklearn",
        "papermill",
        "jupyterlab",
        "ipywidgets",
        "open_clip",
        "submitit",
    ]
    code = (
        "import sys, egalib.train, egalib.experiments.cli as cli; cli.build_parser(); "
        f"print([m for m in {extras!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
