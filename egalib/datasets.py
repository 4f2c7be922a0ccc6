"""Datasets as uint8 tensors: file formats, downloads, checksums and decoded caches.

A dataset is held whole as uint8 (N, C, H, W) images and int64 labels and moved to the device
once; `views` makes each batch's augmented views there.
"""

import contextlib
import functools
import gzip
import hashlib
import io
import os
import pickle
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .files import REPO_DATA, atomic_write, first_line

DATA_DIR = Path(os.environ.get("EGALIB_DATA", REPO_DATA))  # where datasets are downloaded
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_TENSORS = ("train_images", "train_labels", "test_images", "test_labels")  # Dataset's tensors


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where egalib looked; the message says where and how to fix it."""


@dataclass
class Dataset:
    name: str
    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_images.shape[-1]

    def to(self, device: torch.device | str) -> "Dataset":
        moved = {key: getattr(self, key).to(device, non_blocking=True) for key in _TENSORS}
        return replace(self, **moved)

    def subset(self, train: int | None = None, test: int | None = None, seed: int = 0) -> "Dataset":
        """A class-balanced random subset (the first `train` / `test` of a seeded shuffle)."""
        train_idx = balanced_indices(self.train_labels, train, seed)
        test_idx = balanced_indices(self.test_labels, test, seed)
        pick = lambda key: getattr(self, key)[train_idx if key.startswith("train") else test_idx]
        return replace(self, **{key: pick(key) for key in _TENSORS})


def balanced_indices(labels: torch.Tensor, count: int | None, seed: int) -> torch.Tensor:
    """`count` indices with (nearly) equal numbers per class, or all indices when count is None."""
    if count is None or count >= len(labels):
        return torch.arange(len(labels))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    shuffled = labels[order].cpu()
    # rank of each sample within its class, in shuffled order; take low ranks first
    rank = torch.zeros_like(shuffled)
    for c in shuffled.unique():
        members = shuffled == c
        rank[members] = torch.arange(int(members.sum()))
    take = order[torch.argsort(rank * len(labels) + torch.arange(len(labels)))[:count]]
    return take.sort().values


@functools.lru_cache(maxsize=8)
def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not; cached, as decompressing takes a
    second and notebooks and tests load the same files many times."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}  # fmt: skip


def _find_fashion_mnist(folders: list[Path]) -> dict[str, Path] | None:
    for folder in folders:
        found = {}
        for key, stem in FASHION_MNIST_FILES.items():
            candidates = [folder / f"{stem}.gz", folder / stem, folder / "raw" / f"{stem}.gz"]
            found[key] = next((p for p in candidates if p.is_file()), None)
        if all(found.values()):
            return found
    return None


def load_fashion_mnist(root: Path | None = None, download: bool = False) -> Dataset:
    """Fashion-MNIST from Debian's package, then data/, then a torchvision download."""
    local = Path(root) if root else DATA_DIR / "fashion-mnist"
    folders = [DEBIAN_FASHION_MNIST, local, local / "FashionMNIST"]
    files = _find_fashion_mnist(folders)
    if files is None and download:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(local), train=True, download=True)
        FashionMNIST(str(local), train=False, download=True)
        files = _find_fashion_mnist(folders)
    if files is None:
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found: looked in {', '.join(str(f) for f in folders)}; install "
            "Debian's package (apt-get install dataset-fashion-mnist) or run "
            "`python -m egalib download fashion-mnist` where a network exists."
        )
    arrays = {key: torch.from_numpy(_read_idx(path).copy()) for key, path in files.items()}
    return Dataset(
        "fashion-mnist", arrays["train_images"].unsqueeze(1), arrays["train_labels"].long(),
        arrays["test_images"].unsqueeze(1), arrays["test_labels"].long(), FASHION_MNIST_CLASSES,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# CIFAR-100, STL-10 and Tiny-ImageNet, from their official on-disk formats. Each is looked for
# in `root` (default: DATA_DIR/<name>, then DATA_DIR itself, where torchvision-style folders sit
# side by side), downloaded there on request (to a hidden staging folder, moved into place only
# when complete), and read whole. torchvision checks the MD5 of the CIFAR-100 and STL-10 archives
# (and of CIFAR-100's extracted files) itself; the Tiny-ImageNet zip is checked here.


class DatasetCorruptError(ValueError):
    """A dataset file is there but cannot be read; the message names it and how to fix it."""


@dataclass(frozen=True)
class _Source:
    """One dataset's official folder, the files that must be in it, and how to fetch and read it:
    fetch(staging) downloads and unpacks into an empty folder; read(source, where) reads the
    dataset from the folder `where` that holds `folder` (and `cache`, if any)."""

    name: str  # registry name, the folder under DATA_DIR and the CLI argument
    title: str  # how messages name it
    folder: str  # the top folder of the official archive
    files: tuple[str, ...]  # inside `folder`: all of them present = the dataset is here
    fetch: Callable[[Path], None]
    read: Callable[["_Source", Path], Dataset]
    cache: str | None = None  # a decoded copy in `where`, enough on its own

    def complete(self, where: Path) -> bool:
        return all((where / self.folder / f).exists() for f in self.files)

    def present(self, where: Path) -> bool:
        return bool(self.cache and (where / self.cache).is_file()) or self.complete(where)


def _reason(error: BaseException) -> str:
    """An exception as one short line, for the end of an error sentence."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]


def _not_found(source: _Source, folders: list[Path], error: BaseException | None = None):
    failed = f", and the download failed ({_reason(error)})" if error else ""
    return DatasetNotFoundError(
        f"{source.title} not found: looked in {', '.join(str(f) for f in folders)}{failed}; run "
        f"`python -m egalib download {source.name}` where a network exists, or put the official "
        f"`{source.folder}/` folder in {folders[0]}."
    )


@contextlib.contextmanager
def _reading(source: _Source, where: Path, path: Path, fix: str | None = None):
    """Turn any failure to parse `path` into one sentence naming the file and what to do."""
    try:
        yield
    except Exception as error:
        fix = fix or (
            f"delete {where / source.folder} and run `python -m egalib download {source.name}` "
            "where a network exists, or copy the official files there again"
        )
        problem = f"{source.title} file {path} is unreadable, corrupt or truncated"
        raise DatasetCorruptError(f"{problem} ({_reason(error)}); {fix}.") from None


def _checked(images: np.ndarray, labels, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) as uint8 and int64 tensors, after checking counts and the label range."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels outside 0..{num_classes - 1}")
    images = np.ascontiguousarray(images, dtype=np.uint8)
    return torch.from_numpy(images), torch.from_numpy(labels)


def _download(source: _Source, folders: list[Path]) -> None:
    """Fetch into a staging folder under folders[0], then move the official folder into place.
    Any failure (no network, a bad checksum, a broken archive) ends in DatasetNotFoundError and
    leaves nothing behind; an incomplete copy already there is replaced."""
    folder = folders[0]
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as staging:
            staging = Path(staging)
            source.fetch(staging)
            if not source.complete(staging):
                raise RuntimeError(f"the archive holds no complete `{source.folder}/` folder")
            if (folder / source.folder).exists():  # incomplete: goes with the staging folder
                os.replace(folder / source.folder, staging / "replaced")
            os.replace(staging / source.folder, folder / source.folder)
    except Exception as error:
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise _not_found(source, folders, error) from None


def _load(source: _Source, root: Path | None, download: bool) -> Dataset:
    folders = [Path(root)] if root else [DATA_DIR / source.name, DATA_DIR]
    where = next((f for f in folders if source.present(f)), None)
    if where is None and download:
        _download(source, folders)
        where = folders[0]
    if where is None:
        raise _not_found(source, folders)
    return source.read(source, where)


def _fetch_torchvision(staging: Path, dataset: str, **kwargs) -> None:
    """Download with torchvision, which checks the MD5s; STL-10's archive holds every split."""
    import torchvision.datasets

    getattr(torchvision.datasets, dataset)(str(staging), download=True, **kwargs)


# CIFAR-100: cifar-100-python/{train,test,meta}, Python pickles of dicts; `data` is (N, 3072)
# uint8, each row the red, green then blue 32x32 planes, row-major. Written by Python 2, hence
# latin1; unpickled, so official files only.
def _read_cifar100(source: _Source, where: Path) -> Dataset:
    folder = where / source.folder
    with _reading(source, where, folder / "meta"), open(folder / "meta", "rb") as f:
        classes = tuple(str(c) for c in pickle.load(f, encoding="latin1")["fine_label_names"])
        if len(classes) != 100:
            raise ValueError(f"{len(classes)} fine label names, expected 100")
    splits = []
    for split in ("train", "test"):
        with _reading(source, where, folder / split), open(folder / split, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
            images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            splits.append(_checked(images, entry["fine_labels"], len(classes)))
    return Dataset(source.name, *splits[0], *splits[1], classes)


# STL-10: stl10_binary/{train,test}_X.bin hold raw uint8 (N, 3, 96, 96) images with each channel
# stored column-major; {train,test}_y.bin one uint8 label 1..10 per image; class_names.txt one
# name per line. The 100,000 unlabelled images (unlabeled_X.bin) are not read.
STL10_SIZE = 96


def _read_stl10(source: _Source, where: Path) -> Dataset:
    folder = where / source.folder
    with _reading(source, where, folder / "class_names.txt"):
        names = (folder / "class_names.txt").read_text().splitlines()
        classes = tuple(filter(None, map(str.strip, names)))
    splits = []
    for split in ("train", "test"):
        images_path, labels_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
        with _reading(source, where, images_path):
            images = np.fromfile(images_path, dtype=np.uint8)
            images = images.reshape(-1, 3, STL10_SIZE, STL10_SIZE).transpose(0, 1, 3, 2)
        with _reading(source, where, labels_path):
            labels = np.fromfile(labels_path, dtype=np.uint8).astype(np.int64) - 1  # 1..10 on disk
            splits.append(_checked(images, labels, len(classes)))
    return Dataset(source.name, *splits[0], *splits[1], classes)


# Tiny-ImageNet: tiny-imagenet-200/ with wnids.txt (the 200 WordNet ids), words.txt (id, tab,
# comma-separated names, for all of ImageNet), train/<wnid>/images/*.JPEG (500 per class) and
# val/images/*.JPEG with val/val_annotations.txt (file, tab, wnid, box); test/ has no labels, so
# the validation set is the test set. Labels index the sorted wnids, as ImageFolder numbers them.
TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
# Stanford publishes no checksum. This MD5 is the one that widely used loaders (e.g. Avalanche's
# TinyImagenet) enforce on this URL, and it matches a recorded download of 248,100,043 bytes.
TINYIMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINYIMAGENET_SIZE = 64


def _fetch_tinyimagenet(staging: Path) -> None:
    archive = staging / "tiny-imagenet-200.zip"
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(TINYIMAGENET_URL, timeout=60) as response, archive.open("wb") as f:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            f.write(chunk)
    if digest.hexdigest() != TINYIMAGENET_MD5:
        raise RuntimeError(f"{archive.name} has MD5 {digest.hexdigest()}, not {TINYIMAGENET_MD5}")
    with zipfile.ZipFile(archive) as z:
        z.extractall(staging)


def _sort_val_by_class(base: Path) -> None:
    """val/images/*.JPEG -> val/<wnid>/images/*.JPEG, the layout of train/, once: built as
    val.tmp, then swapped in by two renames (val -> val.old, val.tmp -> val). A run stopped while
    building is redone; one stopped between the renames is finished here; a layout already sorted
    by class is left alone."""
    val, new, old = base / "val", base / "val.tmp", base / "val.old"
    if old.exists():
        if not val.exists():
            os.replace(new, val)  # val.tmp was complete before val was moved aside
        shutil.rmtree(old)
    if not (val / "images").is_dir():
        return
    shutil.rmtree(new, ignore_errors=True)
    try:
        lines = (val / "val_annotations.txt").read_text().splitlines()
        for name, wnid in [tuple(line.split("\t")[:2]) for line in lines if line.strip()]:
            (new / wnid / "images").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(val / "images" / name, new / wnid / "images" / name)
        shutil.copyfile(val / "val_annotations.txt", new / "val_annotations.txt")
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    os.replace(val, old)
    os.replace(new, val)
    shutil.rmtree(old)


def _decode_jpeg(path: Path) -> np.ndarray:
    """One Tiny-ImageNet JPEG as uint8 (3, 64, 64); a few are greyscale, hence convert."""
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    if array.shape[:2] != (TINYIMAGENET_SIZE, TINYIMAGENET_SIZE):
        raise ValueError(f"image is {array.shape[1]}x{array.shape[0]}, expected 64x64")
    return array.transpose(2, 0, 1)


def _read_jpeg_classes(source: _Source, where: Path, folder: Path, wnids: list[str]):
    """Decode folder/<wnid>/**/*.JPEG for every class, labelled by the wnid's index."""
    paths, labels = [], []
    for label, wnid in enumerate(wnids):
        with _reading(source, where, folder / wnid):
            found = sorted((folder / wnid).rglob("*.JPEG"))
            if not found:
                raise FileNotFoundError("no JPEG images for this class")
        paths += found
        labels += [label] * len(found)
    images = np.empty((len(paths), 3, TINYIMAGENET_SIZE, TINYIMAGENET_SIZE), dtype=np.uint8)
    for i, path in enumerate(paths):
        with _reading(source, where, path):
            images[i] = _decode_jpeg(path)
    return _checked(images, labels, len(wnids))


def _read_tinyimagenet(source: _Source, where: Path) -> Dataset:
    """From the uint8 cache when there is one; else decode the 110,000 JPEGs (about a minute)
    and write that cache, which later loads read in seconds."""
    cache = where / source.cache
    if cache.is_file():
        fix = f"delete it and it is rebuilt from {where / source.folder} on the next load"
        with _reading(source, where, cache, fix), np.load(cache, allow_pickle=False) as z:
            classes = tuple(str(c) for c in z["classes"])
            train = _checked(z["train_images"], z["train_labels"], len(classes))
            test = _checked(z["test_images"], z["test_labels"], len(classes))
        return Dataset(source.name, *train, *test, classes)
    base = where / source.folder
    with _reading(source, where, base / "wnids.txt"):
        wnids = sorted({w.strip() for w in (base / "wnids.txt").read_text().split()})
    with _reading(source, where, base / "words.txt"):  # each class named by its first name there
        lines = (line.split("\t", 1) for line in (base / "words.txt").read_text().splitlines())
        words = {parts[0]: parts[1] for parts in lines if len(parts) == 2}
        classes = tuple(words[w].split(",")[0].strip() for w in wnids)
    with _reading(source, where, base / "val" / "val_annotations.txt"):
        _sort_val_by_class(base)
    train = _read_jpeg_classes(source, where, base / "train", wnids)
    test = _read_jpeg_classes(source, where, base / "val", wnids)
    data = Dataset(source.name, *train, *test, classes)
    try:
        arrays = {key: getattr(data, key).numpy() for key in _TENSORS}
        np.savez(buffer := io.BytesIO(), classes=np.array(data.classes), **arrays)
        atomic_write(cache, buffer.getvalue())
    except OSError as error:  # a read-only or full disk: the data is still good
        warnings.warn(f"{first_line(error)} The data is read again next time.", stacklevel=2)
    return data


_CIFAR100 = _Source(
    "cifar100", "CIFAR-100", "cifar-100-python", ("train", "test", "meta"),
    functools.partial(_fetch_torchvision, dataset="CIFAR100"), _read_cifar100,
)  # fmt: skip
_STL10 = _Source(
    "stl10", "STL-10", "stl10_binary",
    ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt"),
    functools.partial(_fetch_torchvision, dataset="STL10", split="train"), _read_stl10,
)  # fmt: skip
_TINYIMAGENET = _Source(
    "tinyimagenet", "Tiny-ImageNet", "tiny-imagenet-200",
    ("wnids.txt", "words.txt", "train"),  # not val/: it is briefly absent while sorted by class
    _fetch_tinyimagenet, _read_tinyimagenet, cache="tinyimagenet-uint8.npz",
)  # fmt: skip


def load_cifar100(root: Path | None = None, download: bool = False) -> Dataset:
    """CIFAR-100 with its 100 fine labels: 50,000 + 10,000 images, 32x32."""
    return _load(_CIFAR100, root, download)


def load_stl10(root: Path | None = None, download: bool = False) -> Dataset:
    """STL-10's labelled images: 5,000 training + 8,000 test, 96x96, 10 classes."""
    return _load(_STL10, root, download)


def load_tinyimagenet(root: Path | None = None, download: bool = False) -> Dataset:
    """Tiny-ImageNet: 100,000 training + 10,000 validation (as test) images, 64x64, 200 classes."""
    return _load(_TINYIMAGENET, root, download)


DATASETS = {
    "fashion-mnist": load_fashion_mnist, "cifar100": load_cifar100,
    "stl10": load_stl10, "tinyimagenet": load_tinyimagenet,
}  # fmt: skip


def load_dataset(name: str, root: Path | None = None, download: bool = False) -> Dataset:
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}. "
            "Pick one of those names."
        )
    return DATASETS[name](root, download)
