"""A real Slurm: one node on this machine (Debian's slurm-wlm and munge, which `make test`
installs as root), its controller and node daemons started for these tests. Cells are submitted
through submitit's Slurm executor exactly as on a cluster; a requeued job resumes its run.

This small cluster keeps no accounting (no slurmdbd), so sacct answers nothing: the cells'
states come from squeue, which keeps an ended job for a few minutes, and from their files and
submitit's outcome file, as `status` does on a cluster without accounting."""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from egalib.config import RunConfig
from egalib.experiments import cluster
from egalib.experiments.cli import main
from egalib.runs import Run

pytestmark = pytest.mark.integration
DAEMONS = ("slurmctld", "slurmd")
OPTIONS = cluster.SlurmOptions(partition="debug", gpus=0, cpus=1, mem_gb=1, time_min=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_munge() -> bool:
    """munged, as the munge user, unless it already answers; whether this started it."""
    if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        return False
    Path("/run/munge").mkdir(exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True)
    return True


def slurm_conf(folder: Path) -> str:
    host, cpus = socket.gethostname(), os.cpu_count()
    lines = [
        "ClusterName=egalibtest",
        f"SlurmctldHost={host}",
        "SlurmUser=root",
        "AuthType=auth/munge",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        *(f"{d.capitalize()}PidFile={folder / d}.pid" for d in DAEMONS),
        *(f"{d.capitalize()}LogFile={folder / d}.log" for d in DAEMONS),
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "KillWait=2",  # SIGKILL 2 s after a cancel's SIGTERM (30 s by default)
        f"NodeName={host} CPUs={cpus} RealMemory=4000 State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """SLURM_CONF of a running one-node cluster; its daemons, and a munged it started, stop
    when the module ends."""
    if not all(shutil.which(b) for b in (*DAEMONS, "sbatch", "munged")) or os.geteuid() != 0:
        pytest.skip("needs root and Debian's slurm-wlm and munge (make test installs them)")
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder))
    started_munge = start_munge()
    previous, os.environ["SLURM_CONF"] = os.environ.get("SLURM_CONF"), str(conf)
    try:
        for daemon in DAEMONS:
            subprocess.run([daemon, "-f", str(conf)], check=True)
        deadline = time.time() + 60
        while "idle" not in sinfo():
            assert time.time() < deadline, f"the node never became idle: {sinfo()}"
            time.sleep(0.5)
        yield conf
    finally:
        stop_cluster(folder)
        if started_munge:  # one that ran before the tests is left running
            subprocess.run(["runuser", "-u", "munge", "--", "munged", "--stop"], check=False)
        os.environ.pop("SLURM_CONF")
        if previous is not None:
            os.environ["SLURM_CONF"] = previous


def stop_cluster(folder: Path) -> None:
    """Cancel every job and wait until Slurm has ended them (so that no step daemon outlives
    the cluster), then stop both daemons: SIGTERM, and SIGKILL to one still there after 10 s."""
    subprocess.run(["scancel", "--user", "root"], capture_output=True)
    deadline = time.time() + 60
    while squeue_all() and time.time() < deadline:
        time.sleep(0.5)
    pids = [int(p.read_text()) for p in (folder / f"{d}.pid" for d in DAEMONS) if p.is_file()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 10
    while any(cluster.pid_alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    for pid in filter(cluster.pid_alive, pids):
        os.kill(pid, signal.SIGKILL)


def squeue_all() -> str:
    return (cluster.ask(["squeue", "-h"]) or "").strip()


def sinfo() -> str:
    return subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout


def cell(tmp_path: Path, **overrides) -> RunConfig:
    values = dict(method="ega", train_size=64, test_size=64, runs_dir=str(tmp_path / "runs"))
    return RunConfig.from_profile("smoke", **{**values, **overrides})


def wait_until(condition, seconds: float, what: str, seen=lambda: "") -> None:
    """Poll `condition` until it holds; the failure says what `seen` returned last."""
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}; last seen: {seen()}"
        time.sleep(0.5)


def test_a_cell_submitted_to_slurm_trains_and_reads_finished(slurm, tmp_path):
    config = cell(tmp_path)
    [job] = cluster.dispatch([config], "slurm", options=OPTIONS)
    path = Path(config.runs_dir) / config.run_name
    marker = json.loads((path / "job.json").read_text())
    assert marker["executor"] == "slurm" and marker["job_id"] == job.job_id
    script = (path / "slurm" / f"{job.job_id}_submission.sh").read_text()
    assert "#SBATCH --partition=debug" in script and "#SBATCH --signal=USR2@90" in script
    assert job.result() == str(path)  # submitit's own outcome, from the Slurm job
    [(state, detail)] = cluster.cell_states([config])
    assert state == "finished" and detail == f"top-1 {Run(path).metrics['top1']:.2f} %"
    log = (path / "slurm" / f"{job.job_id}_0_log.out").read_text()
    assert f"{config.run_name}: finished" in log
    assert cluster.dispatch([config], "slurm", options=OPTIONS) == []  # finished: not again
    # squeue lists the job (ending, or ended less than MinJobAge ago), and answers without an
    # id it does not know
    assert cluster.squeue_states([job.job_id])[job.job_id] in ("RUNNING", "COMPLETING", "COMPLETED")
    assert cluster.squeue_states(["999999"]) == {"999999": cluster.UNLISTED}


def test_a_job_signalled_for_its_time_limit_requeues_and_resumes_its_run(slurm, tmp_path):
    """USR2, the signal Slurm sends 90 s before the time limit (`--signal=USR2@90`), after the
    first epoch: submitit checkpoints and requeues the job, which resumes from checkpoint.pt to
    the same history as a job that ran straight through."""
    config = cell(tmp_path / "signalled", train_size=3000, epochs=5)
    straight = cell(tmp_path / "straight", train_size=3000, epochs=5)
    [job] = cluster.dispatch([config], "slurm", options=OPTIONS)
    path = Path(config.runs_dir) / config.run_name
    wait_until(lambda: cluster.epochs_done(path) >= 1, 180, "the first epoch")
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
    [reference] = cluster.dispatch([straight], "slurm", options=OPTIONS)
    assert job.result() == str(path) and reference.result()
    log = (path / "slurm" / f"{job.job_id}_0_log.out").read_text()
    assert "resuming after epoch" in log
    timing = ["seconds", "images_per_s", "wall_s"]
    resumed = Run(path).history.drop(columns=timing)
    expected = Run(Path(straight.runs_dir) / straight.run_name).history.drop(columns=timing)
    assert len(resumed) == 5 and resumed.equals(expected)


def test_a_cancelled_job_reads_cancelled_and_the_next_dispatch_resubmits_it(slurm, tmp_path):
    """`scancel` after the first epoch: `status` shows the job CANCELLED (squeue, as sacct has
    no accounting here) and failed; dispatching again submits a new job, which resumes."""
    config = cell(tmp_path, train_size=3000, epochs=12)
    [job] = cluster.dispatch([config], "slurm", options=OPTIONS)
    path = Path(config.runs_dir) / config.run_name
    wait_until(lambda: cluster.epochs_done(path) >= 1, 180, "the first epoch")
    subprocess.run(["scancel", job.job_id], check=True)
    # Slurm sends SIGTERM, which submitit's job lets pass, then SIGKILL after KillWait (2 s):
    # far too soon for the 11 epochs left, so the run cannot finish in between
    seen = lambda: (cluster.cell_states([config])[0], cluster.squeue_states([job.job_id]))
    wait_until(lambda: seen()[0][0] == "failed", 120, "the cancel to show", seen)
    [(state, detail)] = cluster.cell_states([config])
    assert state == "failed" and "CANCELLED" in detail, detail
    [again] = cluster.dispatch([config], "slurm", options=OPTIONS)
    assert again.job_id != job.job_id and again.result() == str(path)
    log = (path / "slurm" / f"{again.job_id}_0_log.out").read_text()
    assert "resuming after epoch" in log and Run(path).metrics["epochs"] == 12


def slurm_flags(runs_dir: Path) -> list[str]:
    """What a user types to train on this one-node cluster."""
    return [
        *("--executor", "slurm", "--partition", "debug", "--gpus", "0", "--cpus", "1"),
        *("--mem", "1", "--runs-dir", str(runs_dir)),
    ]


def slurm_markers(runs_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*/job.json"))]


def test_compare_on_slurm_submits_each_run_waits_and_prints_the_table(slurm, tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    argv = ["compare", "--methods", "vanilla", "ega", "--seeds", "0", "--profile", "smoke"]
    assert main([*argv, *slurm_flags(runs_dir)]) == 0
    out = capsys.readouterr().out
    markers = slurm_markers(runs_dir)
    assert [m["executor"] for m in markers] == ["slurm", "slurm"], markers
    assert len({m["job_id"] for m in markers}) == 2 and out.count("submitted ") == 2
    assert "waiting for 2 cell(s): 2 finished" in out
    assert "| student: ega |" in out and (runs_dir / "compare.md").is_file()
    assert main([*argv, *slurm_flags(runs_dir)]) == 0  # all finished: nothing submitted again
    assert "submitted " not in capsys.readouterr().out


def test_a_study_on_slurm_waits_for_its_jobs_and_names_a_failed_run(slurm, tmp_path, capsys):
    """`study weights` trains vanilla and kd's grid as Slurm jobs and writes its summary; a run
    that fails in its job is named in one sentence, after the others have finished."""
    runs_dir = tmp_path / "runs"
    argv = ["study", "weights", "--methods", "kd", "--seeds", "0", "--profile", "smoke"]
    assert main([*argv, *slurm_flags(runs_dir)]) == 0
    out = capsys.readouterr().out
    summary = pd.read_csv(runs_dir / "weights-smoke.csv")
    assert len(summary) == len(slurm_markers(runs_dir)) == out.count("submitted ")
    assert set(summary["method"]) == {"vanilla", "kd"} and summary["val_top1"].notna().all()
    bad = RunConfig.from_profile("smoke", method="ega", beta=1e30, runs_dir=str(runs_dir))
    with pytest.raises(
        RuntimeError,
        match=rf"1 cell\(s\) failed: {re.escape(bad.run_name)}: failed, .*diverged in epoch 1",
    ):
        cluster.Launcher("slurm", options=OPTIONS).train([bad])
