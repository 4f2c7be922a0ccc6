"""Frozen teachers behind one small interface: `encode(x)`, `feature_dim`, `input_size`,
`in_channels`, `mean`, `std`.

The embedded default is a small CNN that egalib pretrains itself on Fashion-MNIST without labels
(SimCLR, see `egalib.pretrain`); its weights ship in `data/teachers/`. CLIP teachers plug into
the same interface.
"""

import json
from pathlib import Path

import torch
from torch import nn

from ..data import REPO_DATA, ViewSpec
from .students import conv_bn_relu

TEACHER_DIR = REPO_DATA / "teachers"
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


class Teacher(nn.Module):
    """A frozen encoder: no parameter requires grad, and it always stays in eval mode."""

    def __init__(self, encoder: nn.Module, feature_dim: int, input_size: int, in_channels: int,
                 mean: tuple[float, ...], std: tuple[float, ...]):  # fmt: skip
        super().__init__()
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.input_size = input_size
        self.in_channels = in_channels
        self.mean, self.std = tuple(mean), tuple(std)
        self.freeze()

    def freeze(self) -> "Teacher":
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # frozen: batch-norm statistics never move

    @property
    def view(self) -> ViewSpec:
        return ViewSpec(self.input_size, self.in_channels, self.mean, self.std)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)


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
    if not path.is_file():
        raise FileNotFoundError(
            f"weights of teacher {name!r} not found at {path}; run "
            f"`python -m egalib pretrain-teacher` to make them (or restore the shipped file)."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RuntimeError(
            f"weights of teacher {name!r} at {path} could not be read "
            f"({error.__class__.__name__}); "
            "restore the file from git or remake it with `python -m egalib pretrain-teacher`."
        ) from None


def teacher_card(name: str, folder: Path | None = None) -> dict:
    """The JSON shipped beside a teacher's weights: how it was made and its linear probe."""
    return json.loads((Path(folder or TEACHER_DIR) / f"{name}.json").read_text())


TEACHERS = {"ssl-fmnist": ssl_fmnist}
