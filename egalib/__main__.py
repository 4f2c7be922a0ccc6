"""Command line: `python -m egalib list | train | pretrain-teacher | demo | download`."""

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from . import methods, models
from .config import PROFILES, RunConfig
from .data import DATASETS


def cmd_list(args) -> None:
    print("methods:", " ".join(methods.METHODS))
    print("teachers:", " ".join(models.TEACHERS))
    print("students:", " ".join(models.STUDENTS))
    print("datasets:", " ".join(DATASETS))


def _option(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected KEY=NUMBER, e.g. edge_weight=0.3, got {text!r}"
        ) from None


TRAIN_FLAGS = ("method", "teacher", "student", "dataset", "protocol", "epochs", "batch_size",
               "lr", "embed_dim", "gamma", "alpha", "beta", "kd_temperature", "probe_epochs",
               "train_size", "test_size", "seed", "device", "runs_dir", "name")  # fmt: skip
CAPTURE_HELP = (
    "capture the step: one CUDA graph of the whole step on a GPU, replayed for each full batch; "
    "torch.compile of the student on a CPU"
)


def config_from_args(args) -> RunConfig:
    overrides = {k: getattr(args, k) for k in TRAIN_FLAGS}
    overrides["options"] = dict(args.option or []) or None
    overrides["capture"] = args.capture or None
    return RunConfig.from_profile(args.profile, **overrides)


def cmd_train(args) -> None:
    from .train import fit

    run = fit(config_from_args(args))
    print(f"run folder: {run.path}")
    print(json.dumps(run.metrics, indent=2))


def cmd_pretrain_teacher(args) -> None:
    from .pretrain import PretrainConfig, pretrain_teacher

    cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})
    card = pretrain_teacher(cfg, Path(args.out), args.device)
    print(json.dumps(card, indent=2))


def cmd_train_teacher(args) -> None:
    from .pretrain import train_supervised_teacher

    card = train_supervised_teacher(epochs=args.epochs, device=args.device, runs_dir=args.runs_dir)
    print(json.dumps(card, indent=2))


def cmd_demo(args) -> None:
    from .demo import run_demo

    run_demo(args.profile, args.methods, args.runs_dir)


def cmd_reproduce(args) -> None:
    from .cluster import SlurmOptions, cell_status, dispatch
    from .demo import run_notebooks
    from .reproduce import table_configs

    if (args.table is None) == (args.profile is None):
        raise ValueError(
            "reproduce needs exactly one of --table (train a table's cells) or --profile "
            "(execute the notebooks 01-05 at that size); see `python -m egalib reproduce -h`."
        )
    if args.profile is not None:
        run_notebooks(args.profile, args.runs_dir)
        return

    overrides = {"runs_dir": args.runs_dir, "device": args.device, "epochs": args.epochs,
                 "capture": args.capture or None}  # fmt: skip
    configs = table_configs(args.table, args.protocol, args.only, **overrides)
    labels = {"missing": "to run", "failed": "to rerun"}  # running cells are left alone
    for row in cell_status(configs).itertuples():
        state = labels.get(row.state, row.state)
        print(f"{state:9} {row.teacher:14} {row.student:13} {row.dataset:13} "
              f"{row.method:9} {row.protocol:10} {Path(args.runs_dir) / row.run_name}")  # fmt: skip
    print(f"{len(configs)} cells of table {args.table!r}")
    if args.dry_run:
        return
    options = SlurmOptions(
        partition=args.partition,
        gpus=args.gpus,
        time_min=args.time,
        mem_gb=args.mem,
        cpus=args.cpus,
        max_requeues=args.max_requeues,
    )
    dispatch(configs, args.executor, args.parallel, options)


def cmd_status(args) -> None:
    from .cluster import cell_status, status_lines
    from .reproduce import TABLES, table_configs

    overrides = {"runs_dir": args.runs_dir, "epochs": args.epochs}
    for table in args.table or TABLES:
        frame = cell_status(table_configs(table, args.protocol, args.only, **overrides))
        print(f"table {table!r}: {len(frame)} cells, run folders under {args.runs_dir}")
        print("\n".join(status_lines(frame)))


def cmd_transfer(args) -> None:
    from .transfer import transfer

    print(json.dumps(transfer(args.run, args.dataset, args.epochs, args.device), indent=2))


def cmd_bench(args) -> None:
    from .bench import bench

    bench(args)


def cmd_download(args) -> None:
    from .data import load_dataset

    data = load_dataset(args.dataset, download=True)
    print(
        f"{args.dataset}: {len(data.train_labels)} training and {len(data.test_labels)} test images"
    )


def add_train_flags(p: argparse.ArgumentParser) -> None:
    types = {f.name: f.type for f in fields(RunConfig)}
    p.add_argument("--profile", default="demo", help="base values: " + ", ".join(PROFILES))
    for name in TRAIN_FLAGS:
        kind = types[name] if types[name] in ("str", "int", "float") else None
        convert = {"int": int, "float": float}.get(str(kind), None)
        if name in ("train_size", "test_size", "epochs", "batch_size", "embed_dim",
                    "probe_epochs", "seed"):  # fmt: skip
            convert = int
        elif name in ("lr", "gamma", "alpha", "beta", "kd_temperature"):
            convert = float
        p.add_argument("--" + name.replace("_", "-"), type=convert or str, default=None)
    p.add_argument(
        "--option",
        action="append",
        type=_option,
        metavar="KEY=NUMBER",
        help="a method option, e.g. --option edge_weight=0.3 (repeatable)",
    )
    p.add_argument("--capture", action="store_true", help=CAPTURE_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m egalib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the known methods, teachers, students, datasets").set_defaults(
        func=cmd_list
    )
    train = sub.add_parser("train", help="train one student; prints its final metrics")
    add_train_flags(train)
    train.set_defaults(func=cmd_train)

    from .pretrain import PretrainConfig

    pre = sub.add_parser("pretrain-teacher", help="SimCLR-pretrain the embedded teacher")
    for f in fields(PretrainConfig):
        convert = type(f.default) if f.default is not None else int
        pre.add_argument("--" + f.name.replace("_", "-"), type=convert, default=f.default)
    pre.add_argument("--out", default=str(models.teachers.TEACHER_DIR))
    pre.add_argument("--device", default="cpu")
    pre.set_defaults(func=cmd_pretrain_teacher)

    teach = sub.add_parser("train-teacher", help="train WRN-40-2 on CIFAR-100 as a teacher")
    teach.add_argument("--epochs", type=int, default=240)
    teach.add_argument("--device", default="auto")
    teach.add_argument("--runs-dir", default="runs")
    teach.set_defaults(func=cmd_train_teacher)

    demo = sub.add_parser("demo", help="the embedded default, end to end, with a table")
    demo.add_argument("--profile", default="demo", choices=sorted(PROFILES))
    demo.add_argument(
        "--methods",
        nargs="+",
        default=list(methods.METHODS),
        choices=list(methods.METHODS),
        metavar="METHOD",
    )
    demo.add_argument("--runs-dir", default="runs")
    demo.set_defaults(func=cmd_demo)

    from .reproduce import TABLES

    reproduce = sub.add_parser("reproduce", help="train the cells of one of the paper's tables")
    reproduce.add_argument("--table", choices=TABLES, help="train the cells of this table")
    reproduce.add_argument("--profile", choices=sorted(PROFILES),
                           help="execute the notebooks in order at this size")  # fmt: skip
    reproduce.add_argument("--protocol", choices=["pretrained", "joint"], default=None)
    reproduce.add_argument("--only", nargs="+", metavar="METHOD", help="only these methods")
    reproduce.add_argument("--epochs", type=int, default=None, help="override the 240 epochs")
    reproduce.add_argument("--device", default="auto")
    reproduce.add_argument("--runs-dir", default="runs")
    reproduce.add_argument("--parallel", type=int, default=1, help="cells trained at once")
    reproduce.add_argument("--capture", action="store_true", help=CAPTURE_HELP)
    reproduce.add_argument("--dry-run", action="store_true", help="list the cells, train nothing")
    from .cluster import EXECUTORS, SlurmOptions

    reproduce.add_argument("--executor", choices=EXECUTORS, default="local",
                           help="local: train here, --parallel at a time; slurm: one job per "
                                "cell, logs in runs/<name>/slurm/")  # fmt: skip
    slurm = reproduce.add_argument_group("Slurm jobs (--executor slurm)")
    slurm.add_argument("--partition", default=SlurmOptions.partition)
    slurm.add_argument("--gpus", type=int, default=SlurmOptions.gpus, help="GPUs per job")
    slurm.add_argument("--time", type=int, default=SlurmOptions.time_min,
                       help="minutes per job; a longer run is requeued and resumes")  # fmt: skip
    slurm.add_argument("--mem", type=int, default=SlurmOptions.mem_gb, help="GB per job")
    slurm.add_argument("--cpus", type=int, default=SlurmOptions.cpus, help="CPUs per job")
    slurm.add_argument("--max-requeues", type=int, default=SlurmOptions.max_requeues,
                       help="time-outs after which a job is still requeued")  # fmt: skip
    reproduce.set_defaults(func=cmd_reproduce)

    status = sub.add_parser("status", help="each cell: finished, running, failed or missing")
    status.add_argument("--table", nargs="+", choices=TABLES, help="these tables (default: all)")
    status.add_argument("--protocol", choices=["pretrained", "joint"], default=None)
    status.add_argument("--only", nargs="+", metavar="METHOD", help="only these methods")
    status.add_argument("--epochs", type=int, default=None, help="as given to reproduce")
    status.add_argument("--runs-dir", default="runs")
    status.set_defaults(func=cmd_status)

    move = sub.add_parser("transfer", help="linear classifier on a frozen student (CRD protocol)")
    move.add_argument("--run", required=True, help="a finished run folder (e.g. on cifar100)")
    move.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    move.add_argument("--epochs", type=int, default=240)
    move.add_argument("--device", default="auto")
    move.set_defaults(func=cmd_transfer)

    from .bench import add_arguments as add_bench_arguments

    bench = sub.add_parser("bench", help="images/s of egalib's loop against a reference loop")
    add_bench_arguments(bench)
    bench.set_defaults(func=cmd_bench)

    download = sub.add_parser("download", help="fetch a dataset where a network exists")
    download.add_argument("dataset", choices=sorted(DATASETS))
    download.set_defaults(func=cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
