"""One training step, and the run's fixed parts it uses, built once from the config.

    views -> teacher features -> teacher head -> student -> the method's terms -> backward -> SGD

`TrainState.build` makes the networks and heads, the teacher's features, the precision, the named
optimisers and schedule, the random streams and the method; `train_step(state, index)` trains one
batch and returns its named terms. The teacher's encoder is frozen. Its head is trained first as
a linear probe and frozen (`pretrained` protocol), or alongside the student by CE on its own
logits with its own SGD (`joint`); distillation gradients never reach it.
"""

import contextlib
import copy
import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from . import models
from .config import NO_TEACHER, RunConfig, lr_schedule
from .datasets import Dataset
from .files import first_line, weights_misfit
from .methods import DistillInputs, Method
from .models import EmbeddingHead
from .runs import CheckpointError
from .streams import Streams, random_streams
from .teacher_features import EncodedFeatures, TeacherMemo, run_table_spec, table_features
from .views import draw_views, student_view, train_view

Terms = dict[str, torch.Tensor]


@dataclass
class Precision:
    """The student's autocast dtype (None: float32) and the gradient scaler of float16 runs,
    which scales the loss up before backward so that small gradients do not flush to zero (a
    disabled scaler steps plainly)."""

    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    @classmethod
    def for_device(cls, device: torch.device) -> "Precision":
        """bfloat16 on GPUs that compute it fast (compute capability 8.0, Ampere, or newer),
        float16 on older ones (Colab's T4 is 7.5), float32 on a CPU."""
        dtype = None
        if device.type == "cuda":
            fast_bfloat16 = torch.cuda.get_device_capability(device) >= (8, 0)
            dtype = torch.bfloat16 if fast_bfloat16 else torch.float16
        return cls(dtype, torch.amp.GradScaler(device.type, enabled=dtype == torch.float16))

    def autocast(self, device: torch.device):
        enabled = self.autocast_dtype is not None
        return torch.autocast(device.type, self.autocast_dtype or torch.bfloat16, enabled=enabled)

    def backward_and_step(self, loss: torch.Tensor, optimizers) -> None:
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for optimizer in optimizers:
            self.scaler.step(optimizer)  # unscaled first; skipped when a gradient is not finite
        self.scaler.update()


class Networks(nn.Module):
    """The frozen teacher encoder and its head, the student and its head, and the method's own
    module (CRD's memory bank), drawn in this order from the seeded generator: one seed gives
    every method the same initial networks."""

    def __init__(self, config: RunConfig, data: Dataset, teacher: models.Teacher | None = None):
        super().__init__()
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
        check_index = data.train_images.device.type == "cpu"  # a host read is free only there
        self.method_module = config.weights.build(d, data.train_labels, check_index=check_index)

    def trainable_state(self) -> dict:
        """Everything a checkpoint needs (the frozen teacher encoder is rebuilt, not saved)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def student_state(self) -> dict:
        """The student and its head: what a validation-selected epoch keeps."""
        student = ("student.", "student_head.")
        return {k: v for k, v in self.state_dict().items() if k.startswith(student)}

    def student_outputs(self, images: torch.Tensor, precision: Precision, backbone=None):
        """The student head's (embeddings, logits), and the backbone's features they come from;
        `backbone` stands in for the student's (its copy with folded batch norms, to evaluate)."""
        with precision.autocast(images.device):
            features = (self.student if backbone is None else backbone)(images).float()
        return (*self.student_head(features), features)


@dataclass
class TrainState:
    """Everything one run's steps use and change, built once by `build`."""

    config: RunConfig
    data: Dataset
    networks: Networks
    teacher: EncodedFeatures | None  # the frozen teacher's features; None without a teacher
    precision: Precision
    optimizers: dict[str, torch.optim.Optimizer]  # "student", and "teacher_head" when joint
    schedule: torch.optim.lr_scheduler.LRScheduler  # the student's
    streams: Streams
    method: Method  # with the config's weights and options

    @classmethod
    def build(cls, config: RunConfig, data: Dataset, teacher=None, memo=None) -> "TrainState":
        """The run of `config` on `data` (on its device), at its first step. `teacher` replaces
        the config's frozen encoder (a benchmark's random weights); `memo` holds what the runs
        of one command share (`TeacherMemo`)."""
        device = data.train_images.device
        precision = Precision.for_device(device)
        check_capture(config, device, precision)
        check_memory(config, data)
        torch.manual_seed(config.seed)
        networks = built_within_memory(lambda: Networks(config, data, teacher).to(device), config)
        # channels_last on every device: on a CPU too, a 1-channel first layer runs faster
        networks.to(memory_format=torch.channels_last)
        if config.compile:
            networks.student.compile()  # in place: checkpoint keys stay the same
        optimizers = make_optimizers(config, networks, device)
        method = config.weights
        return cls(
            config=config,
            data=data,
            networks=networks,
            teacher=teacher_features(config, networks, data, precision, memo),
            precision=precision,
            optimizers=optimizers,
            schedule=lr_schedule(optimizers["student"], config.epochs),
            streams=random_streams(config.seed, device),
            method=method,
        )

    @functools.cached_property
    def teacher_in_step(self) -> bool:
        """`RunConfig.teacher_in_step`, read once rather than at every step."""
        return self.config.teacher_in_step

    def teacher_outputs(self, images: torch.Tensor, index: torch.Tensor):
        """The teacher head's (embeddings, logits) of the batch's teacher view, and the frozen
        encoder's features they come from; None when the step runs no teacher."""
        if not self.teacher_in_step:
            return None
        padding, device = self.config.padding, images.device
        views = draw_views(len(images), padding, self.streams["teacher_view"], device)
        features = self.teacher.of_batch(images, index, views)
        return (*self.networks.teacher_head(features), features)

    def state_dict(self) -> dict:
        """The checkpoint: weights, optimisers, schedule, scaler and random streams."""
        return {
            "run": self.config.digest,  # which run's checkpoint it is
            "model": self.networks.trainable_state(),
            "optimizers": {name: optimizer_state(o) for name, o in self.optimizers.items()},
            "schedule": self.schedule.state_dict(),
            "scaler": self.precision.scaler.state_dict(),
            "streams": {name: g.get_state() for name, g in self.streams.items()},
            "student_view": asdict(self.networks.student_view),  # how the student saw images
        }

    def load_state_dict(self, state: dict) -> None:
        """Everything `state_dict` saved, loaded exactly: a checkpoint of other networks, or one
        holding a non-finite weight, is refused in one sentence (CheckpointError)."""
        missing = [
            k for k in ("run", "model", "optimizers", "schedule", "streams") if k not in state
        ]
        if missing:
            raise CheckpointError(
                f"the checkpoint lacks {', '.join(missing)} (another egalib version wrote it); "
                "delete checkpoint.pt to train the run afresh."
            )
        if state["run"] != self.config.digest:
            raise CheckpointError(
                f"the checkpoint is another run's (its settings hash to {state['run']!r}, this "
                f"run's to {self.config.digest!r}); delete checkpoint.pt to train the run afresh."
            )
        check_weights(state["model"], self.networks.trainable_state())
        self.networks.load_state_dict(state["model"], strict=False)  # the frozen encoder aside
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.schedule.load_state_dict(state["schedule"])
        self.precision.scaler.load_state_dict(state["scaler"])
        for name, generator in self.streams.items():
            generator.set_state(state["streams"][name])

    @contextlib.contextmanager
    def preserved(self):
        """The block's changes to weights, BN statistics, optimisers, schedule, streams and
        CRD's banks are undone when it ends (the warm-up of a captured step)."""
        saved = copy.deepcopy(self.state_dict())
        yield
        self.load_state_dict(saved)


def train_step(state: TrainState, index: torch.Tensor) -> Terms:
    """One step on the training samples at `index`. Returns the student's loss terms and, apart
    from them, measurements (correct predictions; the teacher head's CE, its own loss in the
    joint protocol), detached and still on the device."""
    nets, labels = state.networks.train(), state.data.train_labels[index]
    images = state.data.train_images[index]
    with record_function("views"):
        student_in = train_view(
            images, nets.student_view, state.streams["student_view"], state.config.padding
        )
    with record_function("teacher"):
        teacher = state.teacher_outputs(images, index)
    with record_function("student"):
        xs, logits_s, features_s = nets.student_outputs(student_in, state.precision)
    with record_function("loss"):
        no_teacher = (None, None, None)
        xt, logits_t, features_t = no_teacher if teacher is None else (t.detach() for t in teacher)
        method_state = (nets.method_module, state.streams["method"])
        inputs = DistillInputs(
            xs, xt, logits_s, logits_t, labels, index, *method_state, features_s, features_t
        )
        terms = state.method.loss_terms(inputs, state.config.kd_temperature)
        measured = measurements(logits_s, teacher, labels)
        joint = state.config.joint_teacher_head
        objective = terms["loss"] + measured["teacher_ce"] if joint else terms["loss"]
    with record_function("backward_step"):
        state.precision.backward_and_step(objective, state.optimizers.values())
    return {k: v.detach() for k, v in {**terms, **measured}.items()}


def check_weights(saved: dict, expected: dict) -> None:
    """The checkpoint's weights are those of this run's networks, in their shapes, and finite."""
    if misfit := weights_misfit(saved, expected):
        raise CheckpointError(
            f"the checkpoint's weights do not fit this run's networks: they {misfit}; delete "
            "checkpoint.pt to train the run afresh."
        )


def memory_need(config: RunConfig, data: Dataset) -> tuple[int, str]:
    """Bytes that a step's batch-by-batch tensors and the method's banks need, estimated from
    their shapes (float32, with their gradients), and the flag that sets the largest part."""
    b, d = min(config.batch_size, len(data.train_labels)), config.embed_dim
    graphs = 16 * b * b * 4  # the B x B matrices of a relational loss, with gradients
    if config.method == "rkd":  # B x B x B angle cosines and B x B x D differences
        graphs += 3 * b**3 * 4 + 3 * b * b * d * 4
    module = config.weights.defaults.get("embed_dim", 0) * 2 * len(data.train_labels) * 4
    return graphs + module, ("--batch-size" if graphs >= module else "--option embed_dim")


def available_memory() -> int:
    """Bytes of host memory available to a new allocation: MemAvailable where Linux tells it
    (free memory and the reclaimable caches), else the free pages."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        lines = Path("/proc/meminfo").read_text().splitlines()
        available = next(line for line in lines if line.startswith("MemAvailable:"))
        return int(available.split()[1]) * 1024  # given in kB
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(config: RunConfig, data: Dataset) -> None:
    """Refuse, before training, a run whose known needs exceed the device's free memory."""
    device = data.train_images.device
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_memory()
    need, flag = memory_need(config, data)
    if need > free:
        raise ValueError(
            f"a step of method {config.method!r} at batch {config.batch_size} needs about "
            f"{need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB free on {device}; "
            f"lower {flag}."
        )


def built_within_memory(build, config: RunConfig):
    """`build()`, or one sentence where its weights do not fit in memory: their size is known
    only once the networks are made (a huge --embed-dim asks for terabytes of heads)."""
    try:
        return build()
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not isinstance(error, torch.OutOfMemoryError) and "allocate memory" not in str(error):
            raise
        raise ValueError(
            f"the networks of this run do not fit in memory ({first_line(error)}); lower "
            f"--embed-dim (now {config.embed_dim}) or pick a smaller student or teacher."
        ) from None


def check_capture(config: RunConfig, device: torch.device, precision: Precision) -> None:
    """A captured step needs CUDA, and cannot hold float16's gradient scaler, whose checks read
    the device from the host."""
    if config.capture and device.type != "cuda":
        raise ValueError(
            "capture records the training step as a CUDA graph, which needs a CUDA device; "
            "on a CPU use compile (--compile) instead."
        )
    if config.capture and precision.autocast_dtype == torch.float16:
        raise ValueError(
            "this GPU has no fast bfloat16, so egalib trains in float16 with a gradient "
            "scaler, whose checks read the device from the host and cannot be captured; "
            "run without --capture."
        )


def measurements(logits_s: torch.Tensor, teacher, labels: torch.Tensor) -> Terms:
    """Correct predictions of the student, and the teacher head's CE when the step ran it."""
    measured = {"correct": (logits_s.argmax(1) == labels).sum()}
    if teacher is not None:
        measured["teacher_ce"] = F.cross_entropy(teacher[1], labels)
    return measured


def make_optimizers(config: RunConfig, networks: Networks, device: torch.device) -> dict:
    """The student's SGD (with its head and the method's module), and in the joint protocol the
    teacher head's own; a pretrained teacher head is frozen."""
    kernel = {"fused": True} if device.type == "cuda" else {"foreach": True}
    trained = [networks.student, networks.student_head, networks.method_module]
    params = [p for part in trained if part is not None for p in part.parameters()]
    sgd = dict(momentum=config.momentum, weight_decay=config.weight_decay, **kernel)
    optimizers = {"student": torch.optim.SGD(params, lr=config.lr, **sgd)}
    head = networks.teacher_head
    if config.joint_teacher_head:
        head_sgd = dict(lr=config.teacher_lr, momentum=0.9, weight_decay=5e-4, **kernel)
        optimizers["teacher_head"] = torch.optim.SGD(head.parameters(), **head_sgd)
    elif head is not None:
        head.requires_grad_(False)
    return optimizers


def teacher_features(config, networks, data, precision, memo: TeacherMemo | None):
    """The teacher's features for this run: encoded in the step, or looked up in the teacher
    table when the config asks for one and the step runs the teacher."""
    if networks.teacher is None:
        return None
    if precision.autocast_dtype is not None:  # CUDA: the frozen weights in 16 bits
        networks.teacher.cast_weights(precision.autocast_dtype)
    encoded = EncodedFeatures(networks.teacher, config.padding, memo)
    if not (config.teacher_table and config.teacher_in_step):
        return encoded
    # a captured step cannot check a lookup, so it reads a table of every view
    return table_features(encoded, run_table_spec(config, data.train_images, config.capture))


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The state_dict with float learning rates (a captured step makes them tensors): a checkpoint
    does not depend on how its run was executed."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        group["lr"] = float(group["lr"])
    return state
