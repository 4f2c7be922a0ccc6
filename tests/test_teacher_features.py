"""The teacher's features: whole sets encoded once per memo, keyed by the teacher's weights and
the images, and the linear probe that the runs of one memo share."""

import torch

from egalib import models, train
from egalib.step import TrainState
from egalib.teacher_features import (
    EncodedFeatures,
    ProbeRecipe,
    TeacherMemo,
    fit_probe,
)


def test_runs_of_one_seed_share_one_linear_probe_through_their_memo(smoke):
    """The probe's head depends only on the features, labels, initial weights and recipe, so
    runs that pass one TeacherMemo train it once; without a memo each run trains its own."""
    cpu, memo, heads = torch.device("cpu"), TeacherMemo(), []

    def probe(config, memo):
        state = TrainState.build(config, train.prepare_data(config, cpu), memo=memo)
        recipe = ProbeRecipe(config.probe_epochs, config.seed, config.teacher_lr)
        fit_probe(state.teacher, state.networks.teacher_head, state.data, recipe)
        return state.networks.teacher_head.state_dict()

    for method in ("ega", "kd", "ega"):
        heads.append(probe(smoke(method=method, seed=5), memo))
    probes = lambda memo: [k for k in memo.results if k[0] == "probe"]
    assert len(probes(memo)) == 1
    alone = probe(smoke(method="ega", seed=5), None)
    for head in [*heads[1:], alone]:
        for key, value in head.items():
            assert torch.equal(value, heads[0][key])
    probe(smoke(method="ega", seed=6), memo)
    assert len(probes(memo)) == 2  # another seed: another subset, another probe


def test_whole_sets_are_encoded_once_per_memo_and_keyed_by_weights_and_images():
    from egalib.teacher_features import TeacherMemo

    images = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    memo = TeacherMemo()
    first = EncodedFeatures(models.teacher("ssl-fmnist"), 4, memo).of_images(images)
    again = EncodedFeatures(models.teacher("ssl-fmnist"), 4, memo)  # another run, same weights
    assert again.of_images(images) is first
    alone = EncodedFeatures(models.teacher("ssl-fmnist"), 4)  # no shared memo: computed anew
    assert alone.of_images(images) is not first and torch.equal(alone.of_images(images), first)
    other = images.clone()
    other[0, 0, 0, 0] ^= 1  # one pixel differs: not the same images
    assert again.of_images(other) is not first
    random = EncodedFeatures(models.teacher("ssl-fmnist", pretrained=False), 4, memo)
    assert not torch.equal(random.of_images(images), first)  # other weights: other features


def test_the_memo_keeps_results_within_its_bytes_however_many_there_are():
    """A demo worker takes seeds 0-4 in turn: each seed's features and probe must still be kept
    when its turn comes again, so the bound is on bytes, not on a count of results."""
    memo, made = TeacherMemo(max_bytes=10 * 4000), []
    make = lambda i: lambda: made.append(i) or torch.zeros(1000)  # 4,000 bytes each
    for _ in range(2):
        for i in range(10):
            memo.get(("seed", i), make(i))
    assert made == list(range(10)) and memo.nbytes() == 40_000  # every one made once
    memo.get(("seed", 10), make(10))  # one too many: the oldest one goes
    assert ("seed", 0) not in memo.results and len(memo.results) == 10
    big = TeacherMemo(max_bytes=100)
    assert big.get("x", lambda: torch.zeros(1000)).numel() == 1000 and "x" in big.results
    probe = {"weight": torch.zeros(10, 4), "bias": torch.zeros(10)}  # a probe: a state dict
    assert TeacherMemo().get("probe", lambda: probe) is probe and big.get("p", lambda: probe)
    assert list(big.results) == ["p"]  # the newest is kept even over the bound
