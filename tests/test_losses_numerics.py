"""Every loss at any scale and in low precision: a loss that ignores the scale
of its features gives the same value for features scaled by 1e-20 or 1e20, and every loss and its
gradients stay finite in float16 and bfloat16, on random, constant-row and repeated-sample
batches."""

import pytest
import torch

from egalib import losses
from egalib.graph import embedding_graphs, pearson
from tests.helpers import finite_with_finite_grads

B, D, C = 8, 16, 4
TARGET = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])


def batch(dtype: torch.dtype, case: str = "random", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    fs, ft = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    ls, lt = torch.randn(B, C, generator=g), torch.randn(B, C, generator=g)
    if case == "constant_rows":
        fs[:3], ft[2:5] = 3.0, -2.0
    elif case == "repeated_samples":
        fs, ft = fs[:1].repeat(B, 1), ft[:1].repeat(B, 1)
    elif case == "zero":
        fs, ft = torch.zeros_like(fs), torch.zeros_like(ft)
    return [x.to(dtype) for x in (fs, ft, ls, lt)]


# name: the loss as a function of (features_s, features_t, logits_s, logits_t)
LOSSES = {
    "ega": lambda fs, ft, ls, lt: losses.ega(fs, ft),
    "kd": lambda fs, ft, ls, lt: losses.kd(ls, lt),
    "fitnet": lambda fs, ft, ls, lt: losses.fitnet(fs, ft),
    "sp": lambda fs, ft, ls, lt: losses.sp(fs, ft),
    "pkt": lambda fs, ft, ls, lt: losses.pkt(fs, ft),
    "rkd": lambda fs, ft, ls, lt: losses.rkd(fs, ft),
    "nce": lambda fs, ft, ls, lt: losses.nce(fs, ft, TARGET),
    "ccl": lambda fs, ft, ls, lt: losses.ccl(fs, ft, TARGET, ls, lt),
    "irg": lambda fs, ft, ls, lt: losses.irg(fs, ft, ls, lt),
}
# every loss whose features enter only through their directions or ratios of distances: all but
# FitNet's MSE, KD (logits only) and CRD (a linear layer with a bias before its normalisation)
SCALE_FREE = ("ega", "sp", "pkt", "rkd", "nce", "ccl", "irg")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-20, 1e20])
@pytest.mark.parametrize("name", SCALE_FREE)
def test_scale_free_losses_ignore_the_scale_of_their_features(name, scale, dtype):
    for case in ("random", "constant_rows"):
        fs, ft, ls, lt = batch(dtype, case)
        at_one = LOSSES[name](fs, ft, ls, lt)
        scaled = LOSSES[name](fs * scale, ft * scale, ls, lt)
        assert torch.isfinite(scaled)
        torch.testing.assert_close(scaled, at_one, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scale", [1e-20, 1e20])
def test_losses_that_depend_on_scale_stay_finite_at_any_scale(scale):
    """KD (logits), FitNet (an MSE) and CRD (a linear layer with a bias) are not scale-free, but
    at features or logits of 1e-20 or 1e20 their values and gradients are finite in float32."""
    fs, ft, ls, lt = [x * scale for x in batch(torch.float32)]
    crd = losses.CRD(D, D, torch.arange(64) % 4, embed_dim=8, num_negatives=16)
    for name, loss in {
        "kd": lambda a, b: losses.kd(a, b),
        "crd": lambda a, b: crd(a, b, torch.arange(B), torch.Generator().manual_seed(0)),
    }.items():
        a, b = (ls, lt) if name == "kd" else (fs, ft)
        a = a.clone().requires_grad_()
        assert finite_with_finite_grads(loss(a, b), a), name
    for side in crd.embed(fs, ft):  # unit rows, not rows that overflowed to 0
        torch.testing.assert_close(torch.linalg.vector_norm(side, dim=1), torch.ones(B))
    if scale < 1:  # an MSE of 1e20-sized differences overflows float32 by definition
        a = fs.clone().requires_grad_()
        assert finite_with_finite_grads(losses.fitnet(a, ft), a)


@pytest.mark.parametrize("scale", [1e-20, 1e20])
def test_graphs_ignore_the_scale_of_embeddings_in_float32(scale):
    fs, ft, _, _ = batch(torch.float32)
    for at_one, scaled in zip(embedding_graphs(fs, ft), embedding_graphs(fs * scale, ft * scale)):
        torch.testing.assert_close(scaled, at_one, rtol=1e-5, atol=1e-6)


LOW = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", [*LOW, torch.float32])
@pytest.mark.parametrize("name", SCALE_FREE)
def test_scale_free_losses_are_finite_at_the_largest_features_their_dtype_holds(name, dtype):
    """Features up to the dtype's largest finite number: a difference of two of them would
    overflow, so each loss scales its features before it subtracts or squares them."""
    fs, ft, ls, lt = batch(dtype)
    top = torch.finfo(dtype).max
    fs, ft = [
        (x.float() / x.float().abs().amax() * top).clamp(-top, top).to(dtype) for x in (fs, ft)
    ]
    inputs = [x.requires_grad_() for x in (fs, ft, ls, lt)]
    loss = LOSSES[name](*inputs)
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    assert torch.isfinite(loss.float()).item(), loss
    assert all(g is None or torch.isfinite(g.float()).all() for g in grads)
    at_one = LOSSES[name](
        fs.detach().float() / top, ft.detach().float() / top, ls.float(), lt.float()
    )
    torch.testing.assert_close(loss.float(), at_one, rtol=0.05, atol=0)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("case", ["random", "constant_rows", "repeated_samples", "zero"])
@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_is_finite_in_low_precision(name, case, dtype):
    inputs = [x.requires_grad_() for x in batch(dtype, case)]
    loss = LOSSES[name](*inputs)
    assert loss.dim() == 0
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    assert torch.isfinite(loss.float()).item(), loss
    assert all(g is None or torch.isfinite(g.float()).all() for g in grads)


@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_values_follow_float32(dtype):
    """Finite is not enough: in half precision a loss is near its float32 value, relatively
    (PKT's value is 0.005 here: an absolute tolerance would pass a loss of 0)."""
    for name in LOSSES:
        inputs = batch(dtype)
        low = LOSSES[name](*inputs).float()
        full = LOSSES[name](*[x.float() for x in inputs])
        torch.testing.assert_close(low, full, rtol=0.05, atol=0, msg=name)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("case", ["random", "constant_rows", "repeated_samples"])
def test_crd_is_finite_under_low_precision_autocast(dtype, case):
    """CRD's module (embeddings, banks) stays float32, as in training; its features and linear
    layers run in `dtype` under autocast."""
    crd = losses.CRD(D, D, torch.arange(64) % 4, embed_dim=8, num_negatives=16)
    fs, ft, _, _ = batch(dtype, case)
    fs.requires_grad_()
    with torch.autocast("cpu", dtype):
        loss = crd(fs, ft, torch.arange(B), torch.Generator().manual_seed(0))
    assert loss.dtype == torch.float32
    assert finite_with_finite_grads(loss, fs, *crd.parameters())
    assert torch.isfinite(crd.memory_s).all() and torch.isfinite(crd.memory_t).all()


def test_pearson_of_constant_rows_is_zero_in_float16():
    x = torch.full((3, D), 7.0, dtype=torch.float16)
    assert torch.equal(pearson(x), torch.zeros(3, 3, dtype=torch.float16))


@pytest.mark.parametrize("name", LOSSES)
def test_nan_in_is_nan_out(name):
    """The scale guards keep finite input finite; they never turn a NaN into a number."""
    g = torch.Generator().manual_seed(0)
    fs, ft = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    ls, lt = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    if name == "kd":
        ls[3, 5] = float("nan")  # KD reads the logits only
    else:
        fs[3, 5] = float("nan")
    assert torch.isnan(LOSSES[name](fs, ft, ls, lt))


def test_nan_in_crd_is_nan_out():
    crd = losses.CRD(16, 16, torch.arange(40) % 4, embed_dim=8, num_negatives=8)
    fs, ft = torch.randn(8, 16), torch.randn(8, 16)
    fs[0, 0] = float("nan")
    assert torch.isnan(crd(fs, ft, torch.arange(8)))
