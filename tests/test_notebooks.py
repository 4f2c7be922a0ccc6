"""Notebooks in git are stripped and parametrised; papermill runs each at the smoke size."""

import re
from pathlib import Path

import pytest
from helpers import read_notebook

from egalib.experiments.demo import NOTEBOOK_DIR, NotebookError, execute_notebook

pytestmark = pytest.mark.integration

NOTEBOOKS = sorted(p.name for p in Path(NOTEBOOK_DIR).glob("*.ipynb"))


def test_there_are_notebooks():
    assert "01_graph_building.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_stripped_and_has_parameters(name):
    nb = read_notebook(NOTEBOOK_DIR / name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def test_notebook_01_runs_at_smoke_size_and_reads_the_ega_run(tmp_path):
    parameters = {"profile": "smoke", "runs_dir": str(tmp_path)}
    out = execute_notebook("01_graph_building.ipynb", parameters, tmp_path / "notebooks")
    nb = read_notebook(out)
    assert _images(nb) == 2  # the graphs before and after training
    tables = [o for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert any(
        "L_node" in t["data"]["text/html"] and "after" in t["data"]["text/html"] for t in tables
    )
    for name in ("01_graphs_before.png", "01_graphs_after.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 10_000
    (metrics,) = tmp_path.glob("*_ega_*/metrics.json")  # the run it trained, being missing
    stamp = metrics.stat().st_mtime_ns
    again = read_notebook(
        execute_notebook("01_graph_building.ipynb", parameters, tmp_path / "again")
    )
    assert metrics.stat().st_mtime_ns == stamp  # read back, not trained again
    assert _images(again) == 2


def test_notebook_02_trains_every_method_and_reuses_runs(tmp_path, capfd):
    from egalib.methods import METHODS
    from egalib.runs import load_runs

    parameters = {"profile": "smoke", "runs_dir": str(tmp_path)}
    out = execute_notebook("02_distillation.ipynb", parameters, tmp_path / "notebooks")
    nb = read_notebook(out)
    assert _images(nb) == 1
    html = "".join(
        o["data"].get("text/html", "")
        for c in nb.cells
        for o in c.get("outputs", [])
        if "data" in o
    )
    for method in METHODS:
        assert f"<th>{method}</th>" in html
    assert "paper top-1" not in html and "NaN" not in html  # no paper cell for Fashion-MNIST
    assert "without encryption" not in capfd.readouterr().err  # the kernel's TCP warning
    runs = load_runs(tmp_path)
    assert sorted(runs["method"]) == sorted([*METHODS, "ega"])  # and EGA's joint protocol
    assert "<th>ega (joint)</th>" in html and "EGA beats kd" in html and "verdict" in html
    for run in runs.itertuples():  # each row its own top-1: they were once shifted by a row
        label = run.method if run.protocol == "pretrained" else f"{run.method} ({run.protocol})"
        top1 = rf"<td>[^<]*</td>\s*<td>{run.top1:.2f} \(1 seed, no sd\)</td>"
        assert re.search(rf"<th>{re.escape(label)}</th>\s*<td>1</td>\s*{top1}", html), label
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert ", 1 epoch, protocol pretrained, seeds 0\n" in printed  # smoke trains one epoch
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/metrics.json")}
    execute_notebook("02_distillation.ipynb", parameters, tmp_path / "again")
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/metrics.json")}


def test_notebook_02_takes_one_method_and_one_seed_as_papermill_s_command_line_gives_them(
    tmp_path,
):
    """`papermill ... -p methods vanilla -p seeds 1`: one value each, not a list."""
    parameters = {"profile": "smoke", "runs_dir": str(tmp_path), "methods": "vanilla", "seeds": 1}
    nb = read_notebook(execute_notebook("02_distillation.ipynb", parameters, tmp_path / "nb"))
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert ", protocol pretrained, seeds 1\n" in printed
    [run] = tmp_path.glob("*/metrics.json")
    assert "_vanilla_" in run.parent.name and "_s1_" in run.parent.name
    unknown = {**parameters, "methods": ["vanilla", "nosuch"]}
    with pytest.raises(NotebookError, match="unknown method 'nosuch'; known methods: vanilla, kd"):
        execute_notebook("02_distillation.ipynb", unknown, tmp_path / "nb")


def test_notebook_06_reruns_the_study_at_smoke_size_and_draws_its_three_figures(tmp_path):
    out = execute_notebook(
        "06_when_ega_helps.ipynb",
        {"profile": "smoke", "runs_dir": str(tmp_path), "parallel": 1},
        tmp_path / "notebooks",
    )
    nb = read_notebook(out)
    assert _images(nb) == 3
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "EGA minus vanilla in validation top-1, paired over 1 seed(s): batch 8 (0.7" in text
    # each difference with its interval and verdict (was mean ± sd, and no verdict)
    assert text.count("(1 seed, no interval), unresolved at 1 seed") == 3 * 2 + 2
    # each beta of the sweep against vanilla, paired (was "EGA's best beta is", means alone)
    assert "At batch 16, EGA minus vanilla in validation top-1 by beta: beta 0.1: " in text
    assert "The rule picks batch 16 of [16]; the demo profile trains at batch 16." in text
    assert " runs, 1 seed; trained or read from the run folders under " in text
    summary = (tmp_path / "results" / "regime-smoke.csv").read_text().splitlines()
    assert summary[0].startswith("method,batch_size,lr,beta,seed,val_top1,node_diagonal")
    assert len(summary) == 1 + 2 * 4 + 1  # 2 batch sizes x 4 methods, and one more beta
    for name in ("06_gain_vs_partners.png", "06_node_matrix.png", "06_beta_sweep.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 10_000
