"""Files: the repository's data folder, whole-file writes (a temporary file in the same folder,
renamed into place: a killed run leaves the old file or the new one, never half of one), and
tensor files read safely."""

import os
import tempfile
from pathlib import Path

import torch

REPO_DATA = Path(__file__).resolve().parent.parent / "data"  # what ships: teachers, paper numbers


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; these are ordinary results
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def first_line(error: BaseException) -> str:
    """The first line of an error's message ("" when it has none), for a one-sentence report."""
    return (str(error).strip().splitlines() or [""])[0]


def load_tensors(path: Path, fix: str, error: type[Exception] = RuntimeError):
    """torch.load with weights_only=True; a file that cannot be read is one sentence ending in
    `fix` (what to do), not a traceback from inside torch."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as cause:
        first = first_line(cause)[:120]
        raise error(f"{path} cannot be read ({cause.__class__.__name__}: {first}); {fix}") from None
