"""Shape checks of the losses' inputs: a wrong call fails with one sentence that names the loss,
what it got and what to pass instead, rather than deep inside torch."""

import torch


def pair(
    name: str, s: torch.Tensor, t: torch.Tensor, min_batch: int = 1, same_shape: bool = False
) -> None:
    if s.dim() != 2 or t.dim() != 2:
        raise ValueError(
            f"{name} expects 2-d (batch, features) tensors, got shapes {tuple(s.shape)} and "
            f"{tuple(t.shape)}; flatten or pool the features first."
        )
    if s.shape[0] != t.shape[0]:
        raise ValueError(
            f"{name} needs as many student rows as teacher rows, got {s.shape[0]} and "
            f"{t.shape[0]}; pass the two views of the same batch."
        )
    if s.shape[0] < min_batch:
        raise ValueError(
            f"{name} needs a batch of at least {min_batch} samples, got {s.shape[0]}; "
            f"use batch_size >= {min_batch} (a graph relates the samples of a batch)."
        )
    if same_shape and s.shape != t.shape:
        raise ValueError(
            f"{name} needs student and teacher embeddings of the same shape, got "
            f"{tuple(s.shape)} and {tuple(t.shape)}; project both to one embedding size."
        )


def rows(name: str, what: str, x: torch.Tensor, batch: int, dims: int) -> None:
    if x.dim() != dims or x.shape[0] != batch:
        raise ValueError(
            f"{name} expects {what} as a {dims}-d tensor with one row per sample ({batch} rows), "
            f"got shape {tuple(x.shape)}; pass the {what} of the same batch."
        )


def logits(name: str, logits_s: torch.Tensor, logits_t: torch.Tensor, batch: int) -> None:
    rows(name, "logits_s", logits_s, batch, dims=2)
    rows(name, "logits_t", logits_t, batch, dims=2)
    if logits_s.shape != logits_t.shape:
        raise ValueError(
            f"{name} needs student and teacher logits over the same classes, got shapes "
            f"{tuple(logits_s.shape)} and {tuple(logits_t.shape)}; give both one output per class."
        )


def features(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"pearson expects two 2-d tensors with the same number of features, got shapes "
            f"{tuple(a.shape)} and {tuple(b.shape)}; project both to one embedding size first."
        )
