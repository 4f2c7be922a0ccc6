"""RunConfig: every choice of one training run, validated when it is made. A profile (`smoke`,
`demo`, `paper`) is only a set of RunConfig values: nothing else branches on it."""

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import SimpleNamespace

import torch

from . import methods, models
from .check import option_in_range
from .datasets import DATASETS
from .files import is_plain_name

PROTOCOLS = ("pretrained", "joint")
EXECUTION_ONLY = (
    "device",
    "runs_dir",
    "capture",
    "compile",
    "teacher_table",
)  # may differ on resume
# every number's range: whole numbers and their least value; numbers above 0; numbers at least 0
WHOLE = {
    "batch_size": 1,  # at least 2: refused apart, with the reason
    "epochs": 1,
    "embed_dim": 1,
    "probe_epochs": 1,
    "train_size": 2,
    "val_size": 0,
    "test_size": 1,
    "padding": 0,
    "seed": 0,
}
ABOVE_ZERO = ("lr", "teacher_lr", "kd_temperature")
AT_LEAST_ZERO = ("weight_decay", "gamma", "alpha", "beta", "momentum")  # momentum also below 1
OPTIONAL = ("train_size", "test_size", "gamma", "alpha", "beta")  # None: all, or the default
NO_TEACHER = "none"  # plain supervised training: no teacher is built (methods without one)
FLOAT32_MAX = torch.finfo(torch.float32).max  # torch takes each of these numbers as a float32
MAX_SEED = (2**63 - 4) // 4  # the run's streams start at 4 * seed + 3, a signed 64-bit number


def check_numbers(config, whole: dict, above_zero=(), at_least_zero=(), optional=()) -> None:
    """Raise one sentence for the first field of `config` that is not finite or out of range:
    `whole` maps whole-number fields to their least value; `optional` ones may be None."""
    for key in [*whole, *above_zero, *at_least_zero]:
        value, low = getattr(config, key), whole.get(key, 0)
        if value is None and key in optional:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok = number and math.isfinite(value)
        ok = ok and (value > 0 if key in above_zero else value >= low)
        expected = "a finite number " + ("> 0" if key in above_zero else ">= 0")
        if key in whole:
            ok, expected = ok and value == int(value), f"a whole number >= {low}"
        if key == "momentum":
            ok, expected = ok and value < 1, "a number in [0, 1)"
        if key == "seed":
            ok, expected = ok and value <= MAX_SEED, f"a whole number in [0, {MAX_SEED}]"
        if ok and key not in whole and value > FLOAT32_MAX:
            ok, expected = False, f"at most {FLOAT32_MAX:.4g}, float32's largest number"
        if not ok:
            raise ValueError(f"{key} must be {expected}, got {value!r}; give such a value.")


def check_whole(name: str, value, least: int) -> None:
    """`check_numbers` for one whole number outside a config: a flag or a function's argument."""
    check_numbers(SimpleNamespace(**{name: value}), {name: least})


def choices() -> dict[str, list[str]]:
    """The names each named field of a run takes, registered methods and datasets included."""
    return {
        "method": list(methods.METHODS),
        "teacher": [*models.TEACHERS, NO_TEACHER],
        "student": list(models.STUDENTS),
        "dataset": list(DATASETS),
        "protocol": list(PROTOCOLS),
    }


@dataclass(frozen=True)
class RunConfig:
    method: str = "ega"
    teacher: str = "ssl-fmnist"
    student: str = "small-cnn"
    dataset: str = "fashion-mnist"
    protocol: str = "pretrained"  # teacher head: linear probe first (pretrained) or joint
    epochs: int = 240
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    embed_dim: int = 256  # D, the node embedding size of both heads
    gamma: float | None = None  # weight of CE; None: the method's default
    alpha: float | None = None  # weight of KD; None: the method's default
    beta: float | None = None  # weight of the method's term; None: the method's default
    options: dict = field(default_factory=dict)  # the method's options, e.g. edge_weight
    kd_temperature: float = 4.0
    teacher_lr: float = 0.01  # the teacher head's SGD (joint) and linear probe (pretrained)
    probe_epochs: int = 240  # epochs of the teacher head's linear probe (pretrained)
    train_size: int | None = None  # labelled training images, class-balanced; None: all
    # training images held out, class-balanced and the same for every seed, to measure each
    # epoch and choose on (docs/runs.md); never trained on. 0: none held out, nothing selected
    val_size: int = 5000
    test_size: int | None = None  # test images, class-balanced; None: all
    padding: int = 4  # RandomCrop padding of both views
    seed: int = 0
    device: str = "auto"  # auto: CUDA when available, else CPU
    # record the whole training step as one CUDA graph, replayed for each batch of batch_size
    capture: bool = False
    compile: bool = False  # torch.compile the student (any device)
    # look the frozen teacher's features of training views up in a table computed once
    # (egalib.table) instead of running the teacher in every step: the same numbers to float
    # rounding, shared by every run on these training images
    teacher_table: bool = False
    runs_dir: str = "runs"
    name: str | None = None  # run folder name; None: derived from the config

    def __post_init__(self):
        for key, names in choices().items():
            value = getattr(self, key)
            if not isinstance(value, str) or value not in names:
                raise ValueError(
                    f"unknown {key} {value!r}; known {key}s: {', '.join(names)}. Pick one of those."
                )
        if self.teacher == NO_TEACHER and self.weights.uses_teacher:
            raise ValueError(
                f"method {self.method!r} distils from a teacher, but teacher is {NO_TEACHER!r}; "
                "name a teacher (see `python -m egalib list`) or use method 'vanilla'."
            )
        if self.beta is not None and self.weights.loss is None:  # a second, identical run
            raise ValueError(
                f"method {self.method!r} has no term of its own for beta to weigh; leave beta "
                "unset (alpha weighs KD)."
            )
        self._check_numbers()
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be at least 2, got {self.batch_size}: EGA's graph relates the "
                "samples of a batch (and batch norm needs two). Use a larger batch."
            )
        self._check_options()
        self._check_name()
        self._check_texts()

    def _check_numbers(self) -> None:
        """Each number finite and in its range, refused here in one sentence rather than by torch
        mid-run (`--lr nan` would train to the end, `--train-size 0` fail deep inside)."""
        check_numbers(self, WHOLE, ABOVE_ZERO, AT_LEAST_ZERO, OPTIONAL)

    def _check_options(self) -> None:
        if not isinstance(self.options, dict):
            raise ValueError(
                f"options must be a mapping of option names to numbers, got {self.options!r}; "
                "give e.g. {'edge_weight': 0.3}."
            )
        types = methods.get(self.method).option_types
        unknown = set(self.options) - set(types)
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(sorted(unknown))} for method {self.method!r}; "
                f"its options are: {', '.join(types) or 'none'}."
            )
        for key, value in self.options.items():
            kind = types[key]
            allowed = int if kind is int else (int, float)
            wrong_type = isinstance(value, bool) or not isinstance(value, allowed)
            if wrong_type or not math.isfinite(value):
                raise ValueError(
                    f"option {key} of method {self.method!r} must be a finite {kind.__name__}, "
                    f"got {value!r}; give a number of that type."
                )
            in_range, expected = option_in_range(key, value)
            if not in_range:
                raise ValueError(
                    f"option {key} of method {self.method!r} must be {expected}, got {value!r}; "
                    "give such a value."
                )

    def _check_name(self) -> None:
        """A run folder's name is one folder inside runs_dir, never a path out of it."""
        if self.name is None:
            return
        if not is_plain_name(self.name):
            raise ValueError(
                f"name {self.name!r} is not a plain folder name; give one without '/', '\\' "
                "or '..', and choose the folder around it with --runs-dir."
            )

    def _check_texts(self) -> None:
        """runs_dir and device are text; a path is taken as its text, as config.json holds it."""
        if isinstance(self.runs_dir, os.PathLike):
            object.__setattr__(self, "runs_dir", os.fspath(self.runs_dir))
        for key, example in (("runs_dir", "runs"), ("device", "cpu")):
            if not isinstance(getattr(self, key), str):
                raise ValueError(
                    f"{key} must be text, got {getattr(self, key)!r}; give e.g. {example!r}."
                )

    @property
    def joint_teacher_head(self) -> bool:
        """Whether the teacher head trains alongside the student (the joint protocol)."""
        return self.protocol == "joint" and self.teacher != NO_TEACHER

    @property
    def teacher_in_step(self) -> bool:
        """Whether a training step runs the teacher: to distil from it or to train its head
        (vanilla with a frozen head would only log it)."""
        return self.joint_teacher_head or self.weights.uses_teacher

    @property
    def weights(self) -> methods.Method:
        """The method with this config's weights and options in place of the defaults."""
        m = methods.get(self.method)
        given = {k: getattr(self, k) for k in ("gamma", "alpha", "beta")}
        return replace(
            m,
            **{k: v for k, v in given.items() if v is not None},
            options={**m.options, **self.options},
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved(self) -> dict:
        """The weights and options the run trains with, the method's defaults filled in: what a
        changed default changes."""
        m = self.weights
        return {"gamma": m.gamma, "alpha": m.alpha, "beta": m.beta, "options": m.defaults}

    def shaping(self) -> dict:
        """The values that shape a run's results (not where or how fast it runs), the resolved
        weights and options included."""
        given = {k: v for k, v in self.to_dict().items() if k not in EXECUTION_ONLY}
        return {**given, "resolved": self.resolved()}

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def from_profile(cls, profile: str, **overrides) -> "RunConfig":
        """The profile's values, then its weights for the method (if it has its own), then the
        overrides (None: not given)."""
        settings = _profile(profile)
        values = {k: v for k, v in settings.items() if k not in ("seeds", "methods", "weights")}
        given = {k: v for k, v in overrides.items() if v is not None}
        method = given.get("method", values.get("method", cls.method))
        weights = settings.get("weights", {}).get(method, {}) if isinstance(method, str) else {}
        return cls(**{**values, **weights, **given})

    @property
    def run_name(self) -> str:
        """Readable and unique: the main choices, then a hash of everything that shapes results."""
        if self.name:
            return self.name
        parts = (self.dataset, self.teacher, self.student, self.method, self.protocol)
        tags = [*self.override_tags(), f"e{self.epochs}", f"s{self.seed}", self.digest]
        return "_".join([*parts, *tags])

    @property
    def digest(self) -> str:
        """A hash of everything that shapes the results, the run folder's name aside."""
        shaping = {k: v for k, v in self.shaping().items() if k != "name"}
        return hashlib.sha1(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def run_path(self) -> Path:
        """The run's folder: `run_name` inside `runs_dir`."""
        return Path(self.runs_dir) / self.run_name

    def override_tags(self, limit: int = 40) -> list[str]:
        """The weights and options given in place of the method's, as `beta2`, `edge_weight0.3`,
        so that run folders that differ by them say so (at most `limit` characters in all; the
        hash tells the rest apart)."""
        given = {k: getattr(self, k) for k in ("gamma", "alpha", "beta")}
        given = {**{k: v for k, v in given.items() if v is not None}, **self.options}
        tags, size = [], 0
        for key, value in given.items():
            tag = f"{key}{value:g}"
            if size + len(tag) > limit:
                break
            tags, size = [*tags, tag], size + len(tag) + 1
        return tags


def resolve_device(name: str) -> torch.device:
    """CUDA when available for "auto", else the CPU; any other name as torch reads it, refused
    in one sentence when it is not a device or this machine does not have it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    backend = getattr(torch, device.type, None) if device is not None else None
    if device is None or not (device.type == "cpu" or backend and backend.is_available()):
        raise ValueError(
            f"device {name!r} is not available on this machine; use 'auto', 'cpu' or a device "
            "that torch has here (e.g. 'cuda' on a machine with a GPU)."
        )
    return device


def _profile(name: str) -> dict:
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r}; known profiles: {', '.join(PROFILES)}. Pick one of those."
        )
    return PROFILES[name]


def profile_seeds(name: str) -> tuple[int, ...]:
    return tuple(_profile(name)["seeds"])  # a comparison repeats over these, a run folder each


def profile_methods(name: str) -> tuple[str, ...]:
    """The methods a profile's comparison trains: its own list, or all of them."""
    return tuple(_profile(name).get("methods", methods.METHODS))


COLAB_METHODS = ("vanilla", "kd", "crd", "ccl", "ega")  # the poster's comparison
# the paper's CIFAR-100 setting (docs/method.md), which the `paper` and `colab` profiles share
PAPER_SETTING = dict(
    teacher="clip-vit-b32",
    student="resnet8x4",
    dataset="cifar100",
    batch_size=64,
    lr=0.05,
    embed_dim=256,
    val_size=5000,  # 50 per class held out of the 50,000 (the authors trained on all of them)
    seeds=(0,),
)
# chosen on the validation split by `python -m egalib study weights` (docs/demo.md#the-weights):
# kd's gamma and alpha, and every other method's beta
BASELINE_BETAS = dict(fitnet=10.0, pkt=300.0, rkd=0.1, nce=1.0, irg=0.1, sp=30.0, crd=0.08, ccl=1.0)
EGA_BETAS = {"ega": 1.0, "ega+kd": 0.1, "ega-node": 10.0, "ega-edge": 1.0}
DEMO_WEIGHTS = {"kd": dict(gamma=1.0, alpha=0.9)} | {
    method: dict(beta=beta) for method, beta in (BASELINE_BETAS | EGA_BETAS).items()
}
PROFILES = {
    # each profile: its data and sizes | its schedule and seeds
    # seconds: what CI and the notebook tests run
    "smoke": dict(
        train_size=256, val_size=256, test_size=256, batch_size=32, embed_dim=64, device="cpu"
    )
    | dict(epochs=1, probe_epochs=2, seeds=(0,)),
    # minutes on 2 CPU cores, `make demo`: batch 16, lr 0.05 x 16 / 64, as notebook 06 picks,
    # and each method's weight as `study weights` chose it (weights-demo.csv; a test checks)
    "demo": dict(train_size=4000, val_size=10000, batch_size=16, embed_dim=128, teacher_table=True)
    | dict(epochs=6, lr=0.0125, probe_epochs=60, seeds=(0, 1, 2, 3, 4), weights=DEMO_WEIGHTS),
    # hours on a CUDA GPU: docs/method.md's CIFAR-100 recipe; `reproduce` sets each cell's choices
    "paper": PAPER_SETTING | dict(epochs=240, probe_epochs=240, teacher_table=True),
    # about an hour of notebook 02 on a Colab T4 (an estimate, docs/colab.md): the paper's
    # models and data, the poster's comparison, 3 epochs, the teacher in the step
    "colab": PAPER_SETTING | dict(epochs=3, probe_epochs=30, methods=COLAB_METHODS),
}


MILESTONES = (150 / 240, 180 / 240, 210 / 240)  # the lr decay points of docs/method.md


def lr_schedule(
    optimizer: torch.optim.Optimizer, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The method's schedule scaled to `epochs`: lr x0.1 at 150/240, 180/240 and 210/240 of them."""
    milestones = [round(f * epochs) for f in MILESTONES]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
