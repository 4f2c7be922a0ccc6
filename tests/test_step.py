"""One training step and the state it is built from: what it trains, what it leaves alone, and
that paired runs draw the same batches and views."""

import pytest
import torch

from egalib import train
from egalib.methods import METHODS
from egalib.runs import CheckpointError
from egalib.step import TrainState, train_step
from egalib.streams import random_streams


@pytest.mark.parametrize("method", [m for m in METHODS if m != "vanilla"])
def test_loss_decreases_on_a_fixed_batch(smoke, method):
    """Twenty steps on one batch with the same views (the streams reset before each step),
    against a fixed teacher head (pretrained protocol: frozen; here left at its initial weights)."""
    config = smoke(method=method, protocol="pretrained", lr=0.01)
    device = torch.device("cpu")
    state = TrainState.build(config, train.prepare_data(config, device))
    index = torch.arange(config.batch_size)
    seen = []
    for _ in range(20):
        for name, generator in random_streams(0, device).items():
            state.streams[name].set_state(generator.get_state())
        seen.append(train_step(state, index)["loss"].item())
    assert sum(seen[-3:]) / 3 < seen[0], seen


def test_distillation_gradients_never_reach_the_teacher_head(smoke):
    """With the teacher head frozen (pretrained protocol), the step backpropagates the student's
    loss alone: the KD and EGA terms that read the teacher head give it no gradient."""
    config = smoke(method="ega+kd", protocol="pretrained")
    state = TrainState.build(config, train.prepare_data(config, torch.device("cpu")))
    state.networks.teacher_head.requires_grad_(True)  # would collect any gradient that reached it
    terms = train_step(state, torch.arange(config.batch_size))
    assert {"kd", "distill", "node", "edge", "teacher_ce"} <= set(terms)
    assert all(p.grad is None for p in state.networks.teacher_head.parameters())
    assert all(p.grad is not None for p in state.networks.student_head.parameters())


def test_joint_protocol_trains_the_teacher_head_and_pretrained_freezes_it(smoke):
    for protocol, should_change in (("joint", True), ("pretrained", False)):
        config = smoke(method="ega", protocol=protocol)
        device = torch.device("cpu")
        state = TrainState.build(config, train.prepare_data(config, device))
        before = [p.clone() for p in state.networks.teacher_head.parameters()]
        train.train_epoch(state, train.step_function(state))
        after = list(state.networks.teacher_head.parameters())
        changed = any(not torch.equal(a, b) for a, b in zip(before, after))
        assert changed == should_change, protocol


def test_methods_compared_with_one_seed_see_the_same_batches_and_views(smoke):
    """Paired runs: with one seed, vanilla (which skips the teacher view), EGA and CRD (which
    draws negatives) train on the same batches in the same order and draw the same student and
    teacher views, because each use of random numbers has its own stream: after every step the
    streams of the order and the views are where those of the other methods are."""
    seen = {}
    for method in ("vanilla", "ega", "crd"):
        config = smoke(method=method, protocol="pretrained", epochs=2)
        state = TrainState.build(config, train.prepare_data(config, torch.device("cpu")))
        steps = seen[method] = []

        def step(index, state=state, steps=steps):
            terms = train_step(state, index)
            streams = {k: g.get_state() for k, g in state.streams.items()}
            steps.append({"index": index.clone(), **streams})
            return terms

        for _ in range(2):
            train.train_epoch(state, step)
    assert len(seen["vanilla"]) == 2 * 128 // 32
    fresh = random_streams(0, torch.device("cpu"))["teacher_view"].get_state()
    assert all(torch.equal(s["teacher_view"], fresh) for s in seen["vanilla"])  # never drawn
    for method in ("ega", "crd"):
        for mine, vanilla, ega in zip(seen[method], seen["vanilla"], seen["ega"]):
            for key in ("index", "order", "student_view"):
                assert torch.equal(mine[key], vanilla[key]), (method, key)
            assert torch.equal(mine["teacher_view"], ega["teacher_view"]), method
    last = lambda method: seen[method][-1]["method"]
    assert not torch.equal(last("crd"), last("ega"))  # CRD drew its own negatives


def state_of(smoke, method="ega"):
    config = smoke(method=method)
    return TrainState.build(config, train.prepare_data(config, torch.device("cpu")))


def test_a_checkpoint_of_other_networks_or_with_a_nan_weight_is_refused(smoke):
    saved = state_of(smoke).state_dict()
    other = dict(saved, model={f"old.{k}": v for k, v in saved["model"].items()})
    with pytest.raises(
        CheckpointError, match="do not fit this run's networks: they name.*delete checkpoint.pt"
    ):
        state_of(smoke).load_state_dict(other)
    crd = state_of(smoke, "crd")
    with pytest.raises(CheckpointError, match="is another run's"):
        crd.load_state_dict(saved)
    with pytest.raises(CheckpointError, match="do not fit this run's networks"):
        crd.load_state_dict(dict(saved, run=crd.config.digest))  # CRD's memory bank is missing
    broken = dict(saved, model=dict(saved["model"]))
    key = "student_head.embed.weight"
    broken["model"][key] = broken["model"][key].clone().fill_(float("nan"))
    with pytest.raises(CheckpointError, match=f"they hold NaN or inf in {key}"):
        state_of(smoke).load_state_dict(broken)
    state_of(smoke).load_state_dict(saved)  # its own checkpoint loads


@pytest.mark.parametrize(
    "method, batch, flag", [("rkd", 2000, "--batch-size"), ("ega", 60000, "--batch-size")]
)
def test_a_step_that_cannot_fit_in_memory_is_refused_before_training(smoke, method, batch, flag):
    """RKD's B x B x B angles at batch 2,000 (about 90 GiB) and EGA's B x B graphs of a batch of
    60,000 (about 200 GiB) exceed this machine: refused with the estimate and the flag."""
    config = smoke(method=method, batch_size=batch, train_size=batch)
    data = train.prepare_data(config, torch.device("cpu"))
    with pytest.raises(
        ValueError, match=f"needs about .* GiB, more than .* free on cpu; lower {flag}"
    ):
        TrainState.build(config, data)


def test_networks_that_do_not_fit_in_memory_are_one_sentence_naming_the_flag(smoke):
    """Heads of 10^12 embedding dimensions ask for petabytes: once torch's allocator message."""
    config = smoke(embed_dim=10**12)
    data = train.prepare_data(config, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"do not fit in memory \(.*\); lower --embed-dim"):
        TrainState.build(config, data)
