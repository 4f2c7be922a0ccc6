"""No host read inside a training step. On CUDA a read of a device value (.item(), bool(t),
.tolist(), a boolean mask, torch.unique...) makes the host wait for the GPU, and inside the
recorded step of RunConfig.capture it fails the recording. On a CPU these reads cost nothing and
raise nothing, so the step is run here under modes that list every such read: the Python-level
ones (TorchFunctionMode) and the operators whose output shape depends on values
(TorchDispatchMode). Each method's step is run as the captured step records it (CUDA's fused
SGD with tensor learning rates, stand-ins for the recording)."""

import contextlib

import presets
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from egalib import losses, models
from egalib.capture import CapturedStep
from egalib.methods import METHODS
from egalib.step import TrainState, train_step

aten = torch.ops.aten
READS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.cpu,
    torch.Tensor.numpy,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__index__,
}
VALUE_SHAPED = {
    aten._local_scalar_dense,
    aten.nonzero,
    aten.masked_select,
    aten._unique2,
    aten.unique_dim,
    aten.unique_consecutive,
    aten.lift_fresh,
}


class HostReads(TorchFunctionMode):
    def __init__(self, seen: list[str]):
        super().__init__()
        self.seen = seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in READS:
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


class ValueShapedOps(TorchDispatchMode):
    """Operators that read values on the host; indexing with a boolean mask is one."""

    def __init__(self, seen: list[str]):
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        masks = func.overloadpacket in (aten.index, aten.index_put, aten.index_put_) and any(
            i is not None and i.dtype == torch.bool for i in args[1]
        )
        if func.overloadpacket in VALUE_SHAPED or masks:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def host_reads():
    """The list of host reads made inside the block."""
    seen: list[str] = []
    with HostReads(seen), ValueShapedOps(seen):
        yield seen


READING = {
    "item": lambda x: x.sum().item(),
    "tolist": lambda x: x.tolist(),
    "cpu": lambda x: x.cpu(),
    "if": lambda x: 1 if x[0] > 0 else 0,
    "float": lambda x: float(x[0]),
    "index": lambda x: [0, 1, 2][x.long()[0].clamp(0, 2)],
    "mask": lambda x: x[x > 0],
    "masked write": lambda x: x.clone().index_put_((x > 0,), torch.tensor(0.0)),
    "nonzero": lambda x: torch.nonzero(x),
    "unique": lambda x: torch.unique(x),
    "torch.tensor": lambda x: x + torch.tensor([1.0]),
}


@pytest.mark.parametrize("name", READING)
def test_every_kind_of_host_read_is_seen(name):
    x = torch.randn(8)
    with host_reads() as seen:
        READING[name](x)
    assert seen, f"{name} went unseen"
    with host_reads() as seen:
        (x * 2).sum(0).exp()[None].clamp(0, 1)  # device-only work
    assert seen == []


def cuda_like_state(config, data, monkeypatch) -> TrainState:
    """A CPU run set up as on CUDA for a captured step: recording stand-ins that run the step
    under the watch, fused SGD, a 16-bit teacher, CRD's index range left unchecked."""
    monkeypatch.setattr("egalib.capture.side_stream", lambda device: contextlib.nullcontext())
    teacher = models.teacher(config.teacher, pretrained=False)
    state = TrainState.build(config, data, teacher=teacher)
    for optimizer in state.optimizers.values():
        for group in optimizer.param_groups:
            group.update(fused=True, foreach=False)
    if state.networks.teacher is not None:
        state.networks.teacher.cast_weights()
    if isinstance(state.networks.method_module, losses.CRD):
        state.networks.method_module.check_index = False  # as built on a GPU
    return state


def reads_in_recorded_steps(state: TrainState, monkeypatch, batch: int) -> list[str]:
    """Host reads while the captured step is recorded and replayed once (after the warm-up,
    which may read: it runs eagerly)."""
    seen: list[str] = []

    def record_graph(run, generators=()):
        def watched():
            with host_reads() as reads:
                run()
            seen.extend(reads)

        watched()
        return watched

    monkeypatch.setattr("egalib.capture.record_graph", record_graph)
    step = CapturedStep(lambda index: train_step(state, index), state)
    step(torch.arange(batch))
    step(torch.arange(batch, 2 * batch))
    assert step.replay is not None
    return seen


@pytest.mark.parametrize("method", METHODS)
def test_recorded_step_reads_nothing_on_the_host(method, smoke, monkeypatch):
    config = smoke(method=method, protocol="joint", batch_size=16, device="cpu")
    data = presets.synthetic_dataset(presets.PRESETS["cpu-demo"], 48, 24, seed=0)
    state = cuda_like_state(config, data, monkeypatch)
    assert reads_in_recorded_steps(state, monkeypatch, 16) == []


@pytest.mark.integration
def test_paper_step_with_clip_teacher_reads_nothing_on_the_host(monkeypatch):
    """The benchmark's `paper` preset: CLIP ViT-B/32 in bf16 (random weights), resnet8x4."""
    preset = presets.PRESETS["paper"]
    config = presets.make_config(preset, batch_size=2, device="cpu")
    data = presets.synthetic_dataset(preset, 8, 4, seed=0)
    state = cuda_like_state(config, data, monkeypatch)
    assert reads_in_recorded_steps(state, monkeypatch, 2) == []


def test_crd_reads_its_index_values_only_when_asked():
    """CRD checks the index range on the host at every call unless built with check_index
    False; the dtype is checked at every call, which needs no host read."""
    labels = torch.arange(40) % 4
    fs, ft, index = torch.randn(4, 8), torch.randn(4, 8), torch.arange(4)
    for check_index in (True, False):
        crd = losses.CRD(8, 8, labels, embed_dim=4, num_negatives=8, check_index=check_index)
        with host_reads() as reads:
            crd(fs, ft, index)
        assert bool(reads) == check_index
        with pytest.raises(ValueError, match="int64 positions"):
            crd(fs, ft, index.int())
