"""Comparisons over seeds: paired differences, their spread, and the regime study's measures."""

import json

import pandas as pd
import pytest
import torch
from helpers import run_egalib

from egalib.analysis import node_matrix_stats
from egalib.config import RunConfig, profile_seeds
from egalib.experiments import study
from egalib.experiments.demo import results_table, rivals, run_frame
from egalib.experiments.paper_tables import mean_sd, seed_summary


def test_seed_summary_pairs_each_method_with_vanilla_of_the_same_seed():
    runs = pd.DataFrame(
        {
            "method": ["vanilla"] * 3 + ["ega"] * 3,
            "seed": [0, 1, 2] * 2,
            "top1": [70.0, 72.0, 74.0, 71.0, 75.0, 73.0],
        }
    )
    summary = seed_summary(runs)
    assert summary.loc["vanilla", "top1"] == 72.0 and summary.loc["vanilla", "sd"] == 2.0
    # paired differences 1, 3, -1: mean 1, sample sd 2 (unpaired means differ by 1 as well)
    assert summary.loc["ega", "difference"] == pytest.approx(1.0)
    assert summary.loc["ega", "difference_sd"] == pytest.approx(2.0)
    assert summary.loc["ega", "seeds"] == 3
    assert mean_sd(73.0, 2.0, 3) == "73.00 ± 2.00"
    assert mean_sd(1.0, 2.0, 3, signed=True) == "+1.00 ± 2.00"


def test_differences_are_over_the_seeds_both_have_and_a_nan_score_is_nan():
    """vanilla lacks seed 2: ega's difference is over seeds 0 and 1 and says 2 were paired (it
    once said 3, and its interval was that of 3); a NaN score was skipped without a word."""
    runs = pd.DataFrame(
        {
            "method": ["vanilla"] * 2 + ["ega"] * 3 + ["kd"] * 2,
            "seed": [0, 1, 0, 1, 2, 0, 1],
            "top1": [70.0, 72.0, 71.0, 75.0, 90.0, 71.0, float("nan")],
        }
    )
    summary = seed_summary(runs)
    ega = summary.loc["ega"]
    assert (ega.seeds, ega.paired) == (3, 2) and ega.difference == pytest.approx(2.0)
    assert ega.difference_sd == pytest.approx(2**0.5) and ega.top1 == pytest.approx(236 / 3)
    assert pd.isna(summary.loc["kd", "top1"]) and pd.isna(summary.loc["kd", "difference"])
    table = pd.DataFrame(
        {
            "method": ["vanilla"] * 2 + ["ega"] * 3,
            "batch_size": 8,
            "seed": [0, 1, 0, 1, 2],
            "val_top1": [70.0, 72.0, 71.0, 75.0, 90.0],
            "sweep": False,
            "partners": 1.0,
            "node_diagonal": 0.5,
        }
    )
    [regime] = study.paired_differences(table).itertuples()
    assert regime.seeds == 2 and regime.high - regime.difference == pytest.approx(
        12.706 * 1, rel=1e-3
    )


def test_one_seed_says_so_instead_of_an_sd():
    runs = pd.DataFrame({"method": ["vanilla", "ega"], "seed": [0, 0], "top1": [70.0, 71.5]})
    row = seed_summary(runs).loc["ega"]
    assert pd.isna(row.sd) and pd.isna(row.difference_sd)
    assert mean_sd(row.top1, row.sd, row.seeds) == "71.50 (1 seed, no sd)"
    assert mean_sd(row.difference, row.difference_sd, row.seeds, True) == "+1.50 (1 seed, no sd)"


def test_profiles_name_their_seeds_and_a_config_takes_one():
    assert profile_seeds("demo") == (0, 1, 2, 3, 4) and profile_seeds("smoke") == (0,)
    assert RunConfig.from_profile("demo").seed == 0
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        profile_seeds("nope")


def test_node_matrix_stats_on_a_hand_checkable_batch():
    """Four images, two classes; the student copies the teacher: the diagonal of N_st is 1."""
    xt = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 0.1, 0, 0], [0, 0, 1.0, 0]])
    labels = torch.tensor([0, 1, 0, 1])
    stats = node_matrix_stats(xt.clone(), xt, labels, batch_size=4)
    assert stats["node_diagonal"] == pytest.approx(1.0)
    assert stats["partners"] == pytest.approx(1.0)  # each image has one other of its class
    z = xt - xt.mean(1, keepdim=True)
    z = z / z.norm(dim=1, keepdim=True)
    corr = z @ z.T
    same = (corr[0, 2] + corr[2, 0] + corr[1, 3] + corr[3, 1]) / 4
    assert stats["node_same_class"] == pytest.approx(same.item(), abs=1e-6)
    other = (corr.sum() - corr.diagonal().sum() - 4 * same) / 8
    assert stats["node_other_class"] == pytest.approx(other.item(), abs=1e-6)


def test_regime_study_covers_every_batch_method_seed_and_beta():
    configs = study.regime_configs("demo", seeds=(0, 1, 2))
    sweep = [c for c in configs if study.sweeps(c, "demo")]
    assert len(configs) - len(sweep) == 4 * 4 * 3
    for c in configs:
        assert c.lr == pytest.approx(0.05 * c.batch_size / 64)
    betas = {c.beta for c in sweep}
    assert betas == set(study.BETAS) - {study.ega_beta("demo")}
    assert {c.batch_size for c in sweep} == {64} and len(sweep) == 3 * len(betas)
    ega = {c.weights.beta for c in configs if c.method == "ega" and c not in sweep}
    assert ega == {study.ega_beta("demo")}  # the profile's own weight, at every batch size
    assert len({c.run_name for c in configs}) == len(configs)


def test_demo_table_shows_mean_sd_the_paired_interval_the_rivals_and_the_claims():
    runs = []
    scores = {"vanilla": (70.0, 72.0, 74.0), "ega": (72.0, 72.0, 78.0), "kd": (69.0, 71.0, 73.5)}
    for method, values in scores.items():
        for seed, top1 in enumerate(values):
            config = RunConfig.from_profile("demo", method=method, seed=seed)
            measured = {"top1": top1, "val_top1": top1, "wall_time_s": 10.0}
            runs.append((config, {**measured, "teacher_top1": 86.5}))
    table = results_table("demo", runs, trained_s=20.0, wall_s=30.0)
    assert "| student: vanilla |  | 72.00 ± 2.00 |  |  | 10 |" in table
    # ega - vanilla: 2, 0, 4 -> mean 2, sd 2, t(0.975, 2) x 2 / sqrt(3) = 4.97
    assert "| student: ega | beta 1 -> 1 | 74.00 ± 3.46 | +2.00 [-2.97, +6.97] | no | 10 |" in table
    assert "| ega - kd | +2.83 [" in table
    assert "| EGA beats kd | +2.83 [" in table and "| EGA beats vanilla | +2.00 [-2.97" in table
    assert "seeds 0 1 2" in table and "wall time: 30 s, of which training 20 s" in table


def test_demo_table_without_rivals_has_no_rivals_table_and_counts_in_words():
    runs = []
    for method, top1 in (("vanilla", 70.0), ("ega", 71.0)):
        config = RunConfig.from_profile("smoke", method=method)
        measured = {"top1": top1, "val_top1": top1, "wall_time_s": 1.0}
        runs.append((config, {**measured, "teacher_top1": 80.0}))
    table = results_table("smoke", runs, trained_s=2.0, wall_s=3.0)
    assert "closest rivals" not in table  # ega and vanilla only: no rival to compare with
    assert ", 1 epoch, batch 32," in table and "over the 1 seed;" in table
    assert "| EGA beats vanilla | +1.00 (1 seed, no interval) | unresolved at 1 seed |" in table


FIXED = {"wall_time_s": 1.0, "teacher_top1": 80.0}


def test_egas_rivals_are_chosen_on_validation_top1_not_on_the_test_set():
    """kd leads on the test set and sp on the validation split: sp is the rival. The rivals
    were once the best on the test set, a choice made on the numbers then reported."""
    scores = {"vanilla": (70, 70), "ega": (72, 72), "kd": (75, 60), "sp": (71, 74), "pkt": (73, 73)}
    runs = [
        (RunConfig.from_profile("demo", method=m, seed=seed), {"top1": test, "val_top1": val})
        for m, (test, val) in scores.items()
        for seed in (0, 1)
    ]
    assert rivals(run_frame("demo", [(c, m | FIXED) for c, m in runs])) == ["sp", "pkt"]
    unsplit = [(c, m | FIXED | {"val_top1": None}) for c, m in runs]  # val_size 0: no choice
    assert rivals(run_frame("demo", unsplit)) == []


@pytest.mark.integration
def test_train_takes_a_list_of_seeds_with_one_run_folder_each(tmp_path):
    out = run_egalib(
        *"train --profile smoke --method vanilla --seeds 0 1 --train-size 64".split(),
        *"--test-size 64 --runs-dir".split(),
        str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    configs = [json.loads(p.read_text()) for p in tmp_path.glob("*/config.json")]
    assert sorted(c["seed"] for c in configs) == [0, 1]
    assert out.stdout.count("run folder:") == 2


def test_reproduce_makes_one_cell_run_per_seed():
    from egalib.experiments.reproduce import table_configs

    one, two = table_configs("datasets"), table_configs("datasets", seeds=[0, 1])
    assert len(two) == 2 * len(one) and {c.seed for c in two} == {0, 1}
    assert len({c.run_name for c in two}) == len(two)
