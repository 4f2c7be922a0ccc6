import inspect
import json

import pytest
import torch

from egalib import train
from egalib.config import RunConfig
from egalib.methods import METHODS
from egalib.runs import CheckpointError, Run, load_runs

TIMING = ("seconds", "images_per_s", "wall_s")


def _without_timing(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_one_smoke_epoch(smoke, method):
    run = train.fit(smoke(method=method), progress=False)
    metrics, history = run.metrics, run.history
    assert 0 <= metrics["top1"] <= 100 and metrics["epochs"] == 1
    for column in ("train_loss", "train_ce", "test_acc", "teacher_test_acc", "lr", "test_node"):
        assert column in history.columns
    if "ega" in method:
        assert {"train_node", "train_edge", "train_distill"} <= set(history.columns)
    if method in ("kd", "ega+kd"):
        assert "train_kd" in history.columns
    assert history.notna().all().all()
    embeddings = run.load_embeddings()
    assert embeddings["xs"].shape == (128, 64) and embeddings["labels"].shape == (128,)
    assert (run.path / "config.json").is_file() and (run.path / "checkpoint.pt").is_file()


@pytest.mark.parametrize("method", [m for m in METHODS if m != "vanilla"])
def test_loss_decreases_on_a_fixed_batch(smoke, method):
    """Twenty steps on one batch with the same views (the streams reset before each step),
    against a fixed teacher head (pretrained protocol: frozen; here left at its initial weights)."""
    config = smoke(method=method, protocol="pretrained", lr=0.01)
    device = torch.device("cpu")
    trainer = train.Trainer(config, train.prepare_data(config, device), device)
    index = torch.arange(config.batch_size)
    seen = []
    for _ in range(20):
        trainer.streams = train.random_streams(0, device)
        seen.append(trainer.step(index)["loss"].item())
    assert sum(seen[-3:]) / 3 < seen[0], seen


def test_distillation_gradients_never_reach_the_teacher_head(smoke):
    """The step with the student's optimiser alone backpropagates the student's loss alone."""
    config = smoke(method="ega+kd", protocol="joint")
    device = torch.device("cpu")
    trainer = train.Trainer(config, train.prepare_data(config, device), device)
    index = torch.arange(config.batch_size)
    images, labels = trainer.data.train_images[index], trainer.data.train_labels[index]
    terms = train.training_step(trainer.model, [trainer.optimizer], images, labels, index,
                                trainer.streams, use_teacher=True)  # fmt: skip
    assert {"kd", "distill", "node", "edge", "teacher_ce"} <= set(terms)
    assert all(p.grad is None for p in trainer.model.teacher_head.parameters())
    assert all(p.grad is not None for p in trainer.model.student_head.parameters())


def test_joint_protocol_trains_the_teacher_head_and_pretrained_freezes_it(smoke):
    for protocol, should_change in (("joint", True), ("pretrained", False)):
        config = smoke(method="ega", protocol=protocol)
        device = torch.device("cpu")
        trainer = train.Trainer(config, train.prepare_data(config, device), device)
        if protocol == "pretrained":
            trainer.fit_teacher_head()
        before = [p.clone() for p in trainer.model.teacher_head.parameters()]
        trainer.train_epoch()
        after = list(trainer.model.teacher_head.parameters())
        changed = any(not torch.equal(a, b) for a, b in zip(before, after))
        assert changed == should_change, protocol


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


def test_a_finished_run_is_reused_not_retrained(smoke):
    config = smoke(method="vanilla")
    run = train.fit(config, progress=False)
    stamp = (run.path / "metrics.json").stat().st_mtime_ns
    again = train.fit(config, progress=False)
    assert again.path == run.path
    assert (run.path / "metrics.json").stat().st_mtime_ns == stamp
    table = load_runs(config.runs_dir)
    assert list(table["method"]) == ["vanilla"] and "top1" in table.columns


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


def test_no_temporary_files_are_left_behind(smoke):
    run = train.fit(smoke(method="vanilla"), progress=False)
    assert not [p for p in run.path.iterdir() if p.name.startswith(".")]
    assert json.loads((run.path / "config.json").read_text())["method"] == "vanilla"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"method": "egaa"},
            r"unknown method 'egaa'; known methods: vanilla, kd, fitnet.*ega-edge",
        ),
        ({"student": "vit"}, r"unknown student 'vit'; known students: .*resnet8x4"),
        ({"teacher": "clip"}, r"unknown teacher 'clip'; known teachers: ssl-fmnist"),
        ({"dataset": "mnist"}, r"unknown dataset 'mnist'; known datasets: fashion-mnist"),
        ({"protocol": "later"}, r"unknown protocol 'later'; known protocols: pretrained, joint"),
        ({"batch_size": 1}, r"batch_size must be at least 2, got 1"),
        ({"options": {"edge_wieght": 0.1}}, r"unknown option\(s\) edge_wieght.*edge_weight"),
        ({"epochs": 0}, r"epochs must be a whole number >= 1, got 0"),
        ({"method": "crd", "options": {"num_negatives": 64.0}},
         r"option num_negatives of method 'crd' must be a finite int, got 64.0"),
        ({"options": {"tau": 0.1}}, r"unknown option\(s\) tau for method 'ega'"),
        ({"options": {"edge_weight": "0.3"}},
         r"edge_weight of method 'ega' must be a finite float"),
        ({"options": {"edge_weight": True}}, r"edge_weight of method 'ega' must be a finite float"),
    ],
)
def test_bad_config_is_one_clear_sentence(overrides, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**overrides)


def test_config_overrides_method_defaults():
    config = RunConfig(method="ega", beta=2.0, options={"edge_weight": 0.5})
    assert config.weights.beta == 2.0 and config.weights.gamma == 1.0
    assert config.weights.defaults == {"node_weight": 0.8, "edge_weight": 0.5}
    assert RunConfig(method="kd").weights.alpha == 0.9
    assert RunConfig.from_dict(config.to_dict()) == config


def test_teacher_none_trains_a_plain_supervised_student(smoke):
    run = train.fit(smoke(method="vanilla", teacher="none"), progress=False)
    assert run.metrics["teacher_top1"] is None and 0 <= run.metrics["top1"] <= 100
    assert "train_teacher_ce" not in run.history.columns
    with pytest.raises(ValueError, match="distils from a teacher, but teacher is 'none'"):
        smoke(method="ega", teacher="none")


def test_each_method_option_is_read_from_its_loss_signature():
    """One source of truth: a method's options, defaults and types are its loss's keyword
    arguments; a table entry states only what differs from them."""
    for name, method in METHODS.items():
        if method.loss is None:
            assert method.defaults == {} and method.option_types == {}, name
            continue
        parameters = inspect.signature(method.loss).parameters
        for key, value in method.defaults.items():
            assert key in parameters, (name, key)
            if key not in method.options:
                assert value == parameters[key].default, (name, key)
    assert METHODS["ega"].defaults == {"node_weight": 0.8, "edge_weight": 0.24}
    assert METHODS["ega-node"].defaults == {"node_weight": 0.8, "edge_weight": 0.0}
    assert METHODS["crd"].option_types == {"embed_dim": int, "num_negatives": int,
                                           "tau": float, "momentum": float}  # fmt: skip
    assert METHODS["rkd"].defaults == {"distance_weight": 25.0, "angle_weight": 50.0}


def test_integer_options_reach_the_loss_as_integers(smoke):
    config = smoke(method="crd", options={"num_negatives": 64, "embed_dim": 16})
    run = train.fit(config, progress=False)
    assert run.history["train_distill"].notna().all()
    device = torch.device("cpu")
    trainer = train.Trainer(config, train.prepare_data(config, device), device)
    assert trainer.model.method_module.num_negatives == 64
    assert trainer.model.method_module.memory_s.shape[1] == 16


def test_methods_compared_with_one_seed_see_the_same_batches_and_views(smoke, monkeypatch):
    """Paired runs: with one seed, vanilla (which skips the teacher view), EGA and CRD (which
    draws negatives) train on the same batches in the same order and with the same student and
    teacher views, because each use of random numbers has its own stream."""
    seen, states = {}, {}
    real_view, real_draw = train.train_view, train.draw_views
    for method in ("vanilla", "ega", "crd"):
        config = smoke(method=method, protocol="pretrained", epochs=2)
        cpu = torch.device("cpu")
        trainer = train.Trainer(config, train.prepare_data(config, cpu), cpu)
        views = seen[method] = {"student": [], "teacher": []}

        def student(images, spec, generator, padding, views=views):
            views["student"].append(real_view(images, spec, generator, padding))
            return views["student"][-1]

        def teacher(count, padding, generator, device, views=views):
            views["teacher"].append(real_draw(count, padding, generator, device))
            return views["teacher"][-1]

        monkeypatch.setattr(train, "train_view", student)
        monkeypatch.setattr(train, "draw_views", teacher)
        for _ in range(2):
            trainer.train_epoch()
        states[method] = {k: g.get_state() for k, g in trainer.streams.items()}
    steps = 2 * 128 // 32
    assert len(seen["vanilla"]["student"]) == steps and seen["vanilla"]["teacher"] == []
    for method in ("ega", "crd"):
        for side in ("student", "teacher"):
            assert len(seen[method][side]) == steps
        for a, b in zip(seen[method]["student"], seen["vanilla"]["student"]):
            assert torch.equal(a, b), method
        for a, b in zip(seen[method]["teacher"], seen["ega"]["teacher"]):
            assert torch.equal(a, b), method
        for stream in ("order", "student_view"):
            assert torch.equal(states[method][stream], states["vanilla"][stream])
    assert not torch.equal(states["crd"]["method"], states["ega"]["method"])  # CRD drew its own


def test_a_checkpoint_of_the_one_stream_format_is_refused_in_one_sentence(smoke):
    config = smoke(method="ega", epochs=2)
    run = train.fit(config, progress=False)
    state = torch.load(run.path / "checkpoint.pt", weights_only=True)
    state["generator"] = state.pop("streams")["order"]
    cpu = torch.device("cpu")
    trainer = train.Trainer(config, train.prepare_data(config, cpu), cpu)
    with pytest.raises(CheckpointError, match="drew every random number from one stream"):
        trainer.load_state(state)
