"""RunConfig.capture: the step recorded as one CUDA graph and replayed. On a CPU the CUDA pieces
(the side stream of the warm-up, the recording) are replaced by stand-ins whose "replay" runs
the recorded function again, which checks everything around them: the warm-up leaves no trace,
learning rates and momentum buffers are made static, the schedule reaches the replayed step,
and training follows the eager step's. The CUDA tests are skipped on CPU-only machines (CI)."""

import contextlib

import numpy as np
import presets
import pytest
import torch

from egalib.capture import CapturedStep
from egalib.step import TrainState, train_step
from egalib.train import evaluate, fit, step_function, train_epoch


def cpu_stand_ins(monkeypatch) -> list[str]:
    """Record "recordings" and "replays" made through the stand-ins."""
    calls: list[str] = []

    def record_graph(run, generators=()):
        calls.append("record")

        def replay():
            calls.append("replay")
            run()

        return replay

    monkeypatch.setattr("egalib.capture.record_graph", record_graph)
    monkeypatch.setattr("egalib.capture.side_stream", lambda device: contextlib.nullcontext())
    return calls


def cpu_state(smoke, **overrides) -> TrainState:
    values = {"method": "ega", "protocol": "joint", "batch_size": 16, "device": "cpu", "epochs": 4}
    config = smoke(**{**values, **overrides})
    data = presets.synthetic_dataset(presets.PRESETS["cpu-demo"], 48, 24, seed=0)
    return TrainState.build(config, data)


def captured(state: TrainState) -> CapturedStep:
    """The state's step wrapped as `capture` wraps it on CUDA (the CUDA pieces stood in for)."""
    return CapturedStep(lambda index: train_step(state, index), state)


def test_warm_up_before_recording_leaves_no_trace(smoke, monkeypatch):
    cpu_stand_ins(monkeypatch)
    state = cpu_state(smoke)
    before = state.state_dict()
    before = {**before, "model": {k: v.clone() for k, v in before["model"].items()}}
    steps = []
    step = lambda index: steps.append(index.clone()) or train_step(state, index)
    CapturedStep(step, state).record(torch.arange(16))  # three real steps, then restored
    assert len(steps) == CapturedStep.WARMUP_STEPS and torch.equal(steps[0], torch.arange(16))
    after = state.state_dict()
    for key, value in before["model"].items():
        assert torch.equal(after["model"][key], value), key
    for name, generator in before["streams"].items():
        assert torch.equal(after["streams"][name], generator), name
    for optimizer in state.optimizers.values():  # static: tensor learning rates, zero momentum
        for group in optimizer.param_groups:
            assert isinstance(group["lr"], torch.Tensor)
            for p in group["params"]:
                assert not optimizer.state[p]["momentum_buffer"].any()
    lr = before["optimizers"]["student"]["param_groups"][0]["lr"]  # float32 on the device now
    assert after["optimizers"]["student"]["param_groups"][0]["lr"] == pytest.approx(lr, rel=1e-7)


def test_captured_steps_train_like_eager_steps(smoke, monkeypatch):
    """Four epochs (the schedule's first milestone falls inside) give the eager run's losses
    and weights; the captured step recorded once and replayed every full batch."""
    calls = cpu_stand_ins(monkeypatch)
    rows, weights = [], []
    for capture in (False, True):
        state = cpu_state(smoke)
        step = captured(state) if capture else (lambda index, state=state: train_step(state, index))
        rows.append([train_epoch(state, step) for _ in range(4)])
        weights.append(state.networks.trainable_state())
        lr = state.optimizers["student"].param_groups[0]["lr"]
        assert float(lr) == pytest.approx(state.config.lr * 0.1**3, rel=1e-6)
    assert calls == ["record"] + ["replay"] * 12  # 4 epochs of 3 batches of 16
    eager, replayed = rows
    for a, b in zip(eager, replayed):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([b[k] for k in a], [a[k] for k in a], rtol=1e-5, atol=1e-6)
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=1e-4, atol=1e-5)


def test_other_batch_sizes_and_evaluation_run_eagerly(smoke, monkeypatch):
    calls = cpu_stand_ins(monkeypatch)
    state = cpu_state(smoke)
    step = captured(state)
    keys = set(state.networks.state_dict())
    terms = step(torch.arange(16))
    assert calls == ["record", "replay"]
    assert set(terms) >= {"loss", "ce", "correct", "node", "edge", "teacher_ce"}
    step(torch.arange(8))  # a smaller batch: eager
    evaluate(state, "test")
    assert calls == ["record", "replay"]
    step(torch.arange(16, 32))
    assert calls == ["record", "replay", "replay"]
    assert set(state.networks.state_dict()) == keys  # checkpoints do not change with capture
    saved = state.state_dict()
    for optimizer in saved["optimizers"].values():
        assert all(isinstance(g["lr"], float) for g in optimizer["param_groups"])


def test_a_failed_recording_says_to_train_without_capture(smoke, monkeypatch):
    cpu_stand_ins(monkeypatch)

    def record_graph(run, generators=()):
        raise RuntimeError("operation not permitted when stream is capturing\nCUDA details")

    monkeypatch.setattr("egalib.capture.record_graph", record_graph)
    step = captured(cpu_state(smoke))
    expected = r"\(operation not permitted when stream is capturing\); train without capture"
    with pytest.raises(RuntimeError, match=expected):
        step(torch.arange(16))


def test_capture_on_a_cpu_is_refused_and_compile_compiles_the_student(smoke):
    with pytest.raises(ValueError, match="capture records the training step as a CUDA graph"):
        cpu_state(smoke, capture=True)
    state = cpu_state(smoke, compile=True)
    assert state.networks.student._compiled_call_impl is not None


@pytest.mark.integration
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["ega", "crd"])
def test_cuda_graph_steps_train_like_eager_steps(smoke, tmp_path, method):
    """Same seed, same batches: the captured run's losses and weights follow the eager run's
    (bf16 autocast in both; cuDNN may pick other kernels in a graph, hence the tolerance)."""
    histories, weights = [], []
    for capture in (False, True):
        config = smoke(
            method=method,
            protocol="joint",
            device="cuda",
            capture=capture,
            train_size=512,
            epochs=2,
            runs_dir=str(tmp_path / str(capture)),
        )
        run = fit(config, progress=False)
        histories.append(run.history)
        state = torch.load(run.path / "checkpoint.pt", map_location="cpu")["model"]
        weights.append(state["student_head.classifier.weight"])
    eager, replayed = histories
    assert len(eager) == len(replayed) == 2
    np.testing.assert_allclose(replayed["train_loss"], eager["train_loss"], rtol=2e-2)
    np.testing.assert_allclose(replayed["val_acc"], eager["val_acc"], atol=0.05)
    assert torch.allclose(weights[0], weights[1], rtol=5e-2, atol=5e-3)


def cuda_state(smoke, **overrides) -> TrainState:
    config = smoke(**{"protocol": "joint", "device": "cuda", "batch_size": 16, **overrides})
    data = presets.synthetic_dataset(presets.PRESETS["cpu-demo"], 48, 24, seed=0).to("cuda")
    return TrainState.build(config, data)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_replays_draw_new_random_numbers_like_eager_steps(smoke):
    """The run's streams are registered with the graph: after three replays they stand where
    three eager steps leave them (each replay drew its own crops, flips and CRD negatives), and
    the replayed steps' losses follow the eager steps'."""
    results = []
    for capture in (False, True):
        state = cuda_state(smoke, method="crd", capture=capture)
        step = step_function(state)
        batches = torch.arange(48, device="cuda").view(3, 16)
        losses = [step(index)["loss"].item() for index in batches]
        results.append((losses, {k: g.get_state() for k, g in state.streams.items()}))
    (eager_losses, eager_state), (captured_losses, captured_state) = results
    assert all(torch.equal(captured_state[k], eager_state[k]) for k in eager_state)
    np.testing.assert_allclose(captured_losses, eager_losses, rtol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_state_stores_the_teacher_in_bfloat16(smoke):
    state = cuda_state(smoke, method="ega")
    teacher = state.networks.teacher
    assert {p.dtype for p in teacher.parameters()} == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in state.networks.student.parameters())
    terms = train_step(state, torch.arange(16, device="cuda"))
    assert all(torch.isfinite(v).all() for v in terms.values())
