"""Figures the notebooks show."""

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from .graph import Graphs

GRAPH_TITLES = {"teacher": "teacher graph $E_t$", "student": "student graph $E_s$",
                "node": "node matrix $N_{st}$"}  # fmt: skip


def graph_heatmaps(graphs: Graphs, title: str = "", size: float = 4.0) -> plt.Figure:
    """E_t, E_s and N_st side by side, on one colour scale from -1 to 1."""
    fig, axes = plt.subplots(1, 3, figsize=(3 * size + 1, size), constrained_layout=True)
    for ax, (key, matrix) in zip(axes, graphs._asdict().items()):
        sns.heatmap(matrix.detach().cpu().numpy(), ax=ax, vmin=-1, vmax=1, cmap="vlag",
                    square=True, xticklabels=False, yticklabels=False,
                    cbar=key == "node")  # fmt: skip
        ax.set_title(GRAPH_TITLES[key])
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
