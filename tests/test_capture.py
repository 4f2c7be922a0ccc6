"""RunConfig.capture: which forward a step runs, and (on a CUDA machine) that replaying the CUDA
graphs trains like the eager step. The CUDA test is skipped on CPU-only machines such as CI."""

import contextlib

import numpy as np
import pytest
import torch

from egalib import bench
from egalib.train import Trainer, fit


def eager_stand_ins(monkeypatch, calls: list[str]):
    """Replace the CUDA-only graph makers by eager functions that record their calls, so the
    dispatch around them runs on a CPU."""

    def graphed_student(module, sample_args, allow_unused_input=False):
        def forward(images):
            calls.append("student graph")
            return module(images)

        return forward

    class EagerForward:
        def __init__(self, forward, example):
            self.forward = forward

        def __call__(self, images):
            calls.append("teacher graph")
            return self.forward(images)

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", graphed_student)
    # the CUDA autocast around the capture only warns on a CPU
    monkeypatch.setattr(torch, "autocast", lambda *args, **kwargs: contextlib.nullcontext())
    monkeypatch.setattr("egalib.train.GraphedForward", EagerForward)


def cpu_trainer(smoke, **overrides) -> Trainer:
    values = {"method": "ega", "protocol": "joint", "batch_size": 16, "device": "cpu"}
    config = smoke(**{**values, **overrides})
    data = bench.synthetic_dataset(bench.PRESETS["cpu-demo"], 48, 24, seed=0)
    return Trainer(config, data, torch.device("cpu"))


def test_captured_forwards_serve_training_batches_of_the_captured_shape_only(smoke, monkeypatch):
    calls: list[str] = []
    eager_stand_ins(monkeypatch, calls)
    trainer = cpu_trainer(smoke)
    keys = set(trainer.model.state_dict())
    trainer.capture = True  # as on CUDA: graphs made at the first step
    index = torch.arange(16)
    trainer.step(index)
    assert set(trainer.model.graphs) == {"student", "teacher"}
    assert calls == ["student graph", "teacher graph"]
    trainer.step(index + 16)
    assert calls == ["student graph", "teacher graph"] * 2
    trainer.step(torch.arange(8))  # a smaller batch runs eagerly
    assert len(calls) == 4
    trainer.evaluate()  # evaluation (eval mode, batches of 500) runs eagerly
    assert len(calls) == 4
    assert set(trainer.model.state_dict()) == keys  # checkpoints do not change with capture


def test_capture_without_a_teacher_in_the_step_graphs_the_student_only(smoke, monkeypatch):
    calls: list[str] = []
    eager_stand_ins(monkeypatch, calls)
    trainer = cpu_trainer(smoke, method="vanilla", protocol="pretrained")
    trainer.capture = True
    trainer.step(torch.arange(16))
    assert set(trainer.model.graphs) == {"student"} and calls == ["student graph"]


def test_capture_on_a_cpu_compiles_the_student_and_makes_no_graphs(smoke):
    trainer = cpu_trainer(smoke, capture=True)
    assert trainer.capture is False and not trainer.model.graphs
    assert hasattr(trainer.model.student, "_compiled_call_impl")
    assert trainer.model.student._compiled_call_impl is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["ega", "crd"])
def test_cuda_graph_steps_train_like_eager_steps(smoke, tmp_path, method):
    """Same seed, same batches: the captured run's losses and weights follow the eager run's
    (bf16 autocast in both; cuDNN may pick other kernels in a graph, hence the tolerance)."""
    histories, weights = [], []
    for capture in (False, True):
        config = smoke(method=method, protocol="joint", device="cuda", capture=capture,
                       train_size=512, epochs=2, runs_dir=str(tmp_path / str(capture)))  # fmt: skip
        run = fit(config, progress=False)
        histories.append(run.history)
        state = torch.load(run.path / "checkpoint.pt", map_location="cpu")["model"]
        weights.append(state["student_head.classifier.weight"])
    eager, captured = histories
    assert len(eager) == len(captured) == 2
    np.testing.assert_allclose(captured["train_loss"], eager["train_loss"], rtol=2e-2)
    np.testing.assert_allclose(captured["test_acc"], eager["test_acc"], atol=0.05)
    assert torch.allclose(weights[0], weights[1], rtol=5e-2, atol=5e-3)
