"""Bad values and faults: refused when the config is made, failed writes named in one
sentence with nothing half-written left, durable writes, and one trainer per run folder."""

import errno
import fcntl
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import fields

import pytest

from egalib import files
from egalib.config import ABOVE_ZERO, AT_LEAST_ZERO, OPTIONAL, WHOLE, RunConfig
from egalib.experiments.cli import main
from egalib.runs import Run, RunBusyError

NUMBERS = [*WHOLE, *ABOVE_ZERO, *AT_LEAST_ZERO]


def bad_values(key: str) -> list:
    """Not finite, not a number, just below the range, and (where it applies) a fraction for a
    whole number, momentum 1, and None for a value that has no default meaning."""
    low = WHOLE.get(key, 0)
    values = [math.nan, math.inf, -math.inf, "1", True, low - 1 if key in WHOLE else -0.5]
    if key in ABOVE_ZERO:
        values.append(0.0)
    if key in WHOLE:
        values.append(low + 0.5)
    if key == "momentum":
        values.append(1.0)
    if key not in OPTIONAL:
        values.append(None)
    return values


@pytest.mark.parametrize("key", NUMBERS)
def test_every_numeric_field_refuses_values_out_of_range(key):
    for value in bad_values(key):
        with pytest.raises(ValueError) as refused:
            RunConfig(**{key: value})
        message = str(refused.value)
        assert message.startswith(f"{key} must be") and repr(value) in message, message
        assert "\n" not in message


def test_every_numeric_field_of_runconfig_is_checked():
    numeric = {f.name for f in fields(RunConfig) if "int" in str(f.type) or "float" in str(f.type)}
    assert numeric == set(NUMBERS)  # batch_size below 2 also has its own sentence


def test_the_profiles_and_the_edges_of_each_range_are_accepted():
    for profile in ("smoke", "demo", "paper"):
        RunConfig.from_profile(profile)
    RunConfig(train_size=2, test_size=1, padding=0, seed=0, momentum=0.0, beta=0.0, lr=1e-6)


def test_command_line_refuses_nan_and_negative_lr_and_an_empty_subset(capsys, tmp_path):
    for flags in (["--lr", "nan"], ["--lr", "-0.1"], ["--train-size", "0"]):
        assert main(["train", "--profile", "smoke", "--runs-dir", str(tmp_path), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "must be" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())  # refused before any run folder was made


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--batch-size", "0"], "batch_size must be a whole number >= 2, got 0"),
        (["--tau", "0"], "tau must be a finite number > 0"),
        (["--epochs", "-1"], "epochs must be a whole number >= 1"),
        (["--batch-size", "300", "--train-size", "100"], "no full batch to train on"),
    ],
)
def test_pretrain_teacher_refuses_a_number_out_of_range_in_one_sentence(
    flags, words, capsys, tmp_path
):
    assert main(["pretrain-teacher", "--out", str(tmp_path / "teacher"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "teacher").exists()  # nothing written


def test_pretrain_teacher_refuses_a_folder_it_cannot_write_before_it_trains(capsys, tmp_path):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "teachers"
    assert main(["pretrain-teacher", "--out", str(out), "--epochs", "1"]) == 2
    printed = capsys.readouterr()
    assert "epoch" not in printed.out  # refused before the training, not after an hour of it
    err = printed.err.strip()
    assert err.startswith(f"error: could not create the folder {out} (")
    assert "--out" in err and len(err.splitlines()) == 1


def test_option_values_must_be_finite():
    with pytest.raises(ValueError, match="option tau of method 'nce' must be a finite float"):
        RunConfig(method="nce", options={"tau": math.nan})


def fail_fsync(monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", no_space)


def test_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    files.atomic_torch_save({"epoch": 1}, target)
    before = target.read_bytes()
    fail_fsync(monkeypatch)
    with pytest.raises(files.WriteError) as failed:
        files.atomic_torch_save({"epoch": 2}, target)
    message = str(failed.value)
    assert str(target) in message and "no space left on device" in message
    assert "inline_container" not in message
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_an_atomic_write_syncs_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: synced.append(os.fstat(fd)) or real(fd))
    files.atomic_write_text(tmp_path / "a.txt", "x")
    assert len(synced) == 2
    assert os.path.samestat(synced[1], os.stat(tmp_path))  # the folder, after the rename
    assert (tmp_path / "a.txt").read_text() == "x"


def test_a_runs_folder_that_is_a_file_is_one_sentence(tmp_path, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    assert main(["train", "--profile", "smoke", "--runs-dir", str(blocker)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(blocker) in err and "could not write" in err


@pytest.mark.integration
def test_an_unwritable_runs_folder_is_one_sentence(tmp_path):
    """As root, the command runs without the capability to write anywhere (`setpriv`)."""
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    command = [sys.executable, "-m", "egalib", "train", "--profile", "smoke"]
    command += ["--runs-dir", str(folder)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root writes into read-only folders, and setpriv is missing")
        no_override = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--bounding-set={no_override}", "--"] + command
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "permission denied" in done.stderr.lower()
    assert str(folder) in done.stderr and not any(folder.iterdir())


def test_a_corrupt_config_json_names_the_file(tmp_path):
    config = RunConfig.from_profile("smoke", runs_dir=str(tmp_path))
    run = Run.open(config)
    run.config_path.write_text("{ not json")
    with pytest.raises(ValueError) as refused:
        Run.open(config)
    assert str(run.config_path) in str(refused.value) and "not valid JSON" in str(refused.value)


@pytest.mark.parametrize(
    "content, says",
    [
        ("[1, 2]", "does not hold a JSON object"),
        ('{"batch_size": "16"}', "invalid config (batch_size must be a whole number"),
        ('{"method": ["ega"]}', "invalid config (unknown method"),
        ('{"options": [1]}', "invalid config (options must be a mapping"),
    ],
)
def test_a_config_json_of_the_wrong_shape_is_one_sentence_naming_it(tmp_path, content, says):
    config = RunConfig.from_profile("smoke", runs_dir=str(tmp_path))
    run = Run.open(config)
    run.config_path.write_text(content)
    with pytest.raises(ValueError) as refused:
        Run.open(config)
    message = str(refused.value)
    assert str(run.config_path) in message and says in message and "\n" not in message


def test_a_job_json_that_is_not_an_object_counts_as_no_marker(tmp_path):
    from egalib.experiments import cluster

    (tmp_path / "job.json").write_text("[1, 2]")
    assert cluster.read_marker(tmp_path) is None


HOLD = """
import sys, time
from egalib.runs import Run
with Run(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_trainer_of_one_folder_is_refused_with_the_first_pid(tmp_path):
    holder = hold_lock(tmp_path / "run", 60)
    try:
        with pytest.raises(RunBusyError, match=f"being trained by process {holder.pid};"):
            with Run(tmp_path / "run").lock():
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_held_lock_that_holds_no_pid_but_bytes_is_still_one_sentence(tmp_path):
    (tmp_path / "run").mkdir()
    with open(tmp_path / "run" / "lock", "wb") as held:
        held.write(b"\xff\xfe" * 1000)
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RunBusyError, match="being trained by process \ufffd{40};"):
            with Run(tmp_path / "run").lock():
                pass


def test_embeddings_of_a_folder_that_does_not_exist_name_the_folder_not_a_rerun(tmp_path):
    missing = tmp_path / "runs" / "mistyped"
    with pytest.raises(
        FileNotFoundError, match=f"^no run folder {re.escape(str(missing))}; give one"
    ):
        Run(missing).load_embeddings()
    missing.mkdir(parents=True)  # a run folder without the file: training it again rewrites it
    with pytest.raises(RuntimeError, match="embeddings.pt cannot be read .*delete metrics.json"):
        Run(missing).load_embeddings()


def test_a_lock_left_by_a_dead_process_is_stale(tmp_path):
    holder = hold_lock(tmp_path / "run", 60)
    holder.kill()  # SIGKILL: no clean-up ran, the lock file still names its pid
    holder.wait()
    assert (tmp_path / "run" / "lock").read_text().strip() == str(holder.pid)
    began = time.time()
    with Run(tmp_path / "run").lock():
        assert (tmp_path / "run" / "lock").read_text().strip() == str(os.getpid())
    assert time.time() - began < 5


def test_a_corrupt_teacher_card_names_the_file(tmp_path):
    from egalib.models.teachers import teacher_card

    (tmp_path / "ssl-fmnist.json").write_text('{"linear_probe_top1": ')
    bad = r"ssl-fmnist\.json is not valid JSON \(.*\); restore the shipped file \(git checkout"
    with pytest.raises(ValueError, match=bad):
        teacher_card("ssl-fmnist", tmp_path)


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    run = Run(tmp_path / "run")
    run.path.mkdir()
    (run.path / "lock").symlink_to(target)
    with pytest.raises(OSError, match="is a symbolic link.*remove it"):
        with run.lock():
            pass
    assert target.read_text() == "keep me\n"


def test_a_folder_that_cannot_be_made_is_one_sentence(tmp_path, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    assert main(["publish", "--runs-dir", str(blocker)]) == 2  # its notebooks go in runs/notebooks
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"error: could not create the folder {blocker / 'notebooks'} (not a directory); "
    )
    assert len(err.splitlines()) == 1 and blocker.read_text() == "not a folder"


def test_a_lock_that_is_a_folder_is_one_sentence(tmp_path, capsys):
    (tmp_path / "run" / "lock").mkdir(parents=True)
    argv = ["train", "--profile", "smoke", "--runs-dir", str(tmp_path), "--name", "run"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"error: {tmp_path / 'run' / 'lock'} is a folder, not a lock file; remove it "
        "(the run or the cache keeps its files beside it)."
    )


def test_a_lock_that_cannot_be_opened_names_it_and_the_cause(tmp_path, monkeypatch):
    def refuse(*args):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(files.os, "open", refuse)
    with pytest.raises(files.WriteError) as refused:
        with files.exclusive(tmp_path / "lock", wait=False):
            pass
    assert str(refused.value).startswith(
        f"could not open the lock file {tmp_path / 'lock'} (permission denied); "
    )
    assert refused.value.errno == errno.EACCES  # a read-only cache is told from a full disk


def test_a_cause_is_named_by_its_first_sentence_only():
    cause = RuntimeError("Loading failed. Retry it unsafely, which we advise.\nSecond line.")
    assert files.described(cause) == "RuntimeError: Loading failed"
    assert files.described(ValueError("x" * 300)) == "ValueError: " + "x" * 199 + "…"
    assert files.described(OSError()) == "OSError: "


def test_a_checkpoint_torch_would_only_load_unsafely_is_refused_without_that_advice(tmp_path):
    import datetime

    import torch

    path = tmp_path / "checkpoint.pt"
    torch.save({"when": datetime.datetime(2026, 1, 1)}, path)  # not plain tensors and numbers
    with pytest.raises(RuntimeError) as refused:
        files.load_tensors(path, "delete it.")
    assert str(refused.value) == (
        f"{path} cannot be read (UnpicklingError: Weights only load failed); delete it."
    )
