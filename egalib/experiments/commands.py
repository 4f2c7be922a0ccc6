"""The experiments' commands of `python -m egalib`: pretrain-teacher, train-teacher, demo,
colab-cell, compare, publish, reproduce, status, study and transfer. Each imports what it runs
only when it runs. The benchmark is not one of them: it lives beside the library, as
`python benchmarks/bench.py`."""

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from .. import methods
from ..config import PROFILES, PROTOCOLS
from ..datasets import DATASETS
from .cluster import EXECUTORS, Launcher, SlurmOptions
from .pretrain import PretrainConfig
from .reproduce import TABLES
from .study import RESULTS


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
    print(
        f"the Colab cell of {url}: {len(changed)} notebook(s) changed "
        f"({', '.join(p.name for p in changed) or 'none'})"
    )


def cmd_publish(args) -> None:
    from .demo import run_notebooks
    from .notebooks import PUBLISHED, publish

    written = publish(run_notebooks("demo", args.runs_dir), PUBLISHED)
    print(f"published {len(written)} executed notebooks to {PUBLISHED}")


def cmd_reproduce(args) -> None:
    from .cluster import cell_status, dispatch
    from .demo import run_notebooks
    from .reproduce import check_cells, table_configs

    if (args.table is None) == (args.profile is None):
        raise ValueError(
            "reproduce needs exactly one of --table (train a table's cells) or --profile "
            "(execute the notebooks 01-06 at that size); see `python -m egalib reproduce -h`."
        )
    if args.profile is not None:
        check_table_flags_unused(args)
        run_notebooks(args.profile, args.runs_dir)
        return
    check_cells([args.table], args.protocol, args.only)
    given = {"runs_dir": args.runs_dir, "device": args.device, "epochs": args.epochs}
    overrides = {**given, **speed_overrides(args)}
    configs = table_configs(args.table, args.protocol, args.only, args.seeds, **overrides)
    labels = {"missing": "to run", "failed": "to rerun"}  # running cells are left alone
    for row in cell_status(configs).itertuples():
        state = labels.get(row.state, row.state)
        print(
            f"{state:9} {row.teacher:14} {row.student:13} {row.dataset:13} "
            f"{row.method:9} {row.protocol:10} {Path(args.runs_dir) / row.run_name}"
        )
    print(f"{len(configs)} cells of table {args.table!r}")
    if args.dry_run:
        return
    dispatch(configs, args.executor, args.parallel, slurm_options(args))


def check_table_flags_unused(args) -> None:
    """`reproduce --profile` runs the notebooks at their own settings: a flag that picks or trains
    a table's cells would be ignored, so it is refused."""
    shared = ("func", "table", "profile", "runs_dir", "table_defaults")
    defaults = args.table_defaults
    if flags := flags_given(args, defaults, [k for k in defaults if k not in shared]):
        raise ValueError(
            f"{', '.join(flags)} {'apply' if len(flags) > 1 else 'applies'} only with --table; "
            "--profile executes the notebooks at that profile's settings: drop "
            f"{'them' if len(flags) > 1 else 'it'}, or give --table."
        )


def flags_given(args, defaults: dict, fields) -> list[str]:
    """The flags, as typed, of those `fields` that were given a value other than their default."""
    named = {field: flag for flag, (field, _, _) in SLURM_FLAGS.items()}
    given = [k for k in fields if getattr(args, k) != defaults[k]]
    return [named.get(k, "--" + k.replace("_", "-")) for k in given]


def slurm_options(args) -> SlurmOptions:
    return SlurmOptions(**{field: getattr(args, field) for field, _, _ in SLURM_FLAGS.values()})


def launcher(args) -> Launcher:
    """Where `study` and `compare` train: here, --parallel at once, or on Slurm, waited for."""
    return Launcher(args.executor, args.parallel, slurm_options(args))


def cmd_status(args) -> None:
    from .cluster import cell_status, folder_status, status_lines
    from .reproduce import check_cells, table_configs

    if not args.table:
        lines = folder_status(args.runs_dir)
        print(f"run folders under {args.runs_dir}:", *lines, sep="\n")
        return
    overrides = {"runs_dir": args.runs_dir, "epochs": args.epochs}
    tables = TABLES if "all" in args.table else args.table
    check_cells(tables, args.protocol, args.only)
    for table in tables:
        frame = cell_status(table_configs(table, args.protocol, args.only, args.seeds, **overrides))
        print(f"table {table!r}: {len(frame)} cells, run folders under {args.runs_dir}")
        print("\n".join(status_lines(frame)))


def cmd_compare(args) -> None:
    """With --methods: train what is missing of them at the profile's settings and seeds, paired,
    and print the demo's table; without: every finished run under --runs-dir, per setting."""
    import time

    from ..config import RunConfig, profile_seeds
    from ..files import atomic_write_text
    from ..runs import load_runs
    from .compare import compare_runs
    from .demo import results_table, run_frame, train_paired

    began = time.time()
    given = [flag for flag in ("against", "score") if getattr(args, flag) is not None]
    if args.methods and given:  # the demo's table: against vanilla, by test top-1
        raise ValueError(
            f"--{' and --'.join(given)} {'apply' if len(given) > 1 else 'applies'} only without "
            "--methods, to the finished runs under --runs-dir; with --methods the table is "
            "against vanilla, by test top-1."
        )
    training = (
        "seeds",
        "profile",
        "parallel",
        "executor",
        *(f for f, _, _ in SLURM_FLAGS.values()),
    )
    if not args.methods and (unused := flags_given(args, args.compare_defaults, training)):
        raise ValueError(
            f"{', '.join(unused)} {'apply' if len(unused) > 1 else 'applies'} only with "
            "--methods, to the runs it trains; without it every finished run under --runs-dir is "
            "compared."
        )
    if args.methods:
        seeds = args.seeds or profile_seeds(args.profile)
        make = lambda m, s: RunConfig.from_profile(
            args.profile, method=m, seed=s, runs_dir=args.runs_dir
        )
        runs = train_paired([make(m, s) for m in args.methods for s in seeds], launcher(args))
        frame = run_frame(args.profile, runs)
        elapsed = time.time() - began  # no notebooks: training is the whole wall time
        table = results_table(args.profile, runs, elapsed, elapsed)
    else:
        frame = load_runs(args.runs_dir, unreadable := [])
        for sentence in unreadable:  # as `status` lists them: the others are still compared
            print(f"left out: {sentence}", file=sys.stderr)
        if frame.empty:
            raise ValueError(
                f"no finished runs under {args.runs_dir}; train some first, give --runs-dir, "
                "or name --methods to train."
            )
        if args.against and args.against not in set(frame.method):
            raise ValueError(
                f"--against {args.against}: no finished run under {args.runs_dir} is of that "
                f"method; give one of those there: {', '.join(sorted(set(frame.method)))}."
            )
        table = "\n".join(compare_runs(frame, args.against or "vanilla", args.score or "top1"))
    out = Path(args.out or args.runs_dir)
    atomic_write_text(out / "compare.md", table + "\n")
    atomic_write_text(out / "compare.csv", frame.to_csv(index=False))
    print(f"{table}\n\nwritten: {out / 'compare.md'} and {out / 'compare.csv'}")


def cmd_study(args) -> None:
    from .study import run
    from .weights import chosen_weights

    if args.methods and args.name != "weights":
        raise ValueError(
            "--methods is for `study weights`; the regime study trains ega and vanilla."
        )
    # beside its runs by default: the shipped summaries, which the notebooks and the demo's
    # weights cite with their machine and commit, change only when --out names their folder
    out = Path(args.out or args.runs_dir)
    table = run(
        args.name, args.profile, args.seeds, args.runs_dir, launcher(args), out, args.methods
    )
    print(table.drop(columns="run").round(3).to_string(index=False))
    if args.name == "weights":
        print("\nchosen on validation:\n" + chosen_weights(table).round(3).to_string(index=False))
    print(f"summary: {out / f'{args.name}-{args.profile}.csv'}")


def cmd_transfer(args) -> None:
    from .transfer import transfer

    print(json.dumps(transfer(args.run, args.dataset, args.epochs, args.device), indent=2))


SPEED_FLAGS = {  # how a run executes, not what it computes: a run folder may change them
    "--capture": "record the whole training step as one CUDA graph (a GPU only), replayed for "
    "each full batch",
    "--compile": "torch.compile the student",
}
TABLE_HELP = (
    "look the frozen teacher's features of training views up in a table computed once "
    "(default: the profile's; on for demo and paper)"
)


SLURM_FLAGS = {  # flag: (SlurmOptions field, type, help)
    "--partition": ("partition", str, "the partition to submit to (default: the cluster's)"),
    "--gpus": ("gpus", int, "GPUs per job"),
    "--time": ("time_min", int, "minutes per job; a longer run is requeued and resumes"),
    "--mem": ("mem_gb", int, "GB per job"),
    "--cpus": ("cpus", int, "CPUs per job"),
    "--max-requeues": ("max_requeues", int, "time-outs after which a job is still requeued"),
}


def add_speed_flags(p: argparse.ArgumentParser) -> None:
    for flag, text in SPEED_FLAGS.items():
        p.add_argument(flag, action="store_true", help=text)
    p.add_argument("--teacher-table", action=argparse.BooleanOptionalAction, help=TABLE_HELP)


def speed_overrides(args) -> dict:
    """RunConfig values of the speed flags; None where the profile's value stands."""
    flags = {"capture": args.capture or None, "compile": args.compile or None}
    return {**flags, "teacher_table": args.teacher_table}


RUNS_DIR_HELP = "the folder of the run folders"
PRETRAIN_HELP = {
    "teacher": "the teacher whose encoder is pretrained: only ssl-fmnist, the one that egalib "
    "reads from such a file",
    "dataset": "its images, without their labels",
    "epochs": "SimCLR epochs",
    "batch_size": "images per SimCLR batch (each seen in two views)",
    "lr": "Adam's learning rate",
    "tau": "SimCLR's temperature",
    "seed": "the seed",
    "train_size": "class-balanced training images (default None: all)",
    "probe_epochs": "epochs of the linear probe that measures the teacher",
}
DEVICE_HELP = "auto (CUDA when available, else the CPU), cpu, cuda, ..."


class WithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's help text with its default; a flag without one (None) is left as its text
    says, which tells what happens when it is not given."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


class Distinct(argparse.Action):
    """A list flag's values, each once, in the order given: `--seeds 1 1 1` is one seed, not three
    copies of one run, which a paired interval would read as resolved at zero width."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, list(dict.fromkeys(values)))


def list_flag(parser: argparse.ArgumentParser, flag: str, **kwargs) -> None:
    """A flag of one or more values, each kept once (`Distinct`)."""
    parser.add_argument(flag, nargs="+", action=Distinct, **kwargs)


def methods_flag(parser: argparse.ArgumentParser, text: str, default=None) -> None:
    """--methods: one or more of the known methods, the registered ones included."""
    choices = list(methods.METHODS)
    list_flag(parser, "--methods", default=default, choices=choices, metavar="METHOD", help=text)


def command(sub, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows each flag's help text with its default."""
    return sub.add_parser(name, help=text, description=text, formatter_class=WithDefaults)


def add_commands(sub) -> None:
    pre = command(sub, "pretrain-teacher", "SimCLR-pretrain the embedded teacher")
    for f in fields(PretrainConfig):
        convert = type(f.default) if f.default is not None else int
        text = PRETRAIN_HELP[f.name]
        pre.add_argument(
            "--" + f.name.replace("_", "-"), type=convert, default=f.default, help=text
        )
    pre.add_argument(
        "--out",
        default="runs/teachers",
        help="where the weights and card go (egalib/data/teachers replaces the shipped teacher)",
    )
    pre.add_argument("--device", default="cpu", help=DEVICE_HELP)
    pre.set_defaults(func=cmd_pretrain_teacher)

    teach = command(sub, "train-teacher", "train WRN-40-2 on CIFAR-100 as a teacher")
    teach.add_argument("--epochs", type=int, default=240, help="training epochs")
    teach.add_argument("--device", default="auto", help=DEVICE_HELP)
    teach.add_argument("--runs-dir", default="runs", help=RUNS_DIR_HELP)
    teach.set_defaults(func=cmd_train_teacher)

    demo = command(sub, "demo", "the embedded default, end to end, with a table")
    demo.add_argument("--profile", default="demo", choices=sorted(PROFILES), help="the size")
    methods_flag(
        demo, "the methods to train (" + ", ".join(methods.METHODS) + ")", list(methods.METHODS)
    )
    demo.add_argument("--runs-dir", default="runs", help=RUNS_DIR_HELP)
    list_flag(demo, "--seeds", type=int, help="default: the profile's seeds")
    demo.add_argument("--parallel", type=int, default=2, help="runs at once, one thread each")
    demo.set_defaults(func=cmd_demo)

    colab = command(sub, "colab-cell", "write the notebooks' Colab set-up cell")
    colab.add_argument("--url", help="the https:// repository to clone (default: pyproject.toml's)")
    colab.set_defaults(func=cmd_colab_cell)

    publish = command(sub, "publish", "execute the notebooks at demo into docs/notebooks/")
    publish.add_argument("--runs-dir", default="runs", help="the demo's runs (reused)")
    publish.set_defaults(func=cmd_publish)

    reproduce = command(sub, "reproduce", "train the cells of one of the paper's tables")
    reproduce.add_argument("--table", choices=TABLES, help="train the cells of this table")
    reproduce.add_argument(
        "--profile", choices=sorted(PROFILES), help="execute the notebooks in order at this size"
    )
    add_cell_flags(reproduce)
    reproduce.add_argument("--device", default="auto", help=DEVICE_HELP)
    reproduce.add_argument("--parallel", type=int, default=1, help="cells trained at once")
    add_speed_flags(reproduce)
    reproduce.add_argument("--dry-run", action="store_true", help="list the cells, train nothing")
    add_executor_flags(reproduce, "submitted, not waited for")
    reproduce.set_defaults(func=cmd_reproduce)
    reproduce.set_defaults(table_defaults=vars(reproduce.parse_args([])))

    status = command(sub, "status", "each run folder or cell: finished, running, failed, missing")
    list_flag(
        status,
        "--table",
        choices=[*TABLES, "all"],
        help="the cells of these paper tables (all: every one); default: the run folders there",
    )
    add_cell_flags(status)
    status.set_defaults(func=cmd_status)

    compare = command(sub, "compare", "methods side by side, paired by seed, with intervals")
    methods_flag(
        compare,
        "train what is missing of these at --profile and --seeds (no notebooks) and print the "
        "demo's table; without it: every finished run under --runs-dir, per setting",
    )
    compare.add_argument("--profile", default="demo", choices=sorted(PROFILES), help="the size")
    list_flag(compare, "--seeds", type=int, help="default: the profile's seeds")
    compare.add_argument("--parallel", type=int, default=2, help="runs at once, one thread each")
    compare.add_argument("--runs-dir", default="runs", help=RUNS_DIR_HELP)
    add_executor_flags(compare, "waited for, then the table")
    compare.add_argument("--out", help="where compare.md and compare.csv go (default: --runs-dir)")
    compare.add_argument(
        "--against",
        help="without --methods: the method differences are to (default: vanilla)",
    )
    compare.add_argument(
        "--score",
        choices=["top1", "selected_top1", "val_top1"],
        help="without --methods: last-epoch test top-1 (the default), the validation-selected "
        "epoch's, or validation top-1",
    )
    compare.set_defaults(func=cmd_compare, compare_defaults=vars(compare.parse_args([])))

    study = command(sub, "study", "the studies: when EGA helps, and each method's best weight")
    study.add_argument(
        "name",
        choices=["regime", "weights"],
        help="regime: batch size and beta (docs/demo.md); weights: each method's weight on a "
        "log grid, chosen on the validation split",
    )
    study.add_argument("--profile", default="demo", choices=sorted(PROFILES), help="the size")
    list_flag(study, "--seeds", type=int, help="default: the profile's (regime) or 0 1 (weights)")
    study.add_argument("--parallel", type=int, default=2, help="runs at once, one thread each")
    study.add_argument("--runs-dir", default="runs", help=RUNS_DIR_HELP)
    methods_flag(
        study, "weights only: tune these methods (default: all; vanilla is always trained)"
    )
    study.add_argument(
        "--out",
        help=f"where the summary and card go (default: --runs-dir; the shipped ones: {RESULTS})",
    )
    add_executor_flags(study, "waited for, then the summary")
    study.set_defaults(func=cmd_study)

    move = command(sub, "transfer", "linear classifier on a frozen student (CRD protocol)")
    move.add_argument("--run", required=True, help="a finished run folder (e.g. on cifar100)")
    move.add_argument(
        "--dataset",
        required=True,
        choices=sorted(DATASETS),
        help="the dataset the classifier learns and is tested on (e.g. stl10)",
    )
    move.add_argument("--epochs", type=int, default=240, help="epochs of the linear classifier")
    move.add_argument("--device", default="auto", help=DEVICE_HELP)
    move.set_defaults(func=cmd_transfer)


def add_executor_flags(p: argparse.ArgumentParser, then: str) -> None:
    """--executor, and the Slurm jobs' flags in a group of their own."""
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: train here, --parallel at a time; slurm: one job per run (--parallel "
        f"unused), logs in runs/<name>/slurm/; {then}",
    )
    slurm = p.add_argument_group("Slurm jobs (--executor slurm)")
    for flag, (field, kind, text) in SLURM_FLAGS.items():
        default = getattr(SlurmOptions, field)
        slurm.add_argument(flag, dest=field, type=kind, default=default, help=text)


def add_cell_flags(p: argparse.ArgumentParser) -> None:
    """The flags that pick a table's cells and where their run folders are."""
    p.add_argument("--protocol", choices=list(PROTOCOLS), help="only this protocol's cells")
    list_flag(p, "--only", metavar="METHOD", help="only these methods")
    list_flag(p, "--seeds", type=int, help="one run per cell and seed (default: 0)")
    p.add_argument("--epochs", type=int, default=None, help="override the 240 epochs")
    p.add_argument("--runs-dir", default="runs", help=RUNS_DIR_HELP)
