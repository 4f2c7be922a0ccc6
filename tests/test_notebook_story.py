"""Notebooks 03-05 (t-SNE, learning dynamics, the paper's tables) and the helpers behind them.

The notebooks run with papermill at the smoke size; each executed copy is read back and checked
for its figures and tables, not trusted on its exit code.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import read_notebook

from egalib import analysis
from egalib.config import RunConfig
from egalib.experiments import paper_tables as tables
from egalib.experiments.demo import NOTEBOOK_DIR, execute_notebook
from egalib.experiments.paper import paper_results
from egalib.experiments.reproduce import VAL_SIZE
from egalib.runs import load_runs

pytestmark = pytest.mark.integration

STORY = ("03_tsne.ipynb", "04_learning_dynamics.ipynb", "05_paper_tables.ipynb")
RESULTS_CSV = Path(NOTEBOOK_DIR).parent / "egalib" / "data" / "paper" / "results.csv"


def _outputs(nb):
    return [o for c in nb.cells for o in c.get("outputs", [])]


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for o in _outputs(nb))


def _html(nb) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in _outputs(nb))


def _markdown(nb) -> str:
    return "".join(o.get("data", {}).get("text/markdown", "") for o in _outputs(nb))


@pytest.mark.parametrize("name", STORY)
def test_committed_story_notebook_layout(name):
    nb = read_notebook(NOTEBOOK_DIR / name)
    first = read_notebook(NOTEBOOK_DIR / "01_graph_building.ipynb")
    colab = next(c for c in first.cells if c.cell_type == "code").source
    assert nb.cells[0].cell_type == "markdown" and "**Needs**" in nb.cells[0].source
    assert nb.cells[1].cell_type == "code" and nb.cells[1].source == colab
    parameters = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and parameters[0] is nb.cells[2]
    assert 'profile = "demo"' in parameters[0].source
    assert 'runs_dir = "../runs"' in parameters[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)


# ---------------------------------------------------------------- the story at the smoke size


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    """03, 04 and 05 executed in order into one runs folder, at the smoke size."""
    runs_dir = tmp_path_factory.mktemp("story")
    executed = {}
    for name in STORY:
        out = execute_notebook(
            name, {"profile": "smoke", "runs_dir": str(runs_dir)}, runs_dir / "notebooks"
        )
        executed[name] = read_notebook(out)
    return runs_dir, executed


def test_03_draws_tsne_and_scores(story):
    runs_dir, executed = story
    nb = executed["03_tsne.ipynb"]
    assert _images(nb) == 1
    html = _html(nb)
    for header in (
        "silhouette",
        "5-NN top-1 (%)",
        "teacher ssl-fmnist",
        "vanilla student",
        "ega student",
    ):
        assert header in html
    assert (runs_dir / "figures" / "03_tsne.png").stat().st_size > 10_000
    # the students compared over the profile's seeds, paired, not ranked from one run each
    assert "minus vanilla" in html and "unresolved at 1 seed" in html
    assert _markdown(nb) == (
        "Over 1 seed: the measures do not both resolve **ega** against vanilla the same way; "
        "where they do not, these runs do not say which separates the classes better."
    )


def test_04_draws_learning_dynamics_and_reuses_runs(story):
    runs_dir, executed = story
    nb = executed["04_learning_dynamics.ipynb"]
    assert _images(nb) == 2
    html = _html(nb)
    for header in (
        "train error (%)",
        "validation error (%)",
        "gap (validation - train, %)",
        "validation L_node",
        "validation L_edge",
        "vanilla: CE only",
        "ega-edge",
        "ega-node",
    ):
        assert header in html
    for name in ("04_learning_dynamics.png", "04_graph_terms.png"):
        assert (runs_dir / "figures" / name).stat().st_size > 10_000
    # each answer is a paired difference with its seeds, not one seed's beside a 5 % threshold
    answers = [line for line in _markdown(nb).splitlines() if line.startswith("- Does the")]
    assert len(answers) == 2 and all("(1 seed, no interval) (last epoch)." in a for a in answers)
    assert all("**not resolved**: validation $L_{" in a for a in answers)
    # 04 read the vanilla and ega runs that 03 made: four runs in all, not six
    assert sorted(load_runs(runs_dir)["method"]) == ["ega", "ega-edge", "ega-node", "vanilla"]


def test_05_tables_are_empty_at_smoke_size_and_list_the_runs(story):
    runs_dir, executed = story
    nb = executed["05_paper_tables.ipynb"]
    html, markdown = _html(nb), _markdown(nb)
    assert "clip-vit-b32 / resnet8x4" in html and "supervised-rn50" in html
    assert "stl10" in html and "<b>" not in html  # nothing filled, nothing marked best
    assert markdown.count("no finished 240-epoch run matches its cells") == len(
        tables.TABLE_LAYOUTS
    )
    for table, protocol, _ in tables.TABLE_LAYOUTS:  # each says how to fill it
        assert f"reproduce --table {table} --protocol {protocol}` trains them" in markdown
    assert "assumed" in html  # the supervised table's method names
    for header in ("<th>method</th>", "<th>top1</th>", "<th>selected_top1</th>", "<th>epochs</th>"):
        assert header in html
    # the four smoke runs in the "all finished runs" table, and their one setting over seeds as
    # `compare` lays it out: against vanilla, with an interval (none from one seed); once by
    # test top-1, once by validation top-1 for the exercise's ranking
    assert html.count("small-cnn") == 4 and markdown.count("student small-cnn") == 2
    assert "| run | seeds | val_top1, mean ± sd | minus vanilla | verdict |" in markdown
    assert (
        "| ega | 0 | " in markdown and "(1 seed, no interval) | unresolved at 1 seed |" in markdown
    )
    assert "<th>missing</th>" in html  # the status of every table's cells (none has a run)
    long = pd.read_csv(runs_dir / "tables.csv")
    assert list(long.columns) == tables.LONG_COLUMNS
    assert len(long) == len(paper_results()) and long["ours"].isna().all()
    assert "The table is empty" in (runs_dir / "tables.md").read_text()


# ---------------------------------------------------------------- tables on fabricated runs

VIT, R8, VGG = "clip-vit-b32", "resnet8x4", "vgg13"
FABRICATED = [  # method, student, dataset, protocol, epochs, top1
    ("ega", R8, "cifar100", "pretrained", 240, 77.00),
    ("kd", R8, "cifar100", "pretrained", 240, 72.00),
    ("ega", VGG, "cifar100", "pretrained", 240, 78.00),
    ("ega", R8, "stl10", "pretrained", 240, 85.00),
    ("ega", R8, "cifar100", "joint", 240, 75.00),
    ("crd", R8, "cifar100", "pretrained", 6, 99.00),  # wrong length: must fill no cell
]


def _fabricate(runs_dir: Path) -> pd.DataFrame:
    for i, (method, student, dataset, protocol, epochs, top1) in enumerate(FABRICATED):
        config = RunConfig(
            method=method,
            teacher=VIT,
            student=student,
            dataset=dataset,
            protocol=protocol,
            epochs=epochs,
            val_size=VAL_SIZE.get(dataset, RunConfig.val_size),  # as reproduce holds out
            runs_dir=str(runs_dir),
        )
        folder = runs_dir / f"run{i}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config.to_dict()))
        metrics = {
            "top1": top1,
            "selected_top1": top1 + 0.5,
            "selected_epoch": epochs,
            "teacher_top1": 80.0,
            "epochs": epochs,
            "wall_time_s": 1.0,
            "images_per_s": 1.0,
        }
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return load_runs(runs_dir)


def _paper(table, protocol, student, dataset, method) -> float:
    """The paper's number, looked up in results.csv directly."""
    t = pd.read_csv(RESULTS_CSV)
    hit = t[
        (t.table == table)
        & (t.protocol == protocol)
        & (t.teacher == VIT)
        & (t.student == student)
        & (t.dataset == dataset)
        & (t.method == method)
    ]
    assert len(hit) == 1
    return float(hit.top1.iloc[0])


def _text(ours, paper, best=False, bold=("**", "**")):
    number = f"{bold[0]}{ours:.2f}{bold[1]}" if best else f"{ours:.2f}"
    return f"{number} (paper {paper:.2f}, {ours - paper:+.2f})"


def _filled(wide: pd.DataFrame) -> dict:
    return {(r, c): v for r, row in wide.iterrows() for c, v in row.items() if v[0] != "–"}


def test_tables_fill_only_the_cells_that_have_a_run(tmp_path):
    runs = _fabricate(tmp_path)
    col = lambda student: f"{VIT} / {student}"  # noqa: E731
    arch = tables.paper_table("architectures", "pretrained", runs, epochs=240)
    ega_r8 = _paper("architectures", "sequential", R8, "cifar100", "EGA")
    kd_r8 = _paper("architectures", "sequential", R8, "cifar100", "KD")
    ega_vgg = _paper("architectures", "sequential", VGG, "cifar100", "EGA")
    assert _filled(arch) == {
        ("EGA", col(R8)): _text(77.00, ega_r8, best=True),
        ("KD", col(R8)): _text(72.00, kd_r8),
        ("EGA", col(VGG)): _text(78.00, ega_vgg, best=True),
    }
    assert arch.loc["CRD", col(R8)] == "– (paper 75.73)"  # the 6-epoch run stays out
    assert arch.loc["FitNet", f"{VIT} / shufflenetv1"] == "– (paper n/a)"

    joint = tables.paper_table("architectures", "joint", runs, epochs=240)
    ega_joint = _paper("architectures", "simultaneous", R8, "cifar100", "EGA")
    assert _filled(joint) == {("EGA", col(R8)): _text(75.00, ega_joint, best=True)}

    data = tables.paper_table("datasets", "pretrained", runs, epochs=240)
    assert _filled(data) == {
        ("EGA", "cifar100"): _text(
            77.00, _paper("datasets", "sequential", R8, "cifar100", "EGA"), best=True
        ),
        ("KD", "cifar100"): _text(72.00, _paper("datasets", "sequential", R8, "cifar100", "KD")),
        ("EGA", "stl10"): _text(
            85.00, _paper("datasets", "sequential", R8, "stl10", "EGA"), best=True
        ),
    }
    assert _filled(tables.paper_table("supervised-teachers", "pretrained", runs, 240)) == {}
    # another length: only the 6-epoch run's cell is filled
    short = tables.table_cells("architectures", "pretrained", runs, epochs=6)
    assert short.loc[short["ours"].notna(), "method"].tolist() == ["crd"]

    cells = tables.table_cells("architectures", "pretrained", runs, epochs=240)
    best = cells[cells["best"]]
    assert sorted(zip(best["method"], best["student"])) == [("ega", R8), ("ega", VGG)]
    row = cells[(cells.method == "ega") & (cells.student == R8)].iloc[0]
    assert (row["ours"], row["paper"], row["diff"]) == (77.00, ega_r8, round(77.00 - ega_r8, 2))


def test_a_cell_is_filled_only_by_the_runs_reproduce_trains_for_it_at_any_seed(tmp_path):
    def finished(folder_name: str, top1: float, **given) -> None:
        values = dict(method="kd", teacher=VIT, student=R8, dataset="cifar100", **given)
        folder = tmp_path / folder_name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(RunConfig(**values).to_dict()))
        (folder / "metrics.json").write_text(json.dumps({"top1": top1}))

    finished("seed0", 72.0)
    finished("seed1", 74.0, seed=1)  # another seed of the cell: averaged with the first
    finished("seed1-again", 74.0, seed=1, name="again")  # the same seed once more: counted once
    finished("weights-study", 10.0, alpha=0.1)  # were all averaged into the cell
    finished("smaller", 20.0, train_size=4000)
    finished("other-temperature", 30.0, kd_temperature=8.0)
    cells = tables.table_cells("architectures", "pretrained", load_runs(tmp_path), epochs=240)
    kd = cells[(cells.method == "kd") & (cells.student == R8)].iloc[0]
    assert (kd["ours"], kd["runs"]) == (73.0, 2)
    assert cells["ours"].notna().sum() == 1


def test_write_tables_and_notebook_05_on_fabricated_runs(tmp_path):
    _fabricate(tmp_path)
    md, csv = tables.write_tables(tmp_path, epochs=240)
    text = md.read_text()
    ega_r8 = _paper("architectures", "sequential", R8, "cifar100", "EGA")
    assert _text(77.00, ega_r8, best=True) in text
    assert _text(85.00, _paper("datasets", "sequential", R8, "stl10", "EGA"), best=True) in text
    assert "99.00" in text  # listed among all finished runs ...
    assert "**99.00**" not in text and "99.00 (paper" not in text  # ... but in no table cell
    long = pd.read_csv(csv)
    assert list(long.columns) == tables.LONG_COLUMNS
    filled = long[long["ours"].notna()]
    assert len(filled) == 8  # 3 + 1 architectures cells, 3 + 1 datasets cells
    assert set(filled["table"]) == {"architectures", "datasets"}
    row = filled[
        (filled.table == "architectures")
        & (filled.method == "ega")
        & (filled.student == R8)
        & (filled.protocol == "pretrained")
    ].iloc[0]
    assert (row["ours"], row["paper"], row["diff"]) == (77.00, ega_r8, round(77.00 - ega_r8, 2))

    out = execute_notebook(
        "05_paper_tables.ipynb",
        {"profile": "smoke", "runs_dir": str(tmp_path)},
        tmp_path / "notebooks",
    )
    nb = read_notebook(out)
    html = _html(nb)
    assert _text(77.00, ega_r8, best=True, bold=("<b>", "</b>")) in html
    assert _text(72.00, _paper("architectures", "sequential", R8, "cifar100", "KD")) in html
    assert _images(nb) == 1
    assert (tmp_path / "figures" / "05_ours_vs_paper.png").stat().st_size > 10_000


# ---------------------------------------------------------------- analysis helpers


def _clusters(mixed: bool, per_class: int = 60, classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 16))
    labels = np.repeat(np.arange(classes), per_class)
    x = centres[labels] + 0.15 * rng.normal(size=(len(labels), 16))
    if mixed:  # the same points, each under a random one of the labels
        x = x[rng.permutation(len(x))]
    return x, labels


def test_separable_embedding_scores_higher_than_mixed():
    separable, mixed = _clusters(mixed=False), _clusters(mixed=True)
    assert analysis.silhouette(*separable) > 0.5 > analysis.silhouette(*mixed)
    assert analysis.knn_accuracy(*separable) > 95 > 50 > analysis.knn_accuracy(*mixed)
    scores = analysis.embedding_scores({"separable": separable[0], "mixed": mixed[0]}, separable[1])
    assert list(scores.columns) == ["silhouette", "5-NN top-1 (%)"]
    assert (scores.loc["separable"] > scores.loc["mixed"]).all()
    assert analysis.knn_accuracy(*separable, seed=3) == analysis.knn_accuracy(*separable, seed=3)


def test_analysis_refuses_sizes_that_would_mislabel_or_empty_its_numbers():
    x, labels = _clusters(mixed=False)  # 240 samples: the k-NN classifier is fitted on 120
    assert analysis.knn_accuracy(x, labels, k=120) > 0  # every fitted sample votes
    for k in (0, -1, 2.5):  # was scored as 1-NN (or failed in scikit-learn) under the label k-NN
        with pytest.raises(ValueError, match=f"k must be a whole number >= 1, got {k}"):
            analysis.embedding_scores({"x": x}, labels, k=k)
    with pytest.raises(ValueError, match="k must be at most 120, the samples the classifier"):
        analysis.knn_accuracy(x, labels, k=121)  # was scored as 120-NN
    xs, xt = np.random.default_rng(0).normal(size=(2, 40, 8))
    assert analysis.node_matrix_stats(xs, xt, labels[::6], batch_size=40)["partners"] == 9
    refusals = {
        0: "batch_size must be a whole number >= 2, got 0",  # was a ZeroDivisionError
        41: "batch_size must be at most the 40 images, got 41",  # was NaN for every statistic
    }
    for batch, problem in refusals.items():
        with pytest.raises(ValueError, match=problem):
            analysis.node_matrix_stats(xs, xt, labels[::6], batch_size=batch)
    with pytest.raises(ValueError, match="must have a row per image, got 40, 30 and 40 rows"):
        analysis.node_matrix_stats(xs, xt[:30], labels[::6], batch_size=4)
    for budget in (0, -5):  # was an empty subsample
        with pytest.raises(
            ValueError, match=f"max_points must be a whole number >= 1, got {budget}"
        ):
            analysis.balanced_subsample(labels, budget)


def test_analysis_of_a_diverged_run_or_one_class_is_nan_and_bad_shapes_one_sentence():
    """Each was scikit-learn's "Input X contains NaN", a silent 100 % for one class, or a number
    from embeddings and labels of different lengths."""
    x, labels = _clusters(mixed=False)
    diverged = x.copy()
    diverged[3, 1] = np.nan
    for measure in (analysis.knn_accuracy, analysis.silhouette):
        assert np.isnan(measure(diverged, labels)), measure.__name__
        assert np.isnan(measure(x, np.zeros_like(labels))), measure.__name__  # one class
        for rows, with_labels in ((x[:200], labels), (x, labels[:200]), (x[:, 0], labels)):
            with pytest.raises(ValueError, match="must be \\(N, D\\) with one label each"):
                measure(rows, with_labels)
    ten = np.arange(10)  # one point a class: nothing to cluster
    assert np.isnan(analysis.silhouette(x[:10], ten, max_points=10))
    for points in (x[:1], diverged):
        with pytest.raises(ValueError, match="^t-SNE maps two or more finite"):
            analysis.tsne_2d(points)
    with pytest.raises(ValueError, match="xs and xt must be \\(N, D\\) embeddings of one width"):
        analysis.node_matrix_stats(x[:, :3], x, labels, batch_size=4)


def test_balanced_subsample_and_tsne_on_few_points():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 5)
    keep = analysis.balanced_subsample(labels, 30, seed=0)
    assert len(keep) == 30 and len(set(keep)) == 30
    assert sorted(np.bincount(labels[keep]).tolist()) == [5, 12, 13]  # the small class is all in
    assert (analysis.balanced_subsample(labels, 30, 0) == keep).all()
    assert len(analysis.balanced_subsample(labels, 1000)) == len(labels)
    x, _ = _clusters(mixed=False, per_class=5)
    points = analysis.tsne_2d(x, perplexity=30.0)  # 20 points: the perplexity is clamped
    assert points.shape == (20, 2) and np.isfinite(points).all()
    for perplexity in (0, -5, float("nan")):  # was scikit-learn's error, or a map at 1
        with pytest.raises(ValueError, match="^perplexity must be a finite number > 0, got"):
            analysis.tsne_2d(x, perplexity=perplexity)
