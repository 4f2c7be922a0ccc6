"""Numbers that say what a t-SNE picture shows: how well an embedding separates the classes.

All measures here work in the geometry EGA aligns: each embedding row is centred over its
features and scaled to unit length (`pearson_normalise`), so the Euclidean distance between two
rows is a monotone function of their Pearson correlation (|a - b|^2 = 2 - 2 corr(a, b)).
"""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from .config import check_numbers, check_whole
from .graph import centre_and_normalise


def as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def embeddings_and_labels(x, labels) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) embeddings with one label each, refused in one sentence otherwise."""
    x, labels = as_numpy(x), as_numpy(labels)
    if x.ndim != 2 or labels.ndim != 1 or len(x) != len(labels):
        raise ValueError(
            f"embeddings must be (N, D) with one label each, got shapes {x.shape} and "
            f"{labels.shape}; give the embeddings and labels of one run's images."
        )
    return x, labels


def measurable(x: np.ndarray, labels: np.ndarray) -> bool:
    """Whether a class-separation measure means something here: finite embeddings (a diverged
    run's are not) of two classes or more. Where it does not, the measure is NaN."""
    return bool(np.isfinite(x).all()) and len(np.unique(labels)) >= 2


def pearson_normalise(x) -> np.ndarray:
    """Rows centred over their features and scaled to unit norm (a constant row stays 0)."""
    return centre_and_normalise(torch.as_tensor(as_numpy(x), dtype=torch.float64)).numpy()


def balanced_subsample(labels, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `max_points` samples, as equal per class as the data allow."""
    check_whole("max_points", max_points, 1)
    labels = as_numpy(labels)
    if max_points >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    taken = {c: 0 for c in classes}
    left = max_points
    while left > 0:  # deal out one round per class until the budget is spent
        open_classes = [c for c in classes if taken[c] < len(pools[c])]
        share = max(1, left // len(open_classes))
        for c in open_classes:
            extra = min(share, len(pools[c]) - taken[c], left)
            taken[c] += extra
            left -= extra
            if left == 0:
                break
    return np.sort(np.concatenate([pools[c][: taken[c]] for c in classes]))


def knn_accuracy(x, labels, k: int = 5, seed: int = 0, normalise: bool = True) -> float:
    """k-NN top-1 (%): fitted on one random half of the samples, scored on the other half."""
    from sklearn.neighbors import KNeighborsClassifier

    check_whole("k", k, 1)
    x, labels = embeddings_and_labels(x, labels)
    if not measurable(x, labels):
        return float("nan")
    x = pearson_normalise(x) if normalise else x
    order = np.random.default_rng(seed).permutation(len(labels))
    fit_on, score_on = order[: len(order) // 2], order[len(order) // 2 :]
    if k > len(fit_on):  # not clamped: the score is labelled with this k
        raise ValueError(
            f"k must be at most {len(fit_on)}, the samples the classifier is fitted on (half of "
            f"the {len(labels)}), got {k}; give a smaller k."
        )
    knn = KNeighborsClassifier(n_neighbors=k).fit(x[fit_on], labels[fit_on])
    return 100.0 * float(knn.score(x[score_on], labels[score_on]))


def silhouette(x, labels, max_points: int = 2000, seed: int = 0, normalise: bool = True) -> float:
    """Silhouette score of the classes (-1 to 1; higher: tighter, better separated classes),
    on a class-balanced subsample of at most `max_points` samples."""
    from sklearn.metrics import silhouette_score

    x, labels = embeddings_and_labels(x, labels)
    keep = balanced_subsample(labels, max_points, seed)
    if not measurable(x[keep], labels[keep]) or len(np.unique(labels[keep])) >= len(keep):
        return float("nan")  # also where every point is a class of its own: no cluster to score
    x = pearson_normalise(x[keep]) if normalise else x[keep]
    return float(silhouette_score(x, labels[keep]))


def embedding_scores(
    embeddings: dict, labels, k: int = 5, seed: int = 0, max_points: int = 2000
) -> pd.DataFrame:
    """One row per named embedding: its silhouette score and its k-NN accuracy (%)."""
    rows = {
        name: {
            "silhouette": silhouette(x, labels, max_points, seed),
            f"{k}-NN top-1 (%)": knn_accuracy(x, labels, k, seed),
        }
        for name, x in embeddings.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def tsne_2d(x, perplexity: float = 30.0, seed: int = 0, normalise: bool = True) -> np.ndarray:
    """A 2-d t-SNE map of the rows of x; the perplexity is clamped below the number of points."""
    from sklearn.manifold import TSNE

    check_numbers(SimpleNamespace(perplexity=perplexity), {}, above_zero=["perplexity"])
    x = as_numpy(x)
    if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
        raise ValueError(
            f"t-SNE maps two or more finite (N, D) embeddings, got shape {x.shape}"
            f"{'' if np.isfinite(x).all() else ' holding NaN or inf (a diverged run?)'}; give "
            "the embeddings of a run that trained."
        )
    x = pearson_normalise(x) if normalise else x
    perplexity = float(min(perplexity, max(1.0, (len(x) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(x.astype(np.float32))


def final_numbers(histories: dict) -> pd.DataFrame:
    """The last epoch of each run's history: train and validation error (%), their gap, the best
    validation error, and EGA's node and edge terms on the validation split; `histories` maps
    name -> DataFrame."""
    rows = {}
    for name, h in histories.items():
        last = h.iloc[-1]
        rows[name] = {
            "epochs": int(last["epoch"]),
            "train error (%)": 100 * (1 - last["train_acc"]),
            "validation error (%)": 100 * (1 - last["val_acc"]),
            "gap (validation - train, %)": 100 * (last["train_acc"] - last["val_acc"]),
            "best validation error (%)": 100 * (1 - h["val_acc"].max()),
            "validation L_node": last.get("val_node", float("nan")),
            "validation L_edge": last.get("val_edge", float("nan")),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def node_matrix_stats(xs, xt, labels, batch_size: int, seed: int = 0) -> dict[str, float]:
    """What the node term meets, on random test batches of `batch_size`: the mean diagonal of
    N_st (each image with its own teacher embedding), the mean off-diagonal N_st over pairs of
    the same class and over pairs of other classes, and the mean number of same-class partners
    per image per batch (the other images of its class in its batch)."""
    xs, xt, labels = (torch.as_tensor(as_numpy(v)) for v in (xs, xt, labels))
    check_whole("batch_size", batch_size, 2)
    if xs.dim() != 2 or xt.dim() != 2 or xs.shape[1] != xt.shape[1]:
        raise ValueError(
            f"xs and xt must be (N, D) embeddings of one width, got shapes {tuple(xs.shape)} and "
            f"{tuple(xt.shape)}; give the student's and the teacher head's embeddings of a run."
        )
    if not len(xs) == len(xt) == len(labels):
        raise ValueError(
            f"xs, xt and labels must have a row per image, got {len(xs)}, {len(xt)} and "
            f"{len(labels)} rows; give the three arrays of one run's embeddings."
        )
    if batch_size > len(labels):  # no whole batch: every statistic would be NaN
        raise ValueError(
            f"batch_size must be at most the {len(labels)} images, got {batch_size}; give a "
            "smaller batch."
        )
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    batches = order[: len(order) // batch_size * batch_size].view(-1, batch_size)
    node = centre_and_normalise(xt[batches].double()) @ centre_and_normalise(
        xs[batches].double()
    ).transpose(1, 2)
    same = labels[batches][:, :, None] == labels[batches][:, None, :]
    own = torch.eye(batch_size, dtype=torch.bool).expand_as(same)
    return {
        "node_diagonal": node[own].mean().item(),
        "node_same_class": node[same & ~own].mean().item(),
        "node_other_class": node[~same].mean().item(),
        "partners": (same & ~own).sum(-1).double().mean().item(),
    }
