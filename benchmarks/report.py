"""The benchmark's report: the JSON it writes (device, versions, setup, both loops, their ratio,
the projected full run and table) and the table it prints."""

import datetime
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from presets import PRESETS, Preset, make_config

from egalib import __version__
from egalib.files import atomic_write_text

PARTS = ("data", "teacher", "student", "loss_backward_step")
SCHEMA = 1


RESULTS_DIR = Path("benchmarks") / "results"


PARTS_NOTE = (
    "milliseconds per step, measured in a separate, shorter pass; their sum differs from "
    "1000 * batch_size / images_per_s of the throughput pass. egalib's parts are its step's "
    "torch.profiler ranges (device time on CUDA, CPU time elsewhere; the pass is profiled), the "
    "reference's are timed with the device synchronised around each part. data: egalib's "
    "on-device student view (reference: waiting for the DataLoader's next batch and copying it "
    "to the device); teacher: the teacher view, frozen encoder (or table lookup) + teacher head "
    "forward; student: student + head forward; loss_backward_step: the losses, backward and "
    "both SGD steps (reference: also loss.item()). egalib's step captured as one CUDA graph "
    "(--capture on a GPU) has only its total."
)


def device_slug(device_type: str, name: str, threads: int) -> str:
    """nvidia-h100-80gb-hbm3, or cpu-x86_64-2-threads: the default results file's name."""
    if device_type == "cpu":
        return f"cpu-{platform.machine()}-{threads}-threads"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or device_type


def mean_and_spread(row: dict, key: str) -> str:
    spread = row[f"{key}_std"]
    return f"{row[f'{key}_mean']:.2f}" + ("" if spread is None else f" +- {spread:.2f}")


def aggregate_row(n: int, runs: list[dict]) -> dict:
    starts, ends = [r["window"][0] for r in runs], [r["window"][1] for r in runs]
    span = max(ends) - min(starts)
    overlap = max(0.0, min(ends) - max(starts))
    return {
        "processes": n,
        "images_per_s": sum(r["images_per_s"] for r in runs),  # the sum of each one's rate
        "images_per_s_wall": sum(r["images"] for r in runs) / span,  # all images / whole span
        "each": [r["images_per_s"] for r in runs],
        "overlap": overlap / span,  # the share of the span in which all N were timing
        "peak_memory_mib_each": [r["peak_memory"]["mib"] for r in runs],
        "threads_each": [r["threads"] for r in runs],
    }


def projection(preset: Preset, args, ours: dict) -> dict:
    train, test = args.epoch_images or preset.epoch_images
    ev = ours["eval"]
    once_s = ev["teacher_once_s"] * test / ev["images"]
    seconds = args.epochs * (train / ours["images_per_s"] + test / ev["images_per_s"]) + once_s
    return {
        "epochs": args.epochs,
        "train_images": train,
        "test_images": test,
        "train_images_per_s": ours["images_per_s"],
        "eval_images_per_s": ev["images_per_s"],
        "teacher_test_encode_once_s": once_s,
        "minutes": seconds / 60,
        "method": "epochs * (train / train images/s + test / eval images/s) + the teacher's "
        "one-time encoding of the test set; excludes start-up, loading data from "
        "disk and checkpoint writes",
    }


ARCHITECTURES_CELLS = 65  # the paper's architectures table, as `reproduce` trains it


def table_projection(args, preset: Preset, plan: dict, ours: dict, aggregate: list) -> dict:
    """With a teacher table: its full build for the real training set at the measured rate, and
    the architectures table's cells at this preset's measured rates with N cells at once (every
    cell taken as costing this preset's: other teachers and students differ)."""
    table, (train, test) = ours["table"], args.epoch_images or preset.epoch_images
    views = train * table["views"] // table["images"]  # every view of every training image
    build_s = views / table["views_per_s"]
    cells = {}
    for row in aggregate:
        n = row["processes"]
        per_process = row["images_per_s"] / n
        cell_s = args.epochs * (train / per_process + test / plan["eval_images_per_s"])
        cells[str(n)] = (ARCHITECTURES_CELLS * cell_s / n + build_s) / 3600
    return {
        "full_table_views": views,
        "full_table_bytes": views * table["bytes"] // table["views"],
        "full_table_build_minutes": build_s / 60,
        "architectures_cells": ARCHITECTURES_CELLS,
        "architectures_hours_by_processes": cells,
        "method": "full build = train images x 162 views / measured views/s; hours = cells x "
        "epochs x (train / (N-process images/s / N) + test / eval images/s) / N + one build; "
        "excludes start-up, data loading, checkpoints and the other teachers' builds",
    }


@dataclass(frozen=True)
class Measured:
    """What one `bench` measured: egalib's loop, the reference loop, N egalib loops at once
    (one aggregate row per N in `processes`), and with a teacher table, the loop without it."""

    ours: dict
    ref: dict
    aggregate: list
    processes: list
    plain: dict | None = None


def make_report(args, spec: dict, measured: Measured) -> dict:
    """The JSON report: device, versions, setup, both loops, their ratio and projections."""
    from torchvision import __version__ as torchvision_version

    preset, device_type = PRESETS[args.preset], spec["device"]
    config = make_config(preset, spec["batch_size"], device_type, spec["seed"])
    ours, ref, aggregate, plain = measured.ours, measured.ref, measured.aggregate, measured.plain
    plan = projection(preset, args, ours)
    ratio = ours["images_per_s"] / ref["images_per_s"]
    targets = {"ratio_at_least": preset.target_ratio, "ratio_met": ratio >= preset.target_ratio}
    if preset.target_minutes is not None:
        targets.update(
            minutes_at_most=preset.target_minutes,
            minutes_met=plan["minutes"] <= preset.target_minutes,
        )
    return {
        "schema": SCHEMA,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "preset": args.preset,
        "device": {
            "type": device_type,
            "name": ours["device_name"],
            "slug": device_slug(device_type, ours["device_name"], ours["threads"]),
            "cpu_count": os.cpu_count(),
            "torch_threads": ours["threads"],
        },
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision_version,
            "python": platform.python_version(),
            "egalib": __version__,
        },
        "setup": {
            "method": config.method,
            "protocol": config.protocol,
            "teacher": config.teacher,
            "teacher_pretrained_weights": spec["pretrained"],
            "student": config.student,
            "embed_dim": config.embed_dim,
            "egalib_capture": spec["capture"],
            "batch_size": spec["batch_size"],
            "image_shape": [preset.channels, preset.size, preset.size],
            "num_classes": preset.classes,
            "data": "synthetic uint8 images, random labels",
            "steps": spec["steps"],
            "warmup": spec["warmup"],
            "part_steps": spec["part_steps"],
            "pool_images": spec["pool"],
            "eval_images": spec["eval_images"],
            "reference_workers": spec["workers"],
            "processes": measured.processes,
            "seed": spec["seed"],
        },
        "egalib": ours,
        "reference": ref,
        "ratio": ratio,
        "parts_note": PARTS_NOTE,
        "projection": plan,
        "aggregate": aggregate,
        "targets": targets,
        "table": table_projection(args, preset, plan, ours, aggregate) if "table" in ours else None,
        "egalib_no_table": plain,  # with --teacher-table: the teacher in the step, same run
        "table_speedup": plain and ours["images_per_s"] / plain["images_per_s"],
    }


LOOP_LABELS = {"egalib": "egalib", "egalib_no_table": "no table", "reference": "reference"}


def format_table(r: dict) -> str:
    s, d = r["setup"], r["device"]
    lines = [
        f"egalib bench, preset {r['preset']}: {s['teacher']} -> {s['student']}, batch "
        f"{s['batch_size']}, {s['steps']} timed steps, on {d['name']} ({d['slug']}, torch "
        f"{r['versions']['torch']})",
        f"{'loop':10} {'images/s':>10} {'data':>8} {'teacher':>8} {'student':>8} "
        f"{'loss+bwd':>9} {'peak memory':>12}",
    ]
    for loop in ("egalib", "egalib_no_table", "reference"):
        if (m := r.get(loop)) is None:
            continue
        parts = m.get("parts") or {}
        ms = [f"{parts.get(p, float('nan')):8.2f}" for p in PARTS[:3]]
        mem = m["peak_memory"]
        lines.append(
            f"{LOOP_LABELS[loop]:10} {m['images_per_s']:10.1f} {' '.join(ms)} "
            f"{parts.get('loss_backward_step', float('nan')):9.2f} "
            f"{mem['mib']:8.0f} MiB ({mem['kind']})"
        )
    lines.append("(parts: ms per step from a separate synchronised pass)")
    lines.append(
        f"ratio egalib / reference: {r['ratio']:.2f}x "
        f"(target: at least {r['targets']['ratio_at_least']:g}x: "
        f"{'met' if r['targets']['ratio_met'] else 'not met'})"
    )
    p = r["projection"]
    met = ""
    if "minutes_met" in r["targets"]:
        met = (
            f" (target: at most {r['targets']['minutes_at_most']:g} min: "
            f"{'met' if r['targets']['minutes_met'] else 'not met'})"
        )
    lines.append(
        f"eval: {p['eval_images_per_s']:.1f} images/s; projected {p['epochs']}-epoch run "
        f"({p['train_images']} train + {p['test_images']} test images per epoch): "
        f"{p['minutes']:.1f} min{met}"
    )
    agg = " | ".join(f"N={a['processes']}: {a['images_per_s']:.1f}" for a in r["aggregate"])
    lines.append(f"aggregate egalib images/s (N processes at once): {agg}")
    if (t := r.get("table")) is not None:
        built = r["egalib"]["table"]
        hours = " | ".join(
            f"N={n}: {h:.1f} h" for n, h in t["architectures_hours_by_processes"].items()
        )
        lines.append(
            f"teacher table: {built['views']:,} views built in {built['build_s']:.1f} s "
            f"({built['views_per_s']:,.0f} views/s, {built['dtype']}); the full table "
            f"({t['full_table_views']:,} views, {t['full_table_bytes'] / 1e9:.1f} GB) would take "
            f"{t['full_table_build_minutes']:.1f} min"
        )
        lines.append(f"architectures table, {t['architectures_cells']} cells at this rate: {hours}")
        lines.append(
            f"the step with the table / without it (teacher in the step), same run: "
            f"{r['table_speedup']:.2f}x"
        )
    return "\n".join(lines)


def output_path(out: str | None, slug: str) -> Path:
    if out is None:
        return RESULTS_DIR / f"{slug}.json"
    path = Path(out)
    return path / f"{slug}.json" if path.is_dir() or out.endswith(os.sep) else path


def write_json(path: Path, report: dict) -> None:
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
