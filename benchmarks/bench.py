"""A benchmark, not a test: images per second of egalib's loop against a reference-style loop.

`python benchmarks/bench.py` (from a clone; not a command of egalib) trains the same student,
teacher, method (EGA, joint teacher head) and batch size on the same device in two loops, on
synthetic data of the real shape:

- egalib's loop: `egalib.step.train_step` on random batches of a uint8 dataset held on the
  device; the views are made there; on CUDA the teacher's weights are stored in bf16 and the
  student runs under bf16 autocast in channels_last, with `--capture` the whole step is one
  replayed CUDA graph, and nothing is read back to the host inside the timed steps;
- a reference loop in the CRD code base's style (`reference.py` beside it): a torch `Dataset`
  of HWC uint8 arrays made into PIL images and augmented by torchvision transforms in `DataLoader`
  workers, fp32 everywhere (no autocast, no channels_last), `cudnn.benchmark` on, `loss.item()`
  every step.

Each measurement runs in a fresh process, so its peak memory is its own; with `--processes N`,
N copies of egalib's loop start together (they wait at a barrier after warm-up) and their images
per second are summed. The time of each part of a step (data, teacher, student, loss + backward +
optimiser) is measured in a separate, shorter pass (egalib's from its step's torch.profiler
ranges, the reference's with the device synchronised around each part); those per-step times do
not add up to the throughput pass's. A full run (train + eval, 240 epochs
by default) is projected from measured train and eval images per second.

Results: a table on stdout and a JSON file, by default `benchmarks/results/<device>.json`.
"""

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from presets import PRESETS, make_config, synthetic_dataset
from reference import (
    ReferenceModel,
    accuracy_config,
    accuracy_summary,
    check_method,
    compare_accuracy,
    reference_dataset,
    teacher_pretrained,
)
from report import (
    PARTS,
    Measured,
    aggregate_row,
    format_table,
    make_report,
    mean_and_spread,
    output_path,
    write_json,
)

from egalib import models
from egalib.config import resolve_device
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


def egalib_profile(step, batches: torch.Tensor, device: torch.device, path: Path) -> None:
    """torch.profiler tables of egalib's step over `batches` (run after warm-up): operators by
    self device time (CUDA) and by self CPU time, written to `path`."""
    cuda = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    sync = synchroniser(device)
    with torch.profiler.profile(activities=activities) as profile:
        for index in batches:
            step(index)
        sync()
    averages = profile.key_averages()
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
    timed, sync = batches[warmup:], synchroniser(device)
    cuda = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    sync()
    began = time.perf_counter()
    with torch.profiler.profile(activities=activities) as profile:
        for index in timed:
            step(index)
        sync()
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
# Worker processes


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


def _worker_main() -> None:
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


def run_workers(specs: list[dict], timeout: float) -> list[dict]:
    """Start one process per spec, release them together after their warm-up, collect results."""
    here = Path(__file__).resolve().parent  # benchmarks/, beside the repository's egalib/
    paths = (str(here), str(here.parent), os.environ.get("PYTHONPATH"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    code = "from bench import _worker_main; _worker_main()"
    procs, logs, expired = [], [], threading.Event()

    def kill_all():
        expired.set()
        for p in procs:
            with contextlib.suppress(OSError):
                p.kill()

    def read_until(p, i: int, prefix: str) -> str:
        for line in p.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :]
        p.wait()
        logs[i].seek(0)
        tail = "".join(logs[i].read().decode(errors="replace").splitlines(True)[-15:])
        why = f"ran past --timeout {timeout:g} s" if expired.is_set() else f"exit {p.returncode}"
        raise RuntimeError(f"the {specs[i]['loop']} measurement failed ({why}):\n{tail}")

    watchdog = threading.Timer(timeout, kill_all)
    watchdog.daemon = True
    try:
        for spec in specs:
            logs.append(tempfile.TemporaryFile())
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", code, json.dumps(spec)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=logs[-1],
                    text=True,
                    env=env,
                )
            )
        watchdog.start()
        for i, p in enumerate(procs):
            read_until(p, i, READY)
        for p in procs:  # all warmed up: go
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [json.loads(read_until(p, i, RESULT)) for i, p in enumerate(procs)]
        for p in procs:
            p.wait()
        return results
    finally:
        watchdog.cancel()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()


# ---------------------------------------------------------------------------------------------
# The command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu-demo",
        help="cpu-demo: Fashion-MNIST shapes, ssl-fmnist, small-cnn; paper: CIFAR-100 "
        "shapes, CLIP ViT-B/32 (random weights), resnet8x4",
    )
    p.add_argument("--steps", type=int, help="timed steps per loop (default: the preset's)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default: the preset's)")
    p.add_argument(
        "--part-steps", type=int, help="steps of the part-timing pass (default: min(steps, 20))"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--workers", type=int, default=2, help="the reference's DataLoader workers")
    p.add_argument(
        "--processes",
        type=int,
        nargs="+",
        metavar="N",
        help="aggregate images/s of N egalib loops at once, for each N (default: "
        "1 2 4 on CUDA, 1 on CPU)",
    )
    p.add_argument(
        "--eval-images",
        type=int,
        help="synthetic test images for the eval throughput (default: the preset's)",
    )
    p.add_argument("--epochs", type=int, default=240, help="epochs of the projected full run")
    p.add_argument(
        "--epoch-images",
        type=int,
        nargs=2,
        metavar=("TRAIN", "TEST"),
        help="train and test images per epoch of the projected run (default: the "
        "real dataset's: 60000 10000 for cpu-demo, 50000 10000 for paper)",
    )
    p.add_argument(
        "--capture",
        action="store_true",
        help="egalib's captured step (RunConfig.capture: CUDA graphs on a GPU, torch.compile of "
        "the student on a CPU, where --warmup must cover the compilation)",
    )
    p.add_argument(
        "--profile",
        metavar="FILE",
        help=f"write torch.profiler tables of {PROFILE_STEPS} of egalib's steps (after its timed "
        "steps; CUDA kernels too on a GPU) to FILE",
    )
    p.add_argument(
        "--teacher-table",
        type=int,
        metavar="IMAGES",
        help="egalib's loop looks its teacher's features up in a teacher table of every view of "
        "IMAGES training images, built first (its build time and rate are reported), and its "
        "steps run no teacher",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--accuracy-epochs",
        type=int,
        default=0,
        help="also train both loops this many epochs on the demo data and compare "
        "test top-1 (0: skip)",
    )
    p.add_argument(
        "--accuracy-methods",
        nargs="+",
        default=["vanilla", "ega"],
        metavar="METHOD",
        help="vanilla and/or ega: the methods the reference loop trains",
    )
    p.add_argument(
        "--accuracy-seeds",
        type=int,
        default=1,
        help="seeds of the accuracy comparison: --seed, --seed + 1, ...",
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    p.add_argument(
        "--out",
        help="the JSON file, or an existing folder to write <device>.json "
        "in (default: benchmarks/results/<device>.json)",
    )


def _check(args) -> None:
    positive = {
        "--steps": args.steps,
        "--part-steps": args.part_steps,
        "--eval-images": args.eval_images,
        "--epochs": args.epochs,
        "--accuracy-seeds": args.accuracy_seeds,
        "--teacher-table": args.teacher_table,
    }
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}.")
    for flag, value in {
        "--warmup": args.warmup,
        "--workers": args.workers,
        "--accuracy-epochs": args.accuracy_epochs,
    }.items():
        if value is not None and value < 0:
            raise ValueError(f"{flag} must be 0 or more, got {value}.")
    if args.teacher_table is not None and args.teacher_table < args.batch_size:
        raise ValueError(
            f"--teacher-table must hold at least a batch of images "
            f"({args.batch_size}), got {args.teacher_table}."
        )
    if args.batch_size < 2:
        raise ValueError(
            f"--batch-size must be at least 2 (EGA's graph needs two), got {args.batch_size}."
        )
    if any(n < 1 for n in args.processes or []):
        raise ValueError(f"--processes takes counts of 1 or more, got {args.processes}.")
    for method in args.accuracy_methods:
        check_method(method)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda: no CUDA device is visible here (torch.cuda."
            "is_available() is False); use --device cpu or auto."
        )


def bench(args) -> dict:
    """Run the measurements `args` asks for; print the table, write the JSON; return the report."""
    _check(args)
    preset = PRESETS[args.preset]
    device = resolve_device(args.device).type
    steps = args.steps or preset.steps
    warmup = preset.warmup if args.warmup is None else args.warmup
    part_steps = args.part_steps or min(steps, 20)
    part_warmup = 1 if warmup else 0
    b = args.batch_size
    profiled = PROFILE_STEPS if args.profile else 0
    pool = b * max(warmup + steps, part_warmup + part_steps, profiled)  # one epoch covers all
    processes = args.processes or ([1, 2, 4] if device == "cuda" else [1])
    config = make_config(preset, b, device, args.seed)
    spec = {
        "preset": args.preset,
        "device": device,
        "batch_size": b,
        "steps": steps,
        "warmup": warmup,
        "part_steps": part_steps,
        "part_warmup": part_warmup,
        "pool": pool,
        "eval_images": args.eval_images or preset.eval_images,
        "workers": args.workers,
        "seed": args.seed,
        "capture": args.capture,
        "profile": None,
        "pretrained": teacher_pretrained(config.teacher),
        "parts": True,
        "eval": False,
        "threads": None,
        "table_images": args.teacher_table,
    }

    say = lambda text: print(f"[bench] {text}", file=sys.stderr, flush=True)
    say(f"{args.preset}: {config.teacher} -> {config.student}, batch {b}, {steps} steps, {device}")
    say("egalib's loop ...")
    profile = str(Path(args.profile).resolve()) if args.profile else None
    (ours,) = run_workers(
        [{**spec, "loop": "egalib", "eval": True, "profile": profile}], args.timeout
    )
    say(f"egalib's loop: {ours['images_per_s']:.1f} images/s")
    plain = None  # with a teacher table: the same loop with the teacher in the step, beside it
    if args.teacher_table:
        say("egalib's loop with the teacher in the step (no table) ...")
        (plain,) = run_workers([{**spec, "loop": "egalib", "table_images": None}], args.timeout)
        say(f"egalib's loop, no table: {plain['images_per_s']:.1f} images/s")
    say("reference loop ...")
    (ref,) = run_workers([{**spec, "loop": "reference"}], args.timeout)
    say(f"reference loop: {ref['images_per_s']:.1f} images/s")
    aggregate = []
    for n in processes:
        if n == 1:
            runs = [ours]  # the egalib measurement above is one process alone
        else:
            say(f"{n} egalib loops at once ...")
            threads = max(1, torch.get_num_threads() // n) if device == "cpu" else None
            copy = {**spec, "loop": "egalib", "parts": False, "threads": threads}
            runs = run_workers([{**copy, "seed": args.seed + i} for i in range(n)], args.timeout)
        aggregate.append(aggregate_row(n, runs))

    measured = Measured(ours, ref, aggregate, processes, plain)
    report = make_report(args, spec, measured)
    out = output_path(args.out, report["device"]["slug"])
    write_json(out, report)  # the throughput is kept even if the accuracy runs are cut short
    print(format_table(report), flush=True)
    if args.accuracy_epochs:
        say(f"accuracy: both loops, {args.accuracy_epochs} demo epochs ...")
        rows = []
        for seed in range(args.seed, args.seed + args.accuracy_seeds):
            for method in args.accuracy_methods:
                config = accuracy_config(method, args.accuracy_epochs, device, seed)
                row = compare_accuracy(replace(config, capture=args.capture), args.workers)
                rows.append(row)
                print(
                    f"accuracy, {method}, seed {seed}, {row['epochs']} demo epochs: egalib "
                    f"{row['egalib_top1']:.2f} %, reference {row['reference_top1']:.2f} %",
                    flush=True,
                )
        report["accuracy"] = {"runs": rows, "summary": accuracy_summary(rows)}
        write_json(out, report)
        for row in report["accuracy"]["summary"]:
            mean = {
                key: mean_and_spread(row, key)
                for key in ("egalib_top1", "reference_top1", "difference")
            }
            print(
                f"accuracy, {row['method']}, mean of {row['seeds']} seeds: egalib "
                f"{mean['egalib_top1']} %, reference {mean['reference_top1']} %, difference "
                f"{mean['difference']} points"
            )
    print(f"wrote {out}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    bench(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, RuntimeError) as error:  # one sentence, no traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
