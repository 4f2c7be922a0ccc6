"""Frozen teachers (`Teacher`): the default, a small CNN that egalib pretrains on Fashion-MNIST
without labels (SimCLR, `egalib.experiments.pretrain`), its weights shipped in `data/teachers/`;
a WRN-40-2 that `train-teacher` makes into `$EGALIB_CACHE/teachers` (default ~/.cache/egalib);
the paper's CLIP towers (open_clip) and ImageNet ResNets (torchvision), their weights downloaded
on first use into `$EGALIB_CACHE`. `pretrained=False`: random weights."""

import os
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..files import PACKAGE_DATA, load_tensors, read_json, weights_misfit
from ..views import CLIP_MEAN, CLIP_STD, FASHION_MNIST_MEAN, FASHION_MNIST_STD, ViewSpec
from .students import conv_bn_relu, wrn_40_2

TEACHER_DIR = PACKAGE_DATA / "teachers"  # shipped weights and cards, package data
# the teachers that are not shipped but made on this machine, and the command that makes them
MADE_HERE = {"supervised-wrn40": "train-teacher"}


class Teacher(nn.Module):
    """A frozen encoder: no parameter requires grad, and it always stays in eval mode."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        input_size: int,
        in_channels: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ):
        super().__init__()
        self.encoder, self.feature_dim = encoder, feature_dim
        self.input_size, self.in_channels = input_size, in_channels
        self.mean, self.std = tuple(mean), tuple(std)
        self.weights_dtype: torch.dtype | None = None  # 16-bit weights (`cast_weights`)
        self.freeze()

    def freeze(self) -> "Teacher":
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # frozen: batch-norm statistics never move

    @property
    def view(self) -> ViewSpec:
        return ViewSpec(self.input_size, self.in_channels, self.mean, self.std)

    def cast_weights(self, dtype: torch.dtype = torch.bfloat16) -> "Teacher":
        """16-bit weights (bfloat16, or float16 where it is slow): autocast then casts none."""
        self.encoder.to(dtype)
        self.weights_dtype = dtype
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 features of normalised images (`self.view.finish` of uint8 images)."""
        c, size = self.in_channels, self.input_size
        if not x.is_floating_point() or x.dim() != 4 or tuple(x.shape[1:]) != (c, size, size):
            raise ValueError(
                f"the teacher encodes normalised float images of shape (N, {c}, {size}, {size}), "
                f"got a {x.dtype} tensor of shape {tuple(x.shape)}; make them from uint8 images "
                "with egalib.views.eval_view(images, teacher.view)."
            )
        dtype = self.weights_dtype or torch.bfloat16
        autocast = x.is_cuda or self.weights_dtype is not None
        with torch.autocast(x.device.type, dtype, enabled=autocast):
            return self.encoder(x).float()

    forward = encode


class GridPooledCNN(nn.Module):
    """Six conv layers, then average pooling to a 2 x 2 grid, flattened: a 32w-d feature that
    keeps coarse layout, which a linear probe on Fashion-MNIST's centred garments uses well."""

    def __init__(self, in_channels: int = 1, width: int = 32):
        super().__init__()
        widths = (in_channels, width, 2 * width, 2 * width, 4 * width, 4 * width, 8 * width)
        strides = (1, 2, 1, 2, 1, 2)
        convs = [conv_bn_relu(cin, cout, s) for cin, cout, s in zip(widths, widths[1:], strides)]
        self.layers = nn.Sequential(*convs, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.feature_dim = 32 * width

    def forward(self, x):
        return self.layers(x)


def ssl_fmnist(pretrained: bool = True, width: int = 32) -> Teacher:
    """The embedded default: SimCLR-pretrained on Fashion-MNIST's 60,000 training images."""
    encoder = GridPooledCNN(1, width)
    if pretrained:
        load_teacher_weights(encoder, "ssl-fmnist")
    return Teacher(encoder, encoder.feature_dim, 28, 1, FASHION_MNIST_MEAN, FASHION_MNIST_STD)


def teacher_folder(name: str) -> Path:
    """A shipped teacher's files are package data; one made on this machine (`MADE_HERE`) is kept
    in `$EGALIB_CACHE/teachers`, so that an installed egalib never writes into its own folder."""
    return cache_dir("teachers") if name in MADE_HERE else TEACHER_DIR


def load_teacher_weights(encoder: nn.Module, name: str, folder: Path | None = None) -> None:
    """Load the weights of teacher `name` into `encoder`, once the file is checked to fit it."""
    path = Path(folder or teacher_folder(name)) / f"{name}.pt"
    fix = remake_advice(name)
    if not path.is_file():
        raise FileNotFoundError(f"weights of teacher {name!r} not found at {path}; {fix}")
    weights = load_tensors(path, fix)
    if misfit := weights_misfit(weights, encoder.state_dict()):
        raise ValueError(f"{path} does not fit teacher {name!r}: its weights {misfit}; {fix}")
    encoder.load_state_dict(weights)


def remake_advice(name: str) -> str:
    if name in MADE_HERE:
        return f"make them with `python -m egalib {MADE_HERE[name]}`."
    return (
        "restore the shipped file (git checkout, or reinstall egalib), or remake it in a checkout "
        "with `python -m egalib pretrain-teacher --out egalib/data/teachers`."
    )


def teacher_card(name: str, folder: Path | None = None) -> dict:
    """The JSON beside a teacher's weights: how it was made and its linear probe."""
    path, fix = Path(folder or teacher_folder(name)) / f"{name}.json", remake_advice(name)
    card = read_json(path, fix)
    if not isinstance(card, dict) or not isinstance(card.get("linear_probe_top1"), int | float):
        raise ValueError(
            f"{path} is not a teacher card: it needs a number under 'linear_probe_top1'; {fix}"
        )
    return card


class WeightsNotFoundError(FileNotFoundError):
    """A downloaded teacher's weights are neither cached nor downloadable (the message says so)."""


def cache_dir(family: str) -> Path:
    """`$EGALIB_CACHE/<family>` (default ~/.cache/egalib/...), read at call time: redirectable."""
    root = os.environ.get("EGALIB_CACHE") or Path.home() / ".cache" / "egalib"
    return Path(root).expanduser() / family


def _missing(name: str, file: str, folder: Path, error: Exception, fix: str) -> Exception:
    return WeightsNotFoundError(
        f"weights of teacher {name!r} ({file}) are not in {folder} and could not be downloaded "
        f"({error.__class__.__name__}); run once where a network exists to download them there, "
        f"or {fix}."
    )


CLIP_MODELS = {  # egalib name -> (open_clip architecture, pretrained tag)
    "clip-vit-b32": ("ViT-B-32", "openai"),
    "clip-vit-b16": ("ViT-B-16", "openai"),
    "clip-rn101": ("RN101", "openai"),
    "clip-rn50": ("RN50", "openai"),
}


def clip(name: str, pretrained: bool = True) -> Teacher:
    """A CLIP image tower: f_t = `encode_image(x)`, float and not L2-normalised (docs/method.md);
    the text tower is dropped. OpenAI's weights were trained with QuickGELU, which open_clip's
    plain architectures do not use, so the activation follows the tag's config."""
    import open_clip  # lazy: heavy, and only the paper profile needs it

    arch, tag = CLIP_MODELS[name]
    tag_cfg, folder, checkpoint = open_clip.get_pretrained_cfg(arch, tag), cache_dir("clip"), None
    if pretrained:
        try:
            checkpoint = open_clip.download_pretrained(tag_cfg, cache_dir=str(folder))
        except Exception as error:
            hub, file = tag_cfg["hf_hub"].rstrip("/"), open_clip.constants.HF_SAFE_WEIGHTS_NAME
            command = f"hf download {hub} {file} --cache-dir {folder}"
            fix = f"run `{command}` on a machine that has one and copy that folder here"
            raise _missing(name, f"{file} of Hugging Face repo {hub}", folder, error, fix) from None
    quick_gelu = tag_cfg.get("quick_gelu", False)
    options = dict(pretrained=checkpoint, cache_dir=str(folder), force_quick_gelu=quick_gelu)
    visual = open_clip.create_model(arch, **options).visual
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    mean, std = tag_cfg.get("mean", CLIP_MEAN), tag_cfg.get("std", CLIP_STD)  # OpenAI's values
    return Teacher(visual, visual.output_dim, size, 3, mean, std)


SUPERVISED_MODELS = {  # egalib name -> (torchvision architecture, weights tag)
    "supervised-rn50": ("resnet50", "IMAGENET1K_V1"),
    "supervised-rn101": ("resnet101", "IMAGENET1K_V1"),
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def supervised(name: str, pretrained: bool = True) -> Teacher:
    """An ImageNet-supervised torchvision ResNet; f_t is the 2048-d globally pooled feature
    (the classifier `fc` is replaced by Identity), for the paper's supervised-teacher table."""
    import torchvision

    arch, tag = SUPERVISED_MODELS[name]
    encoder = torchvision.models.get_model(arch, weights=None)
    feature_dim, encoder.fc = encoder.fc.in_features, nn.Identity()
    if pretrained:
        url, folder = torchvision.models.get_model_weights(arch)[tag].url, cache_dir("torchvision")
        options = dict(map_location="cpu", check_hash=True, weights_only=True)
        try:  # the file already in `folder` is used as is
            state = torch.hub.load_state_dict_from_url(url, model_dir=str(folder), **options)
        except Exception as error:
            fix = f"save {url} into that folder"
            raise _missing(name, os.path.basename(url), folder, error, fix) from None
        encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    return Teacher(encoder, feature_dim, 224, 3, IMAGENET_MEAN, IMAGENET_STD)


def supervised_wrn40(pretrained: bool = True) -> Teacher:
    """WRN-40-2 trained on CIFAR-100 by `python -m egalib train-teacher` (CRD's recipe)."""
    encoder = wrn_40_2(3)
    if pretrained:
        load_teacher_weights(encoder, "supervised-wrn40")
    return Teacher(encoder, encoder.feature_dim, 32, 3, CLIP_MEAN, CLIP_STD)


TEACHERS = {"ssl-fmnist": ssl_fmnist, "supervised-wrn40": supervised_wrn40}
TEACHERS |= {name: partial(clip, name) for name in CLIP_MODELS}
TEACHERS |= {name: partial(supervised, name) for name in SUPERVISED_MODELS}
