"""Figures the notebooks show."""

import io
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from .files import atomic_write
from .graph import Graphs

GRAPH_TITLES = {
    "teacher": "teacher graph $E_t$",
    "student": "student graph $E_s$",
    "node": "node matrix $N_{st}$",
}


def graph_heatmaps(
    graphs: Graphs, title: str = "", size: float = 4.0, labels: list[str] | None = None
) -> plt.Figure:
    """E_t, E_s and N_st side by side, on one colour scale from -1 to 1; with `labels` (one per
    image, a batch sorted by class) each class is named once, at the start of its block."""
    fig, axes = plt.subplots(1, 3, figsize=(3 * size + 2, size), constrained_layout=True)
    ticks = False
    if labels is not None:
        ticks = [name if i == 0 or name != labels[i - 1] else "" for i, name in enumerate(labels)]
    for ax, (key, matrix) in zip(axes, graphs._asdict().items()):
        sns.heatmap(
            matrix.detach().cpu().numpy(),
            ax=ax,
            vmin=-1,
            vmax=1,
            cmap="vlag",
            square=True,
            xticklabels=ticks,
            yticklabels=ticks if key == "teacher" else False,
            cbar=key == "node",
            cbar_kws={"label": "Pearson correlation"},
        )
        ax.set_title(GRAPH_TITLES[key])
        ax.tick_params(length=0, labelsize=8)
        ax.set_xlabel("image j" + (" (student)" if key == "node" else ""))
        ax.set_ylabel("image i" + (" (teacher)" if key == "node" else ""))
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """The figure in the format its suffix names, written whole or not at all."""
    path, image = Path(path), io.BytesIO()
    fig.savefig(image, format=path.suffix.lstrip(".") or None, dpi=110, bbox_inches="tight")
    atomic_write(path, image.getvalue())
    return path


# The poster's four students of the learning-dynamics figure, in its order.
DYNAMICS_LABELS = {
    "vanilla": "CE only",
    "ega-edge": "CE + edge term",
    "ega-node": "CE + node term",
    "ega": "CE + EGA (node + edge)",
}


def method_colors(methods) -> dict:
    """One fixed colour per method name, the same in every figure of a notebook."""
    palette = sns.color_palette("tab10", max(10, len(methods)))
    return {m: palette[i] for i, m in enumerate(methods)}


MAX_LEGEND = 20  # classes; more get no legend


def tsne_panels(points: dict, labels, class_names=None, size: float = 4.0, title: str = ""):
    """2-d maps side by side (one per named embedding), coloured by class, one class legend."""
    import numpy as np

    labels = np.asarray(labels)
    if not points or any(len(xy) != len(labels) for xy in points.values()):
        raise ValueError(
            f"tsne_panels draws one or more maps of one point per label, got {len(points)} maps "
            f"of {sorted({len(xy) for xy in points.values()})} points for {len(labels)} labels; "
            "give the maps and labels of the same images."
        )
    names = class_names or {}
    hue = [str(names[c]) if c in names else str(c) for c in labels.tolist()]
    order = list(dict.fromkeys(hue[i] for i in np.argsort(labels, kind="stable")))
    palette = dict(
        zip(order, sns.color_palette("tab10" if len(order) <= 10 else "husl", len(order)))
    )
    fig, axes = plt.subplots(
        1,
        len(points),
        figsize=(len(points) * size + 1.6, size),
        constrained_layout=True,
        squeeze=False,
    )
    for ax, (name, xy) in zip(axes[0], points.items()):
        sns.scatterplot(
            x=xy[:, 0],
            y=xy[:, 1],
            hue=hue,
            hue_order=order,
            palette=palette,
            s=10,
            linewidth=0,
            alpha=0.85,
            ax=ax,
            legend=ax is axes[0, -1],
        )
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(order) <= MAX_LEGEND:
        axes[0, -1].legend(
            title="class",
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
            markerscale=2,
            frameon=False,
        )
    else:  # a hundred classes make no readable legend
        axes[0, -1].get_legend().remove()
        title = f"{title} ({len(order)} classes, no legend)".strip()
    if title:
        fig.suptitle(title)
    return fig


def _lines(ax, histories: dict, value, ylabel: str, colors: dict, style: str = "-"):
    for method, history in histories.items():
        y = value(history)
        if y is None:
            continue
        label = DYNAMICS_LABELS.get(method, method)
        marker = "o" if len(history) < 15 else None  # a few epochs: show each point
        ax.plot(
            history["epoch"],
            y,
            style,
            marker=marker,
            markersize=4,
            color=colors[method],
            label=label,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def learning_dynamics(histories: dict, size: float = 4.0, title: str = "") -> plt.Figure:
    """Train error, validation error (1 - top-1, %) and the generalisation gap per epoch, one
    line per method; `histories` maps method name -> its run's history (history.csv)."""
    colors = method_colors(list(histories))
    fig, axes = plt.subplots(1, 3, figsize=(3 * size + 2, size), constrained_layout=True)
    _lines(axes[0], histories, lambda h: 100 * (1 - h["train_acc"]), "train error (%)", colors)
    _lines(axes[1], histories, lambda h: 100 * (1 - h["val_acc"]), "validation error (%)", colors)
    _lines(
        axes[2],
        histories,
        lambda h: 100 * (h["train_acc"] - h["val_acc"]),
        "generalisation gap: validation - train error (%)",
        colors,
    )
    axes[2].axhline(0, color="gray", linewidth=0.8, label="no gap")
    for ax, name in zip(axes, ("train error", "validation error", "generalisation gap")):
        ax.set_title(name)
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def graph_terms(histories: dict, size: float = 4.0, title: str = "") -> plt.Figure:
    """EGA's node and edge terms measured on the validation split per epoch, one line per
    method (measured for every method, also those that do not train on them)."""
    colors = method_colors(list(histories))
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 2, size), constrained_layout=True)
    for ax, (column, name) in zip(
        axes,
        (("val_node", "$L_{node}$ on validation"), ("val_edge", "$L_{edge}$ on validation")),
    ):
        _lines(ax, histories, lambda h, c=column: h[c] if c in h else None, name, colors)
        ax.set_title(name)
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def ours_vs_paper(cells, size: float = 5.0) -> plt.Figure:
    """Our top-1 against the paper's for every table cell that has a run
    (experiments.paper_tables.table_cells rows; a cell that several tables share with the same
    number is drawn once), coloured by protocol, one marker per method; on the diagonal we match
    the paper."""
    cells = cells[cells["ours"].notna() & cells["paper"].notna()]
    keys = ["teacher", "student", "dataset", "method", "protocol", "paper"]
    cells = cells.drop_duplicates(keys)
    fig, ax = plt.subplots(figsize=(size + 2, size), constrained_layout=True)
    if cells.empty:  # runs only of cells the paper left empty, or none yet
        ax.text(0.5, 0.5, "no cell has both our top-1 and the paper's yet", ha="center")
        ax.set_axis_off()
        return fig
    sns.scatterplot(data=cells, x="paper", y="ours", hue="protocol", style="method", s=60, ax=ax)
    low = min(cells["paper"].min(), cells["ours"].min()) - 1
    high = max(cells["paper"].max(), cells["ours"].max()) + 1
    ax.plot([low, high], [low, high], "--", color="gray", linewidth=0.8, label="ours = paper")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("paper top-1 (%)")
    ax.set_ylabel("our top-1 (%)")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, fontsize="small")
    return fig
