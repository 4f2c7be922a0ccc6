"""Datasets' files: where they sit, their formats, downloads, checksums and decoded caches, read
into a checked in-memory `splits.Dataset`."""

import contextlib
import functools
import gzip
import hashlib
import io
import os
import tempfile
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np

from . import image_folders
from .files import REPO_DATA, atomic_write, described, first_line, is_plain_name, load_pickle
from .splits import TENSORS, Dataset, as_tensors

DATA_DIR = Path(os.environ.get("EGALIB_DATA") or REPO_DATA)  # where datasets are downloaded
DEBIAN_DATASETS = Path("/usr/share/datasets")  # where Debian's dataset-* packages put theirs


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where egalib looked; the message says where and how to fix it."""


class DatasetCorruptError(ValueError):
    """A dataset file is there but cannot be read; the message names it and how to fix it."""


class Source:
    """One dataset: its files, where they may sit, how to fetch and read them. Each dataset is a
    subclass defining `read(where)`, and `fetch(staging)` unless torchvision downloads it."""

    name: str  # registry name, the folder under DATA_DIR and the CLI argument
    title: str  # how messages name it
    folder: str  # the top folder that `fetch` unpacks; a download moves it into place
    files: tuple[str, ...]  # the files `read` reads: all of them found = the dataset is there
    layouts: tuple[str, ...] = ()  # where a file (`{}`) may sit; by default inside `folder`
    cache: str | None = None  # a decoded copy beside `folder`, enough on its own
    debian: str | None = None  # the folder that Debian's dataset-<debian> package installs
    torchvision: str = ""  # the torchvision.datasets class that downloads it, checking MD5s

    def fetch(self, staging: Path) -> None:
        """Download into the empty folder `staging` and unpack there, checking checksums."""
        import torchvision.datasets

        getattr(torchvision.datasets, self.torchvision)(str(staging), download=True)

    def local(self, root: Path | None) -> Path:  # where a download goes
        return Path(root) if root else DATA_DIR / self.name

    def folders(self, root: Path | None) -> list[Path]:
        """Debian's package folder (if any), then `root`, or else DATA_DIR/<name> and DATA_DIR,
        where torchvision-style folders sit side by side."""
        debian = [DEBIAN_DATASETS / self.debian] if self.debian else []
        return [*debian, self.local(root), *([] if root else [DATA_DIR])]

    def find(self, where: Path) -> dict[str, Path] | None:
        """Each file's path in `where` (its first layout there), or None if one is missing."""
        layouts, paths = self.layouts or (f"{self.folder}/{{}}",), {}
        for name in self.files:
            candidates = (where / layout.format(name) for layout in layouts)
            paths[name] = next((path for path in candidates if path.exists()), None)
        return paths if all(paths.values()) else None

    def present(self, where: Path) -> bool:
        return bool(self.cache and (where / self.cache).is_file()) or self.find(where) is not None

    def load(self, root: Path | None = None, download: bool = False) -> Dataset:
        """From the first folder that has it, else a download if asked; from its cache if any."""
        where = next((f for f in self.folders(root) if self.present(f)), None)
        if where is None and download:
            where = self.download(root)
        if where is None:
            raise self.not_found(root)
        cache = where / self.cache if self.cache else None
        if cache and cache.is_file():
            return self.read_cache(where, cache)
        data = self.read(where)
        if cache:
            self.write_cache(data, cache)
        return data

    def download(self, root: Path | None) -> Path:
        """Fetch into a staging folder, then move the official folder into place (replacing an
        incomplete one); any failure is a DatasetNotFoundError and leaves nothing behind."""
        local = self.local(root)
        made = not local.exists()
        try:
            local.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".download-", dir=local) as staging:
                staging = Path(staging)
                self.fetch(staging)
                if self.find(staging) is None:
                    raise RuntimeError(f"the archive holds no complete `{self.folder}/` folder")
                if (local / self.folder).exists():  # incomplete: goes with the staging folder
                    os.replace(local / self.folder, staging / "replaced")
                os.replace(staging / self.folder, local / self.folder)
        except Exception as error:
            if made:
                with contextlib.suppress(OSError):
                    local.rmdir()
            raise self.not_found(root, error) from None
        return local

    def not_found(self, root: Path | None, error: BaseException | None = None):
        failed = f", and the download failed ({described(error)})" if error else ""
        by_hand = f"put the official `{self.folder}/` folder in {self.local(root)}"
        if self.debian:
            by_hand = f"install Debian's package (apt-get install dataset-{self.debian})"
        return DatasetNotFoundError(
            f"{self.title} not found: looked in {', '.join(map(str, self.folders(root)))}{failed}; "
            f"run `python -m egalib download {self.name}` where a network exists, or {by_hand}."
        )

    @contextlib.contextmanager
    def reading(self, where: Path, file: str | Path, fix: str | None = None):
        """Yield the path of `file` (one of `files`, or any path); turn a failure to parse it into
        one DatasetCorruptError sentence that names the file and what to do."""
        path = (self.find(where) or {})[file] if isinstance(file, str) else file
        try:
            yield path
        except Exception as error:
            base = where / self.folder
            fix = fix or (
                f"delete {base if path.is_relative_to(base) else path} and run `python -m "
                f"egalib download {self.name}` where a network exists, or copy the official "
                "files there again"
            )
            problem = f"{self.title} file {path} is unreadable, corrupt or truncated"
            raise DatasetCorruptError(f"{problem} ({described(error)}); {fix}.") from None

    def read_cache(self, where: Path, cache: Path) -> Dataset:
        fix = f"delete it and it is rebuilt from {where / self.folder} on the next load"
        with self.reading(where, cache, fix), np.load(cache, allow_pickle=False) as z:
            classes = tuple(str(c) for c in z["classes"])
            train = as_tensors(z["train_images"], z["train_labels"], len(classes))
            test = as_tensors(z["test_images"], z["test_labels"], len(classes))
        return Dataset(self.name, *train, *test, classes)

    def write_cache(self, data: Dataset, path: Path) -> None:
        try:
            arrays = {key: getattr(data, key).numpy() for key in TENSORS}
            np.savez(buffer := io.BytesIO(), classes=np.array(data.classes), **arrays)
            atomic_write(path, buffer.getvalue())
        except OSError as error:  # a read-only or full disk: the data is still good
            warnings.warn(f"{first_line(error)} The data is read again next time.", stacklevel=3)


FASHION_MNIST_CLASSES = tuple(
    "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot".split(",")
)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file, gzipped or not; cached while the file is unchanged (notebooks reload it)."""
    stat = path.stat()
    return _decode_idx(path, ndim, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _decode_idx(path: Path, ndim: int, *stamp) -> np.ndarray:
    """Bytes 0, 0, 8 (uint8) and `ndim`, each dimension as a big-endian uint32, then the values,
    row-major; `stamp` (time and size) keys the cache, so a file changed since is read again."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if raw[:4] != bytes([0, 0, 8, ndim]):
        raise ValueError(f"it does not begin 0, 0, 8, {ndim} as an IDX file of {ndim}-D uint8 does")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


class FashionMNIST(Source):
    """60,000 training + 10,000 test images, 28x28 greyscale, 10 classes, in four IDX files: loose
    as Debian's package and Zalando ship them, or in torchvision's FashionMNIST/raw/."""

    name, title, folder = "fashion-mnist", "Fashion-MNIST", "FashionMNIST"
    debian, torchvision = "fashion-mnist", "FashionMNIST"
    files = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    files += ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    layouts = tuple(s + f for s in ("", "FashionMNIST/") for f in ("{}.gz", "{}", "raw/{}.gz"))

    def read(self, where: Path) -> Dataset:
        splits = []
        for split in ("train", "t10k"):
            with self.reading(where, f"{split}-images-idx3-ubyte") as path:
                images = _read_idx(path, 3)[:, None].copy()  # a copy: the cached array is read-only
            with self.reading(where, f"{split}-labels-idx1-ubyte") as path:
                splits.append(as_tensors(images, _read_idx(path, 1), len(FASHION_MNIST_CLASSES)))
        return Dataset(self.name, *splits[0], *splits[1], FASHION_MNIST_CLASSES)


class CIFAR100(Source):
    """50,000 training + 10,000 test images, 32x32, the 100 fine labels: cifar-100-python/ holds
    Python 2 pickles (hence latin1; official files only) of dicts whose `data` is (N, 3072) uint8,
    each row the red, green then blue 32x32 planes, row-major."""

    name, title, folder, torchvision = "cifar100", "CIFAR-100", "cifar-100-python", "CIFAR100"
    files = ("train", "test", "meta")
    # the published MD5s (torchvision's); a file that differs is refused before it is unpickled
    md5 = dict(train="16019d7e3df5f24257cddd939b257f8d", test="f0ef6b0ae62326f3e7ffdfab6717acfc")
    md5["meta"] = "7973b15100ade9c7d40fb424638fde48"

    def verified(self, path: Path) -> io.BytesIO:
        """The file's bytes, read once: the official file, or any copy if EGALIB_TRUST_DATA=1."""
        data = path.read_bytes()
        found = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if found != self.md5[path.name] and os.environ.get("EGALIB_TRUST_DATA") != "1":
            raise ValueError(
                f"its MD5 is {found}, not the published {self.md5[path.name]}: it is not the "
                "official file (set EGALIB_TRUST_DATA=1 to read a copy you made yourself)"
            )
        return io.BytesIO(data)

    def read(self, where: Path) -> Dataset:
        with self.reading(where, "meta") as path, self.verified(path) as f:
            classes = tuple(str(c) for c in load_pickle(f)["fine_label_names"])
            if len(classes) != 100:
                raise ValueError(f"{len(classes)} fine label names, expected 100")
        splits = []
        for split in ("train", "test"):
            with self.reading(where, split) as path, self.verified(path) as f:
                entry = load_pickle(f)
                images = np.asarray(entry["data"]).reshape(-1, 3, 32, 32)
                splits.append(as_tensors(images, entry["fine_labels"], len(classes)))
        return Dataset(self.name, *splits[0], *splits[1], classes)


class STL10(Source):
    """The labelled images, 5,000 training + 8,000 test, 96x96, 10 classes: stl10_binary/*_X.bin
    hold raw uint8 (N, 3, 96, 96) images with each channel stored column-major, *_y.bin one uint8
    label 1..10 per image, class_names.txt one name per line. The unlabelled ones are not read."""

    name, title, folder, torchvision = "stl10", "STL-10", "stl10_binary", "STL10"
    files = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt")

    def read(self, where: Path) -> Dataset:
        with self.reading(where, "class_names.txt") as path:
            classes = tuple(filter(None, map(str.strip, path.read_text().splitlines())))
            if len(classes) != 10:
                raise ValueError(f"{len(classes)} class names, expected 10")
        splits = []
        for split in ("train", "test"):
            with self.reading(where, f"{split}_X.bin") as path:
                images = np.fromfile(path, np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
            with self.reading(where, f"{split}_y.bin") as path:
                labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1  # 1..10 on disk
                splits.append(as_tensors(images, labels, len(classes)))
        return Dataset(self.name, *splits[0], *splits[1], classes)


TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
# Stanford publishes no checksum: this is the MD5 that loaders such as Avalanche's enforce.
TINYIMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"


class TinyImageNet(Source):
    """100,000 training + 10,000 validation (as test: test/ has no labels) images, 64x64, 200
    classes: wnids.txt, words.txt (id, tab, names), train/<wnid>/images/*.JPEG, val/images/*.JPEG
    and val/val_annotations.txt (file, tab, wnid, box). Labels index the sorted wnids."""

    name, title, folder = "tinyimagenet", "Tiny-ImageNet", "tiny-imagenet-200"
    files = ("wnids.txt", "words.txt", "train")  # not val/: briefly absent while sorted by class
    cache = "tinyimagenet-uint8.npz"  # decoding the JPEGs is slow

    def fetch(self, staging: Path) -> None:
        archive, digest = staging / "tiny-imagenet-200.zip", hashlib.md5(usedforsecurity=False)
        with urllib.request.urlopen(TINYIMAGENET_URL, timeout=60) as web, archive.open("wb") as f:
            while chunk := web.read(1 << 20):
                digest.update(chunk)
                f.write(chunk)
        if (md5 := digest.hexdigest()) != TINYIMAGENET_MD5:
            raise RuntimeError(f"{archive.name} has MD5 {md5}, not {TINYIMAGENET_MD5}")
        with zipfile.ZipFile(archive) as z:
            z.extractall(staging)

    def read(self, where: Path) -> Dataset:
        with self.reading(where, "wnids.txt") as path:
            wnids = sorted({w.strip() for w in path.read_text().split()})
            if len(wnids) < 2 or not all(map(is_plain_name, wnids)):
                raise ValueError(f"its {len(wnids)} ids must be 2 or more plain folder names")
        with self.reading(where, "words.txt") as path:  # a class is named by its first name there
            lines = (line.split("\t", 1) for line in path.read_text().splitlines())
            words = {parts[0]: parts[1] for parts in lines if len(parts) == 2}
            classes = tuple(words[w].split(",")[0].strip() for w in wnids)
        base = where / self.folder
        with self.reading(where, base / "val" / "val_annotations.txt"):
            image_folders.sort_by_class(base / "val", "val_annotations.txt", wnids)
        train, test = (self.read_classes(where, base / split, wnids) for split in ("train", "val"))
        return Dataset(self.name, *train, *test, classes)

    def read_classes(self, where: Path, folder: Path, wnids: list[str]):
        """Decode folder/<wnid>/**/<image> for every class, labelled by the wnid's index."""
        reading = functools.partial(self.reading, where)
        paths, labels = image_folders.class_images(folder, wnids, reading)
        return as_tensors(image_folders.decode(paths, reading, size=64), labels, len(wnids))


DATASETS = {s.name: s for s in (FashionMNIST(), CIFAR100(), STL10(), TinyImageNet())}


def load_dataset(name: str, root: Path | None = None, download: bool = False) -> Dataset:
    """The dataset `name`, as `Source.load` finds, downloads (with `download`) and reads it."""
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}. "
            "Pick one of those names."
        )
    return DATASETS[name].load(root, download)
