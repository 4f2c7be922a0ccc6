"""Images kept as files, one folder per class (Tiny-ImageNet's and torchvision's ImageFolder
layout), decoded once into uint8 arrays."""

import os
import shutil
from pathlib import Path

import numpy as np

from .files import is_plain_name

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def class_names(folder: Path) -> list[str]:
    """The class folders inside `folder`, sorted: a label is the index of its folder's name."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir())


def class_images(folder: Path, classes, reading) -> tuple[list[Path], list[int]]:
    """Every image file under folder/<class>/ (any depth), in order, with its class's index.
    `reading(path)` is a context that turns a failure into one sentence naming that path."""
    paths, labels = [], []
    for label, name in enumerate(classes):
        with reading(folder / name):
            found = sorted(p for p in (folder / name).rglob("*") if is_image(p))
            if not found:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in it")
        paths += found
        labels += [label] * len(found)
    return paths, labels


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def decode(paths: list[Path], reading, size: int | None = None, mode: str = "RGB") -> np.ndarray:
    """The images as uint8 (N, C, H, W) in PIL `mode` ("RGB": 3 channels, "L": 1). All of them
    square and of one size: the first image's, or `size` x `size` when given. Each is checked
    before it is decoded: a huge one costs nothing, and one of 16- or 32-bit samples (PIL modes
    I;16, I, F), which PIL's convert() would clip to 255, is refused rather than read wrong."""
    from PIL import Image

    if not paths:
        raise ValueError("no images to decode")
    channels, images = Image.getmodebands(mode), None
    for i, path in enumerate(paths):
        with reading(path), Image.open(path) as image:
            if image.mode in ("I", "F") or image.mode.startswith("I;"):
                raise ValueError(
                    f"image has {image.mode} samples, wider than 8 bits: save it as 8-bit "
                    "(each sample scaled to 0-255)"
                )
            if images is None:
                if not size and image.width != image.height:
                    raise ValueError(
                        f"image is {image.width}x{image.height}: crop or resize to square images"
                    )
                side = size or image.width
                images = np.empty((len(paths), channels, side, side), dtype=np.uint8)
            if image.size != (side, side):
                raise ValueError(
                    f"image is {image.width}x{image.height}, expected {side}x{side} like the "
                    "others: resize the images to one size"
                )
            pixels = np.asarray(image.convert(mode)).reshape(side, side, channels)
            images[i] = pixels.transpose(2, 0, 1)
    return images


def sort_by_class(folder: Path, annotations: str, classes) -> None:
    """folder/images/* -> folder/<class>/images/*, as `annotations` (file, tab, class per line)
    says: built as <folder>.tmp and swapped in by two renames, once the annotations are found to
    list every image exactly once, each in one of `classes`. A run stopped while building is
    redone; one stopped between the renames is finished."""
    new, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    if old.exists():
        if not folder.exists():
            os.replace(new, folder)  # the new folder was complete before the old moved aside
        shutil.rmtree(old)
    if not (folder / "images").is_dir():
        return
    shutil.rmtree(new, ignore_errors=True)
    lines = (folder / annotations).read_text().splitlines()
    rows = [line.split("\t") for line in lines if line.strip()]
    check_annotations(rows, folder / "images", classes)
    try:
        for name, label, *_ in rows:
            (new / label / "images").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / "images" / name, new / label / "images" / name)
        shutil.copyfile(folder / annotations, new / annotations)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old)


def check_annotations(rows: list[list[str]], images: Path, classes) -> None:
    """Refuse, before any file moves, annotations that would lose, repeat or misplace an image."""
    if any(len(row) < 2 or not (is_plain_name(row[0]) and is_plain_name(row[1])) for row in rows):
        raise ValueError("a line is not a plain file name, a tab and a plain class name")
    listed, present = sorted(row[0] for row in rows), sorted(p.name for p in images.iterdir())
    if listed != present:
        raise ValueError(
            f"it lists {len(listed)} files ({len(set(listed))} different) for the "
            f"{len(present)} files in {images}, where each must be listed once"
        )
    if unknown := sorted({row[1] for row in rows} - set(classes)):
        raise ValueError(f"it names classes outside the dataset's list: {', '.join(unknown[:3])}")
