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

Each measurement (`measure.py` beside it) runs in a fresh process, so its peak memory is its own;
with `--processes N`, N copies of egalib's loop start together (they wait at a barrier after
warm-up) and their images per second are summed. The time of each part of a step (data, teacher,
student, loss + backward + optimiser) is measured in a separate, shorter pass (egalib's from its
step's torch.profiler ranges, the reference's with the device synchronised around each part); those
per-step times do not add up to the throughput pass's. A full run (train + eval, 240 epochs by
default) is projected from measured train and eval images per second.

Results: a table on stdout and a JSON file, by default `benchmarks/results/<device>.json`.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import torch
from measure import PROFILE_STEPS, READY, RESULT
from presets import PRESETS, make_config
from reference import (
    accuracy_config,
    accuracy_summary,
    check_method,
    compare_accuracy,
    teacher_pretrained,
)
from report import (
    Measured,
    aggregate_row,
    format_table,
    make_report,
    mean_and_spread,
    output_path,
    write_json,
)

from egalib.config import resolve_device

# ---------------------------------------------------------------------------------------------
# Worker processes, one per measurement (measure.py)


def run_workers(specs: list[dict], timeout: float) -> list[dict]:
    """Start one process per spec, release them together after their warm-up, collect results."""
    here = Path(__file__).resolve().parent  # benchmarks/, beside the repository's egalib/
    paths = (str(here), str(here.parent), os.environ.get("PYTHONPATH"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    code = "from measure import worker_main; worker_main()"
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
