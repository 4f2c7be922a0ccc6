"""One training loop: `fit(config) -> Run`.

Loss per step:  gamma * CE(student) + alpha * KD + beta * method term  (see `methods`).
The teacher's encoder is frozen. Its head (projection + classifier) is either trained first as a
linear probe and frozen (`pretrained` protocol) or trained alongside the student by CE on its own
logits with its own SGD (`joint`); distillation gradients never reach it.

Speed: the dataset sits on the device as uint8 and both views are made there; on CUDA the frozen
teacher's weights are stored in bf16 and the student runs under bf16 autocast, both in
channels_last; loss terms are summed on the device and read once per epoch, so a step never
waits for the host. With `capture`, the first step records the whole step (views, teacher,
student, losses, backward, SGD) as one CUDA graph and every later step of the same batch size
replays it: one launch instead of several hundred small kernels, whose launching by the host is
what bounds a batch of 64.
"""

import contextlib
import copy
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import losses, models
from .config import NO_TEACHER, RunConfig
from .data import Dataset, ViewSpec, eval_view, load_dataset, train_view
from .graph import EmbeddingHead
from .methods import DistillInputs
from .models.teachers import CLIP_MEAN, CLIP_STD, FASHION_MNIST_MEAN, FASHION_MNIST_STD
from .probe import encode_all, lr_schedule, train_head
from .runs import Run, first_line


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (for run cards and benchmark results)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def student_view_spec(data: Dataset, teacher: models.Teacher | None) -> ViewSpec:
    """The student sees the dataset's native size and channels, normalised like the teacher
    (METHOD.md: both views with CLIP's statistics); without a teacher, with CLIP's for colour
    images and Fashion-MNIST's for grey ones."""
    if teacher is None:
        mean, std = (
            (CLIP_MEAN, CLIP_STD) if data.channels == 3 else (FASHION_MNIST_MEAN, FASHION_MNIST_STD)
        )
    else:
        mean, std = teacher.mean, teacher.std
    if len(mean) != data.channels:
        mean, std = (sum(mean) / len(mean),) * data.channels, (sum(std) / len(std),) * data.channels
    return ViewSpec(data.image_size, data.channels, mean, std)


class Distillation(nn.Module):
    """Student, heads and frozen teacher of one run, with the step that trains them."""

    def __init__(self, config: RunConfig, data: Dataset):
        super().__init__()
        self.config, self.method = config, config.weights
        d, c = config.embed_dim, data.num_classes
        self.teacher = self.teacher_head = None  # teacher "none": plain supervised training
        if config.teacher != NO_TEACHER:
            self.teacher = models.teacher(config.teacher)
            if data.channels > self.teacher.in_channels:
                raise ValueError(
                    f"teacher {config.teacher!r} takes {self.teacher.in_channels}-channel images "
                    f"but dataset {config.dataset!r} has {data.channels}; pick a matching teacher."
                )
            self.teacher_head = EmbeddingHead(self.teacher.feature_dim, d, c)
        self.student = models.student(config.student, in_channels=data.channels)
        self.student_head = EmbeddingHead(self.student.feature_dim, d, c)
        self.student_view = student_view_spec(data, self.teacher)
        m = self.method
        self.method_module = m.module(d, data.train_labels, **m.options) if m.module else None

    def trainable_state(self) -> dict:
        """Everything a checkpoint needs (the frozen teacher encoder is rebuilt, not saved)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def forward_student(self, images: torch.Tensor):
        with torch.autocast(images.device.type, torch.bfloat16, enabled=images.is_cuda):
            features = self.student(images)
        return self.student_head(features.float())

    def forward_teacher(self, images: torch.Tensor):
        return self.teacher_head(self.teacher.encode(images))

    def views(self, images: torch.Tensor, generator: torch.Generator, teacher: bool = True):
        """The student's and the teacher's augmented views of one batch (None: no teacher)."""
        pad = self.config.padding
        student = train_view(images, self.student_view, generator, pad)
        if self.teacher is None or not teacher:
            return student, None
        return student, train_view(images, self.teacher.view, generator, pad)

    def loss_terms(self, student_in, teacher_in, labels, index, generator=None):
        """All loss terms of one batch (a dict of tensors); 'loss' is the student's weighted sum."""
        m = self.method
        xs, logits_s = self.forward_student(student_in)
        terms = {
            "ce": F.cross_entropy(logits_s, labels),
            "correct": (logits_s.argmax(1) == labels).sum(),
        }
        loss = m.gamma * terms["ce"]
        if teacher_in is None:  # nothing in this step needs the teacher
            terms["loss"] = loss
            return terms
        xt, logits_t = self.forward_teacher(teacher_in)
        if m.alpha:
            terms["kd"] = losses.kd(logits_s, logits_t.detach(), self.config.kd_temperature)
            loss = loss + m.alpha * terms["kd"]
        if m.distill is not None:
            inputs = DistillInputs(xs, xt.detach(), logits_s, logits_t.detach(), labels, index,
                                   self.method_module, generator)  # fmt: skip
            options = {} if m.module else m.options  # a module took its options when built
            terms["distill"], logged = m.distill(inputs, **options)
            terms.update(logged)
            loss = loss + m.beta * terms["distill"]
        terms["loss"] = loss
        terms["teacher_ce"] = F.cross_entropy(logits_t, labels)
        return terms


class CapturedStep:
    """`Trainer.step` recorded once as a CUDA graph, then replayed for each batch of its size.

    Recording needs warm-up steps first (cuBLAS and cuDNN set-up); they run on the first batch
    and the trainer's whole state is restored afterwards, so the run trains as if they had never
    happened. Everything the graph reads is made static before recording: the batch's index
    (copied in before each replay), the learning rates (tensors, which the schedule updates in
    place), the momentum buffers (made now, zero, which is what SGD's first step assumes) and the
    run's generator (registered with the graph, so each replay draws new crops and flips).
    The parameters' .grad tensors belong to the graph and are rewritten by each replay.
    """

    WARMUP_STEPS = 3

    def __init__(self, trainer: "Trainer", index: torch.Tensor):
        self.index = index.clone()
        saved = copy.deepcopy(trainer.state(0, []))
        with side_stream(index.device):
            for _ in range(self.WARMUP_STEPS):
                trainer.eager_step(self.index)
        trainer.load_state(saved)
        for optimizer in trainer.optimizers:
            make_static(optimizer)
            optimizer.zero_grad(set_to_none=True)
        try:
            self.replay = record_graph(lambda: self.recorded_step(trainer), trainer.generator)
        except RuntimeError as error:  # e.g. an operation that CUDA cannot record
            reason = first_line(error) or type(error).__name__
            raise RuntimeError(
                f"recording the training step as a CUDA graph failed ({reason}); train without "
                f"capture (RunConfig.capture=False, no --capture), which computes the same step."
            ) from error

    def recorded_step(self, trainer: "Trainer") -> None:
        """What the graph records: one step on the static index, its terms in one tensor."""
        terms = trainer.eager_step(self.index)
        self.keys, self.values = list(terms), torch.stack([v.float() for v in terms.values()])

    def __call__(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        self.index.copy_(index)
        self.replay()
        return dict(zip(self.keys, self.values.clone()))  # the next replay rewrites self.values


@contextlib.contextmanager
def side_stream(device: torch.device):
    """Run the block on a fresh CUDA stream, ordered after and before the current one (where
    warm-up before a capture must run)."""
    side, current = torch.cuda.Stream(device), torch.cuda.current_stream(device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        yield
    current.wait_stream(side)


def record_graph(
    run: Callable[[], None], generator: torch.Generator | None = None
) -> Callable[[], None]:
    """Record `run` as a CUDA graph (drawing from `generator`, if it draws random numbers) and
    return the graph's replay. Recording does not execute the kernels: the first replay does."""
    graph = torch.cuda.CUDAGraph()
    if generator is not None:
        graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        run()
    return graph.replay


def make_static(optimizer: torch.optim.Optimizer) -> None:
    """Prepare an SGD optimiser for a CUDA graph: learning rates as device tensors (a float is
    baked into the recorded kernels; a tensor is read at each replay) and momentum buffers made
    before recording (one made inside would be remade from the gradient at every replay)."""
    for group in optimizer.param_groups:
        device = group["params"][0].device
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
        for p in group["params"]:
            state = optimizer.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p)


class Trainer:
    """Owns the optimisers and schedules around a Distillation, and steps it."""

    def __init__(self, config: RunConfig, data: Dataset, device: torch.device):
        torch.manual_seed(config.seed)
        self.config, self.data, self.device = config, data, device
        self.model = Distillation(config, data).to(device)
        if device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
            if self.model.teacher is not None:
                self.model.teacher.to_bfloat16()
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
        self.teacher_optimizer = None
        if head is not None:
            head.requires_grad_(self.joint)
        if self.joint:
            self.teacher_optimizer = torch.optim.SGD(
                head.parameters(), lr=config.teacher_lr, momentum=0.9, weight_decay=5e-4, **kernel
            )
        # vanilla with a frozen teacher head: the teacher would only be run to be logged
        self.teacher_in_step = self.joint or self.model.method.uses_teacher
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.test_teacher_features = None  # the frozen teacher's test features, made once

    def fit_teacher_head(self) -> None:
        """The `pretrained` protocol: a linear probe on frozen teacher features, then frozen."""
        model = self.model
        if model.teacher is None:
            return
        features = encode_all(model.teacher, self.data.train_images)
        head = model.teacher_head.requires_grad_(True)
        train_head(head, features, self.data.train_labels, self.config.probe_epochs,
                   seed=self.config.seed, lr=self.config.teacher_lr)  # fmt: skip
        head.requires_grad_(False)

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer] + ([self.teacher_optimizer] if self.joint else [])

    def step(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """One training step on the samples at `index`; its loss terms, still on the device.
        With `capture` on CUDA, batches of the configured size replay the recorded step (which
        needs no train() call: the recorded kernels are those of training mode)."""
        if not self.capture or len(index) != self.config.batch_size:
            return self.eager_step(index)
        if self.captured is None:
            self.captured = CapturedStep(self, index)
        return self.captured(index)

    def eager_step(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        images, labels = self.data.train_images[index], self.data.train_labels[index]
        self.model.train()
        student_in, teacher_in = self.model.views(images, self.generator, self.teacher_in_step)
        terms = self.model.loss_terms(student_in, teacher_in, labels, index, self.generator)
        backward = terms["loss"] + (terms["teacher_ce"] if self.joint else 0)
        self.optimizer.zero_grad(set_to_none=True)
        if self.joint:
            self.teacher_optimizer.zero_grad(set_to_none=True)
        backward.backward()
        self.optimizer.step()
        if self.joint:
            self.teacher_optimizer.step()
        return {k: v.detach() for k, v in terms.items()}

    def train_epoch(self, progress: bool = False, desc: str = "") -> dict[str, float]:
        """One pass over the training set in random batches (last partial batch dropped)."""
        n, b = len(self.data.train_labels), self.config.batch_size
        order = torch.randperm(n, device=self.device, generator=self.generator)
        batches = order[: n - n % b].view(-1, b) if n >= b else order[None]
        sums = self.sum_steps(batches, progress, desc)
        self.schedule.step()
        row = {f"train_{k}": v / len(batches) for k, v in sums.items() if k != "correct"}
        row["train_acc"] = sums["correct"] / batches.numel()
        return row

    def sum_steps(self, batches: torch.Tensor, progress: bool = False, desc: str = "") -> dict:
        """One step per row of `batches` (indices); each loss term summed over the steps. The
        sums stay on the device, stacked in one tensor, and are read back once at the end."""
        keys, total = [], 0
        for index in tqdm(batches, desc=desc, disable=not progress, leave=False):
            terms = self.step(index)
            keys, total = list(terms), total + torch.stack([v.float() for v in terms.values()])
        return dict(zip(keys, total.tolist()))

    @torch.no_grad()
    def embed_test_set(self, batch_size: int = 500) -> dict[str, torch.Tensor]:
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
                self.test_teacher_features = encode_all(model.teacher, images, batch_size)
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
            "generator": self.generator.get_state(),
            "student_view": asdict(self.model.student_view),  # how the student saw images
        }

    def load_state(self, state: dict) -> tuple[int, list[dict]]:
        self.captured = None  # a recorded step holds the old optimiser state: record anew
        self.model.load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.joint:
            self.teacher_optimizer.load_state_dict(state["teacher_optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        return state["epoch"], state["history"]


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimiser's state_dict with float learning rates, whether or not a captured step made
    them tensors: a checkpoint does not depend on how its run was executed."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        group["lr"] = float(group["lr"])
    return state


def graph_terms_by_batch(xs: torch.Tensor, xt: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Mean L_node and L_edge over consecutive test batches of the training batch size."""
    groups = len(xs) // batch_size
    if groups == 0:
        return {}
    pairs = zip(xs.split(batch_size)[:groups], xt.split(batch_size)[:groups])
    terms = torch.stack([torch.stack(losses.ega_terms(s, t)) for s, t in pairs])
    node, edge = terms.mean(0).tolist()  # one host read, not one per batch
    return {"test_node": node, "test_edge": edge}


def prepare_data(config: RunConfig, device: torch.device) -> Dataset:
    data = load_dataset(config.dataset)
    return data.subset(config.train_size, config.test_size, config.seed).to(device)


def fit(
    config: RunConfig,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> Run:
    """Train (or resume, or just return) the run that `config` names."""
    run = Run.open(config)
    if run.finished:
        return run
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
        row.update(test_row)
        row["seconds"] = seconds
        row["images_per_s"] = len(trainer.data.train_labels) / seconds
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
