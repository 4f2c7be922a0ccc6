"""CIFAR-100, STL-10 and Tiny-ImageNet loaders, on tiny fake copies in the official formats.

Nothing here touches the network: downloads are tested against a fake `urlopen`.
"""

import hashlib
import io
import os
import pathlib
import pickle
import re
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from egalib import datasets as data

# ---------------------------------------------------------------------------------------------
# Fake copies in the on-disk formats


@pytest.fixture(autouse=True)
def trust_fake_copies(monkeypatch):
    """The fake CIFAR-100 pickles are not the published files: read them anyway."""
    monkeypatch.setenv("EGALIB_TRUST_DATA", "1")


def write_cifar100(where, train=6, test=4):
    """cifar-100-python/{meta,train,test} as Python pickles; returns the raw (N, 3072) rows."""
    folder = where / "cifar-100-python"
    folder.mkdir(parents=True)
    meta = {
        "fine_label_names": [f"fine{i:02d}" for i in range(100)],
        "coarse_label_names": [f"coarse{i:02d}" for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    rng = np.random.default_rng(0)
    raw = {}
    for split, n in (("train", train), ("test", test)):
        rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        entry = {
            "batch_label": split,
            "filenames": [f"{i}.png" for i in range(n)],
            "fine_labels": [(7 * i + 3) % 100 for i in range(n)],
            "coarse_labels": [i % 20 for i in range(n)],
            "data": rows,
        }
        (folder / split).write_bytes(pickle.dumps(entry, protocol=2))
        raw[split] = (rows, entry["fine_labels"])
    return raw


def stl10_pixel(i, c, y, x):
    """A pattern where rows, columns, channels and images all differ."""
    return (y + 2 * x + 50 * c + 7 * i) % 256


def write_stl10(where, train=3, test=2):
    """stl10_binary/*.bin with each channel stored column-major; returns the images as (N,3,H,W)."""
    folder = where / "stl10_binary"
    folder.mkdir(parents=True)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    i, c, y, x = np.ogrid[: train + test, :3, :96, :96]
    images = stl10_pixel(i, c, y, x).astype(np.uint8)
    raw = np.empty((train + test, 3, 96 * 96), dtype=np.uint8)
    for col in range(96):  # column-major: column 0 top to bottom, then column 1, ...
        raw[:, :, col * 96 : (col + 1) * 96] = images[:, :, :, col]
    labels = np.array([1, 10, 5, 2, 10], dtype=np.uint8)[: train + test]  # 1..10 on disk
    for split, part in (("train", slice(0, train)), ("test", slice(train, None))):
        (folder / f"{split}_X.bin").write_bytes(raw[part].tobytes())
        (folder / f"{split}_y.bin").write_bytes(labels[part].tobytes())
    return images, labels.astype(np.int64) - 1, tuple(names)


TINY_WNIDS = ["n03", "n01", "n02"]  # wnids.txt order; labels follow the sorted order
TINY_COLOURS = {"n01": (200, 30, 30), "n02": (30, 200, 30), "n03": (30, 30, 200)}


def _jpeg(path, colour, grey=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    mode, fill = ("L", colour[0]) if grey else ("RGB", colour)
    Image.new(mode, (64, 64), fill).save(path, quality=95)


def write_tinyimagenet(where, train_per_class=2, val_per_class=2):
    """tiny-imagenet-200/ as unzipped: flat-colour JPEGs, val/images + val_annotations.txt."""
    base = where / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    words = [
        "n00\tentity",
        "n01\tgoldfish, Carassius auratus",
        "n02\tsalamander",
        "n03\ttabby, tabby cat",
        "n04\tnot in this dataset",
    ]
    (base / "words.txt").write_text("\n".join(words) + "\n")
    for wnid in TINY_WNIDS:
        for k in range(train_per_class):
            _jpeg(base / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", TINY_COLOURS[wnid])
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines = []
    for k in range(val_per_class * len(TINY_WNIDS)):
        wnid = TINY_WNIDS[k % len(TINY_WNIDS)]
        _jpeg(base / "val" / "images" / f"val_{k}.JPEG", TINY_COLOURS[wnid])
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    _jpeg(base / "test" / "images" / "test_0.JPEG", (0, 0, 0))  # unlabelled, never read
    return base


# ---------------------------------------------------------------------------------------------
# CIFAR-100


def test_cifar100_reads_the_official_pickles(tmp_path):
    raw = write_cifar100(tmp_path)
    ds = data.load_dataset("cifar100", root=tmp_path)
    assert ds.train_images.shape == (6, 3, 32, 32) and ds.test_images.shape == (4, 3, 32, 32)
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    assert ds.classes == tuple(f"fine{i:02d}" for i in range(100)) and ds.num_classes == 100
    for split, images, labels in (
        ("train", ds.train_images, ds.train_labels),
        ("test", ds.test_images, ds.test_labels),
    ):
        rows, fine = raw[split]
        assert labels.tolist() == fine
        # a row is the red, green then blue 32x32 planes, each row-major
        for i, c, y, x in ((0, 0, 0, 1), (1, 2, 31, 0), (2, 1, 5, 17)):
            assert images[i, c, y, x] == rows[i, c * 1024 + y * 32 + x]
        np.testing.assert_array_equal(images.numpy().reshape(len(rows), -1), rows)


def test_cifar100_truncated_pickle_is_one_clear_sentence(tmp_path):
    write_cifar100(tmp_path)
    train = tmp_path / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:500])
    with pytest.raises(data.DatasetCorruptError) as error:
        data.load_dataset("cifar100", tmp_path)
    message = str(error.value)
    assert str(train) in message and "python -m egalib download cifar100" in message
    assert "\n" not in message


class Crafted:
    """A pickle payload that would create a file when unpickled by pickle.load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_crafted_cifar100_pickle_runs_no_code_and_is_one_sentence(tmp_path):
    write_cifar100(tmp_path)
    meta, marker = tmp_path / "cifar-100-python" / "meta", tmp_path / "pwned"
    meta.write_bytes(pickle.dumps({"fine_label_names": Crafted(marker)}, protocol=2))
    with pytest.raises(data.DatasetCorruptError) as error:
        data.load_dataset("cifar100", tmp_path)
    assert not marker.exists()  # the payload never ran
    message = str(error.value)
    assert str(meta) in message and "the file asks for" in message and "\n" not in message


def test_cifar100_in_a_torchvision_style_data_dir_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    write_cifar100(tmp_path)  # DATA_DIR/cifar-100-python, not DATA_DIR/cifar100/...
    assert len(data.load_dataset("cifar100").train_labels) == 6


# ---------------------------------------------------------------------------------------------
# STL-10


def test_stl10_reads_the_binaries_and_transposes_columns(tmp_path):
    images, labels, names = write_stl10(tmp_path)
    ds = data.load_dataset("stl10", root=tmp_path)
    assert ds.train_images.shape == (3, 3, 96, 96) and ds.test_images.shape == (2, 3, 96, 96)
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    assert ds.train_images.is_contiguous()
    assert ds.classes == names and ds.image_size == 96 and ds.channels == 3
    assert ds.train_labels.tolist() == [0, 9, 4] and ds.test_labels.tolist() == [1, 9]
    np.testing.assert_array_equal(ds.train_images.numpy(), images[:3])
    np.testing.assert_array_equal(ds.test_images.numpy(), images[3:])
    # orientation, spelled out: moving right along row 0 adds 2, moving down column 0 adds 1
    assert ds.train_images[0, 0, 0, 1] == stl10_pixel(0, 0, 0, 1) == 2
    assert ds.train_images[0, 0, 1, 0] == stl10_pixel(0, 0, 1, 0) == 1


def test_stl10_truncated_binary_is_one_clear_sentence(tmp_path):
    write_stl10(tmp_path)
    bad = tmp_path / "stl10_binary" / "test_X.bin"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(data.DatasetCorruptError) as error:
        data.load_dataset("stl10", tmp_path)
    assert str(bad) in str(error.value) and "\n" not in str(error.value)


def test_stl10_label_count_mismatch_is_reported(tmp_path):
    write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "train_y.bin").write_bytes(bytes([1, 2]))
    with pytest.raises(data.DatasetCorruptError, match="3 images but 2 labels"):
        data.load_dataset("stl10", tmp_path)


# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet


def check_tiny(ds):
    assert ds.train_images.shape == (6, 3, 64, 64) and ds.test_images.shape == (6, 3, 64, 64)
    assert ds.train_images.dtype == torch.uint8 and ds.test_labels.dtype == torch.int64
    assert ds.classes == ("goldfish", "salamander", "tabby")  # sorted wnids n01, n02, n03
    assert ds.train_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert sorted(ds.test_labels.tolist()) == [0, 0, 1, 1, 2, 2]
    for images, labels in ((ds.train_images, ds.train_labels), (ds.test_images, ds.test_labels)):
        for image, label in zip(images, labels):
            colour = TINY_COLOURS[sorted(TINY_COLOURS)[label]]
            expected = torch.tensor(colour, dtype=torch.int16)[:, None, None]
            assert (image.short() - expected).abs().max() <= 3  # flat colours survive JPEG


def test_tinyimagenet_sorts_val_by_class_once_and_caches(tmp_path, monkeypatch):
    base = write_tinyimagenet(tmp_path)
    first = data.load_dataset("tinyimagenet", root=tmp_path)
    check_tiny(first)
    val = base / "val"
    assert not (val / "images").exists()
    moved = sorted(p.name for p in (val / "n01" / "images").iterdir())
    assert moved == ["val_1.JPEG", "val_4.JPEG"]  # val_annotations.txt says n01 for these
    assert (val / "val_annotations.txt").is_file()
    assert not (base / "val.tmp").exists() and not (base / "val.old").exists()
    cache = tmp_path / "tinyimagenet-uint8.npz"
    assert cache.is_file() and [p.name for p in tmp_path.glob(".*")] == []  # no temp files

    # the second load reads the cache only: no JPEG opened, no file copied or moved
    def refuse(*args, **kwargs):
        raise AssertionError("the second load should come from the cache")

    with monkeypatch.context() as patch:
        for module, name in ((Image, "open"), (shutil, "copyfile"), (os, "replace")):
            patch.setattr(module, name, refuse)
        second = data.load_dataset("tinyimagenet", tmp_path)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(first, field), getattr(second, field))
    assert second.classes == first.classes

    # without the cache the JPEGs are decoded again, but val/ (already by class) is left alone
    inode = val.stat().st_ino
    cache.unlink()
    check_tiny(data.load_dataset("tinyimagenet", tmp_path))
    assert val.stat().st_ino == inode and cache.is_file()


class Interrupted(BaseException):
    """Stands for a kill or Ctrl-C at an awkward moment."""


def interrupt_on_call(monkeypatch, module, name, call):
    real, calls = getattr(module, name), []

    def fake(*args, **kwargs):
        calls.append(args)
        if len(calls) == call:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, fake)


def test_tinyimagenet_sorting_interrupted_while_building_leaves_nothing(tmp_path, monkeypatch):
    base = write_tinyimagenet(tmp_path)
    with monkeypatch.context() as patch:
        interrupt_on_call(patch, shutil, "copyfile", 3)
        with pytest.raises(Interrupted):
            data.load_dataset("tinyimagenet", tmp_path)
    assert not (base / "val.tmp").exists() and (base / "val" / "images").is_dir()
    assert len(list((base / "val" / "images").iterdir())) == 6
    check_tiny(data.load_dataset("tinyimagenet", tmp_path))


def test_tinyimagenet_sorting_interrupted_between_renames_is_finished(tmp_path, monkeypatch):
    base = write_tinyimagenet(tmp_path)
    with monkeypatch.context() as patch:
        interrupt_on_call(patch, os, "replace", 2)  # after val -> val.old
        with pytest.raises(Interrupted):
            data.load_dataset("tinyimagenet", tmp_path)
    assert not (base / "val").exists() and (base / "val.old").is_dir()
    check_tiny(data.load_dataset("tinyimagenet", tmp_path))
    assert not (base / "val.tmp").exists() and not (base / "val.old").exists()


@pytest.mark.parametrize(
    "name, wnid", [("{out}/evil.JPEG", "n01"), ("val_0.JPEG", "../../escaped")]
)
def test_tinyimagenet_annotations_cannot_write_outside_their_folder(tmp_path, name, wnid):
    base = write_tinyimagenet(tmp_path / "data")
    outside = tmp_path / "outside"
    outside.mkdir()
    name = name.format(out=outside)
    annotations = base / "val" / "val_annotations.txt"
    annotations.write_text(f"{name}\t{wnid}\t0\t0\t63\t63\n" + annotations.read_text())
    with pytest.raises(data.DatasetCorruptError) as error:
        data.load_dataset("tinyimagenet", tmp_path / "data")
    assert str(annotations) in str(error.value) and "not a plain file" in str(error.value)
    assert not any(outside.iterdir()) and not (tmp_path / "data" / "escaped").exists()
    assert not (base / "val.tmp").exists()  # nothing half-built is left


def _drop_last_line(text):
    return "".join(text.splitlines(keepends=True)[:-1])


ANNOTATION_FAULTS = {
    "an image left out": (_drop_last_line, "lists 5 files (5 different) for the 6"),
    "an image listed twice": (lambda text: text + text.splitlines()[0] + "\n", "(6 different)"),
    "a class not in wnids.txt": (lambda text: text.replace("\tn02\t", "\tn99\t"), "n99"),
    "a line without a class": (lambda text: text + "val_0.JPEG\n", "plain class name"),
}


@pytest.mark.parametrize("fault", ANNOTATION_FAULTS)
def test_tinyimagenet_annotations_that_would_lose_or_repeat_images_move_nothing(tmp_path, fault):
    base = write_tinyimagenet(tmp_path)
    annotations = base / "val" / "val_annotations.txt"
    damage, said = ANNOTATION_FAULTS[fault]
    annotations.write_text(damage(annotations.read_text()))
    with pytest.raises(data.DatasetCorruptError, match=re.escape(said)) as error:
        data.load_dataset("tinyimagenet", tmp_path)
    assert str(annotations) in str(error.value)
    assert len(list((base / "val" / "images").iterdir())) == 6  # every image still in place
    assert sorted(p.name for p in (base / "val").iterdir()) == ["images", "val_annotations.txt"]
    assert not (tmp_path / "tinyimagenet-uint8.npz").exists()


@pytest.mark.parametrize("wnids", ["n01\n", "n01\nn02\n../../outside\n"])
def test_tinyimagenet_ids_must_be_two_or_more_plain_names(tmp_path, wnids):
    base = write_tinyimagenet(tmp_path)
    (base / "wnids.txt").write_text(wnids)
    with pytest.raises(data.DatasetCorruptError, match="2 or more plain folder names") as error:
        data.load_dataset("tinyimagenet", tmp_path)
    assert str(base / "wnids.txt") in str(error.value)


def test_stl10_needs_its_ten_class_names(tmp_path):
    write_stl10(tmp_path)
    names = tmp_path / "stl10_binary" / "class_names.txt"
    names.write_text("\n".join(f"class{i}" for i in range(30)))
    with pytest.raises(data.DatasetCorruptError, match="30 class names, expected 10"):
        data.load_dataset("stl10", tmp_path)


def test_tinyimagenet_greyscale_jpeg_becomes_rgb(tmp_path):
    base = write_tinyimagenet(tmp_path)
    _jpeg(base / "train" / "n01" / "images" / "n01_1.JPEG", (90, 90, 90), grey=True)
    ds = data.load_dataset("tinyimagenet", tmp_path)
    grey = ds.train_images[1].short()
    assert grey.shape == (3, 64, 64) and (grey - 90).abs().max() <= 3


def test_tinyimagenet_corrupt_jpeg_names_the_file(tmp_path):
    base = write_tinyimagenet(tmp_path)
    bad = base / "train" / "n02" / "images" / "n02_0.JPEG"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(data.DatasetCorruptError) as error:
        data.load_dataset("tinyimagenet", tmp_path)
    assert str(bad) in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "tinyimagenet-uint8.npz").exists()


def flat_images_cache(path):
    """A well-formed npz whose images are (N, H*W*C), not (N, C, H, W)."""
    images, labels = np.zeros((2, 12), np.uint8), np.zeros(2, np.int64)
    arrays = dict(train_images=images, train_labels=labels, test_images=images)
    np.savez(path, classes=np.array(["a"]), test_labels=labels, **arrays)


def cache_of(images, labels):
    """A writer of a well-formed npz that holds these arrays as both splits of two classes."""

    def write(path):
        arrays = dict(train_images=images, train_labels=labels, test_images=images)
        np.savez(path, classes=np.array(["a", "b"]), test_labels=labels, **arrays)

    return write


LABELS = np.zeros(2, np.int64)
CORRUPT_CACHES = {
    "truncated": lambda path: path.write_bytes(b"PK\x03\x04 truncated"),
    "flat images": flat_images_cache,
    # each of these was once cast without a word: floats rounded, NaN read as 0
    "float images": cache_of(np.full((2, 3, 4, 4), 0.7, np.float32), LABELS),
    "five channels": cache_of(np.zeros((2, 5, 4, 4), np.uint8), LABELS),
    "fractional labels": cache_of(np.zeros((2, 3, 4, 4), np.uint8), np.array([0.0, 1.5])),
}


@pytest.mark.parametrize("corrupt", CORRUPT_CACHES)
def test_tinyimagenet_corrupt_cache_says_delete_it(tmp_path, corrupt):
    write_tinyimagenet(tmp_path)
    CORRUPT_CACHES[corrupt](tmp_path / "tinyimagenet-uint8.npz")
    with pytest.raises(data.DatasetCorruptError, match="delete it and it is rebuilt") as error:
        data.load_dataset("tinyimagenet", tmp_path)
    assert "tinyimagenet-uint8.npz" in str(error.value)


def test_tinyimagenet_cache_alone_is_enough(tmp_path):
    base = write_tinyimagenet(tmp_path)
    data.load_dataset("tinyimagenet", tmp_path)
    shutil.rmtree(base)
    check_tiny(data.load_dataset("tinyimagenet", tmp_path))


# ---------------------------------------------------------------------------------------------
# Missing data and downloads


@dataclass(frozen=True)
class Official:
    """A dataset shipped as one official folder: its registry name, title and folder."""

    name: str
    title: str
    folder: str


OFFICIAL = [
    Official("cifar100", "CIFAR-100", "cifar-100-python"),
    Official("stl10", "STL-10", "stl10_binary"),
    Official("tinyimagenet", "Tiny-ImageNet", "tiny-imagenet-200"),
]
by_name = pytest.mark.parametrize("dataset", OFFICIAL, ids=lambda dataset: dataset.name)


def test_registry_has_the_four_datasets():
    assert set(data.DATASETS) == {"fashion-mnist", "cifar100", "stl10", "tinyimagenet"}


@pytest.mark.integration
def test_an_empty_egalib_data_is_the_default_folder_not_the_working_directory(tmp_path):
    import subprocess
    import sys

    read = "from egalib.datasets import DATA_DIR; print(DATA_DIR)"
    for value, folder in (("", data.REPO_DATA), (str(tmp_path), tmp_path)):  # "": was cwd
        env = {**os.environ, "EGALIB_DATA": value}
        out = subprocess.run(
            [sys.executable, "-c", read],
            env=env,
            cwd=tmp_path,
            text=True,
            capture_output=True,
            check=True,
        )
        assert out.stdout.strip() == str(folder)


@by_name
def test_missing_dataset_is_one_sentence_with_where_and_how(tmp_path, dataset):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load_dataset(dataset.name, root=empty)
    message = str(error.value)
    assert dataset.title in message and str(empty) in message and f"`{dataset.folder}/`" in message
    assert f"python -m egalib download {dataset.name}" in message and "\n" not in message


def test_default_folders_are_named_in_the_message(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load_dataset("stl10")
    assert f"looked in {tmp_path / 'stl10'}, {tmp_path};" in str(error.value)


class FakeResponse(io.BytesIO):
    """What urlopen returns: serves `payload`, then fails if asked to."""

    url = None  # torchvision asks where redirects lead; None means nowhere

    def __init__(self, payload, fail):
        super().__init__(payload)
        self.length, self.fail = len(payload), fail

    def read(self, size=-1):
        chunk = super().read(size)
        if not chunk and self.fail:
            raise ConnectionResetError("connection reset by peer")
        return chunk


def fake_urlopen(monkeypatch, payload=b"", fail=False, refuse=False):
    calls = []

    def urlopen(request, *args, **kwargs):
        calls.append(getattr(request, "full_url", request))
        if refuse:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return FakeResponse(payload, fail)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


network_failures = pytest.mark.parametrize(
    "refuse", [True, False], ids=["no-network", "cut-off-midway"]
)


@network_failures
@by_name
def test_failed_download_is_one_sentence_and_leaves_nothing(tmp_path, monkeypatch, dataset, refuse):
    calls = fake_urlopen(monkeypatch, payload=b"x" * 5000, fail=True, refuse=refuse)
    root = tmp_path / "new"
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load_dataset(dataset.name, root=root, download=True)
    message = str(error.value)
    assert calls, "the download was not even tried"
    assert dataset.title in message and str(root) in message and "download failed" in message
    assert f"python -m egalib download {dataset.name}" in message and "\n" not in message
    assert ("URLError" if refuse else "ConnectionResetError") in message
    assert not root.exists()  # made for the download, removed with it

    root.mkdir()  # an existing folder stays as it was
    with pytest.raises(data.DatasetNotFoundError):
        data.load_dataset(dataset.name, root=root, download=True)
    assert list(root.iterdir()) == []


@network_failures
def test_fashion_mnist_failed_download_is_one_sentence(tmp_path, monkeypatch, refuse):
    monkeypatch.setattr(data, "DEBIAN_DATASETS", tmp_path / "debian")
    calls = fake_urlopen(monkeypatch, payload=b"x" * 5000, fail=True, refuse=refuse)
    root = tmp_path / "new"
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load_dataset("fashion-mnist", root=root, download=True)
    message = str(error.value)
    assert calls and "Fashion-MNIST" in message and "download failed" in message
    assert "apt-get install dataset-fashion-mnist" in message and "\n" not in message
    assert not root.exists()


def tiny_zip(tmp_path):
    write_tinyimagenet(tmp_path / "src")
    archive = shutil.make_archive(
        str(tmp_path / "tiny"), "zip", root_dir=tmp_path / "src", base_dir="tiny-imagenet-200"
    )
    return open(archive, "rb").read()


def test_tinyimagenet_download_checks_md5_and_moves_into_place(tmp_path, monkeypatch):
    payload = tiny_zip(tmp_path)
    monkeypatch.setattr(data, "TINYIMAGENET_MD5", hashlib.md5(payload).hexdigest())
    calls = fake_urlopen(monkeypatch, payload)
    root = tmp_path / "root"
    (root / "tiny-imagenet-200").mkdir(parents=True)  # an incomplete copy: replaced
    (root / "tiny-imagenet-200" / "wnids.txt").write_text("n01\n")
    check_tiny(data.load_dataset("tinyimagenet", root, download=True))
    assert calls == [data.TINYIMAGENET_URL]
    assert sorted(p.name for p in root.iterdir()) == ["tiny-imagenet-200", "tinyimagenet-uint8.npz"]


def test_tinyimagenet_download_with_wrong_md5_leaves_nothing(tmp_path, monkeypatch):
    fake_urlopen(monkeypatch, tiny_zip(tmp_path))
    root = tmp_path / "root"
    with pytest.raises(data.DatasetNotFoundError, match="download failed.*MD5"):
        data.load_dataset("tinyimagenet", root, download=True)
    assert not root.exists()


def test_a_cifar100_file_that_is_not_the_published_one_is_refused_before_it_is_unpickled(
    tmp_path, monkeypatch
):
    write_cifar100(tmp_path)
    meta, marker = tmp_path / "cifar-100-python" / "meta", tmp_path / "pwned"
    meta.write_bytes(pickle.dumps({"fine_label_names": Crafted(marker)}, protocol=2))
    monkeypatch.delenv("EGALIB_TRUST_DATA")
    with pytest.raises(data.DatasetCorruptError) as error:
        data.load_dataset("cifar100", tmp_path)
    message = str(error.value)
    assert not marker.exists() and "\n" not in message and str(meta) in message
    assert "not the published 7973b15100ade9c7d40fb424638fde48" in message
    assert "EGALIB_TRUST_DATA=1" in message
    # a file whose digest is the published one is read: here, digests of fake files stand in
    meta.write_bytes(pickle.dumps({"fine_label_names": [f"f{i}" for i in range(100)]}))
    digest = lambda name: hashlib.md5((meta.parent / name).read_bytes()).hexdigest()
    monkeypatch.setattr(data.CIFAR100, "md5", {n: digest(n) for n in ("train", "test", "meta")})
    assert data.load_dataset("cifar100", tmp_path).classes[:2] == ("f0", "f1")
