"""The library's figures: every line drawn has its entry in a legend."""

import matplotlib

matplotlib.use("Agg")

import subprocess  # noqa: E402
import sys  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from egalib import plots  # noqa: E402


def history(offset: float) -> pd.DataFrame:
    epochs = [1, 2, 3]
    return pd.DataFrame(
        {
            "epoch": epochs,
            "train_acc": [0.5 + offset, 0.6 + offset, 0.7 + offset],
            "val_acc": [0.55, 0.65, 0.7],
            "val_node": [3.0, 2.5, 2.0],
            "val_edge": [5.0, 4.5, 4.0],
        }
    )


def lines_without_entry(fig) -> list[str]:
    """Labels of the lines drawn with data that no legend of the figure names."""
    entries = {t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts}
    drawn = [line for ax in fig.axes for line in ax.get_lines() if len(line.get_xdata())]
    return [line.get_label() for line in drawn if line.get_label() not in entries]


@pytest.mark.parametrize("draw", [plots.learning_dynamics, plots.graph_terms])
def test_each_line_of_the_dynamics_figures_is_in_the_legend(draw):
    fig = draw({"vanilla": history(0.0), "ega": history(0.1)})
    assert lines_without_entry(fig) == []
    entries = [t.get_text() for t in fig.axes[-1].get_legend().texts]
    assert {plots.DYNAMICS_LABELS["vanilla"], plots.DYNAMICS_LABELS["ega"]} <= set(entries)


def test_the_paper_comparison_names_its_diagonal():
    cells = pd.DataFrame(
        {
            "teacher": ["t", "t"],
            "student": ["s", "s"],
            "dataset": ["d", "d"],
            "method": ["ega", "kd"],
            "protocol": ["pretrained", "pretrained"],
            "paper": [75.0, 73.0],
            "ours": [74.0, 73.5],
        }
    )
    fig = plots.ours_vs_paper(cells)
    assert lines_without_entry(fig) == []
    assert "ours = paper" in [t.get_text() for t in fig.axes[0].get_legend().texts]
    # runs only of a cell the poster left empty: once matplotlib's "Axis limits cannot be NaN"
    empty = plots.ours_vs_paper(cells.assign(paper=float("nan")))
    assert [t.get_text() for t in empty.axes[0].texts] == [
        "no cell has both our top-1 and the paper's yet"
    ]


def test_tsne_panels_refuse_no_maps_or_maps_of_other_images_in_one_sentence():
    import numpy as np

    xy = np.zeros((4, 2))
    for points, labels in (({}, [0, 1, 0, 1]), ({"a": xy}, [0, 1, 0])):
        with pytest.raises(ValueError, match="^tsne_panels draws one or more maps of one point"):
            plots.tsne_panels(points, labels)


def test_a_saved_figure_is_the_image_savefig_writes_and_nothing_else(tmp_path):
    fig = plots.learning_dynamics({"vanilla": history(0.0)})
    fig.canvas.draw()  # the first drawing settles the layout; the saves after it are alike
    direct = tmp_path / "direct.png"
    fig.savefig(direct, dpi=110, bbox_inches="tight")
    saved = plots.save_figure(fig, tmp_path / "figures" / "saved.png")
    assert saved.read_bytes() == direct.read_bytes()
    assert sorted(p.name for p in saved.parent.iterdir()) == ["saved.png"]


def test_a_figure_cut_short_by_a_file_size_limit_leaves_no_file(tmp_path):
    """A real failed write: the process may not write files over 4 KiB, as on a full disk."""
    script = f"""
import resource, signal
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from egalib import plots
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over the limit fails with EFBIG
fig, ax = plt.subplots()
ax.plot(range(100))
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    plots.save_figure(fig, {str(tmp_path / "figure.png")!r})
except OSError as error:
    print(error)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"could not write {tmp_path / 'figure.png'} (file too large)")
    assert list(tmp_path.iterdir()) == []
