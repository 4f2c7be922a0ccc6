"""environment.yml mirrors the pip set of `make test`: Makefile's torch pins + pyproject.toml."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower()


def test_environment_yml_agrees_with_pyproject_and_the_makefile_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_set = {
        _name(r): r for r in project["dependencies"] + project["optional-dependencies"]["dev"]
    }
    pins = re.search(r"^TORCH_PINS := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    for pin in pins.split():
        pip_set[_name(pin)] = pin
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_name(r): r for r in pip_section if not r.startswith("-e")}
    assert listed == pip_set
    assert "-e ." in pip_section
