from dataclasses import asdict

import pytest
import torch
from torch import nn

from egalib import models
from egalib.experiments.pretrain import PretrainConfig
from egalib.models import teachers


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet8x4_matches_the_crd_parameter_count():
    backbone = models.student("resnet8x4", in_channels=3)
    assert backbone.feature_dim == 256
    assert _params(backbone) + _params(nn.Linear(256, 100)) == 1_233_540


@pytest.mark.parametrize("name", sorted(models.STUDENTS))
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (3, 40), (1, 64)])
def test_students_take_any_size_and_channels(name, channels, size):
    backbone = models.student(name, in_channels=channels)
    out = backbone(torch.randn(2, channels, size, size))
    assert out.shape == (2, backbone.feature_dim)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown student 'resnet9'.*resnet8x4"):
        models.student("resnet9")
    with pytest.raises(ValueError, match="unknown teacher 'clip'.*ssl-fmnist"):
        models.teacher("clip")


def test_teacher_interface_is_frozen_and_stays_in_eval():
    t = models.teacher("ssl-fmnist", pretrained=False)
    assert not any(p.requires_grad for p in t.parameters())
    t.train()
    assert not t.training and not t.encoder.training
    x = torch.randn(3, t.in_channels, t.input_size, t.input_size, requires_grad=True)
    f = t.encode(x)
    assert f.shape == (3, t.feature_dim) and f.dtype == torch.float32 and not f.requires_grad
    assert len(t.mean) == len(t.std) == t.in_channels
    assert t.view.size == t.input_size


def test_shipped_teacher_loads_with_its_card():
    t = models.teacher("ssl-fmnist", pretrained=True)
    shipped = torch.load(teachers.TEACHER_DIR / "ssl-fmnist.pt", weights_only=True)
    assert all(torch.equal(v, shipped[k]) for k, v in t.encoder.state_dict().items())
    card = teachers.teacher_card("ssl-fmnist")
    for key in ("command", "config", "wall_time_s", "device", "linear_probe_top1"):
        assert key in card
    assert card["command"].startswith("python -m egalib pretrain-teacher")
    # the command's defaults are the shipped teacher's recipe: run bare, it remakes that teacher
    assert card["config"] == asdict(PretrainConfig())


@pytest.mark.parametrize("name", ["clip-vit-b32", "supervised-wrn40", "nosuch"])
def test_pretrain_makes_only_the_teacher_whose_file_egalib_reads(name):
    # was SimCLR on a randomly initialised ViT-B/32, its weights saved where nothing reads them
    with pytest.raises(ValueError, match=rf"^pretrain-teacher makes .* not of '{name}'; leave"):
        PretrainConfig(teacher=name)


def test_missing_or_corrupt_teacher_weights_say_how_to_fix(tmp_path):
    encoder = teachers.GridPooledCNN()
    with pytest.raises(FileNotFoundError, match="pretrain-teacher"):
        teachers.load_teacher_weights(encoder, "ssl-fmnist", folder=tmp_path)
    (tmp_path / "ssl-fmnist.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot be read.*pretrain-teacher"):
        teachers.load_teacher_weights(encoder, "ssl-fmnist", folder=tmp_path)


def edited(weights: dict, how: str):
    first = next(iter(weights))
    if how == "a list":
        return list(weights.values())
    if how == "a renamed weight":
        return {f"old.{k}" if k == first else k: v for k, v in weights.items()}
    if how == "a reshaped weight":
        return weights | {first: weights[first].flatten()}
    return weights | {first: weights[first].clone().fill_(float(how))}


@pytest.mark.parametrize(
    "how, reason",
    [
        ("a list", "its weights are a list, not a dict of named tensors"),
        ("a renamed weight", r"its weights name other parameters: missing \['layers.0.0.weight'\]"),
        ("a reshaped weight", "its weights have other shapes in layers.0.0.weight"),
        ("nan", "its weights hold NaN or inf in layers.0.0.weight"),
        ("inf", "its weights hold NaN or inf in layers.0.0.weight"),
    ],
)
def test_a_hand_edited_teacher_file_is_refused_in_one_sentence(tmp_path, how, reason):
    shipped = torch.load(teachers.TEACHER_DIR / "ssl-fmnist.pt", weights_only=True)
    torch.save(edited(shipped, how), tmp_path / "ssl-fmnist.pt")
    encoder = teachers.GridPooledCNN()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    with pytest.raises(ValueError, match=f"does not fit teacher 'ssl-fmnist': {reason}") as caught:
        teachers.load_teacher_weights(encoder, "ssl-fmnist", folder=tmp_path)
    message = str(caught.value)
    assert "\n" not in message and message.endswith("pretrain-teacher --out egalib/data/teachers`.")
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())


@pytest.mark.parametrize("card", ["[]", "{}", '{"linear_probe_top1": "90"}'])
def test_a_teacher_card_without_its_probe_number_is_refused(tmp_path, card):
    (tmp_path / "ssl-fmnist.json").write_text(card)
    with pytest.raises(ValueError, match="is not a teacher card: it needs a number under"):
        teachers.teacher_card("ssl-fmnist", folder=tmp_path)
