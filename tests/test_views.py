"""The two views of a batch, made on the device: crops, flips, view numbers, resizing."""

import pytest
import torch

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
        found = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if torch.equal(out[i], padded[i, :, dy : dy + 28, dx : dx + 28])
        ]
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
        offsets = range(2 * padding + 1)
        every = torch.tensor([(dy, dx, f) for dy in offsets for dx in offsets for f in (0, 1)])
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


def test_images_without_a_channel_axis_are_one_sentence_not_28_channels():
    grey = _batch(c=1)[:, 0]  # (N, H, W), as Fashion-MNIST's arrays come
    with pytest.raises(ValueError, match=r"as \(N, C, H, W\), got shape \(\d+, 28, 28\); give"):
        eval_view(grey, ViewSpec(28, 1, (0.5,), (0.5,)))


def test_float_images_of_the_caller_are_left_as_they_are():
    """A float32 batch was divided by 255 in place: a second call saw near-black images."""
    spec = ViewSpec(size=8, channels=1, mean=(0.5,), std=(0.25,))
    images = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 1, 8, 8)
    kept = images.clone()
    first = eval_view(images, spec)
    assert torch.equal(images, kept)
    assert torch.equal(eval_view(images, spec), first)
    assert torch.equal(first, eval_view(kept.to(torch.uint8), spec))  # as uint8 pixels would
