"""The plain path: a training loop in the style of the CRD code base (RepDistiller), written
here, against which `bench.py` measures egalib's loop for speed and accuracy.

A torch `Dataset` of HWC uint8 arrays makes PIL images and augments them with torchvision
transforms in `DataLoader` workers (student: RandomCrop with padding, RandomHorizontalFlip,
ToTensor, Normalize; teacher: the same with a bicubic Resize to its input size); the step runs
in fp32 (no autocast, no channels_last) and reads its loss back with `.item()` every step.
"""

import gc
import tempfile
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from egalib import losses, models
from egalib.config import RunConfig, lr_schedule
from egalib.datasets import Dataset
from egalib.models import EmbeddingHead
from egalib.models.teachers import teacher_folder
from egalib.train import fit, prepare_data
from egalib.views import ViewSpec, eval_view, student_view

REFERENCE_METHODS = ("vanilla", "ega")  # what ReferenceModel.step computes: CE + beta * EGA


def check_method(method: str) -> None:
    if method not in REFERENCE_METHODS:
        raise ValueError(
            f"the reference loop trains only {' and '.join(REFERENCE_METHODS)} (CE plus the "
            f"method's beta times EGA), not {method!r}; compare one of those."
        )


def teacher_pretrained(name: str) -> bool:
    """Load a teacher's weights only where they ship on disk; downloaded ones (CLIP, torchvision)
    are built with random weights, which cost the same to run and need no network."""
    on_disk = (teacher_folder(name) / f"{name}.pt").is_file()
    return on_disk and name in ("ssl-fmnist", "supervised-wrn40")


def reference_transforms(image_size: int, student: ViewSpec, teacher: ViewSpec, padding: int = 4):
    """torchvision transforms of PIL images: the student's and the teacher's view."""
    from torchvision import transforms as T

    student_tf = T.Compose(
        [
            T.RandomCrop(image_size, padding=padding),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(student.mean, student.std),
        ]
    )
    resize = []
    if teacher.size != image_size:
        resize = [T.Resize(teacher.size, interpolation=T.InterpolationMode.BICUBIC)]
    teacher_tf = T.Compose(
        [
            T.RandomCrop(image_size, padding=padding),
            *resize,
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(teacher.mean, teacher.std),
        ]
    )
    return student_tf, teacher_tf


class ReferenceDataset(torch.utils.data.Dataset):
    """uint8 HWC arrays -> (student view, teacher view, label), each view a fresh PIL pipeline.

    Grey images are PIL mode "L"; a teacher that takes three channels gets them as RGB."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, student_tf, teacher_tf, teacher_channels: int
    ):
        self.images, self.labels = images, labels
        self.student_tf, self.teacher_tf = student_tf, teacher_tf
        self.teacher_channels = teacher_channels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        array = self.images[i]
        image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        teacher_image = image
        if self.teacher_channels == 3 and image.mode != "RGB":
            teacher_image = image.convert("RGB")
        return self.student_tf(image), self.teacher_tf(teacher_image), int(self.labels[i])


def reference_dataset(data: Dataset, teacher: models.Teacher, padding: int = 4):
    """The reference loop's dataset over `data`'s training images, normalised as egalib's views."""
    student_tf, teacher_tf = reference_transforms(
        data.image_size,
        student_view(data.image_size, data.channels, teacher.view),
        teacher.view,
        padding,
    )
    images = data.train_images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    labels = data.train_labels.cpu().numpy()
    return ReferenceDataset(images, labels, student_tf, teacher_tf, teacher.in_channels)


class ReferenceModel:
    """The same student, teacher and heads as egalib's Distillation, in fp32, with its own step."""

    def __init__(self, config: RunConfig, data: Dataset, device: torch.device, pretrained: bool):
        check_method(config.method)
        torch.manual_seed(config.seed)
        d, c = config.embed_dim, data.num_classes
        self.config, self.device, self.method = config, device, config.weights
        self.teacher = models.teacher(config.teacher, pretrained=pretrained).to(device)
        self.teacher_head = EmbeddingHead(self.teacher.feature_dim, d, c).to(device)
        self.student = models.student(config.student, in_channels=data.channels).to(device)
        self.student_head = EmbeddingHead(self.student.feature_dim, d, c).to(device)
        params = [*self.student.parameters(), *self.student_head.parameters()]
        self.optimizer = torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.teacher_optimizer = torch.optim.SGD(
            self.teacher_head.parameters(), lr=config.teacher_lr, momentum=0.9, weight_decay=5e-4
        )
        self.student.train()
        self.student_head.train()

    def step(self, batch, mark: Callable[[str], None] = lambda part: None) -> float:
        student_in, teacher_in, labels = (x.to(self.device) for x in batch)
        mark("data")
        with torch.no_grad():
            features_t = self.teacher.encoder(teacher_in)  # fp32: no autocast
        xt, logits_t = self.teacher_head(features_t)
        mark("teacher")
        xs, logits_s = self.student_head(self.student(student_in))
        mark("student")
        m = self.method
        loss = m.gamma * F.cross_entropy(logits_s, labels)
        loss = loss + m.beta * losses.ega(xs, xt.detach(), **m.options)
        teacher_ce = F.cross_entropy(logits_t, labels)
        self.optimizer.zero_grad()
        self.teacher_optimizer.zero_grad()
        (loss + teacher_ce).backward()
        self.optimizer.step()
        self.teacher_optimizer.step()
        value = loss.item()  # the per-step host sync of the CRD loop (its AverageMeter)
        mark("loss_backward_step")
        return value


def reference_accuracy(config: RunConfig, data: Dataset, epochs: int, workers: int) -> float:
    """Test top-1 of the reference loop trained on `data` for `epochs` epochs with egalib's
    learning-rate schedule: the plain path that egalib's fast path must match in accuracy."""
    model = ReferenceModel(
        config, data, torch.device(config.device), teacher_pretrained(config.teacher)
    )
    schedule = lr_schedule(model.optimizer, epochs)
    loader = torch.utils.data.DataLoader(
        reference_dataset(data, model.teacher, config.padding),
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    for _ in range(epochs):
        # Collect cyclic garbage (an earlier run's CUDA tensors and graphs) before the workers
        # fork: a forked worker whose garbage collector frees a CUDA tensor aborts with "CUDA
        # error: initialization error" (seen on an H100 after a captured run).
        gc.collect()
        for batch in loader:
            model.step(batch)
        schedule.step()
    model.student.eval()
    model.student_head.eval()
    view = student_view(data.image_size, data.channels, model.teacher.view)
    with torch.no_grad():
        logits = torch.cat(
            [
                model.student_head(model.student(eval_view(chunk, view)))[1]
                for chunk in data.test_images.split(500)
            ]
        )
    return (logits.argmax(1) == data.test_labels).float().mean().item()


def accuracy_config(method: str, epochs: int, device: str, seed: int = 0, profile="demo"):
    """The run both loops train to compare accuracy: the profile's data (the demo's by default),
    `method` with the teacher head trained jointly."""
    values = dict(method=method, protocol="joint", epochs=epochs, device=device, seed=seed)
    return RunConfig.from_profile(profile, **values)


def compare_accuracy(config: RunConfig, workers: int) -> dict:
    """egalib's loop (`fit`) and the reference loop, trained as `config` says (the reference
    loop ignores its `capture`), on the same data."""
    with tempfile.TemporaryDirectory() as runs:
        top1 = fit(replace(config, runs_dir=runs), progress=False).metrics["top1"]
    data = prepare_data(config, torch.device(config.device))
    theirs = 100 * reference_accuracy(config, data, config.epochs, workers)
    return {
        "method": config.method,
        "seed": config.seed,
        "epochs": config.epochs,
        "train_images": len(data.train_labels),
        "egalib_capture": config.capture,
        "egalib_top1": top1,
        "reference_top1": round(theirs, 2),
        "difference": round(top1 - theirs, 2),
    }


def accuracy_summary(rows: list[dict]) -> list[dict]:
    """Per method, over seeds: mean and sample standard deviation of each loop's top-1 and of
    their difference (the standard deviations need two seeds or more)."""
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        row = {"method": method, "seeds": len(mine)}
        for key in ("egalib_top1", "reference_top1", "difference"):
            values = np.array([r[key] for r in mine], dtype=float)
            row[f"{key}_mean"] = round(float(values.mean()), 2)
            row[f"{key}_std"] = round(float(values.std(ddof=1)), 2) if len(values) > 1 else None
        summary.append(row)
    return summary
