"""Tests for graph.pearson and the EGA and KD losses.

Each loss is checked against a case worked out by hand and against a float64 numpy reference
written here with plain loops, independent of egalib.
"""

import math

import numpy as np
import pytest
import torch
from helpers import finite_with_finite_grads

from egalib import graph, losses

SIZES = [(b, d) for b in (2, 8, 64) for d in (16, 256)]
DTYPES = [torch.float32, torch.float64]


def tolerance(dtype):
    return {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-11}


def random_pair(batch, dim, dtype, seed=0):
    """Two random (batch, dim) tensors in `dtype`, and the same values as float64 numpy arrays."""
    rng = np.random.default_rng(seed)
    tensors = [torch.tensor(rng.normal(size=(batch, dim)) * 2 + 0.5, dtype=dtype) for _ in "st"]
    return tensors, [t.double().numpy() for t in tensors]


# --- float64 references, loops only ---------------------------------------------------------------


def unit_centred_ref(x, eps):
    """x centred, at unit norm; 0 where its centred norm is below eps times its largest entry."""
    u, top = x - x.mean(), np.abs(x).max()
    if top == 0 or np.linalg.norm(u) / top < eps:
        return np.zeros_like(x)
    return u / np.linalg.norm(u)


def pearson_ref(a, b, eps=1e-8):
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            out[i, j] = np.dot(unit_centred_ref(a[i], eps), unit_centred_ref(b[j], eps))
    return out


def frobenius_ref(m):
    return math.sqrt(sum(m[i, j] ** 2 for i in range(m.shape[0]) for j in range(m.shape[1])))


def ega_terms_ref(xs, xt):
    node = frobenius_ref(pearson_ref(xt, xs) - np.eye(len(xs)))
    edge = frobenius_ref(pearson_ref(xt, xt) - pearson_ref(xs, xs))
    return node, edge


def softmax_ref(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def kd_ref(zs, zt, T):
    total = 0.0
    for i in range(len(zs)):
        ps, pt = softmax_ref(zs[i] / T), softmax_ref(zt[i] / T)
        total += sum(pt[c] * math.log(pt[c] / ps[c]) for c in range(len(pt)))
    return T * T * total / len(zs)


# --- cases worked out by hand ---------------------------------------------------------------------

# Teacher rows centre to (-1, 0, 1), (1, 0, -1), (-1, 1, 0), all of norm sqrt(2).
HAND_T = [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 3.0, 2.0]]
# Student rows centre to (1, 0, -1), (-1, 0, 1) (norm sqrt(2)) and (-1, -1, 2) (norm sqrt(6)).
HAND_S = [[2.0, 1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 1.0, 4.0]]
R3 = math.sqrt(3) / 2  # (1 + 0 + 2) / (sqrt(2) * sqrt(6)) = 3 / sqrt(12)
# Dot products of the centred rows divided by the norms:
HAND_E_T = [[1.0, -1.0, 0.5], [-1.0, 1.0, -0.5], [0.5, -0.5, 1.0]]
HAND_E_S = [[1.0, -1.0, -R3], [-1.0, 1.0, R3], [-R3, R3, 1.0]]
HAND_N_ST = [[-1.0, 1.0, R3], [1.0, -1.0, -R3], [-0.5, 0.5, 0.0]]  # rows teacher, columns student
# ||N_st - I||_F^2 = (4 + 1 + 3/4) + (1 + 4 + 3/4) + (1/4 + 1/4 + 1) = 13.
HAND_NODE = math.sqrt(13)
# E_t - E_s is 0 except +-(1/2 + sqrt(3)/2) at the four off-diagonal entries of row/column 2:
# ||.||_F^2 = 4 * ((1 + sqrt(3)) / 2)^2 = (1 + sqrt(3))^2.
HAND_EDGE = 1 + math.sqrt(3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pearson_hand_case(dtype):
    t = torch.tensor(HAND_T, dtype=dtype)
    s = torch.tensor(HAND_S, dtype=dtype)
    expected = {(t, None): HAND_E_T, (s, None): HAND_E_S, (t, s): HAND_N_ST}
    for (a, b), matrix in expected.items():
        got = graph.pearson(a, b)
        assert got.dtype == dtype
        torch.testing.assert_close(got, torch.tensor(matrix, dtype=dtype), **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_ega_hand_case_uses_plain_frobenius_norms(dtype):
    s = torch.tensor(HAND_S, dtype=dtype)
    t = torch.tensor(HAND_T, dtype=dtype)
    node, edge = losses.ega_terms(s, t)
    # sqrt(13), not 13 (squared) nor sqrt(13 / 9) (averaged over the 9 entries).
    assert node.item() == pytest.approx(HAND_NODE, rel=1e-6)
    assert edge.item() == pytest.approx(HAND_EDGE, rel=1e-6)
    total = losses.ega(s, t)
    assert total.dim() == 0 and total.dtype == dtype
    assert total.item() == pytest.approx(0.8 * HAND_NODE + 0.24 * HAND_EDGE, rel=1e-6)
    weighted = losses.ega(s, t, node_weight=2.0, edge_weight=0.5)
    assert weighted.item() == pytest.approx(2.0 * HAND_NODE + 0.5 * HAND_EDGE, rel=1e-6)


def test_kd_hand_case():
    # Logits T * log(p) give softmax(logits / T) = p exactly. Per row, KL(p_t || p_s):
    #   (1/2, 1/4, 1/4) || (1/4, 1/4, 1/2): 1/2 log 2 + 0 + 1/4 log(1/2) = 1/4 log 2
    #   uniform || uniform (student logits shifted by 5): 0
    #   (1/4, 1/2, 1/4) || (1/2, 1/4, 1/4): 1/4 log(1/2) + 1/2 log 2 + 0 = 1/4 log 2
    # batch mean = log(2) / 6, times T^2 = 16: 8/3 log 2.
    T = 4.0
    p_t = [[1 / 2, 1 / 4, 1 / 4], [1 / 3, 1 / 3, 1 / 3], [1 / 4, 1 / 2, 1 / 4]]
    p_s = [[1 / 4, 1 / 4, 1 / 2], [1 / 3, 1 / 3, 1 / 3], [1 / 2, 1 / 4, 1 / 4]]
    zt = T * torch.tensor(p_t, dtype=torch.float64).log()
    zs = T * torch.tensor(p_s, dtype=torch.float64).log()
    zs[1] += 5.0
    assert losses.kd(zs, zt, T=T).item() == pytest.approx(8 / 3 * math.log(2), rel=1e-12)
    assert losses.kd(zs, zt, T=1.0).item() == pytest.approx(
        kd_ref(zs.numpy(), zt.numpy(), 1.0), rel=1e-12
    )


# --- against the references on random inputs ------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,dim", SIZES)
def test_pearson_matches_reference(batch, dim, dtype):
    (a, b), (a_np, b_np) = random_pair(batch, dim, dtype)
    b = b[: max(1, batch // 2)]  # a rectangular case: Ba != Bb
    b_np = b_np[: len(b)]
    torch.testing.assert_close(
        graph.pearson(a, b), torch.tensor(pearson_ref(a_np, b_np), dtype=dtype), **tolerance(dtype)
    )
    torch.testing.assert_close(
        graph.pearson(a), torch.tensor(pearson_ref(a_np, a_np), dtype=dtype), **tolerance(dtype)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,dim", SIZES)
def test_ega_matches_reference(batch, dim, dtype):
    (xs, xt), (xs_np, xt_np) = random_pair(batch, dim, dtype, seed=batch + dim)
    node_ref, edge_ref = ega_terms_ref(xs_np, xt_np)
    node, edge = losses.ega_terms(xs, xt)
    total = losses.ega(xs, xt, node_weight=0.7, edge_weight=1.3)
    for got, want in ((node, node_ref), (edge, edge_ref), (total, 0.7 * node_ref + 1.3 * edge_ref)):
        assert got.dim() == 0 and got.dtype == dtype
        torch.testing.assert_close(got, torch.tensor(want, dtype=dtype), **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [2, 8, 64])
@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kd_matches_reference(batch, T, dtype):
    (zs, zt), (zs_np, zt_np) = random_pair(batch, 10, dtype, seed=batch)
    got = losses.kd(zs, zt, T=T)
    assert got.dim() == 0 and got.dtype == dtype
    torch.testing.assert_close(
        got, torch.tensor(kd_ref(zs_np, zt_np, T), dtype=dtype), **tolerance(dtype)
    )


# --- properties -----------------------------------------------------------------------------------


def test_pearson_is_symmetric_with_unit_diagonal():
    (a, _), _ = random_pair(16, 32, torch.float64, seed=3)
    e = graph.pearson(a)
    torch.testing.assert_close(e, e.T, rtol=0, atol=1e-15)
    torch.testing.assert_close(e.diagonal(), torch.ones(16, dtype=torch.float64))
    assert (e.abs() <= 1 + 1e-12).all()


@pytest.mark.parametrize(
    "rows, eps",
    [
        ([[3.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]], 1.0),  # cut off: spread 0.87 of scale
        ([[3.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]], 0.5),
        ([[2e-10, 0.0, 0.0, 0.0], [0.0, -2e-10, 0.0, 0.0]], 1e-8),  # tiny, but not flat
        ([[1.0, 1.0 + 1e-10, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0]], 1e-8),  # flat to 1e-10 of scale
    ],
)
def test_pearson_eps_cuts_off_rows_flat_relative_to_their_own_scale(rows, eps):
    """docs/method.md: eps is a cut-off on the centred norm of the max-scaled row, not a floor
    on the raw norm."""
    x = torch.tensor(rows, dtype=torch.float64)
    want = pearson_ref(x.numpy(), x.numpy(), eps)
    torch.testing.assert_close(graph.pearson(x, eps=eps), torch.from_numpy(want))


def test_pearson_constant_rows_are_zero_not_nan():
    a = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        a[1] = 3.0
        a[3] = 0.0
    e = graph.pearson(a)
    assert torch.isfinite(e).all()
    for row in (1, 3):
        assert (e[row] == 0).all() and (e[:, row] == 0).all()
    torch.testing.assert_close(e[[0, 2, 4]][:, [0, 2, 4]].diagonal(), torch.ones(3).double())
    (grad,) = torch.autograd.grad(e.sum(), a)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_graphs_are_the_three_pearson_matrices(dtype):
    (xs, xt), (xs_np, xt_np) = random_pair(12, 20, dtype, seed=6)
    got = graph.embedding_graphs(xs, xt)
    for matrix, (a, b) in zip(got, ((xt_np, xt_np), (xs_np, xs_np), (xt_np, xs_np))):
        torch.testing.assert_close(
            matrix, torch.tensor(pearson_ref(a, b), dtype=dtype), **tolerance(dtype)
        )
    with pytest.raises(ValueError, match="same number of features"):
        graph.embedding_graphs(torch.randn(4, 8), torch.randn(4, 9))


@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float64), (torch.int64, torch.int64)])
def test_pearson_of_two_dtypes_or_of_integers_is_one_sentence(dtypes):
    a, b = (torch.ones(4, 8).to(dtype) for dtype in dtypes)
    expected = f"pearson expects two tensors of one float dtype, got {a.dtype} and {b.dtype}; cast"
    with pytest.raises(ValueError, match=expected):
        graph.pearson(a, b)
    with pytest.raises(ValueError, match=expected):
        graph.embedding_graphs(b, a)  # student, then teacher: checked teacher first


def test_ega_is_zero_when_student_equals_uncorrelated_teacher():
    # Zero-mean, mutually orthogonal unit rows: pearson(X) = I, so both terms vanish.
    rng = np.random.default_rng(4)
    m = rng.normal(size=(32, 6))
    q, _ = np.linalg.qr(m - m.mean(axis=0))
    x = torch.tensor(q.T)
    torch.testing.assert_close(graph.pearson(x), torch.eye(6, dtype=torch.float64))
    assert losses.ega(x, x.clone()).item() == pytest.approx(0.0, abs=1e-12)


def test_ega_edge_term_is_zero_when_student_equals_teacher():
    (x, _), (x_np, _) = random_pair(8, 16, torch.float64, seed=5)
    node, edge = losses.ega_terms(x, x.clone())
    assert edge.item() == 0.0
    # N_st is then E itself, so the node term is ||E - I||_F, which is not 0 for random rows.
    assert node.item() == pytest.approx(frobenius_ref(pearson_ref(x_np, x_np) - np.eye(8)))
    assert node.item() > 0.1


def test_kd_is_zero_at_equal_logits_and_positive_otherwise():
    z = torch.randn(6, 10, dtype=torch.float64)
    assert losses.kd(z, z.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert losses.kd(z + 7.0, z).item() == pytest.approx(0.0, abs=1e-12)  # shift-invariant
    assert losses.kd(torch.randn(6, 10, dtype=torch.float64), z).item() > 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "case",
    [
        "random",
        "student_equals_teacher",
        "constant_rows",
        "zero_rows",
        "identical_samples",
        "batch_of_two",
    ],
)
def test_ega_gradients_finite(case, dtype):
    torch.manual_seed(0)
    xs, xt = torch.randn(2, 6, 16, dtype=dtype)
    if case == "student_equals_teacher":
        xs = xt.clone()
    elif case == "constant_rows":
        xs[2], xt[2], xs[4] = 1.5, -2.0, 7.0
    elif case == "zero_rows":
        xs, xt = torch.zeros_like(xs), torch.zeros_like(xt)
    elif case == "identical_samples":
        xs, xt = xs[:1].repeat(6, 1), xt[:1].repeat(6, 1)
    elif case == "batch_of_two":
        xs, xt = xs[:2], xt[:2]
    xs.requires_grad_()
    xt.requires_grad_()
    assert finite_with_finite_grads(losses.ega(xs, xt), xs, xt)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kd_gradients_finite(dtype):
    zs = torch.randn(4, 10, dtype=dtype, requires_grad=True)
    zt = torch.randn(4, 10, dtype=dtype, requires_grad=True)
    assert finite_with_finite_grads(losses.kd(zs, zt), zs, zt)
    big = (zs.detach() * 1e3).requires_grad_()
    assert finite_with_finite_grads(losses.kd(big, zt, T=1.0), big, zt)
    same = zt.detach().clone().requires_grad_()
    assert finite_with_finite_grads(losses.kd(same, zt), same, zt)


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [losses.ega, losses.ega_terms])
def test_ega_batch_of_one_raises(fn):
    with pytest.raises(ValueError, match=r"batch of at least 2 samples, got 1"):
        fn(torch.randn(1, 8), torch.randn(1, 8))


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="same shape"):
        losses.ega(torch.randn(4, 8), torch.randn(4, 9))
    with pytest.raises(ValueError, match="as many student rows as teacher rows"):
        losses.ega(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="2-d"):
        losses.ega(torch.randn(4, 8, 2), torch.randn(4, 8, 2))
    with pytest.raises(ValueError, match="same number of features"):
        graph.pearson(torch.randn(4, 8), torch.randn(4, 9))
    with pytest.raises(ValueError, match="kd needs student and teacher logits over the same cl"):
        losses.kd(torch.randn(4, 10), torch.randn(4, 11))
    with pytest.raises(ValueError, match="as many student rows as teacher rows"):
        losses.kd(torch.randn(4, 10), torch.randn(3, 10))
