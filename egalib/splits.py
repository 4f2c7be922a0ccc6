"""A dataset in memory: uint8 (N, C, H, W) images and int64 labels, checked when they are made
(`as_tensors`), and its split into the training, validation and test images of a run
(`Dataset.split`). It is held whole and moved to the device once; `views` makes each batch's
augmented views there."""

import numbers
from dataclasses import dataclass, replace

import numpy as np
import torch

TENSORS = ("train_images", "train_labels", "test_images", "test_labels")
HELD_OUT = ("val_images", "val_labels")  # present after `Dataset.split` holds some out
# the validation split's own shuffle, apart from the runs' seeds: one split for all of them
HOLDOUT_SEED = 1_000_003


@dataclass
class Dataset:
    name: str
    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    val_images: torch.Tensor | None = None  # held out of the training images by `split`
    val_labels: torch.Tensor | None = None

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
        present = (key for key in (*TENSORS, *HELD_OUT) if getattr(self, key) is not None)
        moved = {key: getattr(self, key).to(device, non_blocking=True) for key in present}
        return replace(self, **moved)

    def split(
        self, train: int | None = None, val: int = 0, test: int | None = None, seed: int = 0
    ) -> "Dataset":
        """A run's images, each part class-balanced: `val` training images held out as the
        validation split, drawn by a shuffle of its own and so the same for every seed; then
        `train` of the other training images and `test` test images, drawn by `seed`."""
        held_out = balanced_indices(self.train_labels, val, HOLDOUT_SEED) if val else None
        pool = torch.arange(len(self.train_labels))
        if held_out is not None:
            if len(held_out) >= len(pool):
                raise ValueError(
                    f"a validation split of {val} images leaves none of {self.name}'s "
                    f"{len(pool)} training images to train on; give a smaller val_size."
                )
            pool = pool[~torch.isin(pool, held_out)]
        train_idx = pool[balanced_indices(self.train_labels[pool], train, seed)]
        test_idx = balanced_indices(self.test_labels, test, seed)
        take = lambda tensor, index: None if index is None else tensor[index]
        return replace(
            self,
            train_images=self.train_images[train_idx],
            train_labels=self.train_labels[train_idx],
            val_images=take(self.train_images, held_out),
            val_labels=take(self.train_labels, held_out),
            test_images=self.test_images[test_idx],
            test_labels=self.test_labels[test_idx],
        )


def balanced_indices(labels: torch.Tensor, count: int | None, seed: int) -> torch.Tensor:
    """`count` indices with (nearly) equal numbers per class, or all indices when count is None."""
    if count is not None and not (isinstance(count, numbers.Integral) and count >= 0):
        raise ValueError(
            f"a number of images must be whole and >= 0, or None (all); got {count!r}."
        )
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


def as_tensors(images, labels, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked, never cast: float images or labels are refused rather than rounded."""
    images, labels = np.asarray(images), np.asarray(labels)
    if num_classes < 2:
        raise ValueError(f"{num_classes} class(es), where a classifier needs at least 2")
    if images.dtype != np.uint8 or images.ndim != 4 or not square_grey_or_rgb(images.shape):
        raise ValueError(
            f"images are {images.dtype} with shape {images.shape}; expected uint8 (N, C, H, W), "
            "C 1 (grey) or 3 (RGB), H = W"
        )
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(
            f"labels are {labels.dtype} of shape {labels.shape}; expected integers, one per "
            "image (N,)"
        )
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels outside 0..{num_classes - 1}")
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))


def square_grey_or_rgb(shape: tuple) -> bool:
    """(N, C, H, W) as an image folder gives them, and the views and teachers take them."""
    return shape[1] in (1, 3) and shape[2] == shape[3]
