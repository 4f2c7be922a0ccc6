"""Your own data as an egalib dataset: a folder of images in the ImageFolder layout, or tensors.
Register one by name with `egalib.register_dataset`; it then splits, validates and trains as the
built-in datasets do (uint8 on the device, the same held-out validation split)."""

import contextlib
from pathlib import Path

from . import image_folders
from .datasets import DatasetCorruptError, DatasetNotFoundError, Source
from .files import first_line
from .splits import Dataset, as_tensors


class ImageFolder(Source):
    """<root>/train/<class>/<images> and <root>/test/<class>/<images>, any depth below a class
    folder; classes are the sorted folder names of train/. Images are square and of one size;
    `grey` reads them as one channel. Decoded at each load: nothing is written to your folder."""

    title, folder, layouts = "image folder", "", ("{}",)
    files = ("train", "test")

    def __init__(self, root, grey: bool = False):
        self.root, self.mode = Path(root).expanduser().resolve(), "L" if grey else "RGB"
        self.name = self.root.name

    def folders(self, root: Path | None) -> list[Path]:
        return [self.root]

    def not_found(self, root: Path | None, error: BaseException | None = None):
        return DatasetNotFoundError(
            f"dataset {self.name!r}: {self.root} has no train/ and test/ folders; put each "
            "class's images in train/<class>/ and test/<class>/ there."
        )

    @contextlib.contextmanager
    def reading(self, where: Path, path: Path):
        """Any failure while `path` is read is one sentence naming it."""
        try:
            yield path
        except Exception as error:
            raise DatasetCorruptError(
                f"dataset {self.name!r}: {path}: {first_line(error)}; fix or remove it, then "
                "load again."
            ) from None

    def read(self, where: Path) -> Dataset:
        with self.reading(where, where / "train"):
            classes = image_folders.class_names(where / "train")
            if len(classes) < 2:
                raise ValueError(f"{len(classes)} class folder(s); a classifier needs at least 2")
        with self.reading(where, where / "test"):
            missing = set(classes) ^ set(image_folders.class_names(where / "test"))
            if missing:
                raise ValueError(f"its class folders differ from train/'s: {sorted(missing)}")
        train = self.decode(where, where / "train", classes)
        test = self.decode(where, where / "test", classes, size=train[0].shape[-1])
        return Dataset(self.name, *train, *test, tuple(classes))

    def decode(self, where: Path, folder: Path, classes, size: int | None = None):
        reading = lambda path: self.reading(where, path)
        paths, labels = image_folders.class_images(folder, classes, reading)
        images = image_folders.decode(paths, reading, size, self.mode)
        return as_tensors(images, labels, len(classes))


class TensorSource(Source):
    """Images already in memory: uint8 (N, C, H, W) tensors or arrays, C 1 or 3 and square as
    an image folder gives them, of one shape in both splits; int labels 0..len(classes) - 1."""

    title, files = "tensor dataset", ()

    def __init__(self, train_images, train_labels, test_images, test_labels, classes):
        self.name, self.classes = "tensors", tuple(str(c) for c in classes)
        self.parts = (train_images, train_labels, test_images, test_labels)

    def load(self, root: Path | None = None, download: bool = False) -> Dataset:
        train, train_labels = self.checked(*self.parts[:2])
        test, test_labels = self.checked(*self.parts[2:])
        if train.shape[1:] != test.shape[1:]:
            raise ValueError(
                f"dataset {self.name!r}: training images are (C, H, W) {tuple(train.shape[1:])} "
                f"but test images {tuple(test.shape[1:])}; give both splits one shape."
            )
        return Dataset(self.name, train, train_labels, test, test_labels, self.classes)

    def checked(self, images, labels) -> tuple:
        try:
            return as_tensors(images, labels, len(self.classes))
        except ValueError as error:
            hint = ""
            if str(error).startswith("images are"):
                hint = (
                    ": e.g. (x * 255).to(torch.uint8) of floats in [0, 1], x.permute(0, 3, 1, 2) "
                    "of channels-last images"
                )
            raise ValueError(f"dataset {self.name!r}: {error}{hint}.") from None
