"""Self-supervised pretraining of the embedded teacher: SimCLR on unlabelled images.

Two strongly augmented views of every image (random resized crop, flip, brightness/contrast
jitter, random erasing, pixel noise) are made on the device; an MLP projection head maps the
encoder's features to 128-d, and the NT-Xent loss pulls each image's two views together against
the other 2B - 2 views of the batch. Labels are used only afterwards, for the linear probe.
"""

import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import models
from ..config import check_numbers, resolve_device
from ..datasets import Dataset, load_dataset
from ..files import atomic_torch_save, atomic_write_text, make_folder, write_error
from ..models import EmbeddingHead, Teacher
from ..runs import CheckpointError, Run
from ..teacher_features import EncodedFeatures, ProbeRecipe, train_probe
from ..train import progress_bar
from . import device_name


def ssl_views(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SimCLR views of a uint8 batch (B, C, H, W), as floats in [0, 1] at the same size."""
    b, device = images.shape[0], images.device
    x = images.float() / 255
    u = lambda *shape: torch.rand(*shape, device=device, generator=generator)  # noqa: E731
    # random resized crop (area 20-100 %, aspect 3/4-4/3) and horizontal flip, as one affine map
    area = 0.2 + 0.8 * u(b)
    log_ratio = (u(b) * 2 - 1) * math.log(4 / 3)
    sx = (area * log_ratio.exp()).sqrt().clamp(max=1)
    sy = (area / log_ratio.exp()).sqrt().clamp(max=1)
    tx, ty = (u(b) * 2 - 1) * (1 - sx), (u(b) * 2 - 1) * (1 - sy)
    flip = torch.where(u(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx * flip, tx, sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # brightness and contrast jitter (80 % of views)
    jitter = (u(b) < 0.8)[:, None, None, None]
    contrast = 0.6 + 0.8 * u(b, 1, 1, 1)
    brightness = 0.4 * u(b, 1, 1, 1) - 0.2
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = torch.where(jitter, (x - mean) * contrast + mean + brightness, x)
    # random erasing of one rectangle (50 % of views), then pixel noise
    h, w = x.shape[-2:]
    eh, ew = (h * (0.2 + 0.3 * u(b))).long(), (w * (0.2 + 0.3 * u(b))).long()
    y0, x0 = (u(b) * (h - eh)).long(), (u(b) * (w - ew)).long()
    rows = torch.arange(h, device=device)[None, :, None]
    cols = torch.arange(w, device=device)[None, None, :]
    y0, x0, eh, ew = (v[:, None, None] for v in (y0, x0, eh, ew))
    inside = (rows >= y0) & (rows < y0 + eh) & (cols >= x0) & (cols < x0 + ew)
    erase = (u(b) < 0.5)[:, None, None] & inside
    x = x.masked_fill(erase[:, None], 0.0)
    x = x + 0.05 * torch.randn(x.shape, device=device, generator=generator)
    return x.clamp(0, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's loss: each view must pick its partner among the other 2B - 1 views."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / tau
    logits.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(logits, partner)


@dataclass(frozen=True)
class PretrainConfig:
    teacher: str = "ssl-fmnist"
    dataset: str = "fashion-mnist"
    epochs: int = 8  # the shipped teacher's recipe
    batch_size: int = 256
    lr: float = 2e-3
    tau: float = 0.2
    seed: int = 0
    train_size: int | None = None
    probe_epochs: int = 30

    def __post_init__(self):
        if self.teacher != "ssl-fmnist":  # any other's file would be read by nothing
            raise ValueError(
                f"pretrain-teacher makes the weights of teacher 'ssl-fmnist', the one that egalib "
                f"loads from such a file, not of {self.teacher!r}; leave --teacher out."
            )
        whole = {"epochs": 1, "batch_size": 2, "seed": 0, "train_size": 2, "probe_epochs": 1}
        check_numbers(self, whole, above_zero=("lr", "tau"), optional=("train_size",))


def pretrain_teacher(cfg: PretrainConfig, out_dir: Path, device: str = "cpu") -> dict:
    """Pretrain the teacher's encoder with SimCLR, probe it, write `<name>.pt` and `<name>.json`."""
    device = resolve_device(device)  # "auto", or one sentence for a device this machine lacks
    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset).split(train=cfg.train_size, seed=cfg.seed).to(device)
    teacher = models.teacher(cfg.teacher, pretrained=False)
    encoder = teacher.encoder.to(device).requires_grad_(True).train()
    projector = nn.Sequential(
        nn.Linear(teacher.feature_dim, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 128)
    ).to(device)
    params = [*encoder.parameters(), *projector.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    steps_per_epoch = len(data.train_labels) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"batch_size {cfg.batch_size} is more than the {len(data.train_labels)} training "
            "images: no full batch to train on; give a smaller --batch-size or a larger "
            "--train-size."
        )
    writable_folder(out_dir)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.05
    )
    normalise = teacher.view.finish
    start = time.time()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(data.train_labels), device=device, generator=generator)
        total = torch.zeros((), device=device)
        for step in progress_bar(range(steps_per_epoch), f"SimCLR epoch {epoch + 1}", True):
            images = data.train_images[order[step * cfg.batch_size : (step + 1) * cfg.batch_size]]
            v1 = normalise(255 * ssl_views(images, generator))
            v2 = normalise(255 * ssl_views(images, generator))
            loss = nt_xent(projector(encoder(v1)), projector(encoder(v2)), cfg.tau)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.detach()
        print(
            f"epoch {epoch + 1}/{cfg.epochs}: NT-Xent {total.item() / steps_per_epoch:.4f}",
            f"({time.time() - start:.0f} s)",
            flush=True,
        )
    wall = time.time() - start
    teacher.freeze()
    probe = linear_probe_accuracy(teacher, data, epochs=cfg.probe_epochs, seed=cfg.seed)
    card = {
        "name": cfg.teacher,
        "method": "SimCLR (NT-Xent), views: resized crop, flip, jitter, erasing, noise",
        "command": _command(cfg),
        "config": cfg.__dict__,
        "wall_time_s": round(wall, 1),
        "device": _card_device(torch.device(device)),
        "linear_probe_top1": round(100 * probe, 2),
        "linear_probe": f"EmbeddingHead on frozen features, all train labels, {cfg.probe_epochs} "
        "epochs, SGD lr 0.01 momentum 0.9, test set top-1",
        "torch": torch.__version__,
    }
    state = {k: v.cpu() for k, v in teacher.encoder.state_dict().items()}
    save_teacher(state, card, out_dir)
    return card


def writable_folder(folder: Path) -> None:
    """Make `folder` and write a file there that deletes itself: a folder that cannot take the
    weights is one sentence before the training, not after it."""
    make_folder(folder)
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise write_error("write into", folder, error) from None


def save_teacher(weights: dict, card: dict, out_dir: Path) -> None:
    """A teacher's weights `<name>.pt` and its card `<name>.json`, and where they went."""
    name = card["name"]
    atomic_torch_save(weights, out_dir / f"{name}.pt")
    atomic_write_text(out_dir / f"{name}.json", json.dumps(card, indent=2) + "\n")
    print(f"written: {out_dir / name}.pt and {name}.json", flush=True)


def _command(cfg: PretrainConfig) -> str:
    defaults = PretrainConfig()
    flags = [
        f"--{k.replace('_', '-')} {v}" for k, v in cfg.__dict__.items() if v != getattr(defaults, k)
    ]
    return " ".join(["python -m egalib pretrain-teacher", *flags])


def _card_device(device: torch.device) -> str:
    if device.type == "cuda":
        return device_name(device)
    return f"CPU ({device_name(device)}, {torch.get_num_threads()} threads)"


def trained_checkpoint(run: Run) -> dict:
    """A finished run's checkpoint; a folder without one is one sentence (train reuses a finished
    run as it is, so the fix is to unfinish it)."""
    state = run.load_checkpoint()
    if state is None:
        raise CheckpointError(
            f"run folder {run.path} has no checkpoint.pt; delete its metrics.json and train the "
            "run again."
        )
    return state


def train_supervised_teacher(
    name: str = "supervised-wrn40",
    epochs: int = 240,
    device: str = "auto",
    runs_dir: str = "runs",
    out_dir: Path | None = None,
) -> dict:
    """WRN-40-2 on CIFAR-100 with labels (the CRD code base's recipe: the paper profile's SGD
    schedule, no teacher), trained as an ordinary run, then saved as a teacher's weights."""
    from ..config import RunConfig
    from ..train import fit

    out_dir = Path(out_dir or models.teachers.teacher_folder(name))
    writable_folder(out_dir)
    config = RunConfig.from_profile(
        "paper",
        method="vanilla",
        teacher="none",
        student="wrn-40-2",
        dataset="cifar100",
        epochs=epochs,
        device=device,
        runs_dir=runs_dir,
        name=f"teacher_{name}",
    )
    run = fit(config)
    state = trained_checkpoint(run)["model"]
    encoder = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    card = {
        "name": name,
        "method": "supervised cross-entropy on CIFAR-100 (CRD recipe)",
        "command": f"python -m egalib train-teacher --epochs {epochs}",
        "config": config.to_dict(),
        "wall_time_s": run.metrics["wall_time_s"],
        "test_top1": run.metrics["top1"],
        "torch": torch.__version__,
    }
    save_teacher(encoder, card, out_dir)
    return card


@torch.no_grad()
def head_accuracy(head: EmbeddingHead, features: torch.Tensor, labels: torch.Tensor) -> float:
    return (head(features)[1].argmax(1) == labels).float().mean().item()


def linear_probe_accuracy(
    teacher: Teacher, data: Dataset, epochs: int, embed_dim: int = 256, seed: int = 0
) -> float:
    """Test top-1 of a head trained on the frozen teacher's features of `data`'s training set."""
    torch.manual_seed(seed)
    device = data.train_images.device
    teacher = teacher.to(device)
    head = EmbeddingHead(teacher.feature_dim, embed_dim, data.num_classes).to(device)
    features = EncodedFeatures(teacher, padding=0)
    train_probe(
        head, features.of_images(data.train_images), data.train_labels, ProbeRecipe(epochs, seed)
    )
    return head_accuracy(head, features.of_images(data.test_images), data.test_labels)
