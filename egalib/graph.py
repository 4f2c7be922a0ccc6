"""Embedding graphs: nodes are a batch's embeddings, edges their Pearson correlations.

For a batch of teacher embeddings X_t and student embeddings X_s (both B x D):

    E_t  = pearson(X_t, X_t)   teacher graph, B x B, ones on the diagonal
    E_s  = pearson(X_s, X_s)   student graph
    N_st = pearson(X_t, X_s)   node matrix: rows teacher, columns student

EGA aligns E_s with E_t (edges) and pushes N_st towards the identity (nodes); docs/method.md.
"""

from typing import NamedTuple

import torch

from . import check


def pearson(a: torch.Tensor, b: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation between every row of `a` (Ba x D) and every row of `b` (Bb x D).

    Each row is centred by its own mean over the D features, and the result is the cosine of
    the centred rows. A constant row has no direction: its correlations are 0 (finite, not NaN).
    So are those of a row whose centred norm, after the row is divided by its largest absolute
    entry (`unit_rows`), is below `eps`: its spread is below eps times its own scale.
    """
    b = a if b is None else b
    check.features(a, b)
    a_unit = centre_and_normalise(a, eps)
    return a_unit @ (a_unit if b is a else centre_and_normalise(b, eps)).T


def centre_and_normalise(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Rows (the last axis) centred over the features and scaled to unit length (a row of norm
    below eps, a constant one, becomes 0): the dot product of two such rows is their Pearson
    correlation."""
    return unit_rows(x, centre=True, eps=eps)


def max_scaled(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """x divided by its largest absolute entry (per slice along `dim`, or overall), detached: a
    loss that ignores the scale of x keeps its value and gradient, and squares neither overflow
    (float32 features of 1e20, float16 ones of a few hundred) nor underflow (1e-20)."""
    top = x.detach().abs().amax(**({} if dim is None else {"dim": dim, "keepdim": True}))
    return x / _nonzero(top, torch.finfo(x.dtype).tiny)


def unit_rows(x: torch.Tensor, centre: bool = False, eps: float = 0.0) -> torch.Tensor:
    """Rows (the last axis), `max_scaled` first, centred if asked, divided by their norm; a row
    whose norm is below eps or the dtype's smallest normal number (a float16 eps of 1e-8 rounds
    to 0) becomes 0."""
    x = max_scaled(x, dim=-1)
    if centre:
        x = x - x.mean(dim=-1, keepdim=True)
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    floor = max(eps, torch.finfo(x.dtype).tiny)
    return torch.where(norm < floor, 0, x) / _nonzero(norm, floor)  # NaN stays NaN


def _nonzero(scale: torch.Tensor, floor: float) -> torch.Tensor:
    """The scale where it is not below `floor`, else 1: dividing by it keeps a zero row at 0 with
    a finite gradient (dividing by a tiny floor would give gradients of 1e38). A NaN scale
    stays NaN, so that NaN input gives NaN, never a number."""
    return torch.where(scale < floor, torch.ones_like(scale), scale)


class Graphs(NamedTuple):
    teacher: torch.Tensor  # E_t
    student: torch.Tensor  # E_s
    node: torch.Tensor  # N_st


def embedding_graphs(xs: torch.Tensor, xt: torch.Tensor, eps: float = 1e-8) -> Graphs:
    """The three B x B matrices of EGA from student (xs) and teacher (xt) embeddings. Each side
    is centred and normalised once and shared by its two graphs: the same values as three
    `pearson` calls, with half the normalisation work in the training step."""
    check.features(xt, xs)
    zt, zs = centre_and_normalise(xt, eps), centre_and_normalise(xs, eps)
    return Graphs(teacher=zt @ zt.T, student=zs @ zs.T, node=zt @ zs.T)
