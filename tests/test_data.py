import gzip

import numpy as np
import pytest
import torch

from egalib import datasets as data
from egalib.views import (
    ViewSpec,
    apply_views,
    draw_views,
    eval_view,
    train_view,
    view_ids,
    views_of,
    views_per_image,
)


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


def test_idx_reader_on_a_file_written_here(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape)
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + images.tobytes()))
    np.testing.assert_array_equal(data._read_idx(path), images)


def test_missing_dataset_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load_fashion_mnist(root=tmp_path / "empty")
    message = str(error.value)
    assert str(tmp_path / "debian") in message and str(tmp_path / "empty") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "\n" not in message


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*fashion-mnist"):
        data.load_dataset("mnist")


def test_subset_is_class_balanced(fmnist):
    small = fmnist.subset(train=100, test=30, seed=1)
    assert torch.bincount(small.train_labels).tolist() == [10] * 10
    assert torch.bincount(small.test_labels).tolist() == [3] * 10
    again = fmnist.subset(train=100, seed=1)
    assert torch.equal(small.train_images, again.train_images)


def _batch(b=32, c=1, size=28):
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, 256, (b, c, size, size), dtype=torch.uint8, generator=g)


def test_crop_is_a_shift_of_the_zero_padded_image():
    images = _batch()
    views = draw_views(len(images), 4, torch.Generator().manual_seed(1), "cpu")
    views[:, 2] = 0  # no flips: the crops alone
    out = apply_views(images, views, 4)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    shifts = []
    for i in range(len(images)):
        found = [(dy, dx) for dy in range(9) for dx in range(9)
                 if torch.equal(out[i], padded[i, :, dy : dy + 28, dx : dx + 28])]  # fmt: skip
        assert found, f"sample {i} is not a crop of its padded image"
        shifts.append(found[0])
        assert found[0] == tuple(views[i, :2].tolist())  # the drawn offsets, and only them
    assert len(set(shifts)) > 5  # crops really vary between samples
    assert any(s != (4, 4) for s in shifts)


def test_flip_flips_about_half_the_samples():
    images = _batch(b=400)
    views = draw_views(len(images), 4, torch.Generator().manual_seed(2), "cpu")
    views[:, :2] = 4  # the centred crop: the flips alone
    out = apply_views(images, views, 4)
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, images)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, images)])
    assert bool((flipped ^ kept).all())
    assert torch.equal(flipped, views[:, 2].bool())
    assert 150 < int(flipped.sum()) < 250


def test_view_numbers_cover_every_view_once_and_decode_to_their_views():
    for padding in (0, 1, 4):
        count = views_per_image(padding)
        assert count == 2 * (2 * padding + 1) ** 2
        every = torch.tensor([(dy, dx, f) for dy in range(2 * padding + 1)
                              for dx in range(2 * padding + 1) for f in (0, 1)])  # fmt: skip
        ids = view_ids(every, padding)
        assert sorted(ids.tolist()) == list(range(count))
        assert torch.equal(views_of(ids, padding), every)
    assert view_ids(torch.tensor([[2, 3, 1]]), 4).item() == (2 * 9 + 3) * 2 + 1


def test_no_padding_draws_no_offsets_and_keeps_images_whole():
    images = _batch(b=8)
    views = draw_views(8, 0, torch.Generator().manual_seed(0), "cpu")
    assert views[:, :2].eq(0).all()
    out = apply_views(images, views, 0)
    for o, i, f in zip(out, images, views[:, 2]):
        assert torch.equal(o, i.flip(-1) if f else i)


def test_views_shapes_ranges_and_independence():
    images = _batch(b=16)
    student = ViewSpec(28, 1, (0.5,), (0.25,))
    teacher = ViewSpec(56, 3, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    g = torch.Generator().manual_seed(3)
    s, t = train_view(images, student, g), train_view(images, teacher, g)
    assert s.shape == (16, 1, 28, 28) and s.dtype == torch.float32
    assert t.shape == (16, 3, 56, 56)
    assert s.min() >= (0 - 0.5) / 0.25 - 1e-6 and s.max() <= (1 - 0.5) / 0.25 + 1e-6
    for c, (m, sd) in enumerate(zip(teacher.mean, teacher.std)):
        assert t[:, c].min() >= (0 - m) / sd - 1e-5 and t[:, c].max() <= (1 - m) / sd + 1e-5
    s2 = train_view(images, student, g)
    assert not torch.equal(s, s2)  # two draws of the student view differ
    small_t = torch.nn.functional.interpolate(t[:, :1] * 0.2 + 0.4, size=28, mode="area")
    unaugmented = eval_view(images, student) * 0.25 + 0.5
    assert (small_t - s * 0.25 - 0.5).abs().mean() > 0.05  # teacher view is its own crop/flip
    assert torch.allclose(unaugmented * 255, images.float(), atol=1e-3)


def test_eval_view_is_deterministic_and_resizes():
    images = _batch(b=4, c=3, size=32)
    spec = ViewSpec(224, 3, (0.5,) * 3, (0.5,) * 3)
    a, b = eval_view(images, spec), eval_view(images, spec)
    assert a.shape == (4, 3, 224, 224) and torch.equal(a, b)


def test_three_channel_images_refuse_a_one_channel_network():
    with pytest.raises(ValueError, match="3-channel images to a 1-channel network"):
        eval_view(_batch(c=3), ViewSpec(28, 1, (0.5,), (0.5,)))
