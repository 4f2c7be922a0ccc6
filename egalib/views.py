"""The two augmented views of a batch, made on the training device.

Each batch of uint8 (B, C, H, W) images gets a student view and a teacher view with independent
crops and flips (docs/method.md): RandomCrop with zero padding at the native size, a bicubic
resize to the network's input size, a horizontal flip, normalisation. No DataLoader, no PIL.
"""

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # both views of the paper's setting
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


def views_per_image(padding: int) -> int:
    """How many training views an image has: (2 padding + 1)^2 crop offsets, times two flips."""
    return 2 * (2 * padding + 1) ** 2


def draw_views(
    count: int, padding: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(count, 3) int64 rows (dy, dx, flip): RandomCrop(padding)'s offsets in [0, 2 padding] and
    a horizontal flip with probability 1/2, drawn in that order (no offsets when padding is 0)."""
    if padding:
        dy = torch.randint(0, 2 * padding + 1, (count,), device=device, generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (count,), device=device, generator=generator)
    else:
        dy = dx = torch.zeros(count, dtype=torch.long, device=device)
    flip = torch.rand(count, device=device, generator=generator) < 0.5
    return torch.stack([dy, dx, flip.long()], 1)


def apply_views(images: torch.Tensor, views: torch.Tensor, padding: int) -> torch.Tensor:
    """Crop each zero-padded image (B, C, H, W), of any dtype, at its offsets, then flip it."""
    b, c, h, w = images.shape
    if padding:
        padded = F.pad(images, (padding, padding, padding, padding))
        rows = (views[:, 0, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (views[:, 1, None] + torch.arange(w, device=images.device))[:, None, None, :]
        batch = torch.arange(b, device=images.device)[:, None, None, None]
        channel = torch.arange(c, device=images.device)[None, :, None, None]
        images = padded[batch, channel, rows, cols]
    return torch.where(views[:, 2, None, None, None].bool(), images.flip(-1), images)


def view_ids(views: torch.Tensor, padding: int) -> torch.Tensor:
    """Each view's number in [0, views_per_image(padding)): (dy (2 padding + 1) + dx) 2 + flip."""
    return (views[:, 0] * (2 * padding + 1) + views[:, 1]) * 2 + views[:, 2]


def views_of(ids: torch.Tensor, padding: int) -> torch.Tensor:
    """The (dy, dx, flip) rows that `view_ids` numbers `ids`."""
    offset, flip = ids // 2, ids % 2
    return torch.stack([offset // (2 * padding + 1), offset % (2 * padding + 1), flip], 1)


@dataclass(frozen=True)
class ViewSpec:
    """How one network sees an image: size, channels and normalisation."""

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def finish(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or float [0,255] images -> resized, channel-matched, normalised float."""
        if images.dim() != 4:
            raise ValueError(
                f"views take images as (N, C, H, W), got shape {tuple(images.shape)}; give grey "
                "(N, H, W) images a channel axis with images[:, None]."
            )
        x = images.to(torch.float32, copy=True).div_(255)  # never the caller's float tensor
        if x.shape[1] != self.channels:
            if x.shape[1] != 1:
                raise ValueError(
                    f"cannot feed {x.shape[1]}-channel images to a {self.channels}-channel "
                    "network; use a dataset or model with matching channels."
                )
            x = x.expand(-1, self.channels, -1, -1)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
            x = x.clamp_(0, 1)
        mean = _channel_values(self.mean, x.device, x.dtype)
        std = _channel_values(self.std, x.device, x.dtype)
        return (x - mean) / std


@functools.lru_cache(maxsize=32)
def _channel_values(values: tuple[float, ...], device: torch.device, dtype: torch.dtype):
    """(1, C, 1, 1) per-channel constants, copied to the device once, not in every step."""
    return torch.tensor(values, device=device, dtype=dtype)[None, :, None, None]


def student_view(image_size: int, channels: int, teacher: ViewSpec | None = None) -> ViewSpec:
    """The dataset's native size and channels, normalised like the teacher; without one, like
    CLIP for colour images and Fashion-MNIST for grey ones (other channel counts: averaged)."""
    if teacher is None:
        grey = (FASHION_MNIST_MEAN, FASHION_MNIST_STD)
        mean, std = (CLIP_MEAN, CLIP_STD) if channels == 3 else grey
    else:
        mean, std = teacher.mean, teacher.std
    if len(mean) != channels:
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    return ViewSpec(image_size, channels, mean, std)


def train_view(
    images: torch.Tensor, spec: ViewSpec, generator: torch.Generator, padding: int = 4
) -> torch.Tensor:
    """RandomCrop(padding) at the native size -> resize to spec.size -> flip -> normalise: the
    student view (no resize) and the teacher view (CLIP: crop at 32 px, resize to 224, flip)."""
    views = draw_views(len(images), padding, generator, images.device)
    return spec.finish(apply_views(images, views, padding))


# Images per forward pass when a whole set is encoded (test set, probe features, teacher table):
# small enough that channels_last activations stay in a CPU's cache (docs/speed.md).
ENCODE_CHUNK = 250


def eval_view(images: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """No augmentation: resize and normalise only."""
    return spec.finish(images)
