"""Dispatching cells to executors, resuming interrupted jobs, and the status of each cell.

No Slurm here: submitit's local executor runs the jobs through the same `submit_cells` that
submits to Slurm (only the cluster name differs), with the same signal handling and requeuing.
"""

import fcntl
import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from egalib import datasets
from egalib.config import RunConfig
from egalib.experiments import cluster
from egalib.experiments.cli import main
from egalib.runs import Run, RunBusyError

TIMING = ("seconds", "images_per_s", "wall_s")
LOCAL = cluster.SlurmOptions(gpus=0, time_min=30, mem_gb=1, cpus=1)  # CPU-only local jobs
RUN_FILES = ("config.json", "history.csv", "metrics.json", "checkpoint.pt", "embeddings.pt")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the local jobs inherit this environment


def cell(tmp_path: Path, method: str, **overrides) -> RunConfig:
    values = dict(method=method, train_size=64, test_size=64, runs_dir=str(tmp_path / "runs"))
    return RunConfig.from_profile("smoke", **{**values, **overrides})


def folder(config: RunConfig) -> Path:
    return Path(config.runs_dir) / config.run_name


def wait_for(job, seconds: float = 150) -> None:
    deadline = time.time() + seconds
    while not job.done():
        if time.time() > deadline:
            job.cancel()
            pytest.fail(f"job {job.job_id} still running after {seconds} s:\n{job.stderr()}")
        time.sleep(0.2)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def without_timing(run: Run) -> list[dict]:
    return run.history.drop(columns=list(TIMING)).to_dict("records")


def stand_in_commands(tmp_path: Path, monkeypatch, **bodies: str) -> Path:
    """Shell scripts named as Slurm's commands, first on PATH; returns their folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in bodies.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.integration
def test_submitit_jobs_train_complete_run_folders_and_are_not_submitted_twice(tmp_path):
    configs = [cell(tmp_path, "vanilla"), cell(tmp_path, "kd")]
    jobs = cluster.submit_cells(configs, cluster="local", options=LOCAL)
    assert len(jobs) == 2
    for job in jobs:
        wait_for(job)
        assert job.state == "FINISHED", job.stderr()
    for config, job in zip(configs, jobs):
        path = folder(config)
        assert job.result() == str(path.resolve())
        assert all((path / name).is_file() for name in RUN_FILES)
        marker = json.loads((path / "job.json").read_text())
        assert marker["executor"] == "submitit-local" and marker["job_id"] == job.job_id
        assert (path / "local" / f"{job.job_id}_0_log.out").is_file()  # logs beside the run
        assert not (path / "error.txt").exists()
    status = cluster.cell_status(configs)
    assert list(status["state"]) == ["finished", "finished"]
    assert status["detail"].str.startswith("top-1").all()
    assert cluster.submit_cells(configs, cluster="local", options=LOCAL) == []  # nothing again


@pytest.mark.integration
def test_an_interrupted_job_resumes_from_its_checkpoint_to_the_same_history(tmp_path):
    config = cell(tmp_path, "ega", epochs=4)
    # the reference runs as a job too: same process set-up (threads), so the same float sums
    reference = replace(config, runs_dir=str(tmp_path / "straight"))
    [uninterrupted] = cluster.submit_cells([reference], cluster="local", options=LOCAL)
    wait_for(uninterrupted)
    straight = Run(folder(reference))
    assert uninterrupted.state == "FINISHED" and straight.finished, uninterrupted.stderr()

    def slow(epoch, row):  # pickled by value into the job: room to interrupt between epochs
        time.sleep(1.5)

    [job] = cluster.submit_cells([config], cluster="local", options=LOCAL, on_epoch_end=slow)
    path = folder(config)
    deadline = time.time() + 120
    while cluster.epochs_done(path) < 1:
        assert time.time() < deadline and not job.done(), job.stderr()
        time.sleep(0.05)
    status = cluster.cell_status([config])
    assert status["state"][0] == "running" and "epoch 1/4" in status["detail"][0]
    assert cluster.submit_cells([config], cluster="local", options=LOCAL) == []  # running
    [task] = children(int(job.job_id))  # the job's Python process, as Slurm signals it
    os.kill(task, signal.SIGUSR2)  # submitit's pre-emption / time-out signal
    wait_for(job)
    out = job.stdout()
    assert "interrupted; requeued" in out and "resuming after epoch" in out, out
    assert job.state == "FINISHED" and Run(path).finished, job.stderr()
    assert without_timing(Run(path)) == without_timing(straight)
    assert Run(path).metrics["top1"] == straight.metrics["top1"]
    assert all((path / name).is_file() for name in RUN_FILES)


@pytest.mark.integration
def test_status_of_fabricated_run_folders(tmp_path, monkeypatch):
    names = ["finished", "running", "failed", "missing", "slurm-running", "slurm-failed"]
    methods = ["vanilla", "kd", "fitnet", "pkt", "rkd", "crd"]
    configs = {n: cell(tmp_path, m) for n, m in zip(names, methods)}
    paths = {n: Run.open(c).path for n, c in configs.items() if n != "missing"}
    (paths["finished"] / "metrics.json").write_text(json.dumps({"top1": 42.5}))
    host = socket.gethostname()
    live = {"executor": "local", "job_id": str(os.getpid()), "host": host}
    (paths["running"] / "job.json").write_text(json.dumps(live))
    (paths["running"] / "history.csv").write_text("epoch,val_acc\n1,0.1\n")
    (paths["slurm-running"] / "history.csv").write_bytes(b"epoch\n\xff\xfe\n")  # not UTF-8
    dead = {"executor": "local", "job_id": str(dead_pid()), "host": host}
    (paths["failed"] / "job.json").write_text(json.dumps(dead))
    (paths["failed"] / "error.txt").write_text(
        "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory\n\n"
    )
    logs = paths["slurm-failed"] / "slurm"
    logs.mkdir()
    (logs / "77_0_log.err").write_text("epoch 3/1\nslurmstepd: error: *** JOB 77 CANCELLED ***\n")
    for name, job_id in (("slurm-running", "76"), ("slurm-failed", "77")):
        marker = {"executor": "slurm", "job_id": job_id, "log_folder": str(logs)}
        (paths[name] / "job.json").write_text(json.dumps(marker))
    asked = []

    def fake_sacct(job_ids):  # what submitit's sacct watcher reports on a cluster
        asked.append(sorted(job_ids))
        return {"76": "RUNNING", "77": "CANCELLED by 0"}

    monkeypatch.setattr(cluster, "slurm_states", fake_sacct)
    status = cluster.cell_status(list(configs.values())).set_index("run_name")
    assert asked == [["76", "77"]]  # Slurm is asked once, for both jobs
    state = {n: status.loc[c.run_name, "state"] for n, c in configs.items()}
    detail = {n: status.loc[c.run_name, "detail"] for n, c in configs.items()}
    assert state == {
        "finished": "finished",
        "running": "running",
        "failed": "failed",
        "missing": "missing",
        "slurm-running": "running",
        "slurm-failed": "failed",
    }
    assert detail["finished"] == "top-1 42.50 %"
    assert detail["running"] == f"local job {os.getpid()}, epoch 1/1"
    assert detail["failed"] == "RuntimeError: CUDA out of memory"
    assert detail["missing"] == ""
    assert "RUNNING" in detail["slurm-running"] and "epoch 1/1" in detail["slurm-running"]
    assert detail["slurm-failed"].startswith("slurmstepd: error: *** JOB 77 CANCELLED ***")
    assert list(status.reset_index().columns) == cluster.COLUMNS
    assert cluster.status_lines(status.reset_index())[-1] == (
        "1 finished, 2 running, 2 failed, 1 missing"
    )

    # without sacct a Slurm job with no outcome is assumed running, one with an outcome failed
    monkeypatch.setattr(cluster, "slurm_states", lambda job_ids: {})
    (logs / "77_0_result.pkl").write_bytes(b"")
    unknown = cluster.cell_status([configs["slurm-running"], configs["slurm-failed"]])
    assert list(unknown["state"]) == ["running", "failed"]
    assert "state unknown" in unknown["detail"][0]

    # a second dispatch takes only the failed and missing cells, and leaves the others alone
    monkeypatch.setattr(cluster, "slurm_states", fake_sacct)
    todo = cluster.pending(list(configs.values()))
    assert [c.run_name for c in todo] == [
        configs[n].run_name for n in ("failed", "missing", "slurm-failed")
    ]
    before = {n: (p / "job.json").read_text() for n, p in paths.items() if n != "finished"}
    skip = [configs[n] for n in ("finished", "running", "slurm-running")]
    assert cluster.submit_cells(skip, cluster="local", options=LOCAL) == []
    assert cluster.run_local(skip) == []
    assert cluster.dispatch(skip, "slurm") == []
    assert before == {n: (p / "job.json").read_text() for n, p in paths.items() if n in before}
    assert (
        not (paths["running"] / "local").exists() and not (paths["finished"] / "job.json").exists()
    )


@pytest.mark.parametrize(
    "marker",
    [
        {"executor": "local", "job_id": "abc"},  # a process's job id that is not a process id
        {"executor": "local", "job_id": "-1"},
        {"executor": "local", "job_id": 12},  # written as text
        {"executor": "slurm", "job_id": "7", "log_folder": 5},
        {"executor": ["slurm"], "job_id": "7"},
        ["slurm", "7"],
    ],
)
def test_a_job_marker_egalib_did_not_write_counts_as_never_dispatched(tmp_path, marker):
    config = cell(tmp_path, "vanilla")
    path = Run.open(config).path
    (path / "job.json").write_text(json.dumps(marker))
    assert cluster.read_marker(path) is None
    assert cluster.cell_states([config]) == [("missing", "")]
    [line, counts] = cluster.folder_status(tmp_path / "runs")
    assert (
        line == f"missing   {path.name}" and counts == "0 finished, 0 running, 0 failed, 1 missing"
    )


@pytest.mark.parametrize("metrics", ["[1, 2", '{"top1": "90"}', '{"top1": null}'])
def test_a_finished_run_whose_metrics_cannot_be_read_says_so(tmp_path, metrics):
    config = cell(tmp_path, "vanilla")
    path = Run.open(config).path
    (path / "metrics.json").write_text(metrics)
    [line, counts] = cluster.folder_status(tmp_path / "runs")
    assert line == (
        f"finished  {path.name} metrics.json unreadable: delete it to evaluate the run again"
    )
    assert counts == "1 finished, 0 running, 0 failed, 0 missing"


def test_a_job_that_neither_sacct_nor_squeue_lists_is_over(tmp_path, monkeypatch):
    """A cluster without accounting forgets an ended job after MinJobAge. A killed job writes no
    outcome, so it read running for ever, and was never dispatched again."""
    listed, asked = tmp_path / "squeue-out", tmp_path / "asked"
    bin_dir = stand_in_commands(
        tmp_path,
        monkeypatch,
        sacct="echo 'sacct: error: Slurm accounting storage is disabled' >&2; exit 1",
        squeue=f'echo "$@" >> {asked}; cat {listed}',
    )
    config = cell(tmp_path, "vanilla")
    marker = {"executor": "slurm", "job_id": "4243"}
    (Run.open(config).path / "job.json").write_text(json.dumps(marker))
    listed.write_text("4243 PENDING\n")
    assert cluster.cell_states([config])[0][0] == "running"
    listed.write_text("")
    state, detail = cluster.cell_states([config])[0]
    assert state == "failed" and "no longer listed by Slurm" in detail
    assert cluster.pending([config]) == [config]
    assert "-j 4243,4243" in asked.read_text()  # squeue fails on one unknown id alone
    (bin_dir / "squeue").write_text("#!/bin/sh\nexit 1\n")  # squeue cannot be asked
    state, detail = cluster.cell_states([config])[0]
    assert state == "running" and "state unknown" in detail


def test_a_run_trained_outside_a_dispatch_reads_running_while_it_holds_its_lock(tmp_path):
    config = cell(tmp_path, "vanilla", epochs=2)
    path = Run.open(config).path
    assert cluster.cell_states([config]) == [("missing", "")]
    with Run(path).lock():  # as `python -m egalib train` holds it: no job.json
        written = (path / "lock").read_text()
        [(state, detail)] = cluster.cell_states([config])
        assert (path / "lock").read_text() == written  # the probe writes nothing
    assert state == "running" and detail.startswith(f"process {os.getpid()} holds its lock")
    assert "epoch 0/2" in detail
    assert cluster.cell_states([config]) == [("missing", "")]  # released: nobody trains it
    (path / "history.csv").write_text("epoch,val_acc\n1,0.1\n")  # stopped after its epoch 1
    checkpointed = "epoch 1/2 checkpointed; resumes when trained again"
    assert cluster.cell_states([config]) == [("missing", checkpointed)]
    over = {"executor": "local", "job_id": str(dead_pid()), "host": socket.gethostname()}
    (path / "job.json").write_text(json.dumps(over))  # an earlier dispatch's job, ended
    assert cluster.cell_states([config])[0][0] == "failed"
    with Run(path).lock():
        assert cluster.cell_states([config])[0][0] == "running"
        assert cluster.pending([config]) == []  # a dispatch leaves it to its trainer
    assert cluster.pending([config]) == [config]
    with open(path / "lock", "wb") as held:  # held by a process that wrote no pid, but bytes
        held.write(b"\xff\xfe" * 1000)
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        assert cluster.lock_holder(path) == "\ufffd" * 40


def test_a_failure_is_recorded_for_status_but_not_for_a_busy_run_or_a_missing_folder(tmp_path):
    with pytest.raises(ValueError), cluster.failure_recorded(tmp_path / "none"):
        raise ValueError("no data")
    assert not (tmp_path / "none").exists()  # nothing made where no run folder was
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="no data"):  # not the record's own OSError
        with cluster.failure_recorded(tmp_path / "a-file" / "run"):
            raise ValueError("no data")
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(RunBusyError), cluster.failure_recorded(run):
        raise RunBusyError("another process trains it")
    assert not (run / "error.txt").exists()  # the other process's run has not failed
    with pytest.raises(ValueError) as failed, cluster.failure_recorded(run):
        raise ValueError("no data")
    assert (run / "error.txt").read_text().splitlines()[-1] == "ValueError: no data"
    assert failed.value.__notes__ == [f"(its traceback: {run / 'error.txt'})"]  # not egalib's
    with cluster.failure_recorded(run):
        pass
    assert not (run / "error.txt").exists()  # a new attempt clears the old error


def test_a_train_that_fails_before_its_first_epoch_reads_failed_with_its_error(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(datasets, "DATA_DIR", tmp_path / "no-data")
    runs = tmp_path / "runs"
    flags = ["--profile", "smoke", "--dataset", "cifar100", "--runs-dir", str(runs)]
    assert main(["train", *flags]) == 2
    said = capsys.readouterr().err.strip().removeprefix("error: ")
    [line, counts] = cluster.folder_status(runs)
    assert line.startswith("failed ") and line.endswith(said), (line, said)
    assert counts == "0 finished, 0 running, 1 failed, 0 missing"


@pytest.mark.integration
def test_a_reused_pid_is_not_the_job_and_an_unknown_executor_is_refused(tmp_path):
    assert cluster.pid_alive(os.getpid())
    assert not cluster.pid_alive(os.getpid(), start="0")  # same pid, another start time
    assert not cluster.pid_alive(dead_pid())
    with pytest.raises(ValueError, match="unknown executor 'pbs'"):
        cluster.dispatch([cell(tmp_path, "vanilla")], "pbs")
    with pytest.raises(ValueError, match="--parallel is for --executor local"):
        cluster.dispatch([cell(tmp_path, "vanilla")], "slurm", parallel=2)
    for parallel in (0, -1):  # refused, not taken as one run at a time
        with pytest.raises(
            ValueError, match=f"parallel must be a whole number >= 1, got {parallel}"
        ):
            cluster.dispatch([cell(tmp_path, "vanilla")], "local", parallel=parallel)
        with pytest.raises(ValueError, match="parallel must be a whole number >= 1"):
            cluster.Launcher(parallel=parallel)
    assert not (tmp_path / "runs").exists()


@pytest.mark.integration
def test_no_more_worker_processes_start_than_there_are_cells(tmp_path, monkeypatch):
    import multiprocessing

    spawn, started = multiprocessing.get_context("spawn"), []

    class Counted:  # the spawn context, counting the processes made from it
        def __getattr__(self, name):
            return getattr(spawn, name)

        def Process(self, **kwargs):
            started.append(kwargs)
            return spawn.Process(**kwargs)

    monkeypatch.setattr(multiprocessing, "get_context", lambda method: Counted())
    configs = [cell(tmp_path, "vanilla"), cell(tmp_path, "kd")]
    cluster.dispatch(configs, "local", parallel=6)  # were 6 processes, each importing torch
    assert len(started) == 2 and cluster.pending(configs) == []


@pytest.mark.integration
def test_a_failing_local_cell_writes_its_error_and_shows_failed(tmp_path, monkeypatch):
    import egalib.train

    def broken(config, progress=True, on_epoch_end=None, memo=None):
        raise RuntimeError("the GPU fell off")

    monkeypatch.setattr(egalib.train, "fit", broken)
    configs = [cell(tmp_path, "vanilla"), cell(tmp_path, "kd")]
    with pytest.raises(RuntimeError, match="2 cell\\(s\\) failed"):
        cluster.dispatch(configs, "local")  # the first failure does not stop the second cell
    status = cluster.cell_status(configs)
    assert list(status["state"]) == ["failed", "failed"]
    assert (status["detail"] == "RuntimeError: the GPU fell off").all()
    assert not (folder(configs[0]) / "job.json").exists()  # the dispatch is over
    assert len(cluster.pending(configs)) == 2  # failed cells are dispatched again


@pytest.mark.parametrize("parallel", [1, 2])
def test_cells_interrupted_in_a_process_that_lives_on_are_dispatched_again(
    tmp_path, monkeypatch, parallel
):
    """Ctrl-C in a notebook stops the dispatch but not the kernel: its cells once read as
    running (their marker, the kernel's live pid) and the next dispatch trained nothing."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(
        cluster, "train_cells" if parallel == 1 else "train_in_workers", interrupted
    )
    configs = [cell(tmp_path, "vanilla"), cell(tmp_path, "kd")]
    with pytest.raises(KeyboardInterrupt):
        cluster.dispatch(configs, "local", parallel=parallel)
    assert list(cluster.cell_status(configs)["state"]) == ["missing", "missing"]
    assert cluster.pending(configs) == configs


def test_cells_that_fail_for_one_reason_share_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DATA_DIR", tmp_path / "no-data")
    configs = [cell(tmp_path, m, dataset="cifar100") for m in ("vanilla", "kd", "ega")]
    with pytest.raises(RuntimeError) as failed:
        cluster.dispatch(configs, "local")  # no CIFAR-100: every cell fails the same way
    message = str(failed.value)
    assert message.startswith(f"3 cell(s) failed: {configs[0].run_name} and 2 more: CIFAR-100 ")
    assert message.count("not found") == 1 and configs[1].run_name not in message
    with pytest.raises(RuntimeError) as failed:
        cluster.report_failures([("a", "one reason"), ("b", "another"), ("c", "one reason")])
    assert str(failed.value) == "3 cell(s) failed: a and 1 more: one reason; b: another"


@pytest.mark.integration
def test_slurm_submission_and_state_through_stand_in_slurm_commands(tmp_path, monkeypatch):
    """submitit's real Slurm executor and sacct watcher, with sbatch/srun/sacct as scripts."""
    state = tmp_path / "sacct-state"
    stand_in_commands(
        tmp_path,
        monkeypatch,
        srun="exit 0",
        sbatch='echo "Submitted batch job 4242"',
        sacct=f'echo "JobID|State|NodeList"; echo "4242|$(cat {state})|gpu-node-1"',
    )
    config = cell(tmp_path, "ega", epochs=3)
    options = cluster.SlurmOptions(partition="gpu", gpus=1, time_min=90, mem_gb=24)
    [job] = cluster.dispatch([config], "slurm", options=options)
    path = folder(config)
    marker = json.loads((path / "job.json").read_text())
    assert job.job_id == marker["job_id"] == "4242" and marker["executor"] == "slurm"
    assert marker["log_folder"] == str((path / "slurm").resolve())
    text = (path / "slurm" / "4242_submission.sh").read_text()
    for line in (
        "--partition=gpu",
        "--gpus-per-node=1",
        "--time=90",
        "--mem=24GB",
        "--signal=USR2@",
        "--job-name=" + config.run_name,
    ):
        assert line in text, text
    state.write_text("PENDING")
    assert cluster.cell_status([config])["state"][0] == "running"
    assert cluster.dispatch([config], "slurm", options=options) == []  # pending: not again
    state.write_text("TIMEOUT")
    status = cluster.cell_status([config])
    assert status["state"][0] == "failed" and "TIMEOUT" in status["detail"][0]
    assert [c.run_name for c in cluster.pending([config])] == [config.run_name]


def test_a_job_that_slurm_refuses_is_one_sentence_and_the_flags_are_checked_first(
    tmp_path, monkeypatch
):
    refusal = "sbatch: error: Batch job submission failed: Invalid partition name specified"
    stand_in_commands(
        tmp_path,
        monkeypatch,
        srun="exit 0",
        sbatch=f'echo "sbatch: error: one" >&2; echo "{refusal}" >&2; exit 1',
    )
    config = cell(tmp_path, "ega")
    earlier_log = folder(config) / "slurm" / "4242_log.out"  # of a job that ran before
    earlier_log.parent.mkdir(parents=True)
    earlier_log.write_text("epoch 1\n")
    with pytest.raises(RuntimeError) as refused:  # was sbatch's lines, as they came
        cluster.dispatch([config], "slurm", options=cluster.SlurmOptions(partition="nosuch"))
    assert str(refused.value) == (
        f"Slurm did not take the job of {config.run_name} ({refusal}); check that Slurm runs "
        "here (`sinfo`) and takes these --partition, --gpus, --time, --mem and --cpus, or use "
        "--executor local."
    )
    # submitit's pickled job and script for the refused submission are gone, the old log stays
    assert list(earlier_log.parent.iterdir()) == [earlier_log]
    refusals = {  # were handed to sbatch, or to submitit's requeuing; named as the flags are
        ("gpus", -1): "gpus must be a whole number >= 0, got -1",
        ("time_min", 0): "time must be a whole number >= 1, got 0",
        ("mem_gb", 0): "mem must be a whole number >= 1, got 0",
        ("cpus", 0): "cpus must be a whole number >= 1, got 0",
        ("max_requeues", -1): "max_requeues must be a whole number >= 0, got -1",
    }
    for (field, value), said in refusals.items():
        with pytest.raises(ValueError, match=f"^{said}; give such a value.$"):
            cluster.SlurmOptions(**{field: value})


def test_a_job_for_a_gpu_is_submitted_from_a_host_without_one_and_its_trainer_records_itself(
    tmp_path, monkeypatch
):
    import torch

    from egalib.runs import Run

    stand_in_commands(tmp_path, monkeypatch, srun="exit 0", sbatch='echo "Submitted batch job 7"')
    config = cell(tmp_path, "ega", device="cuda")  # this host has no GPU; the job's node has
    [job] = cluster.dispatch([config], "slurm")  # was "device 'cuda' is not available ..."
    assert job.job_id == "7"
    run = Run(folder(config))
    assert "provenance" not in run.config  # was this host's CPU, named as the run's device
    run.record_provenance(torch.device("cpu"))  # as `fit` does, on the node that trains it
    made = run.config["provenance"]
    assert made["device"] == made["cpu"] and {"commit", "torch", "date"} <= made.keys()
    run.record_provenance(torch.device("meta"))  # a resumed job keeps the first trainer's
    assert run.config["provenance"] == made


def test_slurm_without_its_commands_on_this_machine_is_refused_before_any_submission(
    tmp_path, monkeypatch
):
    only_sbatch = stand_in_commands(tmp_path, monkeypatch, sbatch="exit 1")
    monkeypatch.setenv("PATH", str(only_sbatch))
    config = cell(tmp_path, "ega")
    with pytest.raises(RuntimeError) as refused:  # was submitit's 'Could not detect "srun"'
        cluster.dispatch([config], "slurm")
    assert str(refused.value) == (
        "--executor slurm needs Slurm's srun, not found on this machine; run it on the "
        "cluster's login node, or use --executor local."
    )
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="^--executor slurm needs Slurm's sbatch and srun, "):
        cluster.dispatch([config], "slurm")
    assert not (folder(config) / "slurm").exists()


class Writes(io.RawIOBase):
    """A stream's bytes, as the write calls that carried them."""

    def __init__(self):
        self.calls = []

    def writable(self):
        return True

    def write(self, data):
        self.calls.append(bytes(data))
        return len(data)


def test_a_worker_writes_each_line_whole_when_python_is_unbuffered(monkeypatch):
    """Workers share one terminal or pipe; under `python -u` print writes a line's text and its
    newline apart, and another worker's line could come between them."""
    streams = {
        name: io.TextIOWrapper(Writes(), write_through=True) for name in ("stdout", "stderr")
    }
    for name, stream in streams.items():
        monkeypatch.setattr(sys, name, stream)
    cells, results = queue.Queue(), queue.Queue()
    cells.put(None)  # no cell: the worker reports no failure and returns
    cluster.worker(cells, results, threads=None)
    assert results.get_nowait() == []
    for stream in streams.values():
        print("cell: starting of 1 (pid 7)", file=stream, flush=True)
        assert stream.buffer.calls == [b"cell: starting of 1 (pid 7)\n"]


@pytest.mark.integration
def test_the_local_executor_trains_pending_cells_in_parallel_processes(tmp_path):
    configs = [cell(tmp_path, "vanilla"), cell(tmp_path, "kd")]
    assert cluster.dispatch(configs, "local", parallel=2) == [c.run_name for c in configs]
    for config in configs:
        assert all((folder(config) / name).is_file() for name in RUN_FILES)
        assert not (folder(config) / "job.json").exists()  # the dispatch is over: no owner
    assert list(cluster.cell_status(configs)["state"]) == ["finished", "finished"]
    assert cluster.dispatch(configs, "local", parallel=2) == []
