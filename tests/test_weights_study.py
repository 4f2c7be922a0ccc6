"""The weights study: one log grid and one rule for every method, read on validation only."""

import json
import math
from collections import Counter

import pandas as pd
import pytest

from egalib.experiments import weights
from egalib.experiments.cluster import Launcher
from egalib.methods import METHODS


def test_every_method_gets_the_same_grid_around_its_paper_weight_and_the_same_tries():
    configs = weights.weight_configs("demo")
    tries = Counter(c.method for c in configs)
    assert tries.pop("vanilla") == len(weights.SEEDS)
    assert set(tries) == set(METHODS) - {"vanilla"}
    assert set(tries.values()) == {len(weights.FACTORS) * len(weights.SEEDS)}
    pkt = sorted({c.beta for c in configs if c.method == "pkt"})
    assert pkt == [30.0, 300.0, 3000.0, 30000.0, 300000.0]
    kd = [c for c in configs if c.method == "kd"]
    assert {c.gamma for c in kd} == {1.0} and {c.beta for c in kd} == {None}
    assert sorted({c.alpha for c in kd}) == [0.0009, 0.009, 0.09, 0.9, 9.0]
    assert len({c.run_name for c in configs}) == len(configs)
    only = weights.weight_configs("demo", methods=["vanilla", "ega"])
    assert {c.method for c in only} == {"vanilla", "ega"}
    with pytest.raises(ValueError, match="--methods vanilla leaves nothing to tune"):
        weights.weight_configs("demo", methods=["vanilla"])  # was a study that chose nothing


def test_the_choice_is_the_best_mean_validation_point_and_says_if_it_is_interior():
    rows = [("vanilla", "beta", 0.0, s, 70.0) for s in (0, 1)]
    for value, scores in ((1.0, (71, 73)), (10.0, (74, 74)), (100.0, (72, 72))):
        rows += [("pkt", "beta", value, s, score) for s, score in enumerate(scores)]
    for value, scores in ((0.1, (71, 71)), (1.0, (72, 73))):
        rows += [("ega", "beta", value, s, score) for s, score in enumerate(scores)]
    for value, scores in ((0.1, (71, 71)), (1.0, (75, 76)), (10.0, (76, float("nan")))):
        rows += [("irg", "beta", value, s, score) for s, score in enumerate(scores)]
    for value, scores in ((1.0, (float("nan"), 70)), (10.0, (float("nan"), float("nan")))):
        rows += [("fitnet", "beta", value, s, score) for s, score in enumerate(scores)]
    table = pd.DataFrame(rows, columns=["method", "weight", "value", "seed", "val_top1"])
    table["paper"] = table.value.max()
    chosen = weights.chosen_weights(table).set_index("method")
    assert chosen.loc["pkt", "chosen"] == 10.0 and chosen.loc["pkt", "interior"]
    assert chosen.loc["pkt", "val_top1"] == 74.0 and chosen.loc["pkt", "vanilla_val_top1"] == 70.0
    assert chosen.loc["ega", "chosen"] == 1.0 and not chosen.loc["ega", "interior"]
    assert chosen.loc["irg", "chosen"] == 1.0  # 10 diverged in one seed: never chosen
    # every point diverged in a seed: nothing chosen, the others still are (was pandas' error
    # "Encountered all NA values", and no summary at all)
    assert math.isnan(chosen.loc["fitnet", "chosen"]) and not chosen.loc["fitnet", "interior"]
    assert math.isnan(chosen.loc["fitnet", "val_top1"])


@pytest.mark.integration
def test_the_study_at_smoke_writes_a_summary_without_test_accuracy(tmp_path):
    from egalib.experiments import study

    table = study.run(
        "weights", "smoke", [0], str(tmp_path / "runs"), Launcher(parallel=1), tmp_path
    )
    written = pd.read_csv(tmp_path / "weights-smoke.csv")
    assert len(written) == len(table) == 1 + 2 * (len(METHODS) - 1)
    assert not [c for c in written.columns if "test" in c or c == "top1"]
    assert written.val_top1.between(0, 100).all()
    card = json.loads((tmp_path / "weights-smoke.json").read_text())
    assert {"command", "commit", "date", "device", "wall_s"} <= set(card)
    assert len(weights.chosen_weights(written)) == len(METHODS) - 1


def test_the_demo_profile_uses_the_weights_the_shipped_study_chose():
    from egalib.config import RunConfig
    from egalib.experiments.study import RESULTS

    table = pd.read_csv(RESULTS / "weights-demo.csv")
    chosen = weights.chosen_weights(table)
    assert len(chosen) == len(METHODS) - 1
    for row in chosen.itertuples():
        config = RunConfig.from_profile("demo", method=row.method)
        assert getattr(config.weights, row.weight) == row.chosen, row.method
        if row.method == "kd":
            assert config.weights.gamma == 1.0  # as the study trained it
    assert json.loads((RESULTS / "weights-demo.json").read_text())["command"].endswith(
        "study weights --profile demo --parallel 2"
    )
    assert RunConfig.from_profile("smoke", method="pkt").weights.beta == 30000.0  # the table's


@pytest.mark.integration
def test_a_weight_that_diverges_is_a_result_of_the_study_not_its_end(smoke, tmp_path):
    from egalib.experiments.study import summarize

    configs = [smoke(method="ega", beta=1e30), smoke(method="ega")]
    table = summarize(
        "t", configs, weights.weight_row, Launcher(parallel=1), tmp_path, weights.diverged
    )
    assert table.diverged.tolist() == [True, False]
    assert table.val_top1.isna().tolist() == [True, False]
    with pytest.raises(RuntimeError, match="diverged"):  # without may_fail it is an error
        summarize("t", configs[:1], weights.weight_row, Launcher(parallel=1), None)


@pytest.mark.integration
def test_a_study_writes_its_summary_beside_its_runs_and_never_over_the_shipped_ones(tmp_path):
    from helpers import run_egalib

    from egalib.experiments.study import RESULTS

    shipped = {p.name: p.read_bytes() for p in RESULTS.iterdir()}
    done = run_egalib(
        "study", "regime", "--profile", "smoke", "--seeds", "0", "--runs-dir", "runs", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("summary: runs/regime-smoke.csv")
    assert (tmp_path / "runs" / "regime-smoke.csv").is_file()
    assert (tmp_path / "runs" / "regime-smoke.json").is_file()
    assert {p.name: p.read_bytes() for p in RESULTS.iterdir()} == shipped
