"""Frozen teachers behind one interface: `encode(x)`, `feature_dim`, `input_size`, `in_channels`,
`mean`, `std`. The embedded default is a small CNN that egalib pretrains on Fashion-MNIST without
labels (SimCLR, `egalib.experiments.pretrain`), its weights shipped in `data/teachers/`. The
paper's CLIP towers (open_clip) and ImageNet ResNets (torchvision) download their weights on first
use into `$EGALIB_CACHE` (default ~/.cache/egalib); `pretrained=False` builds random weights.
"""

import os
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..files import REPO_DATA, load_tensors, read_json, tensor_digest
from ..views import (
    CLIP_MEAN,
    CLIP_STD,
    ENCODE_CHUNK,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    ViewSpec,
    apply_views,
    eval_view,
)
from .students import conv_bn_relu, wrn_40_2

TEACHER_DIR = REPO_DATA / "teachers"
TEACHER_RECIPES = {"supervised-wrn40": "train-teacher"}  # the command that makes the weights
ENCODED: dict[tuple, torch.Tensor] = {}  # Teacher.encode_all's results, by weights and images


class Teacher(nn.Module):
    """A frozen encoder: no parameter requires grad, and it always stays in eval mode."""

    def __init__(self, encoder: nn.Module, feature_dim: int, input_size: int, in_channels: int,
                 mean: tuple[float, ...], std: tuple[float, ...]):  # fmt: skip
        super().__init__()
        self.encoder, self.feature_dim = encoder, feature_dim
        self.input_size, self.in_channels = input_size, in_channels
        self.mean, self.std = tuple(mean), tuple(std)
        self.half: torch.dtype | None = None  # its weights' 16-bit dtype (see `to_half`)
        self.weights: str | None = None  # the name of its published weights; None: its own
        self.freeze()

    def freeze(self) -> "Teacher":
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # frozen: batch-norm statistics never move

    @property
    def view(self) -> ViewSpec:
        return ViewSpec(self.input_size, self.in_channels, self.mean, self.std)

    def to_half(self, dtype: torch.dtype = torch.bfloat16) -> "Teacher":
        """Frozen weights in `dtype` (bfloat16, or float16 on GPUs without fast bfloat16), the
        precision of the CUDA forward: autocast then casts no fp32 weight at each forward (88M
        values for ViT-B/32), in half the memory."""
        self.encoder.to(dtype)
        self.half = dtype
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features as float32; on CUDA, or with 16-bit weights, under autocast to that dtype
        (bfloat16 for fp32 weights on CUDA)."""
        dtype = self.half or torch.bfloat16
        with torch.autocast(x.device.type, dtype, enabled=x.is_cuda or self.half is not None):
            return self.encoder(x).float()

    forward = encode

    def encode_views(self, images: torch.Tensor, views: torch.Tensor, padding: int):
        """Features of uint8 training images seen as `views` (crop offsets and flips)."""
        return self.encode(self.view.finish(apply_views(images, views, padding)))

    @torch.no_grad()
    def encode_all(self, images: torch.Tensor, batch_size: int = ENCODE_CHUNK) -> torch.Tensor:
        """Features of every uint8 image (the un-augmented view), batch by batch. A teacher with
        its published weights (`weights` set by `models.teacher`) keeps the last few results in
        this process, so the runs of a demo or a study encode their test set once: the same
        weights and images give the same numbers."""
        key = self.weights and (self.weights, self.half, str(images.device), images.shape,
                                tensor_digest(images))
        if key not in ENCODED:
            chunks = images.split(batch_size)
            features = torch.cat([self.encode(eval_view(chunk, self.view)) for chunk in chunks])
            if not key:
                return features
            ENCODED[key] = features
            while len(ENCODED) > 4:  # the train and test sets of two teachers at most
                ENCODED.pop(next(iter(ENCODED)))
        return ENCODED[key]


class GridPooledCNN(nn.Module):
    """The self-supervised teacher's encoder: six conv layers (widths w..8w, three stride-2),
    then average pooling to a 2 x 2 grid, flattened: a 32w-d feature that keeps coarse layout,
    which a linear probe on Fashion-MNIST's centred garments uses well."""

    def __init__(self, in_channels: int = 1, width: int = 32):
        super().__init__()
        w = width
        self.layers = nn.Sequential(
            conv_bn_relu(in_channels, w),
            conv_bn_relu(w, 2 * w, stride=2),
            conv_bn_relu(2 * w, 2 * w),
            conv_bn_relu(2 * w, 4 * w, stride=2),
            conv_bn_relu(4 * w, 4 * w),
            conv_bn_relu(4 * w, 8 * w, stride=2),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.feature_dim = 32 * w

    def forward(self, x):
        return self.layers(x)


def ssl_fmnist(pretrained: bool = True, width: int = 32) -> Teacher:
    """The embedded default teacher: SimCLR-pretrained on Fashion-MNIST's 60,000 training images
    (no labels); `pretrained=False` gives the same network freshly initialised."""
    encoder = GridPooledCNN(1, width)
    if pretrained:
        encoder.load_state_dict(load_teacher_weights("ssl-fmnist"))
    return Teacher(encoder, encoder.feature_dim, 28, 1, FASHION_MNIST_MEAN, FASHION_MNIST_STD)


def load_teacher_weights(name: str, folder: Path | None = None) -> dict:
    path = Path(folder or TEACHER_DIR) / f"{name}.pt"
    recipe = f"`python -m egalib {TEACHER_RECIPES.get(name, 'pretrain-teacher')}`"
    if not path.is_file():
        raise FileNotFoundError(
            f"weights of teacher {name!r} not found at {path}; run {recipe} to make them "
            "(or restore the shipped file)."
        )
    return load_tensors(path, f"restore the file from git or remake it with {recipe}.")


def teacher_card(name: str, folder: Path | None = None) -> dict:
    """The JSON shipped beside a teacher's weights: how it was made and its linear probe."""
    return read_json(Path(folder or TEACHER_DIR) / f"{name}.json", "restore the file from git.")


# ---------------------------------------------------------------------------------------------
# Downloaded teachers: CLIP and ImageNet-supervised


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


CLIP_MODELS = {
    "clip-vit-b32": ("ViT-B-32", "openai"),
    "clip-vit-b16": ("ViT-B-16", "openai"),
    "clip-rn101": ("RN101", "openai"),
    "clip-rn50": ("RN50", "openai"),
}
"""egalib name -> (open_clip architecture, pretrained tag)."""


def clip(name: str, pretrained: bool = True) -> Teacher:
    """A CLIP image tower: f_t = `encode_image(x)`, float and not L2-normalised (docs/method.md).

    Only `model.visual` is kept (it is exactly `encode_image` without normalisation); the text
    tower is dropped to save memory. OpenAI's weights were trained with QuickGELU, which
    open_clip's plain architectures do not use, so the activation follows the tag's config.
    """
    import open_clip  # lazy: heavy, and only the paper profile needs it

    arch, tag = CLIP_MODELS[name]
    tag_cfg, folder, checkpoint = open_clip.get_pretrained_cfg(arch, tag), cache_dir("clip"), None
    if pretrained:
        try:
            checkpoint = open_clip.download_pretrained(tag_cfg, cache_dir=str(folder))
        except Exception as error:
            hub, file = tag_cfg["hf_hub"].rstrip("/"), open_clip.constants.HF_SAFE_WEIGHTS_NAME
            fix = (f"run `hf download {hub} {file} --cache-dir {folder}` on a machine that has "
                   "one and copy that folder here")  # fmt: skip
            raise _missing(name, f"{file} of Hugging Face repo {hub}", folder, error, fix) from None
    model = open_clip.create_model(
        arch, pretrained=checkpoint, cache_dir=str(folder),
        force_quick_gelu=tag_cfg.get("quick_gelu", False),
    )  # fmt: skip
    visual = model.visual
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    mean, std = tag_cfg.get("mean", CLIP_MEAN), tag_cfg.get("std", CLIP_STD)  # OpenAI's values
    return Teacher(visual, visual.output_dim, size, 3, mean, std)


SUPERVISED_MODELS = {
    "supervised-rn50": ("resnet50", "IMAGENET1K_V1"),
    "supervised-rn101": ("resnet101", "IMAGENET1K_V1"),
}
"""egalib name -> (torchvision architecture, weights tag)."""
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def supervised(name: str, pretrained: bool = True) -> Teacher:
    """An ImageNet-supervised torchvision ResNet; f_t is the 2048-d globally pooled feature
    (the classifier `fc` is replaced by Identity), for the paper's supervised-teacher table."""
    import torchvision

    arch, tag = SUPERVISED_MODELS[name]
    encoder = torchvision.models.get_model(arch, weights=None)
    feature_dim, encoder.fc = encoder.fc.in_features, nn.Identity()
    if pretrained:
        weights = torchvision.models.get_model_weights(arch)[tag]
        folder, file = cache_dir("torchvision"), os.path.basename(weights.url)
        try:  # the file already in `folder` is used as is
            state = torch.hub.load_state_dict_from_url(weights.url, model_dir=str(folder),
                map_location="cpu", check_hash=True, weights_only=True)  # fmt: skip
        except Exception as error:
            fix = f"save {weights.url} into that folder"
            raise _missing(name, file, folder, error, fix) from None
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        encoder.load_state_dict(state)
    return Teacher(encoder, feature_dim, 224, 3, IMAGENET_MEAN, IMAGENET_STD)


def supervised_wrn40(pretrained: bool = True) -> Teacher:
    """WRN-40-2 trained on CIFAR-100 with labels by egalib itself (`python -m egalib
    train-teacher`, the CRD code base's recipe); its weights are cached in data/teachers/."""
    encoder = wrn_40_2(3)
    if pretrained:
        encoder.load_state_dict(load_teacher_weights("supervised-wrn40"))
    return Teacher(encoder, encoder.feature_dim, 32, 3, CLIP_MEAN, CLIP_STD)


TEACHERS = {
    "ssl-fmnist": ssl_fmnist,
    "supervised-wrn40": supervised_wrn40,
    **{name: partial(clip, name) for name in CLIP_MODELS},
    **{name: partial(supervised, name) for name in SUPERVISED_MODELS},
}
