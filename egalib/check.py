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
    kinds = [x.dtype if isinstance(x, torch.Tensor) else type(x).__name__ for x in (a, b)]
    if not (kinds[0] == kinds[1] and isinstance(a, torch.Tensor) and a.is_floating_point()):
        raise ValueError(
            f"{name} expects {what} of one float dtype, got {kinds[0]} and {kinds[1]}; cast "
            "both, e.g. with torch.as_tensor(x).float()."
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
    if min(s.shape[1], t.shape[1]) < 1:
        raise ValueError(
            f"{name} needs at least one column (a feature or a class) per row, got shapes "
            f"{tuple(s.shape)} and {tuple(t.shape)}; pass the outputs of a network that has some."
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
    if not isinstance(x, torch.Tensor) or x.dim() != dims or x.shape[0] != batch:
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"{name} expects {what} as a {dims}-d tensor with one row per sample ({batch} rows), "
            f"got {got}; pass the {what} of the same batch."
        )


def logits(name: str, logits_s: torch.Tensor, logits_t: torch.Tensor, batch: int) -> None:
    one_float_dtype(name, "student and teacher logits", logits_s, logits_t)
    rows(name, "logits_s", logits_s, batch, dims=2)
    rows(name, "logits_t", logits_t, batch, dims=2)
    if logits_s.shape != logits_t.shape or logits_s.shape[1] < 1:
        raise ValueError(
            f"{name} needs student and teacher logits over the same classes, got shapes "
            f"{tuple(logits_s.shape)} and {tuple(logits_t.shape)}; give both one output per class."
        )


def features(a: torch.Tensor, b: torch.Tensor) -> None:
    one_float_dtype("pearson", "two tensors", a, b)
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or a.shape[1] < 1:
        raise ValueError(
            f"pearson expects two 2-d tensors with the same number of features (one or more), "
            f"got shapes {tuple(a.shape)} and {tuple(b.shape)}; project both to one embedding "
            "size first."
        )


def crd_inputs(crd, fs: torch.Tensor, ft: torch.Tensor, index: torch.Tensor) -> None:
    """CRD's features of the sizes and dtype its layers were built for, and the index of each
    sample in the training set (read on the host unless `crd.check_index` is off)."""
    pair("CRD", fs, ft, min_batch=2)
    sizes, weights = (crd.embed_s.in_features, crd.embed_t.in_features), crd.embed_s.weight
    if (fs.shape[1], ft.shape[1]) != sizes:
        raise ValueError(
            f"CRD was built for student and teacher features of sizes {sizes}, got "
            f"{(fs.shape[1], ft.shape[1])}; build CRD with the feature sizes of your models."
        )
    if fs.dtype != weights.dtype and not torch.is_autocast_enabled(fs.device.type):
        raise ValueError(
            f"CRD's layers hold {weights.dtype}, got features of {fs.dtype}; cast the features "
            f"to it, or the module with .to({fs.dtype})."
        )
    rows("CRD", "index", index, fs.shape[0], dims=1)
    n = len(crd.sample_class)
    if index.dtype == torch.long and not crd.check_index:
        return
    if index.dtype != torch.long or bool(((index < 0) | (index >= n)).any()):
        raise ValueError(
            f"CRD expects index as int64 positions in the training set, in [0, {n}), got "
            f"dtype {index.dtype} with values {index.min().item()} to {index.max().item()}; "
            "have the dataset return each sample's position and pass it unchanged."
        )
