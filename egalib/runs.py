"""Run folders: config.json, history.csv, metrics.json, checkpoint.pt, embeddings.pt.

Every file is written whole or not at all (`files.atomic_write`); docs/runs.md describes each.
"""

import contextlib
import json
import math
from pathlib import Path

import torch

from .files import (
    atomic_torch_save,
    atomic_write_text,
    exclusive,
    first_line,
    load_tensors,
    provenance,
    read_json,
    read_table,
)

START_AFRESH = "delete that run folder to start the run afresh."
LOCK = "lock"  # the file whose flock a trainer holds (`Run.lock`)


def stored_config(run: "Run", kind) -> dict:
    """What shapes the results of the run in `run`'s config.json, its resolved weights aside;
    a config that is not valid is one sentence naming the file."""
    values = run.config
    try:
        return kind.from_dict(values).shaping()
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{run.config_path} holds an invalid config ({first_line(error)}); {START_AFRESH}"
        ) from None


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not belong to this run."""


class RunBusyError(RuntimeError):
    """Another live process is training this run folder."""


class Run:
    """One run folder under `runs_dir`, named by the config."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def open(cls, config) -> "Run":
        """The folder of `config`; created with its config.json, or checked against it. Its
        trainer adds what trains it (`record_provenance`), not a host that only submits its job."""
        run = cls(config.run_path)
        wanted = config.shaping()
        if run.config_path.is_file():
            written = run.config  # its resolved weights as they were when it was made
            stored = {**stored_config(run, type(config)), "resolved": written.get("resolved")}
            if stored != wanted:
                changed = sorted(
                    k for k in wanted.keys() | stored.keys() if wanted.get(k) != stored.get(k)
                )
                raise ValueError(
                    f"run folder {run.path} holds a run with a different config (differs in: "
                    f"{', '.join(changed)}); choose another --name or remove that folder."
                )
        else:
            written = {**config.to_dict(), "resolved": config.resolved()}
            atomic_write_text(run.config_path, json.dumps(written, indent=2) + "\n")
        return run

    def record_provenance(self, device: torch.device) -> None:
        """`files.provenance` of the process that trains on `device`, into config.json, once: the
        first trainer's, which resumes keep."""
        written = self.config
        if "provenance" not in written:
            made = {**written, "provenance": provenance(device)}
            atomic_write_text(self.config_path, json.dumps(made, indent=2) + "\n")

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def config(self) -> dict:
        values = read_json(self.config_path, START_AFRESH)
        if not isinstance(values, dict):
            raise ValueError(
                f"{self.config_path} does not hold a JSON object of settings; {START_AFRESH}"
            )
        return values

    @property
    def finished(self) -> bool:
        return (self.path / "metrics.json").is_file()

    @property
    def metrics(self) -> dict:
        path, fix = self.path / "metrics.json", "delete it to evaluate the run again."
        values = read_json(path, fix)
        ok = isinstance(values, dict) and "top1" in values
        if not ok or not all(v is None or type(v) in (int, float) for v in values.values()):
            raise ValueError(
                f"{path} does not hold a JSON object of metrics, top1 among them; {fix}"
            )
        return values

    @contextlib.contextmanager
    def lock(self):
        """One trainer per run folder: an exclusive flock on its `lock` file, which holds the
        trainer's pid. The kernel drops a flock when its process dies, so the file a killed
        trainer leaves behind is stale and blocks nothing."""
        try:
            with exclusive(self.path / LOCK, wait=False):
                yield
        except BlockingIOError as held:
            raise RunBusyError(
                f"run folder {self.path} is being trained by process {held}; wait for it to "
                "finish or stop it, then run again (it resumes)."
            ) from None

    @property
    def history(self):
        """history.csv, one row an epoch; a file that is not such a table is one sentence."""
        return read_table(self.path / "history.csv", START_AFRESH, columns=("epoch",))

    def write_history(self, history: list[dict]) -> None:
        import pandas as pd

        atomic_write_text(self.path / "history.csv", pd.DataFrame(history).to_csv(index=False))

    def save_checkpoint(self, state: dict) -> None:
        atomic_torch_save(state, self.path / "checkpoint.pt")

    def load_checkpoint(self) -> dict | None:
        path = self.path / "checkpoint.pt"
        if not path.is_file():
            return None
        also = " and metrics.json" if self.finished else ""  # a finished run is never retrained
        return load_tensors(path, f"delete it{also} to train this run afresh.", CheckpointError)

    def save_embeddings(self, embeddings: dict) -> None:
        atomic_torch_save(embeddings, self.path / "embeddings.pt")

    def load_embeddings(self) -> dict:
        """The test set's student embeddings and logits (`xs`, `logits_s`), with a teacher its
        head's (`xt`, `logits_t`), and the `labels`: one row an image."""
        path = self.path / "embeddings.pt"
        if not self.path.is_dir():  # a mistyped path: rerunning a run is not the advice
            raise FileNotFoundError(f"no run folder {self.path}; give one that load_runs lists.")
        fix = "delete metrics.json in that folder and run it again to rewrite it."
        saved = load_tensors(path, fix)
        tensors = saved.values() if isinstance(saved, dict) else [None]
        rows = {len(v) if isinstance(v, torch.Tensor) and v.ndim else None for v in tensors}
        if None in rows or len(rows) > 1 or not {"xs", "logits_s", "labels"} <= saved.keys():
            raise ValueError(
                f"{path} does not hold the test set's embeddings, one row an image; {fix}"
            )
        return saved

    def finish(self, history: list[dict], wall_time_s: float, tested: dict) -> None:
        """The run's metrics.json. `tested`: the test set's top-1 (fractions) of the last epoch's
        student (`acc`) and teacher head (`teacher_acc`), and of the student of the epoch that
        validation selected (`selected_acc`, at `selected_epoch`; None without a split)."""
        last, epoch = history[-1], tested["selected_epoch"]
        metrics = {
            "top1": _percent(tested["acc"]),  # the last epoch's: the reported number
            "teacher_top1": _percent(tested["teacher_acc"]),  # None: no teacher
            "val_top1": _percent(last.get("val_acc", math.nan)),
            "selected_epoch": epoch,  # best validation top-1 (the first of equals)
            "selected_val_top1": None if epoch is None else _percent(history[epoch - 1]["val_acc"]),
            "selected_top1": _percent(tested["selected_acc"]),
            "epochs": last["epoch"],
            "wall_time_s": round(wall_time_s, 1),
            "images_per_s": round(sum(r["images_per_s"] for r in history) / len(history), 1),
        }
        atomic_write_text(self.path / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def _percent(fraction: float) -> float | None:
    return None if math.isnan(fraction) else round(100 * fraction, 2)


def load_runs(runs_dir: str | Path = "runs", unreadable: list[str] | None = None):
    """Every finished run under `runs_dir`: one row each, its config, the commit that trained it
    (with `dirty` where the checkout had uncommitted changes; None from an older egalib) and its
    final metrics. A folder whose config.json or metrics.json cannot be read stops the reading
    with one sentence naming it; given a list `unreadable`, it is left out and that sentence
    added to the list."""
    import pandas as pd

    rows = []
    for metrics_path in sorted(Path(runs_dir).glob("*/metrics.json")):
        try:
            rows.append(_row(Run(metrics_path.parent)))
        except ValueError as error:
            if unreadable is None:
                raise
            unreadable.append(str(error))
    return pd.DataFrame(rows)


def _row(run: Run) -> dict:
    config = run.config
    made, _ = config.pop("provenance", {}), config.pop("resolved", None)
    if not isinstance(made, dict):
        raise ValueError(
            f"{run.config_path} holds a provenance that is not a JSON object; correct it, or "
            f"{START_AFRESH}"
        )
    made = {"commit": made.get("commit"), "dirty": made.get("dirty")}
    return {"run": run.path.name, "path": str(run.path), **config, **made, **run.metrics}
