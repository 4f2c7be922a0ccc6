"""The CRD students: exact parameter counts, any input size and channels, finite gradients."""

import pytest
import torch
from torch import nn

from egalib import models

# name -> (feature_dim, parameters with a 100-way linear classifier), as in the CRD code base.
CRD_STUDENTS = {
    "shufflenetv1": (960, 949_258),
    "vgg13": (512, 9_462_180),
    "wrn-40-2": (128, 2_255_156),
}


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def backbones():
    """One 3-channel instance per student, built once: VGG13 alone has 9.4M parameters."""
    torch.manual_seed(0)
    return {name: models.student(name) for name in CRD_STUDENTS}


@pytest.mark.parametrize("name", sorted(CRD_STUDENTS))
def test_crd_parameter_counts_and_feature_dims(backbones, name):
    dim, count = CRD_STUDENTS[name]
    backbone = backbones[name]
    assert backbone.feature_dim == dim
    assert _params(backbone) + _params(nn.Linear(dim, 100)) == count


@pytest.mark.parametrize("name", sorted(CRD_STUDENTS))
@pytest.mark.parametrize("size", [32, 64, 96])
def test_any_input_size_gives_finite_features(backbones, name, size):
    backbone = backbones[name].eval()
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, size, size))
    assert out.shape == (2, CRD_STUDENTS[name][0])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(CRD_STUDENTS))
def test_one_channel_28x28_trains_with_finite_gradients(name):
    torch.manual_seed(0)
    backbone = models.student(name, in_channels=1).train()
    out = backbone(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, backbone.feature_dim) and torch.isfinite(out).all()
    out.square().mean().backward()
    for pname, p in backbone.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


def test_students_are_registered_backbones():
    for name in CRD_STUDENTS:
        assert name in models.STUDENTS
        assert isinstance(models.student(name, in_channels=1), models.Backbone)
    assert {"resnet8x4", "small-cnn"} <= set(models.STUDENTS)


@pytest.mark.parametrize("name", ["resnet8x4", "vgg13", "wrn-40-2"])
def test_students_start_as_their_crd_definitions_initialise_them(name):
    """He-normal convolutions (std sqrt(2 / fan_out), fan_out = out channels x kernel area),
    zero conv biases, batch norms at weight 1 and bias 0, read from a fresh network's weights;
    PyTorch's default (uniform, std 1 / sqrt(3 fan_in)) would be about 2.4x narrower."""
    torch.manual_seed(0)
    net = models.student(name)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        w = conv.weight
        fan_out = w.shape[0] * w.shape[2] * w.shape[3]
        if w.numel() >= 4096:  # enough values for the sample std to be within a few percent
            assert w.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.1)
            assert abs(w.mean().item()) < 0.1 * (2 / fan_out) ** 0.5
        if conv.bias is not None:
            assert not conv.bias.any()
    assert sum(c.weight.numel() >= 4096 for c in convs) >= 3
    for norm in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.all(norm.weight == 1) and not norm.bias.any()


def test_shufflenet_keeps_pytorchs_default_initialisation():
    torch.manual_seed(0)
    conv = next(m for m in models.student("shufflenetv1").modules() if isinstance(m, nn.Conv2d))
    fan_in = conv.weight[0].numel()
    assert conv.weight.abs().max().item() <= (1 / fan_in) ** 0.5 + 1e-6  # kaiming_uniform(a=5**.5)


@pytest.mark.parametrize("name", sorted(models.STUDENTS))
def test_folding_batch_norms_keeps_the_function_and_leaves_the_student_alone(name):
    """The evaluation passes run a copy with each conv's BatchNorm folded into it: the same
    features to float rounding, with BatchNorms that have learnt (not their initial 0 and 1)."""
    torch.manual_seed(0)
    student = models.student(name, in_channels=3).double().eval()
    for norm in (m for m in student.modules() if isinstance(m, nn.BatchNorm2d)):
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.5, 0.5)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    folded = models.students.fold_batch_norms(student)
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(folded(images), student(images), rtol=1e-9, atol=1e-9)
    norms = lambda m: sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert norms(folded) < norms(student)  # some were folded (not every one follows a conv)
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())
    assert norms(models.students.fold_batch_norms(models.student("small-cnn"))) == 0
