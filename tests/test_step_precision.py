"""The 16-bit dtype of a CUDA run: bfloat16 where the GPU computes it fast, float16
with a gradient scaler on older GPUs (Colab's T4). Checked on a CPU with a faked device
capability; the scaler's step is checked against an unscaled one in float32."""

import copy
from dataclasses import replace

import pytest
import torch

from egalib import train
from egalib.models.teachers import ssl_fmnist
from egalib.step import Precision, TrainState, check_capture, train_step
from egalib.views import eval_view


def _fake_capability(monkeypatch, capability):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


# a float16 scaler built for the faked device finds no CUDA here, warns, and disables itself
no_cuda_for_the_scaler = pytest.mark.filterwarnings("ignore:.*CUDA is not available:UserWarning")


OLD_AND_NEW = [
    ((6, 0), torch.float16),
    ((7, 5), torch.float16),
    ((8, 0), torch.bfloat16),
    ((9, 0), torch.bfloat16),
]


@no_cuda_for_the_scaler
@pytest.mark.parametrize("capability, dtype", OLD_AND_NEW)
def test_gpus_without_fast_bfloat16_train_in_float16(monkeypatch, capability, dtype):
    _fake_capability(monkeypatch, capability)
    assert Precision.for_device(torch.device("cuda")).autocast_dtype == dtype
    cpu = Precision.for_device(torch.device("cpu"))
    assert cpu.autocast_dtype is None and not cpu.scaler.is_enabled()  # a CPU: float32


@no_cuda_for_the_scaler
def test_capture_in_float16_is_refused_in_one_sentence(smoke, monkeypatch):
    _fake_capability(monkeypatch, (7, 5))
    cuda = torch.device("cuda")
    with pytest.raises(ValueError, match="no fast bfloat16.*run without --capture") as caught:
        check_capture(smoke(capture=True), cuda, Precision.for_device(cuda))
    assert "\n" not in str(caught.value)


def _train(config, scaler=None, steps=3) -> TrainState:
    state = TrainState.build(config, train.prepare_data(config, torch.device("cpu")))
    if scaler is not None:
        state = replace(state, precision=Precision(None, scaler))
    for index in torch.arange(steps * config.batch_size).view(steps, config.batch_size):
        train_step(state, index)
    return state


def test_a_step_with_the_gradient_scaler_moves_the_weights_as_one_without(smoke):
    config = smoke(method="ega", protocol="joint")
    plain = _train(config)
    scaled = _train(config, torch.amp.GradScaler("cpu", init_scale=2.0**12))
    assert scaled.precision.scaler.get_scale() == 2.0**12  # no overflow: the scale stayed
    a, b = plain.networks.trainable_state(), scaled.networks.trainable_state()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6, rtol=1e-5), key


def test_the_scaler_state_is_checkpointed_and_restored(smoke):
    config = smoke(method="ega")
    saved = _train(config, torch.amp.GradScaler("cpu", init_scale=2.0**7), steps=1).state_dict()
    assert saved["scaler"]["scale"] == 2.0**7
    other = _train(config, torch.amp.GradScaler("cpu", init_scale=1.0), steps=0)
    other.load_state_dict(copy.deepcopy(saved))
    assert other.precision.scaler.get_scale() == 2.0**7
    assert _train(config, steps=0).state_dict()["scaler"] == {}  # float32 and bfloat16: none


def test_a_float16_teacher_gives_finite_features_close_to_float32():
    teacher = ssl_fmnist()
    half = copy.deepcopy(teacher).cast_weights(torch.float16)
    assert half.weights_dtype == torch.float16
    assert {p.dtype for p in half.encoder.parameters()} == {torch.float16}
    images = torch.randint(
        0, 256, (16, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    x = eval_view(images, teacher.view)
    full, low = teacher.encode(x), half.encode(x)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low - full).norm() / full.norm() < 1e-2
