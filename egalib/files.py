"""Files: the package's shipped data and the datasets' folder, whole-file writes (a temporary
file in the same folder, renamed into place: a killed run leaves the old file or the new one,
never half of one), tensor files read safely, exclusive locks, and what a result's card records
(commit, device)."""

import contextlib
import datetime
import errno
import fcntl
import hashlib
import io
import json
import os
import pickle
import platform
import subprocess
import tempfile
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import torch

# What ships inside the package (egalib/data/: teachers, the paper's numbers, study results),
# found through importlib.resources so that an egalib installed from a wheel finds it too.
PACKAGE_DATA = Path(str(resources.files("egalib") / "data"))
# The folder above the package: a checkout of the repository when egalib runs from one.
SOURCE_ROOT = Path(__file__).resolve().parent.parent
# Where datasets are downloaded (datasets.DATA_DIR): the checkout's data/ folder, or ./data in the
# working directory when egalib is installed (site-packages is no place for datasets).
CHECKOUT = (SOURCE_ROOT / "pyproject.toml").is_file()
REPO_DATA = SOURCE_ROOT / "data" if CHECKOUT else Path("data").resolve()


class WriteError(OSError):
    """A file could not be written; the message names it, the cause and the fix."""


def write_error(action: str, path: Path, error: OSError) -> WriteError:
    """One sentence for a file egalib could not write: which file, why, and what to do. It keeps
    the cause's errno, by which a caller tells a read-only folder from a full disk."""
    refusal = WriteError(
        f"could not {action} {path} ({(error.strerror or str(error)).lower()}); free space or fix "
        "the permissions there, or choose another folder (--runs-dir or --out, or EGALIB_CACHE for "
        "the cache)."
    )
    refusal.errno = error.errno
    return refusal


def make_folder(path: Path) -> Path:
    """`path` and its parents made where missing; a failure is one sentence naming the folder."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error("create the folder", path, error) from None
    return Path(path)


def atomic_write(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Write `data` (bytes, or chunks of them, for a file larger than memory) through a temporary
    file in the same folder, synced to disk, then rename and sync the folder (as databases do):
    after a crash or a power cut the path holds the old file or the new one, never an empty or
    half one. A failure is one sentence naming the file and its cause."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            for chunk in [data] if isinstance(data, bytes) else data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; these are ordinary results
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except BaseException as error:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if not isinstance(error, OSError):
            raise
        raise write_error("write", path, error) from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode())


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save to memory first: a failed write is then Python's OSError, which names its
    cause, not torch's "[enforce fail at inline_container.cc]"."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def read_json(path: Path, fix: str):
    """json.loads of a file; one that cannot be read or is not JSON is one sentence naming it
    and `fix`."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as cause:  # missing, a folder, unreadable
        raise ValueError(f"{path} cannot be read ({first_line(cause)}); {fix}") from None
    except (ValueError, RecursionError) as cause:  # RecursionError: nested too deep
        raise ValueError(f"{path} is not valid JSON ({first_line(cause)}); {fix}") from None


def read_table(path: Path, fix: str, columns: tuple[str, ...]):
    """pandas.read_csv of a file that must hold `columns`; any other file is one sentence naming
    it and `fix`."""
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except OSError as cause:  # missing, a folder, unreadable
        raise ValueError(f"{path} cannot be read ({first_line(cause)}); {fix}") from None
    except ValueError as cause:  # pandas' parser and empty-file errors, and decoding
        raise ValueError(f"{path} is not a CSV table ({first_line(cause)}); {fix}") from None
    if missing := [c for c in columns if c not in table.columns]:
        raise ValueError(f"{path} lacks the columns {', '.join(missing)}; {fix}")
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data only: containers, strings and numbers, and numpy arrays (what the
    CIFAR-100 files hold). Any other global, the way a crafted pickle runs code, is refused
    before it is called."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"the file asks for {module}.{name}, which data never does"
            )
        return super().find_class(module, name)


def load_pickle(f, encoding: str = "latin1"):
    """pickle.load of plain data only (`RestrictedUnpickler`)."""
    return RestrictedUnpickler(f, encoding=encoding).load()


def is_plain_name(name) -> bool:
    """Whether `name` is one file or folder name: joined to a folder, it stays inside it."""
    ordinary = isinstance(name, str) and name not in ("", ".", "..")
    return ordinary and not any(c in name for c in "/\\\0")


def first_line(error: BaseException) -> str:
    """The first line of an error's message ("" when it has none), for a one-sentence report."""
    return (str(error).strip().splitlines() or [""])[0]


def described(error: BaseException) -> str:
    """An error as "Type: its first sentence", for the parentheses of a one-sentence report: what
    follows (torch's advice to load unsafely, for one) is not egalib's to give."""
    sentence = first_line(error).split(". ")[0].removesuffix(".")
    return f"{type(error).__name__}: {sentence if len(sentence) <= 200 else sentence[:199] + '…'}"


def load_tensors(path: Path, fix: str, error: type[Exception] = RuntimeError):
    """torch.load with weights_only=True; a file that cannot be read is one sentence ending in
    `fix` (what to do), not a traceback from inside torch."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as cause:
        raise error(f"{path} cannot be read ({described(cause)}); {fix}") from None


def weights_misfit(saved, expected: dict) -> str:
    """Why the weights `saved` cannot be loaded where the state dict `expected` is ("" when they
    can): a dict of the same names, shapes and kinds of number (float or integer), all finite."""
    if not isinstance(saved, dict):
        return f"are a {type(saved).__name__}, not a dict of named tensors"
    missing = sorted(expected.keys() - saved.keys())
    unexpected = sorted(saved.keys() - expected.keys())
    if missing or unexpected:
        return f"name other parameters: missing {missing[:3]}, unexpected {unexpected[:3]}"
    reshaped = [k for k, v in expected.items() if getattr(saved[k], "shape", None) != v.shape]
    if reshaped:
        return f"have other shapes in {', '.join(reshaped[:3])}"
    floats = lambda v: isinstance(v, torch.Tensor) and v.is_floating_point()
    if retyped := [k for k, v in expected.items() if floats(v) != floats(saved[k])]:
        return f"hold integers for floats, or the reverse, in {', '.join(retyped[:3])}"
    bad = [k for k, v in saved.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    return f"hold NaN or inf in {', '.join(bad[:3])}" if bad else ""


@contextlib.contextmanager
def exclusive(path: Path, wait: bool):
    """An exclusive flock on `path`, which then holds this process's pid; without `wait`, a held
    lock raises BlockingIOError with the file's content (the holder's pid) as its message. The
    kernel drops a flock when its process dies, so a killed holder blocks nothing. A symbolic
    link at `path` is refused, never followed: truncating the lock would truncate its target."""
    make_folder(Path(path).parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        kinds = {
            errno.ELOOP: "a symbolic link, which egalib does not follow",
            errno.EISDIR: "a folder",
        }
        if error.errno not in kinds:
            raise write_error("open the lock file", path, error) from None
        raise WriteError(
            f"{path} is {kinds[error.errno]}, not a lock file; remove it (the run or the cache "
            "keeps its files beside it)."
        ) from None
    with os.fdopen(fd, "r+", errors="replace") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.seek(0)
            raise BlockingIOError(f.read(40).strip() or "?") from None  # the holder's pid
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield


def tensor_digest(tensor: torch.Tensor) -> str:
    """A short checksum of a tensor's bytes: the same values give the same digest."""
    data = tensor.detach().cpu().contiguous().view(torch.uint8).numpy()
    return hashlib.blake2b(data).hexdigest()[:16]


def git(*args: str) -> str | None:
    """git's output in egalib's checkout; None for an installed egalib (no checkout) or a
    failed call."""
    if not (SOURCE_ROOT / ".git").exists():
        return None
    with contextlib.suppress(OSError):
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=SOURCE_ROOT)
        return done.stdout.strip() if done.returncode == 0 else None
    return None


def git_commit() -> str:
    """The checkout's short commit, or "unknown" (an installed egalib has no commit)."""
    return git("rev-parse", "--short", "HEAD") or "unknown"


def provenance(device: torch.device) -> dict:
    """What produced a result: egalib's version and commit (dirty: with uncommitted changes to
    tracked files), torch's and torchvision's versions, the device and the CPU, and the date."""
    import torchvision

    from . import __version__

    changes = git("status", "--porcelain", "--untracked-files=no")
    return {
        "egalib": __version__,
        "commit": git_commit(),
        "dirty": None if changes is None else bool(changes),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": device_name(device),
        "cpu": device_name(torch.device("cpu")),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (for cards and benchmark results)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
