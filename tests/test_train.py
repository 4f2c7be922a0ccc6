import gc
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from tqdm import std

from egalib import train
from egalib.methods import METHODS
from egalib.runs import CheckpointError, Run, load_runs
from egalib.step import TrainState

TIMING = ("seconds", "images_per_s", "wall_s")


def _without_timing(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


@pytest.mark.integration
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_one_smoke_epoch(smoke, method):
    run = train.fit(smoke(method=method), progress=False)
    metrics, history = run.metrics, run.history
    assert 0 <= metrics["top1"] <= 100 and metrics["epochs"] == 1
    for column in ("train_loss", "train_ce", "val_acc", "teacher_val_acc", "lr", "val_node"):
        assert column in history.columns
    if "ega" in method:
        assert {"train_node", "train_edge", "train_distill"} <= set(history.columns)
    if method in ("kd", "ega+kd"):
        assert "train_kd" in history.columns
    assert history.notna().all().all()
    embeddings = run.load_embeddings()
    assert embeddings["xs"].shape == (128, 64) and embeddings["labels"].shape == (128,)
    assert (run.path / "config.json").is_file() and (run.path / "checkpoint.pt").is_file()


@pytest.mark.integration
def test_a_killed_run_resumes_to_the_same_history(smoke, tmp_path):
    straight = train.fit(smoke(method="ega", epochs=3), progress=False)

    class Killed(Exception):
        pass

    def kill_after_first(epoch, row):
        if epoch == 1:
            raise Killed

    config = smoke(method="ega", epochs=3, runs_dir=str(tmp_path / "other"))
    with pytest.raises(Killed):
        train.fit(config, progress=False, on_epoch_end=kill_after_first)
    partial = Run.open(config)
    assert not partial.finished and len(partial.history) == 1
    resumed = train.fit(config, progress=False)
    assert _without_timing(resumed.history.to_dict("records")) == _without_timing(
        straight.history.to_dict("records")
    )
    assert resumed.metrics["top1"] == straight.metrics["top1"]


@pytest.mark.integration
def test_a_finished_run_is_reused_not_retrained(smoke):
    config = smoke(method="vanilla")
    run = train.fit(config, progress=False)
    stamp = (run.path / "metrics.json").stat().st_mtime_ns
    again = train.fit(config, progress=False)
    assert again.path == run.path
    assert (run.path / "metrics.json").stat().st_mtime_ns == stamp
    table = load_runs(config.runs_dir)
    assert list(table["method"]) == ["vanilla"] and "top1" in table.columns


@pytest.mark.integration
def test_corrupt_checkpoint_is_one_clear_error(smoke):
    config = smoke(method="vanilla")
    run = Run.open(config)
    (run.path / "checkpoint.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot be read.*delete it"):
        train.fit(config, progress=False)


def test_a_folder_holding_another_config_is_refused(smoke):
    Run.open(smoke(method="vanilla", name="mine"))
    with pytest.raises(ValueError, match="different config.*method"):
        Run.open(smoke(method="ega", name="mine"))


@pytest.mark.integration
def test_no_temporary_files_are_left_behind(smoke):
    run = train.fit(smoke(method="vanilla"), progress=False)
    assert not [p for p in run.path.iterdir() if p.name.startswith(".")]
    assert json.loads((run.path / "config.json").read_text())["method"] == "vanilla"


@pytest.mark.integration
def test_teacher_none_trains_a_plain_supervised_student(smoke):
    run = train.fit(smoke(method="vanilla", teacher="none"), progress=False)
    assert run.metrics["teacher_top1"] is None and 0 <= run.metrics["top1"] <= 100
    assert "train_teacher_ce" not in run.history.columns
    with pytest.raises(ValueError, match="distils from a teacher, but teacher is 'none'"):
        smoke(method="ega", teacher="none")


@pytest.mark.integration
def test_integer_options_reach_the_loss_as_integers(smoke):
    config = smoke(method="crd", options={"num_negatives": 64, "embed_dim": 16})
    run = train.fit(config, progress=False)
    assert run.history["train_distill"].notna().all()
    state = TrainState.build(config, train.prepare_data(config, torch.device("cpu")))
    assert state.networks.method_module.num_negatives == 64
    assert state.networks.method_module.memory_s.shape[1] == 16


@pytest.mark.integration
def test_a_checkpoint_from_another_format_is_refused_in_one_sentence(smoke):
    config = smoke(method="ega", epochs=2)
    run = train.fit(config, progress=False)
    state = torch.load(run.path / "checkpoint.pt", weights_only=True)
    del state["optimizers"]
    resumed = TrainState.build(config, train.prepare_data(config, torch.device("cpu")))
    with pytest.raises(CheckpointError, match="lacks optimizers.*delete checkpoint.pt"):
        resumed.load_state_dict(state)


def test_a_signal_while_a_progress_bar_is_built_waits_until_the_bar_is_whole(monkeypatch):
    """tqdm sets `disable` before `pos`; a Ctrl-C between the two left a half-built bar whose
    cleanup printed a traceback after the command's one-line stop."""

    def signal_midway(cls, instance=None):  # tqdm asks for its position while it is built
        os.kill(os.getpid(), signal.SIGINT)
        return 0

    monkeypatch.setattr(std.tqdm, "_get_free_pos", classmethod(signal_midway))
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(KeyboardInterrupt):
        train.sum_steps(lambda i: {"sum": i.sum()}, torch.arange(4).view(2, 2), progress=True)
    gc.collect()
    assert unraisable == []


def _one_epoch_checkpoint(state: TrainState) -> dict:
    """What `train_run` saves after one epoch, without training it."""
    checkpoint = {**state.state_dict(), "epoch": 1, "history": [{"epoch": 1}], "selected": None}
    checkpoint["schedule"]["last_epoch"] = 1  # the schedule steps once an epoch
    return checkpoint


FIRST_WEIGHT = "student.layers.0.0.weight"
DAMAGES = {
    "no scaler": lambda c: c.pop("scaler"),
    "no epoch": lambda c: c.pop("epoch"),
    "no history": lambda c: c.pop("history"),
    "optimizers of another protocol": lambda c: c.update(optimizers={}),
    "optimizers not a dict": lambda c: c.update(optimizers=[0]),
    "no streams": lambda c: c.update(streams={}),
    "a weight of another shape": lambda c: c["model"].update({FIRST_WEIGHT: torch.zeros(3)}),
    "a weight that is no tensor": lambda c: c["model"].update({FIRST_WEIGHT: "w"}),
    "a schedule of no steps": lambda c: c.update(schedule={}),
    "an epoch past the run's": lambda c: c.update(epoch=9, history=[{}] * 9),
    "an epoch that is no number": lambda c: c.update(epoch="1"),
    "a selected epoch without weights": lambda c: c.update(selected={"epoch": 1}),
    # each of these once resumed: another run's settings, or a crash an epoch later
    "another run's checkpoint": lambda c: c.update(run="0123abcd"),
    "a history row that is not numbers": lambda c: c.update(
        history=[{"epoch": 1, "val_acc": "high"}]
    ),
    "a history row of another epoch": lambda c: c.update(history=[{"epoch": 2}]),
    "integer weights": lambda c: c["model"].update({FIRST_WEIGHT: c["model"][FIRST_WEIGHT].long()}),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_checkpoint_that_does_not_fit_the_run_is_one_sentence(smoke, damage):
    config = smoke(method="ega", epochs=2)
    state = TrainState.build(config, train.prepare_data(config, torch.device("cpu")))
    checkpoint = _one_epoch_checkpoint(state)
    assert FIRST_WEIGHT in checkpoint["model"]
    fresh = TrainState.build(config, state.data)
    assert train.resume(fresh, dict(checkpoint))[0] == 1  # undamaged, it resumes after epoch 1
    DAMAGES[damage](checkpoint)
    with pytest.raises(CheckpointError, match="delete checkpoint.pt") as error:
        train.resume(TrainState.build(config, state.data), checkpoint)
    assert "\n" not in str(error.value)


@pytest.mark.integration
def test_a_changed_default_weight_trains_a_new_run(smoke, monkeypatch):
    """The resolved weights and options are part of the run's hash: after a method's default
    changes, the same command trains a new run instead of returning the old one."""
    config = smoke(method="ega")
    first = train.fit(config, progress=False)
    written = json.loads((first.path / "config.json").read_text())
    assert written["beta"] is None and written["resolved"]["beta"] == 1.0
    assert written["resolved"]["options"] == {"node_weight": 0.8, "edge_weight": 0.24}
    for key in ("egalib", "commit", "dirty", "torch", "torchvision", "device", "cpu", "date"):
        assert key in written["provenance"], key
    monkeypatch.setitem(METHODS, "ega", replace(METHODS["ega"], beta=2.0))
    second = train.fit(config, progress=False)
    assert second.path != first.path and second.finished
    assert json.loads((second.path / "config.json").read_text())["resolved"]["beta"] == 2.0
    assert set(load_runs(config.runs_dir)["run"]) == {first.path.name, second.path.name}


def test_a_folder_made_with_other_resolved_weights_is_refused(smoke, monkeypatch):
    config = smoke(method="ega", name="mine")
    Run.open(config)
    monkeypatch.setitem(METHODS, "ega", replace(METHODS["ega"], beta=2.0))
    with pytest.raises(ValueError, match="different config.*resolved"):
        Run.open(config)


@pytest.mark.integration
def test_a_diverging_run_stops_and_names_the_epoch_term_and_knobs(smoke):
    config = smoke(method="nce", beta=1e38, epochs=2)
    with pytest.raises(train.DivergenceError) as caught:
        train.fit(config, progress=False)
    message = str(caught.value)
    assert "diverged in epoch 1 of 2" in message and "train_loss" in message
    assert "--lr" in message and "--beta" in message and "\n" not in message
    run = Run.open(config)
    assert not run.finished and not (run.path / "checkpoint.pt").exists()


@pytest.mark.integration
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_command_says_one_line_and_resumes_to_the_same_history(
    tmp_path, signum, code
):
    """A real signal to `python -m egalib train` after its first epoch: one line on stderr, no
    traceback, exit 130 (Ctrl-C) or 143 (SIGTERM); the same command then finishes the run with
    the history of a run that was never interrupted."""
    command = [sys.executable, "-m", "egalib", "train", "--profile", "smoke", "--method", "ega"]
    command += ["--epochs", "6"]
    interrupted = command + ["--runs-dir", str(tmp_path / "a")]
    process = subprocess.Popen(
        interrupted, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for line in process.stdout:
        if "epoch 1/6" in line:
            process.send_signal(signum)
            break
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr and "interrupted in epoch" in stderr
    assert len([line for line in stderr.splitlines() if "interrupted" in line]) == 1
    assert subprocess.run(interrupted, capture_output=True, timeout=300).returncode == 0
    straight = subprocess.run(command + ["--runs-dir", str(tmp_path / "b")], capture_output=True)
    assert straight.returncode == 0
    history = lambda side: Run(load_runs(tmp_path / side)["path"][0]).history
    histories = [_without_timing(history(side).to_dict("records")) for side in ("a", "b")]
    assert histories[0] == histories[1]


def test_every_method_of_a_profile_holds_out_the_same_validation_split(smoke):
    """`fit`'s data for two methods and two seeds: one validation split, never trained on."""
    datas = [
        train.prepare_data(smoke(method=m, seed=s), torch.device("cpu"))
        for m, s in (("ega", 0), ("vanilla", 0), ("crd", 1))
    ]
    val = {bytes(image.flatten().tolist()) for image in datas[0].val_images}
    assert len(datas[0].val_labels) == 256 and len(set(datas[0].val_labels.tolist())) == 10
    for data in datas:
        assert torch.equal(data.val_labels, datas[0].val_labels)
        assert torch.equal(data.val_images, datas[0].val_images)
        assert not val & {bytes(image.flatten().tolist()) for image in data.train_images}


def _row(epoch, val_acc):
    return {"epoch": epoch, "val_acc": val_acc}


def test_validation_selects_the_first_epoch_of_the_best_validation_top1(smoke):
    state = TrainState.build(smoke(), train.prepare_data(smoke(), torch.device("cpu")))
    history, selected, picks = [], None, []
    for epoch, acc in enumerate((0.5, 0.7, 0.6, 0.7), start=1):
        history.append(_row(epoch, acc))
        selected = train.select(state, history, selected)
        picks.append(selected["epoch"])
    assert picks == [1, 2, 2, 2]
    assert train.select(state, [{"epoch": 1}], None) is None  # no split held out


@pytest.mark.integration
def test_the_test_set_is_read_once_after_the_last_epoch(smoke, monkeypatch):
    parts, evaluate = [], train.evaluate

    def recording(state, part):
        parts.append(part)
        return evaluate(state, part)

    monkeypatch.setattr(train, "evaluate", recording)
    run = train.fit(smoke(method="ega", epochs=3), progress=False)
    assert parts[:3] == ["val"] * 3 and set(parts[3:]) == {"test"} and len(parts) <= 5
    metrics = run.metrics
    assert 1 <= metrics["selected_epoch"] <= 3 and 0 <= metrics["selected_top1"] <= 100
    best = run.history["val_acc"].max()
    assert metrics["selected_val_top1"] == round(100 * best, 2)
    assert "best_top1" not in metrics and "test_acc" not in run.history.columns


def test_the_selected_epochs_student_is_the_one_tested(smoke):
    config = smoke(epochs=2)
    state = TrainState.build(config, train.prepare_data(config, torch.device("cpu")))
    chosen = train.select(state, [_row(1, 0.5)], None)  # the initial weights, as epoch 1
    expected = train.evaluate(state, "test")[0]["test_acc"]
    with torch.no_grad():
        state.networks.student_head.classifier.weight.zero_()
        state.networks.student_head.classifier.bias.copy_(torch.arange(10.0))  # always class 9
    tested, _ = train.test_once(state, chosen)
    nines = (state.data.test_labels == 9).float().mean().item()
    assert tested["acc"] == pytest.approx(nines) and tested["selected_epoch"] == 1
    assert tested["selected_acc"] == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_graph_terms_by_batch_are_the_mean_of_egas_terms_over_whole_batches(dtype):
    from egalib import losses

    xs, xt = torch.randn(37, 8, dtype=dtype), torch.randn(37, 8, dtype=dtype)
    terms = train.graph_terms_by_batch(xs, xt, 4)  # 9 batches of 4; the last image is left out
    each = [losses.ega_terms(xs[i : i + 4], xt[i : i + 4]) for i in range(0, 36, 4)]
    assert terms["node"] == pytest.approx(sum(n.item() for n, _ in each) / 9, rel=1e-6)
    assert terms["edge"] == pytest.approx(sum(e.item() for _, e in each) / 9, rel=1e-6)
    assert train.graph_terms_by_batch(xs[:3], xt[:3], 4) == {}


def _interrupt_when(command, line_part, env=None, timeout=300):
    """Start `command`, send SIGINT when a line of its output holds `line_part`; its stderr and
    exit status."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line_part in line:
            process.send_signal(signal.SIGINT)
            break
    rest, _ = process.communicate(timeout=timeout)
    assert any(line_part in line for line in seen), "".join(seen)[-2000:]
    return "".join(seen) + rest, process.returncode


@pytest.mark.integration
def test_ctrl_c_during_a_teacher_table_build_is_one_line_and_leaves_no_temporary_file(tmp_path):
    """The demo profile builds its teacher table (tens of seconds here) before the first epoch."""
    import os

    cache = tmp_path / "cache"
    env = {**os.environ, "EGALIB_CACHE": str(cache)}
    command = [sys.executable, "-m", "egalib", "train", "--profile", "demo", "--method", "ega"]
    command += ["--epochs", "1", "--runs-dir", str(tmp_path / "runs")]
    output, code = _interrupt_when(command, "building the teacher table", env)
    assert code == 130 and "Traceback" not in output
    assert "interrupted" in output.splitlines()[-1] and output.count("interrupted") == 1
    tables = sorted(p.name for p in (cache / "tables").iterdir())
    assert not [name for name in tables if name.endswith(".tmp")], tables
    assert not [name for name in tables if name.endswith(".bin")], tables  # nothing half-built


@pytest.mark.integration
def test_ctrl_c_during_a_study_with_workers_is_one_line_and_the_study_resumes(tmp_path):
    command = [sys.executable, "-m", "egalib", "study", "weights", "--profile", "smoke"]
    command += ["--methods", "ega", "--seeds", "0", "--parallel", "2"]
    command += ["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path)]
    output, code = _interrupt_when(command, "starting of")
    assert code == 130 and "Traceback" not in output, output[-3000:]
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "weights-smoke.csv").is_file()
