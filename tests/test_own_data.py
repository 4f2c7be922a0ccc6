"""Datasets from your own folders of images and from tensors, registered by name."""

import numpy as np
import pytest
import torch
from PIL import Image

import egalib
from egalib import plugins
from egalib.datasets import DATASETS, DatasetCorruptError, DatasetNotFoundError, load_dataset

CLASSES = ("ant", "bee", "cat")


def shade(split: str, label: int, k: int) -> int:
    """A flat grey level that says where an image came from."""
    return 20 * label + 3 * k + (100 if split == "test" else 0)


def write_png_folder(root, size=28, per_class=(8, 3), mode="L"):
    for split, count in zip(("train", "test"), per_class):
        for label, name in enumerate(CLASSES):
            folder = root / split / name / ("deeper" if label == 2 else "")
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                value = shade(split, label, k)
                colour = value if mode == "L" else (value, 0, 255 - value)
                Image.new(mode, (size, size), colour).save(folder / f"{k}.png")
    return root


@pytest.fixture
def registered():
    names = []

    def register(name, source):
        names.append(name)
        return egalib.register_dataset(name, source)

    yield register
    for name in names:
        DATASETS.pop(name, None)


def test_an_image_folder_loads_its_classes_labels_and_pixels(tmp_path, registered):
    registered("pngs", egalib.ImageFolder(write_png_folder(tmp_path / "pngs"), grey=True))
    data = load_dataset("pngs")
    assert data.classes == CLASSES and data.channels == 1 and data.image_size == 28
    assert data.train_images.dtype == torch.uint8 and len(data.train_labels) == 24
    assert data.test_labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    for split, images, labels in (
        ("train", data.train_images, data.train_labels),
        ("test", data.test_images, data.test_labels),
    ):
        per_class = len(labels) // 3
        for i, label in enumerate(labels.tolist()):
            assert (images[i] == shade(split, label, i % per_class)).all()


def test_an_rgb_image_folder_has_three_channels_and_splits_like_the_built_ins(tmp_path, registered):
    registered("rgb", egalib.ImageFolder(write_png_folder(tmp_path / "rgb", mode="RGB")))
    data = load_dataset("rgb")
    assert data.train_images.shape == (24, 3, 28, 28)
    assert data.train_images[0, :, 0, 0].tolist() == [0, 0, 255]
    run = data.split(train=None, val=6, seed=0)
    assert run.val_labels.bincount().tolist() == [2, 2, 2]  # class-balanced, held out
    assert len(run.train_labels) == 18
    assert run.val_images.shape[1:] == (3, 28, 28)


def corrupt_one(root):
    (root / "train" / "bee" / "3.png").write_bytes(b"not a png")
    return root / "train" / "bee" / "3.png"


def other_size(root):
    Image.new("L", (32, 32), 7).save(root / "test" / "ant" / "9.png")
    return root / "test" / "ant" / "9.png"


def not_square(root):
    for path in (root / "train").rglob("*.png"):
        Image.new("L", (28, 20), 7).save(path)
    return sorted((root / "train" / "ant").glob("*.png"))[0]


def wide_samples(root):
    path = root / "train" / "bee" / "0.png"
    deep = np.arange(28 * 28, dtype=np.uint16).reshape(28, 28) * 80  # convert("L") clips to 255
    Image.fromarray(deep).save(path)
    return path


def one_class(root):
    for name in CLASSES[1:]:
        for split in ("train", "test"):
            for path in sorted((root / split / name).rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            (root / split / name).rmdir()
    return root / "train"


def empty_class(root):
    for path in (root / "test" / "bee").glob("*.png"):
        path.unlink()
    return root / "test" / "bee"


def unlike_classes(root):
    (root / "test" / "cat").rename(root / "test" / "dog")
    return root / "test"


@pytest.mark.parametrize(
    "spoil, words",
    [
        (corrupt_one, "cannot identify image file"),
        (other_size, "32x32, expected 28x28"),
        (not_square, "square"),
        (wide_samples, "I;16 samples, wider than 8 bits: save it as 8-bit"),
        (one_class, "at least 2"),
        (empty_class, "no image files"),
        (unlike_classes, "differ from train/'s"),
    ],
)
def test_a_bad_image_folder_is_one_sentence_naming_the_file_or_folder(
    tmp_path, registered, spoil, words
):
    root = write_png_folder(tmp_path / "bad", mode="L")
    named = spoil(root)
    registered("bad", egalib.ImageFolder(root, grey=True))
    with pytest.raises(DatasetCorruptError) as caught:
        load_dataset("bad")
    message = str(caught.value)
    assert f"{named}:" in message and words in message
    assert message.startswith("dataset 'bad': ") and "\n" not in message


def test_a_folder_without_train_and_test_says_what_layout_is_expected(tmp_path, registered):
    (tmp_path / "empty").mkdir()
    registered("empty", egalib.ImageFolder(tmp_path / "empty"))
    with pytest.raises(DatasetNotFoundError, match=r"has no train/ and test/ folders; put"):
        load_dataset("empty")


def test_a_tensor_dataset_loads_and_refuses_what_is_not_uint8_images(registered):
    images = torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(12) % 2
    registered("mem", egalib.TensorSource(images, labels, images[:4], labels[:4], ("a", "b")))
    data = load_dataset("mem")
    assert torch.equal(data.train_images, images) and data.classes == ("a", "b")
    assert np.array_equal(data.test_labels.numpy(), labels[:4].numpy())

    registered("floats", egalib.TensorSource(images / 255, labels, images, labels, "ab"))
    with pytest.raises(ValueError, match=r"'floats': images are float32 .* expected uint8"):
        load_dataset("floats")
    registered("labels", egalib.TensorSource(images, labels + 5, images, labels, "ab"))
    with pytest.raises(ValueError, match=r"'labels': labels outside 0..1\.$"):
        load_dataset("labels")
    for kind, wrong in (("column", labels[:, None]), ("fractions", labels.float())):
        # a column of labels read as "0 training images", after the split
        registered(kind, egalib.TensorSource(images, wrong, images, labels, "ab"))
        with pytest.raises(ValueError, match=rf"'{kind}': labels are .* one per image \(N,\)\.$"):
            load_dataset(kind)
    registered("one", egalib.TensorSource(images, labels * 0, images, labels * 0, ["a"]))
    with pytest.raises(ValueError, match=r"'one': 1 class\(es\), where a classifier needs at"):
        load_dataset("one")

    shape = r"expected uint8 \(N, C, H, W\), C 1 \(grey\) or 3 \(RGB\), H = W: e.g. .*permute"
    channels_last = images.permute(0, 2, 3, 1)  # (12, 8, 8, 1): 8 channels of 8 x 1 images
    registered("last", egalib.TensorSource(channels_last, labels, channels_last, labels, "ab"))
    with pytest.raises(
        ValueError, match=rf"'last': images are uint8 with shape \(12, 8, 8, 1\); {shape}"
    ):
        load_dataset("last")
    oblong = images[..., :6]
    registered("oblong", egalib.TensorSource(oblong, labels, oblong, labels, "ab"))
    with pytest.raises(ValueError, match=shape):
        load_dataset("oblong")
    rgb = images.expand(-1, 3, -1, -1)
    registered("mixed", egalib.TensorSource(images, labels, rgb, labels, "ab"))
    with pytest.raises(ValueError, match=r"\(1, 8, 8\) but test images \(3, 8, 8\); give both"):
        load_dataset("mixed")


@pytest.mark.parametrize("train, test", [(0, 4), (1, 4), (12, 0)])
def test_a_run_with_too_few_images_to_train_or_test_on_is_refused(registered, train, test):
    from egalib.config import RunConfig
    from egalib.train import prepare_data

    images = torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(12) % 2
    parts = (images[:train], labels[:train], images[:test], labels[:test], ("a", "b"))
    registered("few", egalib.TensorSource(*parts))
    config = RunConfig.from_profile(
        "smoke", dataset="few", train_size=None, val_size=0, test_size=None, method="vanilla"
    )
    with pytest.raises(ValueError, match=f"leaves this run {train} training and {test} test"):
        prepare_data(config, torch.device("cpu"))


def test_a_dataset_name_of_egalib_s_own_is_refused(tmp_path):
    with pytest.raises(plugins.PluginError, match="'fashion-mnist' is one of egalib's own"):
        egalib.register_dataset("fashion-mnist", egalib.ImageFolder(tmp_path))
    with pytest.raises(plugins.PluginError, match="not an egalib.datasets.Source"):
        egalib.register_dataset("mine", tmp_path)
    assert "mine" not in DATASETS


@pytest.mark.integration
def test_a_student_trains_on_a_png_folder_with_its_validation_split(tmp_path, registered):
    from egalib.config import RunConfig
    from egalib.train import fit

    root = write_png_folder(tmp_path / "pngs", per_class=(20, 4))
    registered("pngs", egalib.ImageFolder(root, grey=True))
    config = RunConfig.from_profile(
        "smoke",
        dataset="pngs",
        method="ega",
        train_size=None,
        val_size=12,
        test_size=None,
        batch_size=8,
        runs_dir=str(tmp_path / "runs"),
    )
    run = fit(config, progress=False)
    assert run.metrics["epochs"] == 1 and 0 <= run.metrics["val_top1"] <= 100
    assert len(run.history) == 1 and np.isfinite(run.history["val_ce"]).all()
