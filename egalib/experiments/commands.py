"""The experiments' commands of `python -m egalib`: pretrain-teacher, train-teacher, demo,
colab-cell, publish, reproduce, status, study, transfer and bench. Each imports what it runs only
when it runs."""

import argparse
import json
import runpy
import sys
from dataclasses import fields
from pathlib import Path

from .. import methods
from ..config import PROFILES, PROTOCOLS
from ..datasets import DATASETS
from ..models.teachers import TEACHER_DIR
from .cluster import EXECUTORS, SlurmOptions
from .pretrain import PretrainConfig
from .reproduce import TABLES
from .study import RESULTS

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"


def cmd_pretrain_teacher(args) -> None:
    from .pretrain import pretrain_teacher

    cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})
    print(json.dumps(pretrain_teacher(cfg, Path(args.out), args.device), indent=2))


def cmd_train_teacher(args) -> None:
    from .pretrain import train_supervised_teacher

    card = train_supervised_teacher(epochs=args.epochs, device=args.device, runs_dir=args.runs_dir)
    print(json.dumps(card, indent=2))


def cmd_demo(args) -> None:
    from .demo import run_demo

    run_demo(args.profile, args.methods, args.runs_dir, args.seeds, args.parallel)


def cmd_colab_cell(args) -> None:
    from .notebooks import repository_url, write_colab_cells

    url = args.url or repository_url()
    changed = write_colab_cells(url)
    print(f"the Colab cell of {url}: {len(changed)} notebook(s) changed "
          f"({', '.join(p.name for p in changed) or 'none'})")  # fmt: skip


def cmd_publish(args) -> None:
    from .demo import run_notebooks
    from .notebooks import PUBLISHED, publish

    written = publish(run_notebooks("demo", args.runs_dir), PUBLISHED)
    print(f"published {len(written)} executed notebooks to {PUBLISHED}")


def cmd_reproduce(args) -> None:
    from .cluster import cell_status, dispatch
    from .demo import run_notebooks
    from .reproduce import table_configs

    if (args.table is None) == (args.profile is None):
        raise ValueError(
            "reproduce needs exactly one of --table (train a table's cells) or --profile "
            "(execute the notebooks 01-06 at that size); see `python -m egalib reproduce -h`."
        )
    if args.profile is not None:
        run_notebooks(args.profile, args.runs_dir)
        return
    overrides = {"runs_dir": args.runs_dir, "device": args.device, "epochs": args.epochs,
                 "capture": args.capture or None, "teacher_table": args.teacher_table}  # fmt: skip
    configs = table_configs(args.table, args.protocol, args.only, args.seeds, **overrides)
    labels = {"missing": "to run", "failed": "to rerun"}  # running cells are left alone
    for row in cell_status(configs).itertuples():
        state = labels.get(row.state, row.state)
        print(f"{state:9} {row.teacher:14} {row.student:13} {row.dataset:13} "
              f"{row.method:9} {row.protocol:10} {Path(args.runs_dir) / row.run_name}")  # fmt: skip
    print(f"{len(configs)} cells of table {args.table!r}")
    if args.dry_run:
        return
    options = SlurmOptions(
        partition=args.partition, gpus=args.gpus, time_min=args.time, mem_gb=args.mem,
        cpus=args.cpus, max_requeues=args.max_requeues,
    )  # fmt: skip
    dispatch(configs, args.executor, args.parallel, options)


def cmd_status(args) -> None:
    from .cluster import cell_status, status_lines
    from .reproduce import table_configs

    overrides = {"runs_dir": args.runs_dir, "epochs": args.epochs}
    for table in args.table or TABLES:
        frame = cell_status(table_configs(table, args.protocol, args.only, args.seeds, **overrides))
        print(f"table {table!r}: {len(frame)} cells, run folders under {args.runs_dir}")
        print("\n".join(status_lines(frame)))


def cmd_study(args) -> None:
    from .study import regime

    table = regime(args.profile, args.seeds, args.runs_dir, args.parallel, Path(args.out))
    print(table.drop(columns="run").round(3).to_string(index=False))
    print(f"summary: {Path(args.out) / f'regime-{args.profile}.csv'}")


def cmd_transfer(args) -> None:
    from .transfer import transfer

    print(json.dumps(transfer(args.run, args.dataset, args.epochs, args.device), indent=2))


def cmd_bench(args) -> None:
    """The benchmark lives beside the library, in the repository's benchmarks/ folder."""
    if not BENCHMARK.is_file():
        raise FileNotFoundError(
            f"the benchmark {BENCHMARK} is not here (an installed egalib has no benchmarks/); "
            "run `python benchmarks/bench.py` from a clone of the repository."
        )
    sys.argv = [str(BENCHMARK), *args.bench_args]
    sys.path.insert(0, str(BENCHMARK.parent))  # as `python benchmarks/bench.py` has it
    runpy.run_path(str(BENCHMARK), run_name="__main__")


def add_commands(sub, capture_help: str, table_help: str) -> None:
    pre = sub.add_parser("pretrain-teacher", help="SimCLR-pretrain the embedded teacher")
    for f in fields(PretrainConfig):
        convert = type(f.default) if f.default is not None else int
        pre.add_argument("--" + f.name.replace("_", "-"), type=convert, default=f.default)
    pre.add_argument("--out", default=str(TEACHER_DIR))
    pre.add_argument("--device", default="cpu")
    pre.set_defaults(func=cmd_pretrain_teacher)

    teach = sub.add_parser("train-teacher", help="train WRN-40-2 on CIFAR-100 as a teacher")
    teach.add_argument("--epochs", type=int, default=240)
    teach.add_argument("--device", default="auto")
    teach.add_argument("--runs-dir", default="runs")
    teach.set_defaults(func=cmd_train_teacher)

    demo = sub.add_parser("demo", help="the embedded default, end to end, with a table")
    demo.add_argument("--profile", default="demo", choices=sorted(PROFILES))
    demo.add_argument("--methods", nargs="+", default=list(methods.METHODS),
                      choices=list(methods.METHODS), metavar="METHOD")  # fmt: skip
    demo.add_argument("--runs-dir", default="runs")
    demo.add_argument("--seeds", type=int, nargs="+", help="default: the profile's seeds")
    demo.add_argument("--parallel", type=int, default=2, help="runs at once, one thread each")
    demo.set_defaults(func=cmd_demo)

    colab = sub.add_parser("colab-cell", help="write the notebooks' Colab set-up cell")
    colab.add_argument("--url", help="the repository to clone (default: pyproject.toml's)")
    colab.set_defaults(func=cmd_colab_cell)

    publish = sub.add_parser("publish", help="execute the notebooks at demo into docs/notebooks/")
    publish.add_argument("--runs-dir", default="runs", help="the demo's runs (reused)")
    publish.set_defaults(func=cmd_publish)

    reproduce = sub.add_parser("reproduce", help="train the cells of one of the paper's tables")
    reproduce.add_argument("--table", choices=TABLES, help="train the cells of this table")
    reproduce.add_argument("--profile", choices=sorted(PROFILES),
                           help="execute the notebooks in order at this size")  # fmt: skip
    add_cell_flags(reproduce)
    reproduce.add_argument("--device", default="auto")
    reproduce.add_argument("--parallel", type=int, default=1, help="cells trained at once")
    reproduce.add_argument("--capture", action="store_true", help=capture_help)
    reproduce.add_argument("--teacher-table", action=argparse.BooleanOptionalAction,
                           help=table_help)
    reproduce.add_argument("--dry-run", action="store_true", help="list the cells, train nothing")
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
    add_cell_flags(status)
    status.set_defaults(func=cmd_status)

    study = sub.add_parser("study", help="when EGA helps: the regime study (batch size, beta)")
    study.add_argument("name", choices=["regime"])
    study.add_argument("--profile", default="demo", choices=sorted(PROFILES))
    study.add_argument("--seeds", type=int, nargs="+", help="default: the profile's seeds")
    study.add_argument("--parallel", type=int, default=2, help="runs at once, one thread each")
    study.add_argument("--runs-dir", default="runs")
    study.add_argument("--out", default=str(RESULTS), help="where the summary and card go")
    study.set_defaults(func=cmd_study)

    move = sub.add_parser("transfer", help="linear classifier on a frozen student (CRD protocol)")
    move.add_argument("--run", required=True, help="a finished run folder (e.g. on cifar100)")
    move.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    move.add_argument("--epochs", type=int, default=240)
    move.add_argument("--device", default="auto")
    move.set_defaults(func=cmd_transfer)

    bench = sub.add_parser(
        "bench", add_help=False, help="images/s of egalib's loop against a reference loop "
        "(benchmarks/bench.py; `bench --help` lists its flags)",
    )  # fmt: skip
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)


def add_cell_flags(p: argparse.ArgumentParser) -> None:
    """The flags that pick a table's cells and where their run folders are."""
    p.add_argument("--protocol", choices=list(PROTOCOLS), default=None)
    p.add_argument("--only", nargs="+", metavar="METHOD", help="only these methods")
    p.add_argument("--seeds", type=int, nargs="+", help="one run per cell and seed (default: 0)")
    p.add_argument("--epochs", type=int, default=None, help="override the 240 epochs")
    p.add_argument("--runs-dir", default="runs")
