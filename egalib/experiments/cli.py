"""egalib's command line: train runs, reproduce the paper's tables, run the demo and the
studies, list what is known, fetch data. `python -m egalib COMMAND --help` gives every flag with
its help, default and choices; docs/cli.md describes them."""

import argparse
import json
import signal
import sys
import threading
import typing
from dataclasses import fields, replace

from .. import methods, models
from ..config import PROFILES, RunConfig, choices
from ..datasets import DATASETS, load_dataset
from ..plugins import PluginError, load_plugins
from . import commands
from .cluster import reported

# RunConfig fields that `train` takes as flags, --name-with-dashes, typed as the field is
TRAIN_FLAGS = (
    "method teacher student dataset protocol epochs batch_size lr embed_dim gamma alpha beta "
    "kd_temperature probe_epochs train_size val_size test_size seed device runs_dir name"
).split()


def cmd_list(args) -> None:
    print("methods:", " ".join(methods.METHODS))
    print("teachers:", " ".join(models.TEACHERS))
    print("students:", " ".join(models.STUDENTS))
    print("datasets:", " ".join(DATASETS))
    if args.options:
        for name, method in methods.METHODS.items():
            given = " ".join(
                f"{k}={v!r} ({method.option_types[k].__name__})" for k, v in method.defaults.items()
            )
            weights = f"gamma {method.gamma:g}, alpha {method.alpha:g}, beta {method.beta:g}"
            if method.alpha:
                weights += f", KD at T {RunConfig.kd_temperature:g} (--kd-temperature)"
            print(f"  {name}: {given or 'no options'}; {weights}")


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. edge_weight=0.3, got {text!r}")
    return key, value


def config_from_args(args) -> RunConfig:
    overrides = {k: getattr(args, k) for k in TRAIN_FLAGS}
    method = args.method or RunConfig.from_profile(args.profile).method
    overrides["options"] = methods.cast_options(method, dict(args.option or [])) or None
    overrides.update(commands.speed_overrides(args))
    return RunConfig.from_profile(args.profile, **overrides)


def cmd_train(args) -> None:
    from ..train import fit
    from .cluster import failure_recorded

    config = config_from_args(args)
    if args.seeds and args.seed is not None:
        raise ValueError("--seed and --seeds both name the seeds to train; give one of them.")
    if args.seeds and len(args.seeds) > 1 and config.name:
        raise ValueError(
            f"--name {config.name!r} is one run folder, but --seeds gives {len(args.seeds)} runs; "
            "leave --name out (each seed gets a folder of its own) or give one seed."
        )
    for seed in args.seeds or [config.seed]:  # one run folder per seed
        seeded = replace(config, seed=seed)
        with failure_recorded(seeded.run_path):  # for `status`, as a dispatched job's
            run = fit(seeded)
        print(f"run folder: {run.path}\n{json.dumps(run.metrics, indent=2)}")


def cmd_download(args) -> None:
    data, name = load_dataset(args.dataset, download=True), args.dataset
    print(f"{name}: {len(data.train_labels)} training and {len(data.test_labels)} test images")


def flag_type(annotation) -> type:
    """The command-line type of a RunConfig field: int for `int | None`, and so on."""
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return kinds[0] if kinds[0] in (int, float) else str


TRAIN_HELP = {
    "method": "the distillation method",
    "teacher": "the frozen teacher",
    "student": "the student network",
    "dataset": "the images",
    "protocol": "pretrained: the teacher head is a linear probe, then frozen; joint: it trains "
    "alongside the student",
    "epochs": "training epochs",
    "batch_size": "images per step",
    "lr": "the student's learning rate",
    "embed_dim": "D, the embedding size of both heads",
    "gamma": "weight of cross-entropy",
    "alpha": "weight of KD",
    "beta": "weight of the method's term",
    "kd_temperature": "KD's temperature",
    "probe_epochs": "epochs of the teacher head's linear probe (pretrained protocol)",
    "train_size": "class-balanced training images",
    "val_size": "training images held out as the validation split (0: none)",
    "test_size": "class-balanced test images",
    "seed": "the seed of the batches, views and initial weights",
    "device": "auto (CUDA when available, else the CPU), cpu, cuda, ...",
    "runs_dir": "the folder of the run folders",
    "name": "a run folder name instead of the derived one",
}


def flag_default(name: str) -> str:
    """What a train flag defaults to: the method's weight, or the demo profile's value."""
    if name in ("gamma", "alpha", "beta"):
        return "the method's"
    value = getattr(RunConfig.from_profile("demo"), name)
    return f"the profile's; demo: {'all' if value is None else value}"


def add_train_flags(p: argparse.ArgumentParser) -> None:
    types, named = {f.name: f.type for f in fields(RunConfig)}, choices()
    p.add_argument("--profile", default="demo", help="base values: " + ", ".join(PROFILES))
    for name in TRAIN_FLAGS:
        flag, kind = "--" + name.replace("_", "-"), flag_type(types[name])
        text = f"{TRAIN_HELP[name]} (default: {flag_default(name)})"
        if name in named:  # checked by RunConfig, which names them in its one sentence
            text += "; one of: " + ", ".join(named[name])
        p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument(
        "--option",
        action="append",
        type=_option,
        metavar="KEY=VALUE",
        help="a method option, cast to its type, e.g. --option edge_weight=0.3 "
        "(repeatable; `list --options` shows each method's)",
    )
    commands.list_flag(p, "--seeds", type=int, help="one run per seed (instead of --seed)")
    commands.add_speed_flags(p)


def plugin_parser() -> argparse.ArgumentParser:
    """The flag read before the others: the plugins' methods and datasets become choices."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, so that the methods and datasets it registers are known "
        "(repeatable; also the EGALIB_PLUGINS variable and the egalib.plugins entry points)",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m egalib", description=__doc__, parents=[plugin_parser()]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="the known methods, teachers, students, datasets")
    listing.add_argument("--options", action="store_true", help="also each method's options")
    listing.set_defaults(func=cmd_list)
    train = sub.add_parser("train", help="train one student; prints its final metrics")
    add_train_flags(train)
    train.set_defaults(func=cmd_train)
    commands.add_commands(sub)
    download = sub.add_parser("download", help="fetch a dataset where a network exists")
    download.add_argument("dataset", choices=sorted(DATASETS), help="the dataset to fetch")
    download.set_defaults(func=cmd_download)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it stops as for Ctrl-C."""


def terminate(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    try:
        load_plugins(plugin_parser().parse_known_args(argv)[0].plugin)
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)
    try:
        args.func(args)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"error: {reported(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # one line, no traceback; files are whole or absent
        print(str(stop) or "interrupted; run the same command to resume.", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
