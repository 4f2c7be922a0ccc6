"""Checks of the losses' inputs (shapes, dtypes, and options in the range their formulas fix): a
wrong call fails with one sentence that names the loss, what it got and what to pass instead,
rather than deep inside torch or as a NaN."""

import torch

# the ranges that the losses' formulas fix for their options, by option name
OPTION_RANGES = {
    "tau": ("a number > 0", lambda v: v > 0),
    "T": ("a number > 0", lambda v: v > 0),
    "eps": ("a number > 0", lambda v: v > 0),
    "embed_dim": ("a whole number >= 1", lambda v: v >= 1),
    "num_negatives": ("a whole number >= 1", lambda v: v >= 1),
    "momentum": ("a number in [0, 1)", lambda v: 0 <= v < 1),
}


def option_in_range(key: str, value: float) -> tuple[bool, str]:
    """Whether a loss option's value is in the range its formula fixes (weights: >= 0)."""
    if key in OPTION_RANGES:
        expected, holds = OPTION_RANGES[key]
    elif key.endswith("_weight"):
        expected, holds = "a number >= 0", lambda v: v >= 0
    else:
        return True, ""
    return holds(value), expected


def options(name: str, **values) -> None:
    """Each of a loss's options in the range its formula fixes (`option_in_range`): a
    temperature of 0 would make the loss NaN."""
    for key, value in values.items():
        in_range, expected = option_in_range(key, value)
        if not in_range:
            raise ValueError(
                f"{name}'s {key} must be {expected}, got {value!r}; give such a value."
            )


def one_float_dtype(name: str, what: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if not (a.is_floating_point() and a.dtype == b.dtype):
        raise ValueError(
            f"{name} expects {what} of one float dtype, got {a.dtype} and {b.dtype}; cast both, "
            "e.g. with .float()."
        )


def pair(
    name: str, s: torch.Tensor, t: torch.Tensor, min_batch=1, same_shape=False, **values
) -> None:
    """A loss's student and teacher tensors, and the option `values` it takes per call."""
    options(name, **values)
    one_float_dtype(name, "student and teacher tensors", s, t)
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
    one_float_dtype("pearson", "two tensors", a, b)
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"pearson expects two 2-d tensors with the same number of features, got shapes "
            f"{tuple(a.shape)} and {tuple(b.shape)}; project both to one embedding size first."
        )
