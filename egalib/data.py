"""Datasets as uint8 tensors, and the two augmented views made on the training device.

A dataset is held whole as uint8 (N, C, H, W) images and int64 labels, moved to the device
once. Each batch's student view and teacher view are made there from the same images, with
independent random crops and flips, so no DataLoader workers or PIL are involved.
"""

import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO_DATA = Path(__file__).resolve().parent.parent / "data"  # what ships: teachers, paper numbers
DATA_DIR = Path(os.environ.get("EGALIB_DATA", REPO_DATA))  # where datasets are downloaded
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


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
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Dataset(
            self.name, move(self.train_images), move(self.train_labels),
            move(self.test_images), move(self.test_labels), self.classes,
        )  # fmt: skip

    def subset(self, train: int | None = None, test: int | None = None, seed: int = 0) -> "Dataset":
        """A class-balanced random subset (the first `train` / `test` of a seeded shuffle)."""
        train_idx = balanced_indices(self.train_labels, train, seed)
        test_idx = balanced_indices(self.test_labels, test, seed)
        return Dataset(
            self.name, self.train_images[train_idx], self.train_labels[train_idx],
            self.test_images[test_idx], self.test_labels[test_idx], self.classes,
        )  # fmt: skip


def balanced_indices(labels: torch.Tensor, count: int | None, seed: int) -> torch.Tensor:
    """`count` indices with (nearly) equal numbers per class, or all indices when count is None."""
    if count is None or count >= len(labels):
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
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
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


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
        "fashion-mnist",
        arrays["train_images"].unsqueeze(1),
        arrays["train_labels"].long(),
        arrays["test_images"].unsqueeze(1),
        arrays["test_labels"].long(),
        FASHION_MNIST_CLASSES,
    )


DATASETS = {"fashion-mnist": load_fashion_mnist}


def load_dataset(name: str, root: Path | None = None, download: bool = False) -> Dataset:
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}. "
            "Pick one of those names."
        )
    return DATASETS[name](root, download)


# ---------------------------------------------------------------------------------------------
# Views, made on the device


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """RandomCrop(size, padding) per sample, zero fill, for a batch (B, C, H, W) of any dtype."""
    if padding == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), device=images.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), device=images.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Horizontal flip of each sample with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


@dataclass(frozen=True)
class ViewSpec:
    """How one network sees an image: size, channels and normalisation."""

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def finish(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or float [0,255] images -> resized, channel-matched, normalised float."""
        x = images.float().div_(255)
        if x.shape[1] != self.channels:
            if x.shape[1] != 1:
                raise ValueError(
                    f"cannot feed {x.shape[1]}-channel images to a {self.channels}-channel "
                    "network; use a dataset or model with matching channels."
                )
            x = x.expand(-1, self.channels, -1, -1)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
            x = x.clamp_(0, 1)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype)[None, :, None, None]
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype)[None, :, None, None]
        return (x - mean) / std


def train_view(
    images: torch.Tensor, spec: ViewSpec, generator: torch.Generator, padding: int = 4
) -> torch.Tensor:
    """RandomCrop(padding) at the native size -> resize to spec.size -> flip -> normalise.

    This is the student view (resize is a no-op at the native size) and the teacher view (for
    CLIP: crop at 32 px, bicubic resize to 224, flip), each drawn independently.
    """
    cropped = random_crop(images, padding, generator)
    return spec.finish(random_flip(cropped, generator))


def eval_view(images: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """No augmentation: resize and normalise only."""
    return spec.finish(images)
