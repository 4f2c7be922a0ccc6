import gzip
import os

import numpy as np
import pytest
import torch

from egalib import datasets as data


@pytest.fixture(scope="module")
def fmnist():
    return data.load_dataset("fashion-mnist")


def test_fashion_mnist_is_uint8_with_ten_classes(fmnist):
    assert fmnist.train_images.shape == (60000, 1, 28, 28)
    assert fmnist.test_images.shape == (10000, 1, 28, 28)
    assert fmnist.train_images.dtype == torch.uint8
    assert fmnist.train_labels.dtype == torch.int64
    assert sorted(fmnist.train_labels.unique().tolist()) == list(range(10))
    assert fmnist.num_classes == 10 and fmnist.channels == 1 and fmnist.image_size == 28


def write_fashion_mnist(folder, layout="{}.gz", train=3, test=2):
    """The four IDX files, at `layout` in `folder`; returns {split: (images, labels)}. IDX: 0, 0,
    the uint8 type code 8, the number of dimensions, each as a big-endian uint32, the values."""
    rng, written = np.random.default_rng(0), {}
    for split, n in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        written[split] = images, np.arange(n, dtype=np.uint8) % 10
        for kind, array in zip(("images-idx3", "labels-idx1"), written[split]):
            dims = b"".join(size.to_bytes(4, "big") for size in array.shape)
            raw = bytes([0, 0, 8, array.ndim]) + dims + array.tobytes()
            path = folder / layout.format(f"{split}-{kind}-ubyte")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gzip.compress(raw) if layout.endswith(".gz") else raw)
    return written


@pytest.mark.parametrize("layout", ["{}.gz", "{}", "FashionMNIST/raw/{}.gz"])
def test_fashion_mnist_idx_files_written_here_are_read(tmp_path, monkeypatch, layout):
    monkeypatch.setattr(data, "DEBIAN_DATASETS", tmp_path / "debian")
    written = write_fashion_mnist(tmp_path, layout)
    ds = data.load_dataset("fashion-mnist", root=tmp_path)
    assert ds.train_images.dtype == torch.uint8 and ds.test_labels.dtype == torch.int64
    np.testing.assert_array_equal(ds.train_images.numpy(), written["train"][0][:, None])
    np.testing.assert_array_equal(ds.train_labels.numpy(), written["train"][1])
    np.testing.assert_array_equal(ds.test_images.numpy(), written["t10k"][0][:, None])
    np.testing.assert_array_equal(ds.test_labels.numpy(), written["t10k"][1])


DAMAGES = {
    "truncated": lambda folder, raw: gzip.compress(gzip.decompress(raw)[:-9]),
    "not uint8": lambda folder, raw: gzip.compress(bytes([0, 0, 9]) + gzip.decompress(raw)[3:]),
    "labels": lambda folder, raw: (folder / "t10k-labels-idx1-ubyte.gz").read_bytes(),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_idx_file_is_one_clear_sentence(tmp_path, monkeypatch, damage):
    monkeypatch.setattr(data, "DEBIAN_DATASETS", tmp_path / "debian")
    write_fashion_mnist(tmp_path)
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(DAMAGES[damage](tmp_path, bad.read_bytes()))
    with pytest.raises(data.DatasetCorruptError) as error:
        data.load_dataset("fashion-mnist", root=tmp_path)
    assert str(bad) in str(error.value) and "\n" not in str(error.value)


def test_missing_dataset_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_DATASETS", tmp_path / "debian")
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load_dataset("fashion-mnist", root=tmp_path / "empty")
    message = str(error.value)
    assert str(tmp_path / "debian") in message and str(tmp_path / "empty") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "\n" not in message


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*fashion-mnist"):
        data.load_dataset("mnist")


def test_subset_is_class_balanced(fmnist):
    small = fmnist.split(train=100, test=30, seed=1)
    assert torch.bincount(small.train_labels).tolist() == [10] * 10
    assert torch.bincount(small.test_labels).tolist() == [3] * 10
    again = fmnist.split(train=100, seed=1)
    assert torch.equal(small.train_images, again.train_images)


def image_ids(images: torch.Tensor) -> set[bytes]:
    return {bytes(image.flatten().tolist()) for image in images}


def test_the_validation_split_is_held_out_balanced_and_one_for_every_seed(fmnist):
    """The demo's sizes: 10,000 held out, 4,000 trained on, for each of five seeds."""
    splits = [fmnist.split(train=4000, val=10000, seed=seed) for seed in range(5)]
    val = image_ids(splits[0].val_images)
    assert len(val) > 9900  # Fashion-MNIST repeats a few images; ids are their pixels
    assert torch.bincount(splits[0].val_labels).tolist() == [1000] * 10
    for split in splits:
        assert torch.equal(split.val_images, splits[0].val_images)
        assert torch.equal(split.val_labels, splits[0].val_labels)
        assert torch.bincount(split.train_labels).tolist() == [400] * 10
        assert not val & image_ids(split.train_images)  # disjoint from every run's training
    assert not torch.equal(splits[0].train_images, splits[1].train_images)  # seeds differ there


def test_without_a_validation_split_the_training_draw_is_unchanged(fmnist):
    assert fmnist.split(train=100, seed=3).val_images is None
    with pytest.raises(ValueError, match="leaves none of fashion-mnist's 60000 training images"):
        fmnist.split(val=60000)


@pytest.mark.parametrize("given", [dict(train=-5), dict(val=-3), dict(test=2.5)])
def test_a_negative_or_fractional_number_of_images_is_refused(fmnist, given):
    """A negative count would slice from the end: val=-3 would hold out all but 3 images."""
    expected = f"must be whole and >= 0, or None \\(all\\); got {next(iter(given.values()))}"
    with pytest.raises(ValueError, match=expected):
        fmnist.split(**given)


def test_an_idx_file_changed_on_disk_is_read_again(tmp_path, monkeypatch):
    write_fashion_mnist(tmp_path)
    monkeypatch.setattr(data, "DEBIAN_DATASETS", tmp_path / "debian")
    first = data.load_dataset("fashion-mnist", root=tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(raw[:8] + bytes([9]) * (len(raw) - 8)))
    os.utime(labels, ns=(1, 1))  # a different time stamp, however coarse the file system's
    assert first.train_labels.tolist() != [9] * len(first.train_labels)
    assert data.load_dataset("fashion-mnist", root=tmp_path).train_labels.tolist() == [9] * 3
