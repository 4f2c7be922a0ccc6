"""`make demo`: the embedded default end to end, and notebook execution with papermill."""

import time
from pathlib import Path

from ..config import RunConfig
from ..files import atomic_write_text
from ..methods import METHODS
from ..models.teachers import teacher_card
from ..train import fit

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"


class NotebookError(RuntimeError):
    """A notebook failed; the message names the notebook and the failing cell."""


def execute_notebook(name: str, parameters: dict, out_dir: Path) -> Path:
    """Run notebooks/<name> with papermill into out_dir/<name>, from the notebooks folder."""
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / name
    try:
        papermill.execute_notebook(
            str(NOTEBOOK_DIR / name), str(out), parameters=parameters,
            cwd=str(NOTEBOOK_DIR), progress_bar=False, kernel_name="python3",
        )  # fmt: skip
    except papermill.PapermillExecutionError as error:
        raise NotebookError(
            f"notebook {name} failed in cell {error.exec_count} ({error.ename}: {error.evalue}); "
            f"the executed copy with the traceback is {out}."
        ) from None
    return out


def run_notebooks(profile: str, runs_dir: str = "runs") -> list[Path]:
    """Execute every notebook in order (01, 02, ...) at `profile`; copies in runs/notebooks/."""
    runs = Path(runs_dir).resolve()
    executed = []
    for path in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        print(f"executing {path.name} ({profile}) ...", flush=True)
        parameters = {"profile": profile, "runs_dir": str(runs)}
        executed.append(execute_notebook(path.name, parameters, runs / "notebooks"))
    return executed


def run_demo(profile: str = "demo", methods=tuple(METHODS), runs_dir: str = "runs") -> str:
    """Train one student per method, execute the notebooks, print and save the results table."""
    began = time.time()
    rows = []
    for method in methods:
        run = fit(RunConfig.from_profile(profile, method=method, runs_dir=runs_dir))
        rows.append((method, run.metrics))
    runs = Path(runs_dir).resolve()
    run_notebooks(profile, runs_dir)
    table = results_table(profile, rows, time.time() - began)
    atomic_write_text(runs / f"{profile}_results.md", table + "\n")
    print(table)
    return table


def results_table(profile: str, rows: list[tuple[str, dict]], wall_s: float) -> str:
    config = RunConfig.from_profile(profile)
    labelled = config.train_size or "all"
    card = teacher_card(config.teacher)
    lines = [
        f"egalib demo ({profile}): {config.dataset}, {labelled} labelled training images, "
        f"{config.epochs} epochs, student {config.student}, teacher {config.teacher}",
        "",
        "| model | test top-1 (%) | seconds |",
        "| --- | ---: | ---: |",
        f"| teacher: linear probe, all 60,000 labels (shipped card) | "
        f"{card['linear_probe_top1']:.2f} | |",
        f"| teacher: linear probe, {labelled} labels (the runs' head) | "
        f"{next(m['teacher_top1'] for _, m in rows if m['teacher_top1'] is not None):.2f} | |",
    ]
    for method, metrics in rows:
        lines.append(
            f"| student: {method} | {metrics['top1']:.2f} | {metrics['wall_time_s']:.0f} |"
        )
    lines += ["", f"wall time: {wall_s:.0f} s (runs already finished are reused, not retrained)"]
    return "\n".join(lines)
