"""The frozen teacher's forward alone, in the ways egalib could run it: a benchmark, not a test.

On the paper preset the teacher (CLIP ViT-B/32 at 224 px) takes most of a step's GPU time, so
this measures its forward on one batch of teacher views in each variant and says which is
fastest, and how far each one's features are from the fp32 teacher's:

    fp32            fp32 weights, bf16 autocast on CUDA (egalib before the bf16 teacher)
    bf16            weights stored in bf16 (`Teacher.cast_weights`, egalib's CUDA default)
    bf16-graph      bf16, recorded once as a CUDA graph and replayed (`--capture`)
    bf16-compile    bf16, torch.compile'd (inductor fuses the elementwise kernels)
    bf16-compile-graph  both: the compiled forward recorded as a CUDA graph

The graph variants need CUDA. Each variant is timed over `--iterations` forwards after
`--warmup` ones, with the device synchronised only around the timed loop, as in training;
building it and its first call (compilation included) are timed on their own.

    python benchmarks/teacher_forward.py --device cuda              # CLIP ViT-B/32, batch 64
    python benchmarks/teacher_forward.py --teacher ssl-fmnist --variants fp32 bf16   # a CPU try
"""

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from measure import synchroniser
from report import RESULTS_DIR, device_slug

from egalib import models
from egalib.capture import record_graph, side_stream
from egalib.config import resolve_device
from egalib.experiments import device_name
from egalib.files import atomic_write_text
from egalib.views import train_view

VARIANTS = ("fp32", "bf16", "bf16-graph", "bf16-compile", "bf16-compile-graph")


def build_forward(variant: str, teacher: models.Teacher, example: torch.Tensor):
    """The encode function of one variant (its own copy of the teacher where it changes it)."""
    if variant == "fp32":
        return teacher.encode
    forward = copy.deepcopy(teacher).cast_weights().encode
    if "compile" in variant:
        forward = torch.compile(forward)
    if variant.endswith("graph"):
        forward = GraphedForward(forward, example)
    return forward


class GraphedForward:
    """A forward recorded once as a CUDA graph on a copy of `example` (after three warm-up calls
    on a side stream), then replayed: each call copies its input in, replays, and returns the
    recorded output, which the next call overwrites."""

    def __init__(self, forward, example: torch.Tensor):
        self.input = example.clone()
        with side_stream(example.device):
            for _ in range(3):
                forward(self.input)

        def run() -> None:
            self.output = forward(self.input)

        self.replay = record_graph(run)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.input.copy_(images)
        self.replay()
        return self.output


def teacher_views(teacher: models.Teacher, batch: int, size: int, seed: int) -> torch.Tensor:
    """A batch of the teacher's training views of random uint8 images of `size` pixels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(
        0, 256, (batch, teacher.in_channels, size, size), generator=g, dtype=torch.uint8
    )
    return train_view(images, teacher.view, g)


def time_variant(forward, views: torch.Tensor, reference: torch.Tensor | None, args) -> dict:
    device, sync = views.device, synchroniser(views.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync()
    began = time.perf_counter()
    features = forward(views)
    sync()
    first_call = time.perf_counter() - began
    for _ in range(args.warmup):
        forward(views)
    sync()
    began = time.perf_counter()
    for _ in range(args.iterations):
        forward(views)
    sync()
    seconds = (time.perf_counter() - began) / args.iterations
    row = {
        "ms_per_batch": 1000 * seconds,
        "images_per_s": len(views) / seconds,
        "first_call_s": first_call,
    }
    if device.type == "cuda":
        row["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    if reference is not None:
        cosine = torch.nn.functional.cosine_similarity(features.float(), reference, dim=1)
        row["min_cosine_to_fp32"] = cosine.min().item()
    return row


def run(args) -> dict:
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    teacher = models.teacher(args.teacher, pretrained=False).to(device)
    if device.type == "cuda":
        teacher.to(memory_format=torch.channels_last)
    views = teacher_views(teacher, args.batch_size, args.image_size, args.seed).to(device)
    report = {
        "device": device_name(device),
        "torch": torch.__version__,
        "teacher": f"{args.teacher} (random weights)",
        "batch_size": args.batch_size,
        "view": list(views.shape[1:]),
        "iterations": args.iterations,
        "variants": {},
    }
    reference = None
    for variant in args.variants:
        began = time.perf_counter()
        forward = build_forward(variant, teacher, views)
        row = {"build_s": time.perf_counter() - began}
        row.update(time_variant(forward, views, reference, args))
        if variant == "fp32":
            reference = forward(views).float()
        report["variants"][variant] = row
        cosine = row.get("min_cosine_to_fp32")
        print(
            f"{variant:>18}: {row['ms_per_batch']:8.3f} ms/batch {row['images_per_s']:9.1f} "
            f"images/s; set-up {row['build_s'] + row['first_call_s']:.1f} s; min cosine to fp32 "
            f"{'-' if cosine is None else f'{cosine:.5f}'}",
            flush=True,
        )
        del forward
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--teacher", default="clip-vit-b32", choices=sorted(models.TEACHERS))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32, help="the dataset's image size")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file (default: benchmarks/results/<device>-teacher.json)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    if device.type != "cuda" and any(v.endswith("graph") for v in args.variants):
        p.error(
            "the graph variants record CUDA graphs: run them on a CUDA device, or leave "
            "them out with --variants fp32 bf16 bf16-compile."
        )
    if min(args.batch_size, args.iterations) < 1 or args.warmup < 0:
        p.error("--batch-size and --iterations must be at least 1, --warmup 0 or more.")
    report = run(args)
    threads = torch.get_num_threads()
    slug = device_slug(device.type, report["device"], threads)
    out = Path(args.out) if args.out else RESULTS_DIR / f"{slug}-teacher.json"
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
