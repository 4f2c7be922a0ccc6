"""Tests for the baseline losses: fitnet, sp, pkt, rkd, nce, ccl, irg and the CRD module.

Each loss is checked against a float64 numpy reference of its formula written here with loops
(independent of egalib), against a small case worked out by hand, and on degenerate batches.
"""

import io
import math
import re

import numpy as np
import pytest
import torch
from helpers import finite_with_finite_grads

from egalib import losses
from egalib.graph import pearson

DTYPES = [torch.float32, torch.float64]
BATCHES = [2, 8, 64]
E = math.e


def tolerance(dtype):
    return {"rtol": 2e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-11}


def as_tensor(value, dtype):
    return torch.tensor(value, dtype=dtype)


def random_inputs(batch, dtype, seed, dim_s=12, dim_t=12, classes=5):
    """Student/teacher embeddings, labels and logits, plus float64 numpy copies of each."""
    rng = np.random.default_rng(seed)
    fs = as_tensor(rng.normal(size=(batch, dim_s)), dtype)
    ft = as_tensor(rng.normal(size=(batch, dim_t)) * 3 + 1, dtype)
    zs = as_tensor(rng.normal(size=(batch, classes)) * 2, dtype)
    zt = as_tensor(rng.normal(size=(batch, classes)) * 2, dtype)
    target = torch.tensor(rng.integers(0, 3, size=batch))
    numpy = [x.double().numpy() for x in (fs, ft, zs, zt)] + [target.numpy()]
    return (fs, ft, zs, zt, target), numpy


def check(got, want, dtype):
    assert got.dim() == 0 and got.dtype == dtype
    torch.testing.assert_close(got, as_tensor(want, dtype), **tolerance(dtype))


# --- float64 references, loops only ---------------------------------------------------------------


def unit(v):
    n = np.linalg.norm(v)
    return v / n if n > 0 else np.zeros_like(v)


def distance_matrix(x):
    b = len(x)
    return np.array([[np.linalg.norm(x[i] - x[j]) for j in range(b)] for i in range(b)])


def smooth_l1(a, b):
    d = np.abs(a - b)
    return np.where(d < 1, 0.5 * d**2, d - 0.5).mean()


def kl(p, q):
    return sum(p[c] * math.log(p[c] / q[c]) for c in range(len(p)))


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def fitnet_ref(s, t):
    rows, cols = s.shape
    return sum((s[i, j] - t[i, j]) ** 2 for i in range(rows) for j in range(cols)) / s.size


def sp_ref(s, t):
    b = len(s)

    def gram(x):
        return np.array([unit([x[i] @ x[j] for j in range(b)]) for i in range(b)])

    gs, gt = gram(s), gram(t)
    return sum((gt[i, j] - gs[i, j]) ** 2 for i in range(b) for j in range(b)) / b**2


def pkt_ref(s, t, eps=1e-7):
    def probabilities(x):
        k = np.array([[(np.dot(unit(a), unit(b)) + 1) / 2 for b in x] for a in x])
        return k / k.sum(axis=1, keepdims=True)

    ps, pt = probabilities(s), probabilities(t)
    return np.mean(pt * np.log((pt + eps) / (ps + eps)))


def rkd_ref(s, t, distance_weight=25.0, angle_weight=50.0):
    def scaled_distances(x):
        d = distance_matrix(x)
        positive = d[d > 0]
        return d / positive.mean() if len(positive) else d

    def angles(x):  # [j, i, k]: cosine at vertex j between x_i - x_j and x_k - x_j
        out = []
        for j in range(len(x)):
            e = np.array([unit(x[i] - x[j]) for i in range(len(x))])
            out.append(e @ e.T)
        return np.array(out)

    distance = smooth_l1(scaled_distances(s), scaled_distances(t))
    return distance_weight * distance + angle_weight * smooth_l1(angles(s), angles(t))


def nce_ref(s, t, target, tau=0.1):
    b = len(s)
    total = 0.0
    for i in range(b):
        p = softmax(np.array([np.dot(unit(s[i]), unit(t[j])) / tau for j in range(b)]))
        same = [-math.log(p[j]) for j in range(b) if target[j] == target[i]]
        # 1 - p_j as the sum of the other p_k: 1 minus a p near 1 loses every digit
        rest = [sum(p[k] for k in range(b) if k != j) for j in range(b)]
        other = [-math.log(rest[j]) for j in range(b) if target[j] != target[i]]
        total += np.mean(same) + (np.mean(other) if other else 0.0)
    return total / b


def ccl_ref(s, t, target, zs, zt, tau=0.1, T=1.0):
    sym = 0.0
    for i in range(len(zs)):
        ps, pt = softmax(zs[i] / T), softmax(zt[i] / T)
        sym += 0.5 * (kl(pt, ps) + kl(ps, pt))
    return nce_ref(s, t, target, tau) + sym / len(zs)


def irg_ref(s, t, zs, zt, vertex_weight=1.0, edge_weight=1.0):
    ds, dt = distance_matrix(s), distance_matrix(t)
    ds, dt = ds / ds.max(), dt / dt.max()
    vertex = np.mean((zs - zt) ** 2)
    return vertex_weight * vertex + edge_weight * np.mean((ds - dt) ** 2)


def crd_ref(crd, fs, ft, index, negatives, z=None):
    """CRD's loss (and the updated banks) from the module's weights, banks and drawn negatives."""

    def numpy(x):
        return x.detach().double().numpy().copy()  # a copy: the reference updates its banks

    n, k = len(crd.memory_s), negatives.shape[1]

    def embed(x, layer):
        return np.array([unit(r) for r in numpy(x) @ numpy(layer.weight).T + numpy(layer.bias)])

    s, t = embed(fs, crd.embed_s), embed(ft, crd.embed_t)
    mem_s, mem_t = numpy(crd.memory_s), numpy(crd.memory_t)
    slots = np.concatenate([index.numpy()[:, None], negatives.numpy()], axis=1)
    loss, zs = 0.0, []
    for side, (anchor, bank) in enumerate([(s, mem_t), (t, mem_s)]):
        scores = np.array(
            [
                [math.exp(np.dot(bank[m], anchor[i]) / crd.tau) for m in slots[i]]
                for i in range(len(anchor))
            ]
        )
        zs.append(scores.mean() * n if z is None else z[side])
        p = scores / zs[-1]
        c = k / n
        for i in range(len(anchor)):
            loss -= math.log(p[i, 0] / (p[i, 0] + c + 1e-7)) / len(anchor)
            loss -= sum(math.log(c / (p[i, m] + c + 1e-7)) for m in range(1, k + 1)) / len(anchor)
    for bank, new in ((mem_s, s), (mem_t, t)):
        for row, i in enumerate(index.numpy()):
            bank[i] = unit(crd.momentum * bank[i] + (1 - crd.momentum) * new[row])
    return loss, zs, mem_s, mem_t


# --- the losses as (fs, ft)-only callables, for the shared property tests ------------------------

TARGET = torch.tensor([0, 1, 0, 2, 1, 1, 2, 0])


def logits_for(x):
    return x[:, :5] * 0.5, x[:, 5:10].detach() + 1


LOSSES = {
    "fitnet": lambda fs, ft: losses.fitnet(fs, ft),
    "sp": lambda fs, ft: losses.sp(fs, ft),
    "pkt": lambda fs, ft: losses.pkt(fs, ft),
    "rkd": lambda fs, ft: losses.rkd(fs, ft),
    "nce": lambda fs, ft: losses.nce(fs, ft, TARGET[: len(fs)]),
    "ccl": lambda fs, ft: losses.ccl(fs, ft, TARGET[: len(fs)], *logits_for(fs)),
    "irg": lambda fs, ft: losses.irg(fs, ft, *logits_for(fs)),
}
RELATIONAL = ["sp", "pkt", "rkd", "nce", "ccl", "irg"]


# --- against the references on random inputs ------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_fitnet_matches_reference(batch, dtype):
    (fs, ft, *_), (s, t, *_) = random_inputs(batch, dtype, seed=batch)
    check(losses.fitnet(fs, ft), fitnet_ref(s, t), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_sp_matches_reference(batch, dtype):
    (fs, ft, *_), (s, t, *_) = random_inputs(batch, dtype, seed=batch, dim_t=20)
    check(losses.sp(fs, ft), sp_ref(s, t), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_pkt_matches_reference(batch, dtype):
    (fs, ft, *_), (s, t, *_) = random_inputs(batch, dtype, seed=batch, dim_t=20)
    check(losses.pkt(fs, ft), pkt_ref(s, t), dtype)
    check(losses.pkt(fs, ft, eps=1e-3), pkt_ref(s, t, eps=1e-3), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_rkd_matches_reference(batch, dtype):
    (fs, ft, *_), (s, t, *_) = random_inputs(batch, dtype, seed=batch, dim_t=20)
    check(losses.rkd(fs, ft), rkd_ref(s, t), dtype)
    check(losses.rkd(fs, ft, 2.0, 0.0), rkd_ref(s, t, 2.0, 0.0), dtype)
    check(losses.rkd(fs, ft, 0.0, 3.0), rkd_ref(s, t, 0.0, 3.0), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_nce_matches_reference(batch, dtype):
    (fs, ft, _, _, y), (s, t, _, _, y_np) = random_inputs(batch, dtype, seed=batch)
    check(losses.nce(fs, ft, y), nce_ref(s, t, y_np), dtype)
    check(losses.nce(fs, ft, y, tau=0.5), nce_ref(s, t, y_np, tau=0.5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_ccl_matches_reference(batch, dtype):
    (fs, ft, zs, zt, y), (s, t, zs_np, zt_np, y_np) = random_inputs(batch, dtype, seed=batch)
    check(losses.ccl(fs, ft, y, zs, zt), ccl_ref(s, t, y_np, zs_np, zt_np), dtype)
    check(
        losses.ccl(fs, ft, y, zs, zt, tau=0.3, T=2.0),
        ccl_ref(s, t, y_np, zs_np, zt_np, tau=0.3, T=2.0),
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_irg_matches_reference(batch, dtype):
    (fs, ft, zs, zt, _), (s, t, zs_np, zt_np, _) = random_inputs(batch, dtype, seed=batch, dim_t=7)
    check(losses.irg(fs, ft, zs, zt), irg_ref(s, t, zs_np, zt_np), dtype)
    check(losses.irg(fs, ft, zs, zt, 0.5, 3.0), irg_ref(s, t, zs_np, zt_np, 0.5, 3.0), dtype)


# --- small cases worked out by hand ---------------------------------------------------------------


def test_fitnet_hand_case():
    # Differences 0, 2, 0, 1: (0 + 4 + 0 + 1) / 4 entries.
    fs = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    ft = torch.tensor([[1.0, 0.0], [3.0, 3.0]])
    assert losses.fitnet(fs, ft).item() == pytest.approx(5 / 4)


def test_sp_hand_case():
    # G^s = I (unit rows already); G^t = all ones, rows (1, 1) / sqrt 2. The diagonal differs by
    # 1 - 1/sqrt 2, the rest by 1/sqrt 2: (2 (1 - 1/sqrt 2)^2 + 2 / 2) / 4 = 1 - 1/sqrt 2.
    fs = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    ft = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    assert losses.sp(fs, ft).item() == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-12)
    assert losses.sp(fs, fs * 7).item() == 0  # scale-free: the same graph


def test_pkt_hand_case():
    # Student rows orthogonal: kernel (cos + 1) / 2 = [[1, 1/2], [1/2, 1]], rows / (3/2) give
    # [[2/3, 1/3], [1/3, 2/3]]. Teacher rows parallel: kernel all 1, rows [1/2, 1/2].
    # Each row: 1/2 log((1/2)/(2/3)) + 1/2 log((1/2)/(1/3)) = 1/2 log(9/8); two rows over 4 entries.
    fs = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    ft = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    # eps must be > 0; 1e-300 is below half an ulp of every ratio here, so it changes none
    assert losses.pkt(fs, ft, eps=1e-300).item() == pytest.approx(math.log(9 / 8) / 4, rel=1e-12)


def test_rkd_hand_case_distance():
    # 1-d points 0, 1, 2 (student) and 0, 1, 3 (teacher). Positive distances (each twice):
    # student 1, 1, 2 (mean 4/3) -> 3/4, 3/4, 3/2; teacher 1, 2, 3 (mean 2) -> 1/2, 1, 3/2.
    # Differences 1/4, -1/4, 0, each twice: smoothL1 = 4 * (1/2)(1/16) = 1/8 over 9 entries.
    # All unit directions agree (same order on the line), so the angle term is 0.
    fs = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    ft = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    assert losses.rkd(fs, ft).item() == pytest.approx(25 / 72, rel=1e-12)


def test_rkd_hand_case_angle():
    # Teacher: collinear points (0,0), (1,0), (2,0). Student: right triangle (0,0), (1,0), (0,1).
    # Cosines at each vertex between its two edges (teacher vs student):
    #   vertex 0: 1 vs 0             -> |d| = 1,              smoothL1 1/2
    #   vertex 1: -1 vs 1/sqrt(2)    -> |d| = 1 + 1/sqrt(2),  smoothL1 1/2 + 1/sqrt(2)
    #   vertex 2: 1 vs 1/sqrt(2)     -> |d| = 1 - 1/sqrt(2),  smoothL1 3/4 - 1/sqrt(2)
    # each twice (j, k and k, j); all other of the 27 entries agree. Sum 2 * 7/4, mean 7/54.
    fs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    ft = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    got = losses.rkd(fs, ft, distance_weight=0.0, angle_weight=1.0)
    assert got.item() == pytest.approx(7 / 54, rel=1e-12)


def test_nce_hand_case():
    # s = t = I (2 x 2), tau 1: each row's p = (e, 1) / (e + 1).
    # Labels differ: -log(e / (e + 1)) - log(1 - 1 / (e + 1)) = 2 log(1 + 1/e) per row.
    # Labels equal: mean of -log(e / (e + 1)) and -log(1 / (e + 1)) = log(e + 1) - 1/2 per row,
    # and no other-label term.
    x = torch.eye(2, dtype=torch.float64)
    differ = losses.nce(x, x.clone(), torch.tensor([0, 1]), tau=1.0)
    assert differ.item() == pytest.approx(2 * math.log(1 + 1 / E), rel=1e-12)
    same = losses.nce(x, x.clone(), torch.tensor([3, 3]), tau=1.0)
    assert same.item() == pytest.approx(math.log(E + 1) - 0.5, rel=1e-12)


def test_ccl_hand_case():
    # The nce case with different labels, plus logits log(p): p_s = (1/4, 1/4, 1/2) and
    # p_t = (1/2, 1/4, 1/4) in both rows. KL(t||s) = 1/2 log 2 - 1/4 log 2 = 1/4 log 2, and
    # KL(s||t) = -1/4 log 2 + 1/2 log 2 = 1/4 log 2; half their sum: 1/4 log 2 per row.
    x = torch.eye(2, dtype=torch.float64)
    zs = torch.tensor([[0.25, 0.25, 0.5]] * 2, dtype=torch.float64).log()
    zt = torch.tensor([[0.5, 0.25, 0.25]] * 2, dtype=torch.float64).log()
    got = losses.ccl(x, x.clone(), torch.tensor([0, 1]), zs, zt, tau=1.0)
    assert got.item() == pytest.approx(2 * math.log(1 + 1 / E) + math.log(2) / 4, rel=1e-12)


def test_irg_hand_case():
    # Logit differences 0, 1, 0, 1, 0, 0: vertex = 2/6. Points 0, 1, 3 (student) -> distances / 3:
    # 1/3, 1, 2/3; points 0, 1, 2 (teacher) -> distances / 2: 1/2, 1, 1/2. Differences -1/6, 0,
    # 1/6, each twice: edge = 4/36 over 9 entries = 1/81.
    fs = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    ft = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    zs = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    zt = torch.tensor([[1.0, 1.0], [3.0, 3.0], [0.0, 0.0]], dtype=torch.float64)
    assert losses.irg(fs, ft, zs, zt).item() == pytest.approx(1 / 3 + 1 / 81, rel=1e-12)
    assert losses.irg(fs, ft, zs, zt, 2.0, 9.0).item() == pytest.approx(2 / 3 + 1 / 9, rel=1e-12)


# --- properties shared by the functional losses ---------------------------------------------------


def degenerate_pair(case, dtype):
    torch.manual_seed(1)
    fs, ft = torch.randn(2, 8, 12, dtype=dtype)
    if case == "constant_rows":
        fs = torch.arange(8, dtype=dtype)[:, None].repeat(1, 12)
        ft = torch.full((8, 12), -2.0, dtype=dtype)
    elif case == "zero_rows":
        fs, ft = torch.zeros_like(fs), torch.zeros_like(ft)
    elif case == "identical_samples":
        fs, ft = fs[:1].repeat(8, 1), ft[:1].repeat(8, 1)
    elif case == "some_repeated_samples":
        fs[3], ft[3], fs[5], ft[5] = fs[0], ft[0], fs[0], ft[0]
    elif case == "student_equals_teacher":
        fs = ft.clone()
    elif case == "batch_of_two":
        fs, ft = fs[:2], ft[:2]
    return fs.requires_grad_(), ft.requires_grad_()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "case",
    [
        "random",
        "constant_rows",
        "zero_rows",
        "identical_samples",
        "some_repeated_samples",
        "student_equals_teacher",
        "batch_of_two",
    ],
)
@pytest.mark.parametrize("name", list(LOSSES))
def test_finite_value_and_gradients(name, case, dtype):
    fs, ft = degenerate_pair(case, dtype)
    loss = LOSSES[name](fs, ft)
    assert loss.dim() == 0 and loss.dtype == dtype
    assert finite_with_finite_grads(loss, fs, ft)


@pytest.mark.parametrize("name", RELATIONAL)
def test_batch_of_one_raises(name):
    with pytest.raises(ValueError, match=r"batch of at least 2 samples, got 1"):
        LOSSES[name](torch.randn(1, 12), torch.randn(1, 12))


def test_rkd_is_invariant_to_scaling_the_embeddings():
    (fs, ft, *_), _ = random_inputs(8, torch.float64, seed=11, dim_t=20)
    base = losses.rkd(fs, ft)
    assert base.item() > 0.1
    for factor in (1e-3, 0.5, 7.0, 1e3):
        torch.testing.assert_close(losses.rkd(factor * fs, factor * ft), base)
    torch.testing.assert_close(losses.rkd(5.0 * fs, ft), base)  # each side is normalised alone
    assert not torch.isclose(losses.rkd(fs * torch.linspace(0.2, 3, 12), ft), base)


def test_pkt_is_zero_only_when_student_matches_teacher():
    (fs, ft, *_), _ = random_inputs(8, torch.float32, seed=12)
    assert losses.pkt(fs, fs.clone()).item() == 0.0
    assert losses.pkt(fs, 3.0 * fs).item() == pytest.approx(0.0, abs=1e-7)  # scale-free
    assert losses.pkt(fs, ft).item() > 1e-4


def test_nce_prefers_aligned_embeddings():
    torch.manual_seed(2)
    t = torch.randn(8, 12, dtype=torch.float64)
    y = torch.arange(8)
    assert losses.nce(t.clone(), t, y) < losses.nce(torch.randn(8, 12).double(), t, y)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nce_stays_finite_when_p_rounds_to_one(dtype):
    # Each student row matches the teacher row of the other class: with tau 0.01, p of that
    # other-label j is 1 - e^-200, which rounds to 1, so 1 - p is 0 without the floor.
    t = torch.eye(2, dtype=dtype, requires_grad=True)
    s = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=dtype, requires_grad=True)
    loss = losses.nce(s, t, torch.tensor([0, 1]), tau=0.01)
    assert finite_with_finite_grads(loss, s, t)
    assert loss.item() > 50  # -log of the floor (about 87 in float32, 708 in float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tau", [0.1, 0.05])
def test_nce_where_p_is_near_one_matches_the_float64_formula(dtype, tau):
    """Each student row points at the other class's teacher row: p of that j is 1 - 1e-9 at
    tau 0.1, and 1 - p, computed as 1 minus p, rounded to 0 in float32 (107.2 for 39.8)."""
    t = np.array([[1.0, 0.0], [-1.0, 0.0]])
    s = np.array([[-1.0, 0.1], [1.0, 0.1]])
    y = torch.tensor([0, 1])
    fs = torch.tensor(s, dtype=dtype, requires_grad=True)
    loss = losses.nce(fs, torch.tensor(t, dtype=dtype), y, tau=tau)
    check(loss, nce_ref(s, t, y.numpy(), tau), dtype)
    (grad,) = torch.autograd.grad(loss, fs)
    wide = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    (want,) = torch.autograd.grad(losses.nce(wide, torch.tensor(t), y, tau=tau), wide)
    torch.testing.assert_close(grad.double(), want, rtol=1e-4, atol=1e-6)


ZERO_WIDTH = {
    "ega": lambda z: losses.ega(z, z),
    "fitnet": lambda z: losses.fitnet(z, z),
    "pkt": lambda z: losses.pkt(z, z),
    "kd": lambda z: losses.kd(z, z),
    "ccl": lambda z: losses.ccl(torch.randn(4, 3), torch.randn(4, 3), TARGET[:4], z, z),
    "pearson": lambda z: pearson(z),
}


@pytest.mark.parametrize("name", ZERO_WIDTH)
def test_rows_without_features_or_classes_are_one_sentence(name):
    """Once an IndexError deep in torch, or a silent number: NaN (fitnet), 0 (kd), 5.96 (ccl)."""
    with pytest.raises(
        ValueError, match=r"(one column|classes|one or more).*; (pass|give|project)"
    ):
        ZERO_WIDTH[name](torch.randn(4, 0))


def test_inputs_that_are_not_tensors_are_one_sentence():
    a = torch.randn(4, 3)
    with pytest.raises(ValueError, match="ega expects .* got ndarray and ndarray; cast both"):
        losses.ega(a.numpy(), a.numpy())
    with pytest.raises(ValueError, match="target as a 1-d tensor .* got list; pass"):
        losses.nce(a, a, [0, 1, 0, 1])


def test_shape_errors():
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        losses.fitnet(a, torch.randn(4, 7))
    with pytest.raises(ValueError, match="as many student rows as teacher rows"):
        losses.pkt(a, torch.randn(5, 6))
    with pytest.raises(ValueError, match="target as a 1-d tensor with one row per sample"):
        losses.nce(a, b, torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="target"):
        losses.nce(a, b, torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="logits_s"):
        losses.irg(a, b, torch.randn(3, 3), z)
    with pytest.raises(ValueError, match="logits over the same classes"):
        losses.ccl(a, b, torch.tensor([0, 1, 0, 1]), z, torch.randn(4, 4))


def _crd_at_tau_0(s, t, y, z):
    return losses.CRD(4, 4, y, embed_dim=4, num_negatives=2, tau=0.0)(s, t, torch.arange(4))


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda s, t, y, z: losses.kd(z, z, 0.0), "kd's T must be a number > 0, got 0.0"),
        (lambda s, t, y, z: losses.kd(z, z, math.nan), "kd's T must be a number > 0, got nan"),
        (lambda s, t, y, z: losses.nce(s, t, y, tau=0.0), "nce's tau must be a number > 0"),
        (lambda s, t, y, z: losses.ccl(s, t, y, z, z, T=0.0), "ccl's T must be a number > 0"),
        (lambda s, t, y, z: losses.ega(s, t, node_weight=-1.0), "ega's node_weight must be"),
        (lambda s, t, y, z: losses.rkd(s, t, angle_weight=-1.0), "rkd's angle_weight must be"),
        (lambda s, t, y, z: losses.irg(s, t, z, z, vertex_weight=-1.0), "irg's vertex_weight"),
        (lambda s, t, y, z: losses.CRD(4, 4, y, embed_dim=0), "CRD's embed_dim must be a whole"),
        (lambda s, t, y, z: losses.CRD(4, 4, y, num_negatives=0), "CRD's num_negatives must be"),
        (lambda s, t, y, z: losses.pkt(s, t, eps=-1.0), "pkt's eps must be a number > 0"),
        (_crd_at_tau_0, "CRD's tau must be a number > 0, got 0.0"),
    ],
)
def test_an_option_outside_its_formula_s_range_is_one_sentence_not_nan(call, words):
    """A temperature of 0 divides by 0: the loss was NaN for finite input."""
    s, t, y, z = torch.randn(4, 4), torch.randn(4, 4), torch.tensor([0, 1, 0, 1]), torch.randn(4, 3)
    with pytest.raises(ValueError, match=re.escape(words) + ".*give such a value"):
        call(s, t, y, z)


@pytest.mark.parametrize("name", ["ega", "fitnet", "pkt", "rkd", "sp"])
@pytest.mark.parametrize(
    "dtypes", [(torch.float32, torch.float64), (torch.int64, torch.int64), (torch.bool,) * 2]
)
def test_tensors_of_two_dtypes_or_not_float_are_one_sentence(name, dtypes):
    s, t = (torch.ones(4, 4).to(dtype) for dtype in dtypes)
    expected = f"{name} expects student and teacher tensors of one float dtype, got {s.dtype} and "
    with pytest.raises(ValueError, match=re.escape(f"{expected}{t.dtype}; cast both")):
        getattr(losses, name)(s, t)


@pytest.mark.parametrize("name", ["irg", "ccl"])
@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float64), (torch.int64, torch.int64)])
def test_logits_of_two_dtypes_or_not_float_are_one_sentence(name, dtypes):
    """irg's logits were never checked: int64 failed inside torch's mse_loss."""
    zs, zt = (torch.ones(4, 3).to(dtype) for dtype in dtypes)
    a, y = torch.randn(4, 3), TARGET[:4]
    call = {"irg": lambda: losses.irg(a, a, zs, zt), "ccl": lambda: losses.ccl(a, a, y, zs, zt)}
    expected = f"{name} expects student and teacher logits of one float dtype, got {zs.dtype} and "
    with pytest.raises(ValueError, match=re.escape(f"{expected}{zt.dtype}; cast both")):
        call[name]()


# --- CRD ------------------------------------------------------------------------------------------

N_TRAIN = 128
LABELS = torch.tensor(np.random.default_rng(0).permutation(np.arange(N_TRAIN) % 4))


def make_crd(dtype=torch.float32, labels=LABELS, **kwargs):
    torch.manual_seed(0)
    options = {"embed_dim": 8, "num_negatives": 16} | kwargs
    return losses.CRD(12, 10, labels, **options).to(dtype)


def crd_batch(batch, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    fs = torch.randn(batch, 12, generator=g, dtype=dtype)
    ft = torch.randn(batch, 10, generator=g, dtype=dtype) + 1
    index = torch.randperm(N_TRAIN, generator=g)[:batch]
    return fs, ft, index


def seeded(seed=7):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_crd_matches_reference(batch, dtype):
    crd = make_crd(dtype)
    for step in range(2):  # the first call estimates Z, the second reuses it
        fs, ft, index = crd_batch(batch, dtype, seed=step)
        negatives = crd.sample_negatives(index, seeded(step))
        z_before = None if step == 0 else crd.z.tolist()
        want, z_want, mem_s, mem_t = crd_ref(crd, fs, ft, index, negatives, z_before)
        check(crd(fs, ft, index, seeded(step)), want, dtype)
        torch.testing.assert_close(crd.z, as_tensor(z_want, dtype), **tolerance(dtype))
        torch.testing.assert_close(crd.memory_s, as_tensor(mem_s, dtype), **tolerance(dtype))
        torch.testing.assert_close(crd.memory_t, as_tensor(mem_t, dtype), **tolerance(dtype))


def test_crd_hand_case():
    # Two samples of two classes: K = 1, the negative of each is the other. Identity embeddings
    # and banks, tau 1: positive score e, negative 1. Z = N * mean = 2 (e + 1) / 2 = e + 1, so
    # P_pos = e / (e + 1), P_neg = 1 / (e + 1); noise c = K / N = 1/2. Per side and row:
    # -log(P_pos / (P_pos + 1/2)) - log((1/2) / (P_neg + 1/2)) = log((3e + 1)(e + 3) / (2e(e + 1))),
    # both rows alike and two sides: twice that (eps = 1e-7 is below the tolerance).
    crd = losses.CRD(2, 2, torch.tensor([0, 1]), embed_dim=2, tau=1.0).double()
    with torch.no_grad():
        for layer in (crd.embed_s, crd.embed_t):
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
        crd.memory_s.copy_(torch.eye(2))
        crd.memory_t.copy_(torch.eye(2))
    x = torch.eye(2, dtype=torch.float64)
    loss = crd(x, x.clone(), torch.tensor([0, 1]))
    assert crd.num_negatives == 1
    want = 2 * math.log((3 * E + 1) * (E + 3) / (2 * E * (E + 1)))
    assert loss.item() == pytest.approx(want, rel=1e-6)
    torch.testing.assert_close(crd.z, torch.full((2,), E + 1, dtype=torch.float64))


def test_crd_memory_changes_only_at_the_batch_indices():
    crd = make_crd()
    fs, ft, index = crd_batch(8, torch.float32)
    before = {name: getattr(crd, name).clone() for name in ("memory_s", "memory_t")}
    crd(fs, ft, index, seeded())
    touched = torch.zeros(N_TRAIN, dtype=torch.bool)
    touched[index] = True
    for name, old in before.items():
        changed = (getattr(crd, name) != old).any(dim=1)
        assert torch.equal(changed, touched), name
        torch.testing.assert_close(getattr(crd, name)[index].norm(dim=1), torch.ones(8))


def test_crd_negatives_come_from_other_classes_uniformly():
    # Uneven classes with scattered ids: sizes 10, 20, 30, so K = min(16384, 60 - 30) = 30.
    labels = torch.tensor([7] * 10 + [2] * 20 + [11] * 30)[torch.randperm(60, generator=seeded())]
    crd = losses.CRD(4, 4, labels, embed_dim=4)
    assert crd.num_negatives == 30
    assert make_crd(num_negatives=16).num_negatives == 16
    negatives = crd.sample_negatives(torch.arange(60), seeded())
    assert negatives.shape == (60, 30)
    assert (labels[negatives] != labels[:, None]).all()
    for anchor in (int((labels == c).nonzero()[0]) for c in (7, 2, 11)):
        draws = crd.sample_negatives(torch.full((400,), anchor), seeded()).flatten()
        others = (labels != labels[anchor]).nonzero().flatten()
        counts = torch.bincount(draws, minlength=60)
        assert (counts[labels == labels[anchor]] == 0).all()
        expected = draws.numel() / len(others)
        assert ((counts[others] - expected).abs() < 0.3 * expected).all()  # every one, evenly


def test_crd_sampler_is_reproducible_with_a_generator():
    crd = make_crd()
    index = torch.arange(10)
    first = crd.sample_negatives(index, seeded(3))
    assert torch.equal(first, crd.sample_negatives(index, seeded(3)))
    assert not torch.equal(first, crd.sample_negatives(index, seeded(4)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["random", "constant_rows", "identical_samples", "batch_of_two"])
def test_crd_loss_and_gradients_finite(case, dtype):
    crd = make_crd(dtype)
    fs, ft, index = crd_batch(8, dtype)
    if case == "constant_rows":
        fs, ft = torch.full_like(fs, 3.0), torch.zeros_like(ft)
    elif case == "identical_samples":
        fs, ft = fs[:1].repeat(8, 1), ft[:1].repeat(8, 1)
    elif case == "batch_of_two":
        fs, ft, index = fs[:2], ft[:2], index[:2]
    fs.requires_grad_()
    ft.requires_grad_()
    loss = crd(fs, ft, index, seeded())
    assert loss.dim() == 0 and loss.dtype == dtype
    assert finite_with_finite_grads(loss, fs, ft, *crd.parameters())
    assert torch.isfinite(crd.memory_s).all() and torch.isfinite(crd.memory_t).all()


def test_crd_state_dict_round_trip():
    crd = make_crd()
    fs, ft, index = crd_batch(8, torch.float32)
    crd(fs, ft, index, seeded())
    buffer = io.BytesIO()
    torch.save(crd.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert {"memory_s", "memory_t", "z", "embed_s.weight", "embed_t.bias"} <= set(state)
    assert state["memory_s"].shape == (N_TRAIN, 8) and (state["z"] > 0).all()
    torch.manual_seed(123)  # a fresh module starts from other weights and banks
    restored = losses.CRD(12, 10, LABELS, embed_dim=8, num_negatives=16)
    assert not torch.equal(restored.memory_s, crd.memory_s)
    restored.load_state_dict(state)
    for name, value in crd.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name
    fs, ft, index = crd_batch(8, torch.float32, seed=1)
    assert torch.equal(crd(fs, ft, index, seeded()), restored(fs, ft, index, seeded()))


def test_crd_errors():
    crd = make_crd()
    fs, ft, index = crd_batch(4, torch.float32)
    with pytest.raises(ValueError, match=r"in \[0, 128\)"):
        crd(fs, ft, torch.tensor([0, 1, 2, 128]))
    with pytest.raises(ValueError, match=r"in \[0, 128\)"):
        crd(fs, ft, torch.tensor([0, -1, 2, 3]))
    with pytest.raises(ValueError, match="int64"):
        crd(fs, ft, index.float())
    with pytest.raises(ValueError, match="index as a 1-d tensor with one row per sample"):
        crd(fs, ft, index[:3])
    with pytest.raises(ValueError, match="as many student rows as teacher rows"):
        crd(fs, ft[:3], index)
    with pytest.raises(ValueError, match=r"batch of at least 2 samples, got 1"):
        crd(fs[:1], ft[:1], index[:1])
    with pytest.raises(ValueError, match="feature"):
        crd(ft, fs, index)
    with pytest.raises(ValueError, match="CRD's layers hold torch.float32, got features of torch"):
        crd(fs.double(), ft.double(), index)
    with pytest.raises(ValueError, match="1-d integer tensor"):
        losses.CRD(12, 10, LABELS.view(2, -1))
    with pytest.raises(ValueError, match="1-d integer tensor"):
        losses.CRD(12, 10, LABELS.float())
    with pytest.raises(ValueError, match="two or more"):
        losses.CRD(12, 10, torch.zeros(10, dtype=torch.long))
