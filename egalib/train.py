"""One training step and the loop around it: `fit(config) -> Run`.

Loss of a step:  gamma * CE(student) + alpha * KD + beta * the method's term, composed in
`training_step` alone (the terms: `methods`, `losses`). The teacher's encoder is frozen. Its head
(projection + classifier) is trained first as a linear probe and frozen (`pretrained` protocol)
or alongside the student by CE on its own logits with its own SGD (`joint`); distillation
gradients never reach it.

Speed: the uint8 dataset and both views stay on the device; on CUDA the teacher's weights are
16-bit and the student runs under autocast to that dtype (`half_precision`: bfloat16, or float16
with a gradient scaler on older GPUs); terms are read once per epoch; `capture` records the step;
the teacher table (`egalib.table`) replaces the teacher in the step.
"""

import contextlib
import copy
import time
from collections.abc import Callable
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import losses, models
from .capture import CapturedStep
from .config import NO_TEACHER, RunConfig
from .datasets import Dataset, load_dataset
from .files import tensor_digest
from .methods import DistillInputs
from .models import EmbeddingHead
from .runs import CheckpointError, Run
from .table import open_table, view_keys
from .views import ENCODE_CHUNK, draw_views, eval_view, student_view, train_view, views_per_image

MILESTONES = (150 / 240, 180 / 240, 210 / 240)  # the lr decay points of docs/method.md
Mark = Callable[[str], None]  # called with a part's name as the step finishes it (timing seam)
no_mark: Mark = lambda part: None
EpochEnd = Callable[[int, dict], None]  # called with (epoch, its history row) after each epoch
# trained linear probes by their features, labels, initial weights and recipe: the same inputs
# give the same head, so a process trains each once
PROBES: dict[tuple, dict] = {}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def half_precision(device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run on `device`: bfloat16 on GPUs that compute it fast (compute
    capability 8.0, Ampere, or newer), float16 on older ones (Colab's T4 is 7.5), whose small
    gradients a GradScaler keeps from flushing to zero; None on a CPU (float32)."""
    if device.type != "cuda":
        return None
    fast_bfloat16 = torch.cuda.get_device_capability(device) >= (8, 0)
    return torch.bfloat16 if fast_bfloat16 else torch.float16


def lr_schedule(
    optimizer: torch.optim.Optimizer, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The method's schedule scaled to `epochs`: lr x0.1 at 150/240, 180/240 and 210/240 of them."""
    milestones = [round(f * epochs) for f in MILESTONES]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)


def train_head(head: EmbeddingHead, features: torch.Tensor, labels: torch.Tensor, epochs: int,
               seed: int = 0, lr: float = 0.01, batch_size: int = 64) -> EmbeddingHead:  # fmt: skip
    """A linear probe: SGD (momentum 0.9, weight decay 5e-4, `lr_schedule`) on frozen features of
    un-augmented images, computed once: one pass of the teacher however many epochs."""
    generator = torch.Generator(device=features.device).manual_seed(seed)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    schedule = lr_schedule(optimizer, epochs)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), device=features.device, generator=generator)
        for batch in order.split(batch_size):
            loss = F.cross_entropy(head(features[batch])[1], labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        schedule.step()
    return head.eval()


STREAMS = ("order", "student_view", "teacher_view", "method")  # one random stream per use
Streams = dict[str, torch.Generator]


def random_streams(seed: int, device: torch.device) -> Streams:
    """One generator per use of random numbers (stream i of seed s starts at 4 s + i): what one
    method draws never moves what another sees. For one seed every method trains on the same
    batches and views, vanilla (which may skip the teacher view) included; "method" serves a
    method's own sampling (CRD's negatives)."""
    make = lambda i: torch.Generator(device=device).manual_seed(len(STREAMS) * seed + i)
    return {name: make(i) for i, name in enumerate(STREAMS)}


class Distillation(nn.Module):
    """Student, heads and frozen teacher of one run, and the method that relates them; `teacher`
    is the frozen encoder to use (None: `config.teacher` with its weights)."""

    def __init__(self, config: RunConfig, data: Dataset, teacher: models.Teacher | None = None):
        super().__init__()
        self.config, self.method = config, config.weights
        self.options = self.method.defaults  # read from the loss's signature once, not per step
        d, c = config.embed_dim, data.num_classes
        self.teacher = self.teacher_head = None  # teacher "none": plain supervised training
        if config.teacher != NO_TEACHER:
            self.teacher = teacher or models.teacher(config.teacher)
            if data.channels > self.teacher.in_channels:
                raise ValueError(
                    f"teacher {config.teacher!r} takes {self.teacher.in_channels}-channel images "
                    f"but dataset {config.dataset!r} has {data.channels}; pick a matching teacher."
                )
            self.teacher_head = EmbeddingHead(self.teacher.feature_dim, d, c)
        self.student = models.student(config.student, in_channels=data.channels)
        self.student_head = EmbeddingHead(self.student.feature_dim, d, c)
        teacher_view = self.teacher.view if self.teacher is not None else None
        self.student_view = student_view(data.image_size, data.channels, teacher_view)
        self.method_module = self.method.build(d, data.train_labels, self.options)
        self.table = None  # the teacher table (egalib.table), when the run looks features up
        self.half: torch.dtype | None = None  # the student's autocast dtype (half_precision)

    def trainable_state(self) -> dict:
        """Everything a checkpoint needs (the frozen teacher encoder is rebuilt, not saved)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def forward_student(self, images: torch.Tensor):
        dtype = self.half or torch.bfloat16
        with torch.autocast(images.device.type, dtype, enabled=self.half is not None):
            features = self.student(images)
        return self.student_head(features.float())

    def forward_teacher(self, images: torch.Tensor, index: torch.Tensor, views: torch.Tensor):
        """The teacher head on the frozen features of `images` (at `index`) seen as `views`:
        looked up in the teacher table when there is one, else encoded now."""
        if self.table is not None:
            return self.teacher_head(self.table.lookup(index, views))
        return self.teacher_head(self.teacher.encode_views(images, views, self.config.padding))


def training_step(
    model: Distillation, optimizers: list[torch.optim.Optimizer], images: torch.Tensor,
    labels: torch.Tensor, index: torch.Tensor, streams: Streams,
    use_teacher: bool, mark: Mark = no_mark, scaler: torch.amp.GradScaler | None = None,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """One step: views -> teacher -> student -> loss terms -> backward -> SGD.

    The student's loss terms and, apart from them, measurements (correct predictions, the
    teacher head's CE, which is the teacher head's own loss when a second optimiser trains it),
    detached and still on the device. `use_teacher` False skips the teacher (vanilla with a
    frozen head); `mark` is called after each part, for a benchmark's clock; `scaler` scales
    the loss of a float16 run before backward and unscales the gradients before each step."""
    m, pad, joint = model.method, model.config.padding, len(optimizers) > 1
    model.train()
    student_in = train_view(images, model.student_view, streams["student_view"], pad)
    if use_teacher:
        views = draw_views(len(images), pad, streams["teacher_view"], images.device)
    mark("data")
    if use_teacher:
        xt, logits_t = model.forward_teacher(images, index, views)
        mark("teacher")
    xs, logits_s = model.forward_student(student_in)
    mark("student")

    terms = {"ce": F.cross_entropy(logits_s, labels)}
    loss = m.gamma * terms["ce"]
    if m.alpha:
        terms["kd"] = losses.kd(logits_s, logits_t.detach(), model.config.kd_temperature)
        loss = loss + m.alpha * terms["kd"]
    if m.loss is not None:
        inputs = DistillInputs(xs, xt.detach(), logits_s, logits_t.detach(), labels, index,
                               model.method_module, streams["method"])  # fmt: skip
        terms["distill"], logged = m.term(inputs, model.options)
        loss = loss + m.beta * terms["distill"]
        terms.update(logged)
    terms["loss"] = loss
    measured = {"correct": (logits_s.argmax(1) == labels).sum()}
    if use_teacher:
        measured["teacher_ce"] = F.cross_entropy(logits_t, labels)

    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    total = loss + measured["teacher_ce"] if joint else loss
    (total if scaler is None else scaler.scale(total)).backward()
    if scaler is None:
        for optimizer in optimizers:
            optimizer.step()
    else:
        for optimizer in optimizers:
            scaler.step(optimizer)  # unscaled first; skipped when a gradient is not finite
        scaler.update()
    mark("loss_backward_step")
    return {k: v.detach() for k, v in {**terms, **measured}.items()}


class Trainer:
    """Owns the optimisers, schedule and random streams around a Distillation, and steps it."""

    def __init__(self, config: RunConfig, data: Dataset, device: torch.device,
                 teacher: models.Teacher | None = None):  # fmt: skip
        half = half_precision(device)
        if half == torch.float16 and config.capture:
            raise ValueError(
                "this GPU has no fast bfloat16, so egalib trains in float16 with a gradient "
                "scaler, whose checks read the device from the host and cannot be captured; "
                "run without --capture."
            )
        torch.manual_seed(config.seed)
        self.config, self.data, self.device = config, data, device
        self.model = Distillation(config, data, teacher).to(device)
        self.model.half = half
        # float16 gradients are scaled up before backward, so that small ones do not flush to 0
        self.scaler = torch.amp.GradScaler(device.type) if half == torch.float16 else None
        # channels_last on every device: on a CPU too, a 1-channel first layer ran 5x faster
        self.model.to(memory_format=torch.channels_last)
        if device.type == "cuda" and self.model.teacher is not None:
            self.model.teacher.to_half(half)
        # capture on CUDA: the step recorded as a CUDA graph at the first step (CapturedStep);
        # on a CPU: a compiled student
        self.capture = config.capture and device.type == "cuda"
        self.captured: CapturedStep | None = None
        if config.capture and not self.capture:
            self.model.student.compile()  # in place: checkpoint keys stay the same
        trained = [self.model.student, self.model.student_head, self.model.method_module]
        student_params = [p for part in trained if part is not None for p in part.parameters()]
        kernel = {"fused": True} if device.type == "cuda" else {"foreach": True}
        self.optimizer = torch.optim.SGD(
            student_params, lr=config.lr, momentum=config.momentum,
            weight_decay=config.weight_decay, **kernel,
        )  # fmt: skip
        self.schedule = lr_schedule(self.optimizer, config.epochs)
        head = self.model.teacher_head
        self.joint = config.protocol == "joint" and head is not None
        self.teacher_optimizer = None  # the joint protocol's: the teacher head's own SGD
        if self.joint:
            self.teacher_optimizer = torch.optim.SGD(
                head.parameters(), lr=config.teacher_lr, momentum=0.9, weight_decay=5e-4, **kernel
            )
        elif head is not None:
            head.requires_grad_(False)
        # vanilla with a frozen teacher head: the teacher would only be run to be logged
        self.use_teacher = self.joint or self.model.method.uses_teacher
        self.streams = random_streams(config.seed, device)
        self.test_teacher_features = None  # the frozen teacher's test features, made once
        if config.teacher_table and self.use_teacher:
            self.model.table = self.open_teacher_table()

    def open_teacher_table(self):
        """The teacher table of this run's training images: every view of every image when the
        run draws most of them (2 epochs per view or more) or is captured (a captured step cannot
        check a lookup), else only the views that this run's streams will draw."""
        config, images = self.config, self.data.train_images
        every = 2 * config.epochs >= views_per_image(config.padding) or self.capture
        keys = None if every else drawn_teacher_keys(config, len(images), self.device)
        return open_table(self.model.teacher, config.teacher, config.dataset, images,
                          config.padding, keys)  # fmt: skip

    def fit_teacher_head(self) -> None:
        """The `pretrained` protocol: a linear probe on frozen teacher features, then frozen."""
        if self.model.teacher is None:
            return
        features = self.model.teacher.encode_all(self.data.train_images)
        head, labels, config = self.model.teacher_head, self.data.train_labels, self.config
        made_of = [tensor_digest(t) for t in (features, labels, *head.state_dict().values())]
        key = (*made_of, config.probe_epochs, config.seed, config.teacher_lr)
        if key not in PROBES:  # the runs of one seed in a demo or a study share their probe
            train_head(head.requires_grad_(True), features, labels, config.probe_epochs,
                       seed=config.seed, lr=config.teacher_lr)  # fmt: skip
            PROBES[key] = copy.deepcopy(head.state_dict())
            while len(PROBES) > 8:
                PROBES.pop(next(iter(PROBES)))
        head.load_state_dict(PROBES[key])
        head.requires_grad_(False)

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer] + ([self.teacher_optimizer] if self.joint else [])

    def step(self, index: torch.Tensor, mark: Mark = no_mark) -> dict[str, torch.Tensor]:
        """One step on the samples at `index`; its terms, on the device. With `capture` on CUDA,
        full batches replay the recorded step (no marks; its kernels are training mode's)."""
        if not self.capture or len(index) != self.config.batch_size:
            return self.eager_step(index, mark)
        if self.captured is None:
            self.captured = CapturedStep(self.eager_step, index, self.optimizers,
                                         list(self.streams.values()), self.preserved)  # fmt: skip
        return self.captured(index)

    def eager_step(self, index: torch.Tensor, mark: Mark = no_mark) -> dict[str, torch.Tensor]:
        images, labels = self.data.train_images[index], self.data.train_labels[index]
        return training_step(self.model, self.optimizers, images, labels, index,
                             self.streams, self.use_teacher, mark, self.scaler)  # fmt: skip

    @contextlib.contextmanager
    def preserved(self):
        """The block's changes to weights, BN statistics, optimisers, schedule, streams and
        CRD's banks are undone when it ends (the warm-up of a captured step)."""
        saved = copy.deepcopy(self.state(0, []))
        yield
        self.load_state(saved)

    def train_epoch(self, progress: bool = False, desc: str = "") -> dict[str, float]:
        """One pass over the training set in random batches (last partial batch dropped)."""
        n, b = len(self.data.train_labels), self.config.batch_size
        batches = epoch_batches(n, b, self.streams["order"], self.device)
        sums = self.sum_steps(batches, progress, desc)
        self.schedule.step()
        row = {f"train_{k}": v / len(batches) for k, v in sums.items() if k != "correct"}
        row["train_acc"] = sums["correct"] / batches.numel()
        return row

    def sum_steps(self, batches: torch.Tensor, progress: bool = False, desc: str = "") -> dict:
        """One step per row of `batches` (indices); each term summed over the steps. The sums
        stay on the device, stacked in one tensor, and are read back once at the end."""
        keys, total = [], 0
        for index in tqdm(batches, desc=desc, disable=not progress, leave=False):
            terms = self.step(index)
            keys, total = list(terms), total + torch.stack([v.float() for v in terms.values()])
        return dict(zip(keys, total.tolist()))

    @torch.no_grad()
    def embed_test_set(self, batch_size: int = ENCODE_CHUNK) -> dict[str, torch.Tensor]:
        """Test-view embeddings and logits of the student and (if any) the teacher head. The
        frozen teacher's features of the test set never change, so they are computed once."""
        model, images = self.model.eval(), self.data.test_images
        chunks = [model.forward_student(eval_view(chunk, model.student_view))
                  for chunk in images.split(batch_size)]  # fmt: skip
        out = {
            "xs": torch.cat([c[0] for c in chunks]),
            "logits_s": torch.cat([c[1] for c in chunks]),
        }
        if model.teacher is not None:
            if self.test_teacher_features is None:
                self.test_teacher_features = model.teacher.encode_all(images, batch_size)
            out["xt"], out["logits_t"] = model.teacher_head(self.test_teacher_features)
        return {k: v.float() for k, v in out.items()}

    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Test loss and top-1 of student and teacher head, and EGA's terms on test batches."""
        out = self.embed_test_set()
        labels = self.data.test_labels
        accuracy = lambda logits: (logits.argmax(1) == labels).float().mean().item()
        row = {"test_ce": F.cross_entropy(out["logits_s"], labels).item(),
               "test_acc": accuracy(out["logits_s"]), "teacher_test_acc": float("nan")}  # fmt: skip
        if "xt" in out:
            row["teacher_test_acc"] = accuracy(out["logits_t"])
            row.update(graph_terms_by_batch(out["xs"], out["xt"], self.config.batch_size))
        return row, {**out, "labels": labels}

    def state(self, epoch: int, history: list[dict]) -> dict:
        return {
            "epoch": epoch,
            "history": history,
            "model": self.model.trainable_state(),
            "optimizer": optimizer_state(self.optimizer),
            "teacher_optimizer": optimizer_state(self.teacher_optimizer) if self.joint else {},
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "streams": {name: g.get_state() for name, g in self.streams.items()},
            "student_view": asdict(self.model.student_view),  # how the student saw images
        }

    def load_state(self, state: dict) -> tuple[int, list[dict]]:
        if "streams" not in state:
            raise CheckpointError("the checkpoint was written by an egalib that drew every random "
                                  "number from one stream; delete checkpoint.pt to rerun the run.")
        self.captured = None  # a recorded step holds the old optimiser state: record anew
        self.model.load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.joint:
            self.teacher_optimizer.load_state_dict(state["teacher_optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for name, g in self.streams.items():
            g.set_state(state["streams"][name])
        return state["epoch"], state["history"]


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The state_dict with float learning rates (a captured step makes them tensors): a checkpoint
    does not depend on how its run was executed."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        group["lr"] = float(group["lr"])
    return state


def epoch_batches(n: int, batch_size: int, generator: torch.Generator,
                  device: torch.device) -> torch.Tensor:  # fmt: skip
    """One epoch's batches of sample indices, one per row, in random order (the last partial
    batch dropped; fewer samples than a batch: one batch of them all)."""
    order = torch.randperm(n, device=device, generator=generator)
    return order[: n - n % batch_size].view(-1, batch_size) if n >= batch_size else order[None]


def drawn_teacher_keys(config: RunConfig, n: int, device: torch.device) -> torch.Tensor:
    """The teacher-table keys (image x views per image + view) of every teacher view that a run
    of `config` on `n` training images draws, in drawing order with repeats (`open_table` sorts
    them and drops the repeats): its "order" and "teacher_view" streams replayed, which no other
    use of random numbers moves."""
    streams, drawn = random_streams(config.seed, device), []
    for _ in range(config.epochs):
        for index in epoch_batches(n, config.batch_size, streams["order"], device):
            views = draw_views(len(index), config.padding, streams["teacher_view"], device)
            drawn.append(view_keys(index, views, config.padding))
    return torch.cat(drawn)


def graph_terms_by_batch(xs: torch.Tensor, xt: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Mean L_node and L_edge over consecutive test batches of the training batch size."""
    if (groups := len(xs) // batch_size) == 0:
        return {}
    pairs = zip(xs.split(batch_size)[:groups], xt.split(batch_size)[:groups])
    terms = torch.stack([torch.stack(losses.ega_terms(s, t)) for s, t in pairs])
    node, edge = terms.mean(0).tolist()  # one host read, not one per batch
    return {"test_node": node, "test_edge": edge}


def prepare_data(config: RunConfig, device: torch.device) -> Dataset:
    data = load_dataset(config.dataset)
    return data.subset(config.train_size, config.test_size, config.seed).to(device)


def fit(config: RunConfig, progress: bool = True, on_epoch_end: EpochEnd | None = None) -> Run:
    """Train (or resume, or just return) the run that `config` names."""
    run = Run.open(config)
    with run.lock():  # a second trainer of this folder is refused, naming the first one's pid
        return run if run.finished else _fit(run, config, progress, on_epoch_end)


def _fit(run: Run, config: RunConfig, progress: bool, on_epoch_end: EpochEnd | None) -> Run:
    device = resolve_device(config.device)
    trainer = Trainer(config, prepare_data(config, device), device)
    checkpoint = run.load_checkpoint()
    if checkpoint is None:
        start, history = 0, []
        if config.protocol == "pretrained":
            trainer.fit_teacher_head()
    else:
        start, history = trainer.load_state(checkpoint)
    wall, embeddings = sum(row["wall_s"] for row in history), None
    for epoch in range(start, config.epochs):
        began = time.time()
        row = {"epoch": epoch + 1, "lr": float(trainer.optimizer.param_groups[0]["lr"])}
        row.update(trainer.train_epoch(progress, f"{config.method} epoch {epoch + 1}"))
        seconds = time.time() - began
        test_row, embeddings = trainer.evaluate()
        row.update(test_row, seconds=seconds, images_per_s=len(trainer.data.train_labels) / seconds)
        row["wall_s"] = time.time() - began
        history.append(row)
        wall += row["wall_s"]
        run.save_checkpoint(trainer.state(epoch + 1, history))
        run.write_history(history)
        if progress:
            top1 = 100 * row["test_acc"]
            print(f"[{config.method}] epoch {epoch + 1}/{config.epochs}: test top-1 "
                  f"{top1:.2f} %, {seconds:.1f} s", flush=True)  # fmt: skip
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    if embeddings is None:  # resumed after the last epoch's checkpoint
        embeddings = trainer.evaluate()[1]
    run.save_embeddings({k: v.cpu() for k, v in embeddings.items()})
    run.finish(history, wall)
    return run
