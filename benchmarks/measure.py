"""One measurement in this process: the throughput, per-part times, evaluation rate and peak
memory of egalib's loop or of the reference loop (`reference.py`), as `bench.py` asks for it.

`bench.py` starts a process per measurement, so that each peak memory is its own, and runs
`worker_main` there; several such processes wait at a barrier after warm-up and are then timed
over the same window."""

import json
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from presets import PRESETS, make_config, synthetic_dataset
from reference import ReferenceModel, reference_dataset
from report import PARTS

from egalib import models
from egalib.experiments import device_name
from egalib.files import atomic_write_text

READY, RESULT = "BENCH-READY", "BENCH-RESULT "
PROFILE_STEPS = 10


# ---------------------------------------------------------------------------------------------
# What both loops share


def synchroniser(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def peak_memory(device: torch.device, children: bool = False) -> dict:
    """CUDA: max_memory_allocated since the measurement began; CPU: peak RSS of the measuring
    process (ru_maxrss) and, with `children`, of its largest finished child process (the
    DataLoader workers, whose RSS counts the pages they share with their parent)."""
    if device.type == "cuda":
        return {
            "kind": "cuda max_memory_allocated",
            "mib": torch.cuda.max_memory_allocated(device) / 2**20,
        }
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    rss = lambda who: resource.getrusage(who).ru_maxrss * unit / 2**20
    peak = {"kind": "peak RSS (ru_maxrss)", "mib": rss(resource.RUSAGE_SELF)}
    if children:
        peak["largest_child_mib"] = rss(resource.RUSAGE_CHILDREN)
    return peak


def throughput(steps: int, batch: int, wall: float, seconds: float, mean_loss: float) -> dict:
    """What both loops report of their timed steps; `wall` is the clock time they began."""
    return {
        "images_per_s": steps * batch / seconds,
        "seconds": seconds,
        "steps": steps,
        "images": steps * batch,
        "window": [wall, wall + seconds],
        "mean_loss": mean_loss,
    }


class PartClock:
    """Per-part seconds over a pass, with the device synchronised at every mark."""

    def __init__(self, sync: Callable[[], None]):
        self.sync, self.seconds, self.steps = sync, dict.fromkeys(PARTS, 0.0), 0
        self.total = 0.0

    def start(self) -> None:
        self.sync()
        self.began = self.last = time.perf_counter()

    def mark(self, part: str) -> None:
        self.sync()
        now = time.perf_counter()
        self.seconds[part] += now - self.last
        self.last = now

    def end_step(self) -> None:
        self.sync()
        self.total += time.perf_counter() - self.began
        self.steps += 1

    def timed(self, part: str, fn: Callable) -> Callable:
        """`fn` with its own synchronised time added to `part`."""

        def wrapper(*args, **kwargs):
            self.sync()
            began = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            self.seconds[part] += time.perf_counter() - began
            return out

        return wrapper

    def per_step_ms(self) -> dict[str, float]:
        ms = {k: 1000 * v / self.steps for k, v in self.seconds.items()}
        ms["total"] = 1000 * self.total / self.steps
        return ms


# ---------------------------------------------------------------------------------------------
# egalib's loop


def measure_egalib(spec: dict, barrier: Callable[[], None] = lambda: None) -> dict:
    """Throughput of egalib's step, then (if asked) its parts and the eval throughput."""
    from egalib.step import TrainState
    from egalib.train import step_function, sum_steps

    preset, device, b = PRESETS[spec["preset"]], torch.device(spec["device"]), spec["batch_size"]
    sync = synchroniser(device)
    config = make_config(preset, b, spec["device"], spec["seed"], spec["capture"])
    data = synthetic_dataset(preset, spec["pool"], spec["eval_images"], spec["seed"]).to(device)
    teacher = models.teacher(config.teacher, pretrained=spec["pretrained"])
    state = TrainState.build(config, data, teacher=teacher)
    g = torch.Generator(device=device).manual_seed(spec["seed"] + 1)
    order = torch.randperm(spec["pool"], device=device, generator=g)
    batches = order[: spec["pool"] // b * b].view(-1, b)
    table = None
    if spec["table_images"]:
        state, table = with_table(state, spec["table_images"], sync)
        batches = batches % spec["table_images"]  # the images the table holds
    step = step_function(state)

    warmup, steps = spec["warmup"], spec["steps"]
    for index in batches[:warmup]:
        step(index)
    sync()
    barrier()
    wall, began = time.time(), time.perf_counter()
    sums = sum_steps(step, batches[warmup : warmup + steps])  # one host read, as per epoch
    mean_loss = sums["loss"] / steps
    sync()
    result = throughput(steps, b, wall, time.perf_counter() - began, mean_loss)
    result["peak_memory"] = peak_memory(device)
    if table is not None:
        result["table"] = table
    if spec["parts"]:
        parts = batches[: spec["part_warmup"] + spec["part_steps"]]
        result["parts"] = egalib_parts(step, parts, spec["part_warmup"], device)
    if spec["eval"]:
        result["eval"] = egalib_eval(state, sync)
    if spec["profile"]:
        egalib_profile(step, batches[:PROFILE_STEPS], device, Path(spec["profile"]))
    if table is not None:
        shutil.rmtree(table["cache"], ignore_errors=True)
    return result


def with_table(state, images: int, sync: Callable[[], None]):
    """The state with its teacher's features looked up in a teacher table of every view of the
    first `images` training images, built in a fresh cache folder (so that it is built, not
    read): its steps then run no teacher. Also the build's size and rate."""
    from egalib.teacher_features import table_features
    from egalib.teacher_table import TableSpec
    from egalib.views import views_per_image

    config, folder = state.config, tempfile.mkdtemp(prefix="egalib-bench-table-")
    os.environ["EGALIB_CACHE"] = folder
    spec = TableSpec(
        config.teacher, "synthetic", state.data.train_images[:images], config.padding, None
    )
    sync()
    began = time.perf_counter()
    features = table_features(state.teacher, spec)
    sync()
    seconds = time.perf_counter() - began
    views = images * views_per_image(config.padding)
    on_device = features.table.features.device == state.data.train_images.device
    built = {
        "images": images,
        "views": views,
        "build_s": seconds,
        "views_per_s": views / seconds,
        "bytes": features.table.features.nbytes,
        "dtype": str(features.table.features.dtype),
        "on_device": on_device,
        "cache": folder,
    }
    return replace(state, teacher=features), built


def profile_steps(step, batches: torch.Tensor, device: torch.device) -> torch.profiler.profile:
    """torch.profiler over one step per row of `batches` (CPU, and CUDA kernels on a GPU), the
    device synchronised before the profile ends."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        for index in batches:
            step(index)
        synchroniser(device)()
    return profile


def egalib_profile(step, batches: torch.Tensor, device: torch.device, path: Path) -> None:
    """torch.profiler tables of egalib's step over `batches` (run after warm-up): operators by
    self device time (CUDA) and by self CPU time, written to `path`."""
    cuda = device.type == "cuda"
    averages = profile_steps(step, batches, device).key_averages()
    sections = [
        f"egalib's step, {len(batches)} steps of {batches.shape[1]} images, "
        f"on {device_name(device)}"
    ]
    keys = ("self_device_time_total", "self_cpu_time_total") if cuda else ("self_cpu_time_total",)
    for key in keys:
        sections += [f"\nby {key}:", averages.table(sort_by=key, row_limit=30)]
    atomic_write_text(path, "\n".join(sections) + "\n")


# the step's torch.profiler ranges (egalib.step.train_step) that make up each part
PART_RANGES = {
    "data": ("views",),
    "teacher": ("teacher",),
    "student": ("student",),
    "loss_backward_step": ("loss", "backward_step"),
}


def egalib_parts(step, batches: torch.Tensor, warmup: int, device: torch.device) -> dict:
    """Milliseconds per step of each part, read from the step's torch.profiler ranges (device
    time on CUDA, CPU time elsewhere), and the profiled pass's total. A step captured as one
    CUDA graph has no ranges to read: only its total is given."""
    for index in batches[:warmup]:
        step(index)
    timed, cuda = batches[warmup:], device.type == "cuda"
    synchroniser(device)()
    began = time.perf_counter()
    profile = profile_steps(step, timed, device)
    total = 1000 * (time.perf_counter() - began) / len(timed)
    events = {e.key: e for e in profile.key_averages()}
    if not any(name in events for names in PART_RANGES.values() for name in names):
        return {"total": total}
    microseconds = lambda e: e.device_time_total if cuda else e.cpu_time_total
    ms = {
        part: sum(microseconds(events[n]) for n in names if n in events) / 1000 / len(timed)
        for part, names in PART_RANGES.items()
    }
    return {**ms, "total": total}


def egalib_eval(state, sync: Callable[[], None], repeats: int = 2) -> dict:
    """`evaluate` as `fit` runs it each epoch. The first call also encodes the test set with the
    frozen teacher (once per run); later calls reuse those features."""
    from egalib.train import evaluate

    sync()
    began = time.perf_counter()
    evaluate(state, "test")
    sync()
    first = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(repeats):
        evaluate(state, "test")
    sync()
    steady = (time.perf_counter() - began) / repeats
    n = len(state.data.test_labels)
    return {
        "images": n,
        "images_per_s": n / steady,
        "first_s": first,
        "steady_s": steady,
        "teacher_once_s": max(first - steady, 0.0),
    }


# ---------------------------------------------------------------------------------------------
# The reference loop's throughput (the loop itself is in reference.py)


def measure_reference(spec: dict, barrier: Callable[[], None] = lambda: None) -> dict:
    preset, device, b = PRESETS[spec["preset"]], torch.device(spec["device"]), spec["batch_size"]
    sync = synchroniser(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the CRD code base sets it
    config = make_config(preset, b, spec["device"], spec["seed"])
    data = synthetic_dataset(preset, spec["pool"], 0, spec["seed"])
    model = ReferenceModel(config, data, device, spec["pretrained"])
    dataset = reference_dataset(data, model.teacher, config.padding)

    def loader():
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=b,
            shuffle=True,
            num_workers=spec["workers"],
            drop_last=True,
            generator=torch.Generator().manual_seed(spec["seed"]),
        )

    warmup, steps = spec["warmup"], spec["steps"]
    batches = iter(loader())
    for _ in range(warmup):
        model.step(next(batches))
    sync()
    barrier()
    wall, began = time.time(), time.perf_counter()
    total = 0.0
    for _ in range(steps):
        total += model.step(next(batches))
    sync()
    result = throughput(steps, b, wall, time.perf_counter() - began, total / steps)
    del batches  # shuts its workers down, so their peak RSS is counted
    result["peak_memory"] = peak_memory(device, children=spec["workers"] > 0)
    if spec["parts"]:
        clock, batches = PartClock(sync), iter(loader())
        for _ in range(spec["part_warmup"]):
            model.step(next(batches))
        for _ in range(spec["part_steps"]):
            clock.start()
            model.step(next(batches), clock.mark)
            clock.end_step()
        del batches
        result["parts"] = clock.per_step_ms()
    return result


# ---------------------------------------------------------------------------------------------
# One measurement, and the entry of the process that makes it


def measure(spec: dict, barrier: Callable[[], None] = lambda: None) -> dict:
    """One measurement (spec["loop"]: "egalib" or "reference") in this process."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run = measure_egalib if spec["loop"] == "egalib" else measure_reference
    result = run(spec, barrier)
    result.update(device_name=device_name(device), threads=torch.get_num_threads())
    return result


def worker_main() -> None:
    """Entry of a measuring process: spec as JSON in argv; after warm-up it says READY and waits
    for a line on stdin, so that several processes time the same window; the result is the last
    line of stdout."""
    spec = json.loads(sys.argv[-1])

    def barrier():
        print(READY, flush=True)
        sys.stdin.readline()

    try:
        result = measure(spec, barrier)
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    print(RESULT + json.dumps(result), flush=True)
