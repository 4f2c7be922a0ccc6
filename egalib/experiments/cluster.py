"""Dispatching table cells to an executor, and what state each cell is in.

`dispatch(configs, "local" | "slurm")` starts one job per cell that is neither finished nor
running: `local` trains them here (`parallel` at a time), `slurm` submits one submitit job per
cell (`submit_cells`), with its logs in runs/<name>/slurm/. A `Launcher` does the same and waits
until every cell is over, for the commands that read the runs afterwards (study, compare).

Every dispatched cell gets a marker, runs/<name>/job.json (executor, job id, host, submit
time); a job that raises, or a `train` run by hand, writes its traceback to
runs/<name>/error.txt. A cell is then

    finished  metrics.json is there;
    failed    error.txt is there, or the marker's job has ended without metrics.json;
    running   the marker's job is alive (a local pid, or a Slurm job not in a terminal state),
              or, with no live job, a process holds the run's lock (a `train` run by hand);
    missing   none of those (a checkpoint left by an earlier run resumes when trained again).

A job killed by the scheduler (pre-emption, time limit) gets submitit's signal; `CellJob` has
submitit's `checkpoint()`, so submitit requeues the same callable, and `fit` resumes from
checkpoint.pt.
"""

import collections
import contextlib
import fcntl
import json
import multiprocessing
import os
import queue as queue_module
import shutil
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import RunConfig, check_whole
from ..files import atomic_write_text
from ..runs import LOCK, Run, RunBusyError

EXECUTORS = ("local", "slurm")
STATES = ("finished", "running", "failed", "missing")
MARKER = "job.json"
MARKER_TEXT = ("executor", "host", "submitted", "log_folder", "pid_start")  # text, or null
PROCESSES = ("local", "submitit-local")  # executors whose job id is a process id on its host
UNLISTED = "UNLISTED"  # neither sacct nor squeue lists the job: it is over
ERROR = "error.txt"
COLUMNS = ["run_name", "teacher", "student", "dataset", "method", "protocol", "state", "detail"]
# Slurm states in which a job may still run (submitit's list, and the transient ones).
SLURM_ALIVE = {
    "READY",
    "PENDING",
    "RUNNING",
    "UNKNOWN",
    "REQUEUED",
    "COMPLETING",
    "PREEMPTED",
    "CONFIGURING",
    "RESIZING",
    "SUSPENDED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "STAGE_OUT",
    "SIGNALING",
}


@dataclass(frozen=True)
class SlurmOptions:
    """What one cell's job asks of the scheduler (also used by submitit's local executor)."""

    partition: str | None = None
    gpus: int = 1
    time_min: int = 720  # a longer run is requeued at the limit and resumes
    mem_gb: int = 32
    cpus: int = 8
    max_requeues: int = 10  # time-outs a job may be requeued after (pre-emptions are free)

    def __post_init__(self):  # in the words of the flags: sbatch's refusal names neither
        flags = {"gpus": 0, "time_min": 1, "mem_gb": 1, "cpus": 1, "max_requeues": 0}
        for field, least in flags.items():
            check_whole(field.removesuffix("_min").removesuffix("_gb"), getattr(self, field), least)


@contextlib.contextmanager
def failure_recorded(path: Path):
    """Any old error.txt removed; the traceback of an exception raised in the block written to
    `path`/error.txt, where `status` finds it. An error that egalib did not raise (torch's, or a
    plugin's) gets a note naming that file, which the command line prints after its one line:
    egalib's own sentences say what to do, the others do not say where. Not SystemExit (submitit
    requeuing a job), not a refusal because another process trains the run, and nothing where no
    run folder was made. A record that cannot be written is left out: the exception itself still
    propagates."""
    with contextlib.suppress(OSError):  # a runs_dir that is a file, or not writable
        (path / ERROR).unlink(missing_ok=True)
    try:
        yield
    except RunBusyError:
        raise
    except Exception as error:
        with contextlib.suppress(OSError):
            if path.is_dir():
                atomic_write_text(path / ERROR, traceback.format_exc())
                if not raised_by_egalib(error):
                    error.add_note(f"(its traceback: {path / ERROR})")
        raise


def reported(error: BaseException) -> str:
    """An error's message and its notes (where its traceback is), on one line."""
    return " ".join([str(error), *getattr(error, "__notes__", ())])


def raised_by_egalib(error: BaseException) -> bool:
    """Whether the innermost frame of `error`'s traceback is in egalib's own code."""
    innermost = traceback.extract_tb(error.__traceback__)[-1].filename
    return Path(innermost).resolve().is_relative_to(Path(__file__).resolve().parents[1])


class CellJob:
    """Train one cell: `fit` it, writing error.txt on failure.

    On pre-emption or time-out submitit calls `checkpoint()` (it looks for the method), which
    resubmits this same callable: `fit` finds checkpoint.pt in the run folder and carries on
    from the last finished epoch.
    """

    def __init__(self, config: RunConfig, on_epoch_end=None, memo=None):
        self.config = config
        self.on_epoch_end = on_epoch_end  # called with (epoch, history row) after each epoch
        self.memo = memo  # a TeacherMemo that the cells of one worker share (`run_local`)

    @property
    def path(self) -> Path:
        return self.config.run_path

    def __call__(self) -> str:
        from ..plugins import load_plugins
        from ..train import fit

        load_plugins()  # in a worker or a Slurm job: the plugins that its parent imported
        done, epochs = epochs_done(self.path), self.config.epochs
        start = f"resuming after epoch {done}" if done else "starting"
        print(f"{self.config.run_name}: {start} of {epochs} (pid {os.getpid()})", flush=True)
        with failure_recorded(self.path):
            run = fit(self.config, progress=False, on_epoch_end=self._epoch_end, memo=self.memo)
        print(f"{self.config.run_name}: finished, top-1 {run.metrics['top1']:.2f} %", flush=True)
        return str(run.path)

    def _epoch_end(self, epoch: int, row: dict) -> None:
        from ..train import report

        report(self.config, row, who=self.config.run_name)  # workers' lines mix in one terminal
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch, row)

    def checkpoint(self, *args, **kwargs):
        import submitit

        print(
            f"{self.config.run_name}: interrupted; requeued to resume from its checkpoint",
            flush=True,
        )
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


# ---------------------------------------------------------------------------- markers and state


def epochs_done(path: Path) -> int:
    """Epochs recorded in a run folder's history.csv (0 without one)."""
    try:
        lines = (Path(path) / "history.csv").read_text(errors="replace").splitlines()
    except OSError:
        return 0
    return max(0, sum(1 for line in lines if line.strip()) - 1)


def read_marker(path: Path) -> dict | None:
    """The cell's job.json, or None where there is none or it is not one that write_marker writes
    (then the cell counts as never dispatched): its values are text, and a process's job id is a
    process id."""
    try:
        marker = json.loads((Path(path) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(job_id := marker.get("job_id"), str):
        return None
    texts = all(isinstance(marker.get(key), str | None) for key in MARKER_TEXT)
    pid = job_id.isascii() and job_id.isdigit()  # "²" is a digit to isdigit, not to int()
    return marker if texts and (pid or marker.get("executor") not in PROCESSES) else None


def write_marker(path: Path, executor: str, job_id: str, log_folder: Path | None = None) -> dict:
    """runs/<name>/job.json: which job owns this cell now."""
    marker = {
        "executor": executor,
        "job_id": str(job_id),
        "host": socket.gethostname(),
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "log_folder": None if log_folder is None else str(Path(log_folder).resolve()),
    }
    if executor in PROCESSES:
        marker["pid_start"] = _pid_start(int(job_id))  # tells a reused pid from the job's
    atomic_write_text(Path(path) / MARKER, json.dumps(marker, indent=2) + "\n")
    return marker


def release_marker(path: Path) -> None:
    """Remove this process's local marker from a cell, which then reads as finished, failed or
    missing, and is dispatched again if it is not finished."""
    marker = read_marker(path)
    if marker and marker.get("executor") == "local" and marker.get("job_id") == str(os.getpid()):
        with contextlib.suppress(OSError):
            (Path(path) / MARKER).unlink()


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3... of /proc/<pid>/stat (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _pid_start(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def lock_holder(path: Path) -> str | None:
    """The pid written in a run folder's lock while a process holds it, else None. The probe is
    a shared flock taken and dropped at once on a read-only handle: it never writes the file."""
    try:
        fd = os.open(path / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # no lock file: nothing ever trained here
        return None
    with os.fdopen(fd, errors="replace") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read(40).strip() or "?"  # a pid; the file is read as untrusted
    return None


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Whether process `pid` runs (not a zombie), and is the one started at `start` if given."""
    if Path("/proc/self/stat").is_file():
        fields = _proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X", "x"):
            return False
        return start is None or (len(fields) > 19 and fields[19] == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job: sacct's, read by submitit's parser; for those sacct cannot
    tell (a cluster without accounting), squeue's, which keeps an ended job a few minutes, or
    UNLISTED once it has forgotten it. {} where Slurm cannot be asked (not on this machine)."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher  # a fresh one: nothing cached

    listed = ask(["sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", ",".join(job_ids)])
    info = SlurmInfoWatcher().read_info(listed) if listed else {}
    states = {job_id: info.get(job_id, {}).get("State", "UNKNOWN") for job_id in job_ids}
    unknown = [job_id for job_id, state in states.items() if state == "UNKNOWN"]
    return {**states, **squeue_states(unknown)}


def squeue_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: state} of the jobs squeue lists, and UNLISTED for those it answered without (a
    job that ended longer ago than the cluster's MinJobAge); {} where squeue cannot be asked."""
    if not job_ids:
        return {}
    # squeue fails on one unknown id, and answers for two: the same id twice does
    ids = ",".join(job_ids if len(job_ids) > 1 else job_ids * 2)
    listed = ask(["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ids])
    if listed is None:
        return {}
    pairs = (line.split() for line in listed.splitlines())
    states = {fields[0]: fields[1] for fields in pairs if len(fields) == 2}
    return {job_id: states.get(job_id, UNLISTED) for job_id in job_ids}


def ask(command: list[str]) -> str | None:
    """A Slurm command's output; None where it fails or is missing (its complaint is not shown:
    a cluster without accounting answers every sacct with one)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _job_paths(marker: dict):
    """submitit's paths of a marker's job logs, or None."""
    folder = marker.get("log_folder")
    if not folder:
        return None
    from submitit.core.utils import JobPaths  # a log folder is written only by submitit's jobs

    return JobPaths(folder, str(marker["job_id"]), 0)


def _job_alive(marker: dict, states: dict[str, str]) -> tuple[bool | None, str]:
    """(True: alive, False: ended, None: cannot tell; a note on what was seen)."""
    executor, job_id = marker.get("executor"), str(marker.get("job_id"))
    if executor in PROCESSES:
        host = marker.get("host")
        if host not in (None, socket.gethostname()):
            return None, f"on host {host}"
        return pid_alive(int(job_id), marker.get("pid_start")), ""
    if executor == "slurm":
        state = (states.get(job_id) or "UNKNOWN").split()[0].upper()  # "CANCELLED by 0"
        if state == UNLISTED:
            return False, "no longer listed by Slurm"
        if state != "UNKNOWN":
            return state in SLURM_ALIVE, state
    return None, ""


def _last_line(path: Path | None) -> str | None:
    """The last non-empty line of a text file; None if it cannot be read."""
    if path is None:
        return None
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return None
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _held_by_hand(path: Path, progress: str) -> tuple[str, str] | None:
    """("running", ...) when a process holds the run's lock though no live job is on record;
    asked only then, so that a live job's cell costs no lock probe."""
    holder = lock_holder(path)
    if holder is None:
        return None
    return "running", f"process {holder} holds its lock (no dispatched job), {progress}"


def _cell_state(config: RunConfig, states: dict[str, str]) -> tuple[str, str]:
    path, run = config.run_path, Run(config.run_path)
    if run.finished:
        try:
            return "finished", f"top-1 {run.metrics['top1']:.2f} %"
        except (OSError, ValueError, KeyError, TypeError):
            return "finished", "metrics.json unreadable: delete it to evaluate the run again"
    done = epochs_done(path)
    progress = f"epoch {done}/{config.epochs}"
    error = _last_line(path / ERROR)
    if error is not None:
        return "failed", error or "error.txt is empty"
    marker = read_marker(path)
    if marker is None:
        missing = f"{progress} checkpointed; resumes when trained again" if done else ""
        return _held_by_hand(path, progress) or ("missing", missing)
    label = f"{marker.get('executor')} job {marker.get('job_id')}"
    alive, seen = _job_alive(marker, states)
    paths = _job_paths(marker)
    if alive is None and paths is not None and paths.result_pickle.is_file():
        alive = False  # submitit wrote the job's outcome: it is over
    if alive is False:  # unless a `train` by hand has taken the run since the job ended
        why = (_last_line(paths.stderr) if paths is not None else None) or "the job ended"
        failed = "failed", f"{why} [{label}{f' {seen}' if seen else ''}, no metrics.json]"
        return _held_by_hand(path, progress) or failed
    if alive is None:
        where = f" {seen}" if seen else ""
        return "running", f"{label}{where}: state unknown, assumed running; {progress}"
    return "running", f"{label}{f' {seen}' if seen else ''}, {progress}"


def cell_states(configs: list[RunConfig]) -> list[tuple[str, str]]:
    """(state, detail) of each config's cell; Slurm is asked once for all of them."""
    slurm_ids = []
    for config in configs:
        path = config.run_path
        marker = None if Run(path).finished else read_marker(path)
        if marker is not None and marker.get("executor") == "slurm":
            slurm_ids.append(str(marker.get("job_id")))
    states = slurm_states(slurm_ids)
    return [_cell_state(config, states) for config in configs]


def cell_status(configs: list[RunConfig]):
    """One row per cell: run_name, teacher, student, dataset, method, protocol, state, detail."""
    import pandas as pd

    rows = [
        {
            "run_name": c.run_name,
            "teacher": c.teacher,
            "student": c.student,
            "dataset": c.dataset,
            "method": c.method,
            "protocol": c.protocol,
            "state": state,
            "detail": detail,
        }
        for c, (state, detail) in zip(configs, cell_states(configs))
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def folder_status(runs_dir: str | Path) -> list[str]:
    """One line per run folder under `runs_dir` (any folder with a config.json: trained here,
    by a study, by `reproduce` or on Slurm): its state, name and detail; then the counts."""
    if not Path(runs_dir).is_dir():
        raise ValueError(f"there is no folder {runs_dir}; give the --runs-dir that train used.")
    lines, counts = [], dict.fromkeys(STATES, 0)
    for path in sorted(Path(runs_dir).glob("*/config.json")):
        folder = path.parent
        try:
            config = RunConfig.from_dict(Run(folder).config)
        except (ValueError, TypeError) as error:  # another egalib's config, a plugin not loaded
            state, detail = "failed", f"config.json not readable here: {error}"
        else:
            config = replace(config, runs_dir=str(runs_dir), name=folder.name)
            [(state, detail)] = cell_states([config])
        counts[state] += 1
        lines.append(f"{state:9} {folder.name} {detail}".rstrip())
    return lines + [", ".join(f"{n} {s}" for s, n in counts.items())]


def status_lines(frame) -> list[str]:
    """The status table as text lines, with a count of each state at the end."""
    lines = [
        f"{r.state:9} {r.teacher:14} {r.student:13} {r.dataset:13} {r.method:9} {r.protocol:10} "
        f"{r.detail}".rstrip()
        for r in frame.itertuples()
    ]
    counts = frame["state"].value_counts()
    lines.append(", ".join(f"{counts.get(s, 0)} {s}" for s in STATES))
    return lines


def pending(configs: list[RunConfig]) -> list[RunConfig]:
    """The cells to dispatch: neither finished nor running (each run folder once)."""
    seen, todo = set(), []
    for config, (state, _) in zip(configs, cell_states(configs)):
        if state in ("missing", "failed") and config.run_name not in seen:
            seen.add(config.run_name)
            todo.append(config)
    return todo


# ---------------------------------------------------------------------------- executors


def _prepare(config: RunConfig) -> RunConfig:
    """The config a job gets: an absolute runs_dir (a job may start in another directory; the
    run folder's name does not depend on it), its folder made and any old error.txt gone."""
    config = replace(config, runs_dir=str(Path(config.runs_dir).resolve()))
    run = Run.open(config)
    (run.path / ERROR).unlink(missing_ok=True)
    return config


def make_executor(folder: Path, cluster: str, options: SlurmOptions, name: str):
    """A submitit executor writing its logs to `folder`: `slurm`, or `local` (submitit's local
    executor: the same jobs, signals and requeuing, as processes on this machine)."""
    import submitit  # the [cluster] extra

    executor = submitit.AutoExecutor(
        folder=folder,
        cluster=cluster,
        slurm_max_num_timeout=options.max_requeues,
        local_max_num_timeout=options.max_requeues,
    )
    executor.update_parameters(
        name=name,
        timeout_min=options.time_min,
        gpus_per_node=options.gpus,
        cpus_per_task=options.cpus,
        mem_gb=options.mem_gb,
        slurm_partition=options.partition,
    )
    return executor


def submit(executor, cell: "CellJob", folder: Path):
    """`executor.submit(cell)`; a job that Slurm refuses is one sentence, not sbatch's lines, and
    the files submitit wrote for it into `folder` are removed (its earlier logs stay)."""
    from submitit.core.utils import FailedJobError  # the [cluster] extra

    before = set(folder.iterdir()) if folder.is_dir() else set()
    try:
        return executor.submit(cell)
    except FailedJobError as refused:  # its message: sbatch's stderr
        for left in set(folder.iterdir()) - before:
            left.unlink()
        last = (str(refused).strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(
            f"Slurm did not take the job of {cell.config.run_name} ({last}); check that Slurm "
            "runs here (`sinfo`) and takes these --partition, --gpus, --time, --mem and --cpus, "
            "or use --executor local."
        ) from None


def submit_cells(
    configs: list[RunConfig],
    cluster: str = "slurm",
    options: SlurmOptions | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> list:
    """Submit one submitit job per pending cell, logs in runs/<name>/<cluster>/; the jobs."""
    options, todo, jobs = options or SlurmOptions(), pending(configs), []
    needed = ("sbatch", "srun") if todo and cluster == "slurm" else ()
    if missing := [command for command in needed if shutil.which(command) is None]:
        raise RuntimeError(
            f"--executor slurm needs Slurm's {' and '.join(missing)}, not found on this machine; "
            "run it on the cluster's login node, or use --executor local."
        )
    for config in todo:
        config = _prepare(config)
        path = config.run_path
        folder = path / cluster
        executor = make_executor(folder, cluster, options, config.run_name)
        job = submit(executor, CellJob(config, on_epoch_end), folder)
        label = "slurm" if cluster == "slurm" else f"submitit-{cluster}"
        write_marker(path, label, job.job_id, folder)
        print(
            f"submitted {config.run_name}: {label} job {job.job_id}, logs in {folder}", flush=True
        )
        jobs.append(job)
    return jobs


def run_local(configs: list[RunConfig], parallel: int = 1, threads: int | None = None) -> list[str]:
    """Train the pending cells here, `parallel` worker processes at a time (with `threads` torch
    threads each; None: torch's default), each cell marked with this process's pid while it
    waits or trains. Each worker trains its cells one after another with one TeacherMemo, so
    the cells of one seed share their probe and all of them the test features. A failing cell
    does not stop the others; the failures are reported together at the end."""
    todo = [_prepare(config) for config in pending(configs)]
    for config in todo:
        write_marker(config.run_path, "local", os.getpid())
    try:
        if parallel <= 1:
            failures = train_cells(todo, threads=None)
        else:
            failures = train_in_workers(todo, parallel, threads)
    finally:  # this process may live on (a notebook's kernel after Ctrl-C): none runs now
        for config in todo:
            release_marker(config.run_path)
    report_failures(failures)
    return [config.run_name for config in todo]


def report_failures(failures: list[tuple[str, str]]) -> None:
    """One RuntimeError for the failed cells, if any, given as (run name, reason): cells that
    failed for the same reason (a missing dataset fails every cell of a table) share it."""
    if not failures:
        return
    names_by_reason = collections.defaultdict(list)
    for name, reason in failures:
        names_by_reason[reason].append(name)
    parts = [
        f"{names[0]}{f' and {len(names) - 1} more' if len(names) > 1 else ''}: {reason}"
        for reason, names in names_by_reason.items()
    ]
    raise RuntimeError(f"{len(failures)} cell(s) failed: " + "; ".join(parts))


def train_cells(configs, threads: int | None, queue=None) -> list[tuple[str, str]]:
    """Train `configs` (or, with `queue`, the configs taken from it until None) one after
    another with one shared TeacherMemo; the failures, as (run name, reason)."""
    from ..teacher_features import TeacherMemo

    set_threads(threads)
    memo, failures = TeacherMemo(), []
    for config in configs if queue is None else iter(queue.get, None):
        try:
            CellJob(config, memo=memo)()
        except Exception as error:
            failures.append((config.run_name, reported(error)))
    return failures


def worker(queue, results, threads: int | None) -> None:
    whole_lines(sys.stdout, sys.stderr)  # the workers share this command's terminal or pipe
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the parent reports it, in one line
        results.put(train_cells([], threads, queue))


def whole_lines(*streams) -> None:
    """Each line goes to its stream in one write. Under `python -u` or PYTHONUNBUFFERED, `print`
    writes a line's text and its newline apart, and another process can write between them."""
    for stream in streams:
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True, write_through=False)


def train_in_workers(
    configs: list[RunConfig], parallel: int, threads: int | None
) -> list[tuple[str, str]]:
    """`parallel` processes that take cells from one queue, in order, until it is empty; no more
    processes than cells, since each one imports torch before it looks for work."""
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    queue, results, count = context.Queue(), context.Queue(), min(parallel, len(configs))
    for config in [*configs, *[None] * count]:
        queue.put(config)
    workers = [context.Process(target=worker, args=(queue, results, threads)) for _ in range(count)]
    try:
        for process in workers:
            process.start()
        failures = collect_reports(workers, results)
    except BaseException:  # Ctrl-C or SIGTERM to this process: its workers stop with it
        for process in workers:
            if process.pid is not None and process.is_alive():
                process.terminate()  # its files are whole or absent; the run resumes
        raise
    finally:
        for process in workers:
            if process.pid is not None:
                process.join()
    return failures


def collect_reports(workers, results) -> list[tuple[str, str]]:
    """Each worker's failures, as it reports them when its queue runs out."""
    failures, reported = [], 0
    while reported < len(workers):
        try:
            failures += results.get(timeout=2)
            reported += 1
        except queue_module.Empty:
            if not any(process.is_alive() for process in workers) and results.empty():
                missing = len(workers) - reported
                failures.append((f"{missing} worker process(es)", "died without a report"))
                break
    return failures


def set_threads(threads: int | None) -> None:
    """A worker's torch threads: two processes at one thread each train more images per second
    on a 2-core CPU than one process at two."""
    if threads:
        import torch

        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Launcher:
    """Where a command trains the runs it then reads: here, `parallel` processes at one thread
    each (one process at torch's threads), or one Slurm job per run, waited for."""

    executor: str = "local"
    parallel: int = 2
    options: SlurmOptions | None = None

    def __post_init__(self):
        check_whole("parallel", self.parallel, 1)  # 0 or less: refused, not taken as 1

    def train(self, configs: list[RunConfig]) -> None:
        """Train what is missing of `configs`; return when every one is over. A failed run
        raises RuntimeError naming it, after the others have finished."""
        if self.executor == "local":
            run_local(configs, self.parallel, threads=1 if self.parallel > 1 else None)
            return
        dispatch(configs, self.executor, options=self.options)
        wait_for(configs)


LOCAL = Launcher()  # two processes here, one thread each: the best use of a 2-core CPU


def wait_for(configs: list[RunConfig], longest_poll_s: float = 30.0) -> None:
    """Block until no cell of `configs` is running, asking at growing intervals (1 s, 2 s, ...
    up to `longest_poll_s`) and printing the counts when they change; raise RuntimeError
    naming the cells that failed. Interrupted, the jobs go on: `status` shows them."""
    poll, said = 1.0, ""
    while True:
        states = cell_states(configs)
        counts = collections.Counter(state for state, _ in states)
        line = ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s])
        if line != said:
            print(f"waiting for {len(configs)} cell(s): {line}", flush=True)
            said = line
        if not counts["running"]:
            break
        time.sleep(poll)
        poll = min(2 * poll, longest_poll_s)
    report_failures(
        [
            (c.run_name, f"{state}, {detail}")
            for c, (state, detail) in zip(configs, states)
            if state != "finished"
        ]
    )


def dispatch(
    configs: list[RunConfig],
    executor: str = "local",
    parallel: int = 1,
    options: SlurmOptions | None = None,
) -> list:
    """One job per cell neither finished nor running: trained here (`local`, blocking) or
    submitted to Slurm (returns the submitit jobs at once)."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; known executors: {', '.join(EXECUTORS)}.")
    check_whole("parallel", parallel, 1)
    todo = pending(configs)
    skipped = len({c.run_name for c in configs}) - len(todo)
    print(f"{len(todo)} cell(s) to dispatch ({executor}); {skipped} finished or running skipped")
    if executor == "local":
        return run_local(todo, parallel)
    if parallel > 1:
        raise ValueError("--parallel is for --executor local; Slurm runs each cell as its own job.")
    return submit_cells(todo, "slurm", options)
