"""`make demo`: the embedded default end to end, and notebook execution with papermill."""

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from ..config import RunConfig, profile_seeds
from ..files import atomic_write_text
from ..methods import METHODS
from ..models.teachers import teacher_card
from ..runs import Run
from .cluster import run_local
from .paper_tables import mean_sd, seed_summary

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
# The kernel's own log at ERROR, on purpose: it would warn, once per notebook, that it runs "over
# TCP without encryption", but papermill's kernel listens on 127.0.0.1 only, for this process.
KERNEL_QUIET = ["--IPKernelApp.log_level=ERROR"]


class NotebookError(RuntimeError):
    """A notebook failed; the message names the notebook and the failing cell."""


def execute_notebook(name: str, parameters: dict, out_dir: Path) -> Path:
    """Run notebooks/<name> with papermill into out_dir/<name>, from the notebooks folder."""
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / name
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
        print(f"executing {path.name} ({profile}) ...", flush=True)
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
    each), execute the notebooks, then print and save the table of means over seeds."""
    began = time.time()
    seeds = seeds or profile_seeds(profile)
    configs = [
        RunConfig.from_profile(profile, method=m, seed=s, runs_dir=runs_dir)
        for m in methods
        for s in seeds
    ]
    run_local(configs, parallel, threads=1 if parallel > 1 else None)
    trained = time.time() - began
    runs = [(c, Run(Path(runs_dir) / c.run_name).metrics) for c in configs]
    # the notebooks read runs of every method at seed 0: trained above, unless `methods` left
    # some out, which a notebook then trains, one notebook at a time
    every_run = set(METHODS) <= set(methods) and 0 in seeds
    run_notebooks(profile, runs_dir, parallel if every_run else 1)
    table = results_table(profile, runs, trained, time.time() - began)
    atomic_write_text(Path(runs_dir).resolve() / f"{profile}_results.md", table + "\n")
    print(table)
    return table


def results_table(
    profile: str, runs: list[tuple[RunConfig, dict]], trained_s: float, wall_s: float
) -> str:
    """Mean +- sd over seeds per method, and the paired difference to vanilla (same seed)."""
    config = RunConfig.from_profile(profile)
    labelled = config.train_size or "all"
    frame = pd.DataFrame(
        [
            {
                "method": c.method,
                "seed": c.seed,
                "top1": m["top1"],
                "seconds": m["wall_time_s"],
                "teacher": m["teacher_top1"],
            }
            for c, m in runs
        ]
    )
    summary = seed_summary(frame)
    seeds = sorted(frame["seed"].unique())
    probe = frame.dropna(subset=["teacher"]).groupby("seed")["teacher"].first()
    lines = [
        f"egalib demo ({profile}): {config.dataset}, {labelled} labelled training images, "
        f"{config.epochs} epochs, batch {config.batch_size}, lr {config.lr:g}, student "
        f"{config.student}, teacher {config.teacher}, seeds {' '.join(map(str, seeds))}",
        "",
        "| model | test top-1 (%), mean ± sd | paired difference to vanilla | seconds per run |",
        "| --- | ---: | ---: | ---: |",
        f"| teacher: linear probe, all 60,000 labels (shipped card) | "
        f"{teacher_card(config.teacher)['linear_probe_top1']:.2f} | | |",
        f"| teacher: linear probe, {labelled} labels (the runs' head) | "
        f"{mean_sd(probe.mean(), probe.std(), len(probe))} | | |",
    ]
    for method, row in summary.iterrows():
        difference = (
            ""
            if method == "vanilla"
            else mean_sd(row.difference, row.difference_sd, row.seeds, signed=True)
        )
        seconds = frame.loc[frame.method == method, "seconds"].mean()
        lines.append(
            f"| student: {method} | {mean_sd(row.top1, row.sd, row.seeds)} | "
            f"{difference} | {seconds:.0f} |"
        )
    lines += [
        "",
        f"sd: sample standard deviation over the {len(seeds)} seeds; differences "
        "are paired (same seed: same batches and views).",
        f"wall time: {wall_s:.0f} s, of which training {trained_s:.0f} s (runs already "
        "finished are reused, not retrained)",
    ]
    return "\n".join(lines)
