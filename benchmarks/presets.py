"""The benchmark's presets: a RunConfig profile's models on synthetic images of a real shape,
and the run configuration both loops measure."""

from dataclasses import dataclass

import torch

from egalib.config import RunConfig
from egalib.datasets import Dataset


@dataclass(frozen=True)
class Preset:
    """What one benchmark preset measures: a RunConfig profile's models on synthetic images."""

    profile: str  # the RunConfig profile whose teacher, student and embed_dim are used
    channels: int
    size: int
    classes: int
    steps: int  # timed steps per loop (default)
    warmup: int
    eval_images: int  # synthetic test images for egalib's eval throughput
    epoch_images: tuple[int, int]  # the real dataset's train and test images, for the projection
    target_ratio: float  # the targets, reported as met or not, never assumed
    target_minutes: float | None


PRESETS = {
    # the embedded default: Fashion-MNIST shapes, the self-supervised teacher, a small CNN
    "cpu-demo": Preset(
        profile="demo",
        channels=1,
        size=28,
        classes=10,
        steps=20,
        warmup=3,
        eval_images=1000,
        epoch_images=(60_000, 10_000),
        target_ratio=1.0,
        target_minutes=None,
    ),
    # the paper's CIFAR-100 setting: CLIP ViT-B/32 (random weights cost the same), resnet8x4
    "paper": Preset(
        profile="paper",
        channels=3,
        size=32,
        classes=100,
        steps=200,
        warmup=20,
        eval_images=10_000,
        epoch_images=(50_000, 10_000),
        target_ratio=5.0,
        target_minutes=15.0,
    ),
}


def make_config(
    preset: Preset, batch_size: int, device: str, seed: int = 0, capture: bool = False
) -> RunConfig:
    """The preset's profile with method EGA, the joint protocol (no linear probe first) and, when
    asked, the captured step (RunConfig.capture; egalib's loop only). The teacher table is off:
    `--teacher-table` gives egalib's loop one of its own (`attach_table`)."""
    return RunConfig.from_profile(
        preset.profile,
        method="ega",
        protocol="joint",
        batch_size=batch_size,
        device=device,
        seed=seed,
        capture=capture,
        teacher_table=False,
    )


def synthetic_dataset(preset: Preset, train: int, test: int, seed: int = 0) -> Dataset:
    """Random uint8 images of the preset's shape and random labels (the same for a given seed)."""
    g = torch.Generator().manual_seed(seed)
    shape = (preset.channels, preset.size, preset.size)
    image = lambda n: torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    label = lambda n: torch.randint(0, preset.classes, (n,), generator=g)
    classes = tuple(str(c) for c in range(preset.classes))
    return Dataset("synthetic", image(train), label(train), image(test), label(test), classes)
