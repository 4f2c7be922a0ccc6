"""egalib installed from a wheel, not from the checkout, trains with what ships inside it.

The wheel is built from a copy of the package (the repository gets no build/ or *.egg-info) and
installed with --no-deps into a fresh virtual environment outside the repository. The heavy
third-party packages (torch, ...) are the ones this interpreter already has: a .pth file puts its
site-packages on the new environment's path. A path line of a .pth file does not run the .pth
files of the folder it names, so this interpreter's editable egalib finder stays off (checked).
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")

pytestmark = pytest.mark.integration

# Run by the new environment's python from a folder outside the repository: where egalib and its
# data come from, and that no editable finder of egalib is on sys.meta_path.
PROBE = """
import json, sys
from importlib import resources
import egalib
from egalib.experiments.paper import paper_results
from egalib.models.teachers import TEACHER_DIR
data = resources.files("egalib") / "data"
print(json.dumps({
    "egalib": egalib.__file__,
    "teacher_dir": str(TEACHER_DIR),
    "shipped": sorted(p.name for p in (data / "teachers").iterdir()),
    "results": sorted(p.name for p in (data / "results").iterdir()),
    "paper_rows": len(paper_results()),
    "finders": [type(f).__module__ + "." + type(f).__name__ for f in sys.meta_path],
}))
"""


def run(command: list, cwd: Path, env: dict | None = None, timeout: int = 900):
    command = [str(part) for part in command]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )
    shown = " ".join(command)
    assert done.returncode == 0, f"{shown}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def package_files(folder: Path) -> dict:
    """Each file of an installed package but its bytecode, with its size and time of change."""
    files = (p for p in folder.rglob("*") if p.is_file() and p.suffix != ".pyc")
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


def within(path: str | Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def test_a_wheel_installed_egalib_trains_with_its_shipped_teacher(tmp_path):
    # 1. a wheel of a copy of what the build reads, so that nothing is written into the repository
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "egalib", source / "egalib", ignore=skip)
    wheels = tmp_path / "wheels"
    build = "-m pip wheel --no-deps --no-build-isolation --no-cache-dir".split()
    run([sys.executable, *build, "-w", wheels, source], cwd=tmp_path)
    (wheel,) = wheels.glob("egalib-*.whl")

    # 2. a fresh environment outside the repository with the wheel installed (before the .pth
    # below, so that its pip does not take this interpreter's egalib for an installed one)
    env_dir = tmp_path / "venv"
    run([sys.executable, "-m", "venv", env_dir], cwd=tmp_path)
    python = env_dir / "bin" / "python"
    install = "-m pip install --no-deps --no-index --no-cache-dir".split()
    run([python, *install, wheel], cwd=tmp_path)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(run([python, "-c", purelib], cwd=tmp_path).stdout.strip())
    assert within(site, env_dir)
    host = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site / "host-packages.pth").write_text("".join(f"{path}\n" for path in host))

    # 3. from a folder outside the repository: egalib, its data and its teacher are the wheel's
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["EGALIB_CACHE"] = str(tmp_path / "cache")
    if not DEBIAN_FASHION_MNIST.is_file() and "EGALIB_DATA" not in env:
        env["EGALIB_DATA"] = str(REPO / "data")  # a clone's Fashion-MNIST (make data)
    probe = json.loads(run([python, "-c", PROBE], cwd=work, env=env).stdout)
    assert within(probe["egalib"], env_dir) and not within(probe["egalib"], REPO), probe
    assert within(probe["teacher_dir"], env_dir), probe
    assert {"ssl-fmnist.pt", "ssl-fmnist.json"} <= set(probe["shipped"])
    assert {"regime-demo.csv", "regime-demo.json"} <= set(probe["results"])
    assert probe["paper_rows"] > 0
    assert not [f for f in probe["finders"] if "editable" in f.lower()], probe["finders"]

    installed = package_files(site / "egalib")
    runs = tmp_path / "runs"
    train = "-m egalib train --profile smoke --method ega --runs-dir".split()
    out = run([python, *train, runs], cwd=work, env=env)
    assert "run folder:" in out.stdout
    (metrics_file,) = runs.glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert isinstance(metrics["top1"], float) and 0 <= metrics["top1"] <= 100, metrics
    config = json.loads((metrics_file.parent / "config.json").read_text())
    assert config["teacher"] == "ssl-fmnist", config  # the default teacher, from the wheel's data

    # 4. remaking the teacher writes into the working folder, never into the installed package
    flags = "--epochs 1 --batch-size 4 --train-size 8 --probe-epochs 1".split()
    run([python, "-m", "egalib", "pretrain-teacher", *flags], cwd=work, env=env)
    made = sorted(p.name for p in (work / "runs" / "teachers").iterdir())
    assert made == ["ssl-fmnist.json", "ssl-fmnist.pt"]
    assert package_files(site / "egalib") == installed
