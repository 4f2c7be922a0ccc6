"""`make demo`: the embedded default end to end, and notebook execution with papermill."""

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from ..config import PROTOCOLS, RunConfig, profile_seeds
from ..files import atomic_write_text, make_folder
from ..methods import METHODS
from ..models.teachers import teacher_card
from ..runs import Run
from .cluster import Launcher
from .compare import claims_table, counted, interval_text, paired, verdict
from .paper_tables import mean_sd, seed_summary
from .weights import tuned

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
# The kernel's own log at CRITICAL, on purpose: it would warn, once per notebook, that it runs
# "over TCP without encryption" (papermill's kernel listens on 127.0.0.1 only, for this process),
# and log "KeyboardInterrupt caught in kernel" when it is stopped. A failing cell is reported by
# papermill, with the executed copy that holds its traceback.
KERNEL_QUIET = ["--IPKernelApp.log_level=CRITICAL"]


class NotebookError(RuntimeError):
    """A notebook failed; the message names the notebook and the failing cell."""


def execute_notebook(name: str, parameters: dict, out_dir: Path) -> Path:
    """Run notebooks/<name> with papermill into out_dir/<name>, from the notebooks folder."""
    import papermill

    out = make_folder(out_dir) / name
    try:
        papermill.execute_notebook(
            str(NOTEBOOK_DIR / name),
            str(out),
            parameters=parameters,
            cwd=str(NOTEBOOK_DIR),
            progress_bar=False,
            kernel_name="python3",
            extra_arguments=KERNEL_QUIET,
        )
    except papermill.PapermillExecutionError as error:
        raise NotebookError(
            f"notebook {name} failed in cell {error.exec_count} ({error.ename}: {error.evalue}); "
            f"the executed copy with the traceback is {out}."
        ) from None
    return out


def notebook_paths(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (01_..., 02_...), in order."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def run_notebooks(profile: str, runs_dir: str = "runs", parallel: int = 1) -> list[Path]:
    """Execute every notebook (01, 02, ...) at `profile`, `parallel` at a time, each in its own
    kernel; the executed copies go to runs/notebooks/, and are returned in order. At once only
    when their runs are trained: two notebooks would not train one run folder together."""
    runs = Path(runs_dir).resolve()
    parameters = {"profile": profile, "runs_dir": str(runs)}

    def execute(path: Path) -> Path:
        sys.stdout.write(f"executing {path.name} ({profile}) ...\n")  # one write: two threads
        sys.stdout.flush()
        return execute_notebook(path.name, parameters, runs / "notebooks")

    with ThreadPoolExecutor(parallel) as pool:  # the work is in the kernels' processes
        return list(pool.map(execute, notebook_paths()))


def run_demo(
    profile: str = "demo",
    methods=tuple(METHODS),
    runs_dir: str = "runs",
    seeds=None,
    parallel: int = 2,
) -> str:
    """Train every method with every seed of the profile (`parallel` runs at once, one thread
    each), and EGA with the joint protocol too for the claims table; execute the notebooks, then
    print and save the table: means over seeds, paired differences with their intervals, the
    poster's claims. With some methods or seeds only, the notebooks are left out."""
    began = time.time()
    seeds = seeds or profile_seeds(profile)
    runs = train_paired(
        demo_configs(profile, methods, seeds, runs_dir), Launcher(parallel=parallel)
    )
    trained = time.time() - began
    # the notebooks read runs of every method at seed 0: with fewer, they would train the rest
    if set(METHODS) <= set(methods) and 0 in seeds:
        run_notebooks(profile, runs_dir, parallel)
    else:
        print(
            "notebooks not executed: they read every method's run at seed 0, and would train "
            "those missing; `python -m egalib demo` without --methods and --seeds runs them."
        )
    table = results_table(profile, runs, trained, time.time() - began)
    atomic_write_text(Path(runs_dir).resolve() / f"{profile}_results.md", table + "\n")
    print(table)
    return table


def train_paired(configs: list[RunConfig], launcher: Launcher) -> list[tuple[RunConfig, dict]]:
    """Train what is missing of `configs` by `launcher` (here or on Slurm); each config with
    its run's metrics."""
    launcher.train(configs)
    return [(c, Run(c.run_path).metrics) for c in configs]


def demo_configs(profile: str, methods, seeds, runs_dir: str) -> list[RunConfig]:
    """Each method at each seed, then (with EGA among them) EGA with the other protocol."""
    make = lambda **values: RunConfig.from_profile(profile, runs_dir=runs_dir, **values)
    configs = [make(method=m, seed=s) for m in methods for s in seeds]
    if "ega" in methods:
        other = next(p for p in PROTOCOLS if p != RunConfig.from_profile(profile).protocol)
        configs += [make(method="ega", protocol=other, seed=s) for s in seeds]
    return configs


def run_frame(profile: str, runs: list[tuple[RunConfig, dict]]) -> pd.DataFrame:
    """One row per run: its method (labelled with its protocol where it is not the profile's),
    seed, test top-1, last-epoch validation top-1, seconds, teacher head's top-1, and the weight
    the study tunes."""
    protocol = RunConfig.from_profile(profile).protocol
    rows = []
    for c, m in runs:
        rows.append(
            {
                "method": c.method + ("" if c.protocol == protocol else f" ({c.protocol})"),
                "seed": c.seed,
                "top1": m["top1"],
                "val_top1": m["val_top1"],
                "seconds": m["wall_time_s"],
                "teacher": m["teacher_top1"],
                "weight": weight_text(c),
            }
        )
    return pd.DataFrame(rows)


def weight_text(config: RunConfig) -> str:
    """'beta 30000 -> 300': the weight the study tunes, and any other that differs from the
    method table's, as the table has it and as the run used it."""
    paper, used = METHODS[config.method], config.weights
    keys = [tuned(config.method)]
    keys += [k for k in ("gamma", "alpha", "beta") if getattr(paper, k) != getattr(used, k)]
    keys = list(dict.fromkeys(keys))
    return ", ".join(f"{k} {getattr(paper, k):g} -> {getattr(used, k):g}" for k in keys)


EGA_FAMILY = ("ega", "ega+kd", "ega-node", "ega-edge")


def rivals(frame: pd.DataFrame, count: int = 2) -> list[str]:
    """The `count` methods with the best mean validation top-1 (`val_top1`), vanilla and EGA's
    own variants aside: chosen on the validation split, so that the test set only measures
    them. Without a validation split there is nothing to choose on, and none is named."""
    others = frame[~frame.method.isin(("vanilla", *EGA_FAMILY)) & ~frame.method.str.contains(" ")]
    scores = others.val_top1.astype(float).groupby(others.method).mean().dropna()
    return list(scores.nlargest(count).index)


def results_table(
    profile: str, runs: list[tuple[RunConfig, dict]], trained_s: float, wall_s: float
) -> str:
    """Mean +- sd over seeds per method, the paired difference to vanilla (same seed) with its
    95 % interval, EGA against its two closest rivals, and the poster's claims checked."""
    config = RunConfig.from_profile(profile)
    labelled = config.train_size or "all"
    frame = run_frame(profile, runs)
    summary = seed_summary(frame)
    seeds = sorted(frame["seed"].unique())
    probe = frame.dropna(subset=["teacher"]).groupby("seed")["teacher"].first()
    lines = [
        f"egalib demo ({profile}): {config.dataset}, {labelled} labelled training images "
        f"({config.val_size} more held out for validation), "
        f"{counted(config.epochs, 'epoch')}, batch {config.batch_size}, lr {config.lr:g}, "
        f"student {config.student}, teacher {config.teacher}, seeds {' '.join(map(str, seeds))}",
        "",
        "| model | weight: paper -> used | test top-1 (%), mean ± sd | minus vanilla, mean "
        "[95 % interval] | resolved | seconds per run |",
        "| --- | --- | ---: | ---: | :---: | ---: |",
        f"| teacher: linear probe, all 60,000 labels (shipped card) | | "
        f"{teacher_card(config.teacher)['linear_probe_top1']:.2f} | | | |",
        f"| teacher: linear probe, {labelled} labels (the runs' head) | | "
        f"{mean_sd(probe.mean(), probe.std(), len(probe))} | | | |",
    ]
    for method, row in summary.iterrows():
        rows = frame[frame.method == method]
        weight = "" if method == "vanilla" else rows.weight.iloc[0]
        difference = resolved = ""
        if method != "vanilla" and "vanilla" in summary.index:
            interval = paired(frame, method, "vanilla")
            difference = interval_text(interval)
            resolved = "yes" if verdict(interval) in ("holds", "reversed") else "no"
        lines.append(
            f"| student: {method} | {weight} | {mean_sd(row.top1, row.sd, row.seeds)} | "
            f"{difference} | {resolved} | {rows.seconds.mean():.0f} |"
        )
    if "ega" in summary.index and (closest := rivals(frame)):
        lines += ["", "| EGA against its closest rivals | mean [95 % interval] | verdict |"]
        lines += ["| --- | ---: | --- |"]
        for rival in closest:
            interval = paired(frame, "ega", rival)
            lines.append(f"| ega - {rival} | {interval_text(interval)} | {verdict(interval)} |")
    claims = claims_table(frame)
    if len(claims):
        lines += [
            "",
            "| the poster's claim | measured: a - b, mean [95 % interval] | verdict "
            "| the poster's a - b (CIFAR-100, ViT-B/32 -> resnet8x4) |",
        ]
        lines += ["| --- | ---: | --- | ---: |"]
        for c in claims.to_dict("records"):
            poster = "" if pd.isna(c["poster"]) else f"{c['poster']:+.2f}"
            lines.append(f"| {c['claim']} | {interval_text(c)} | {c['verdict']} | {poster} |")
    lines += [
        "",
        f"sd: sample standard deviation over the {counted(len(seeds), 'seed')}; differences are "
        "paired (same seed: same batches and views), their interval Student's t over the seeds; "
        "resolved: the interval excludes 0. Weights: the method table's (the paper's) and the "
        "one this profile uses (chosen on the validation split by `study weights`).",
        f"wall time: {wall_s:.0f} s, of which training {trained_s:.0f} s (runs already "
        "finished are reused, not retrained)",
    ]
    return "\n".join(lines)
