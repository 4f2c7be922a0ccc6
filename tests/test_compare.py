"""Paired differences with t-intervals, and the claims table's verdicts."""

import math

import pandas as pd
import pytest
from helpers import run_egalib

from egalib.experiments import cluster, compare


def test_the_interval_is_students_t_over_the_paired_differences():
    # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 -> half width 4.302653 / sqrt(3)
    interval = compare.paired_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert interval["difference"] == 2.0 and interval["seeds"] == 3
    assert interval["low"] == pytest.approx(2 - half) and interval["high"] == pytest.approx(
        2 + half
    )
    one = compare.paired_interval([1.5])
    assert one["difference"] == 1.5 and math.isnan(one["low"]) and math.isnan(one["high"])
    with pytest.raises(ValueError, match="NaN"):
        compare.paired_interval([1.0, float("nan")])


def runs(scores: dict) -> pd.DataFrame:
    rows = [(m, s, v) for m, values in scores.items() for s, v in enumerate(values)]
    return pd.DataFrame(rows, columns=["method", "seed", "top1"])


def test_differences_pair_by_seed_and_verdicts_follow_the_interval():
    table = runs(
        {
            "vanilla": [70.0, 72.0, 74.0, 71.0, 73.0],
            "ega": [71.0, 73.1, 74.9, 72.2, 73.9],  # +1 each seed, give or take: resolved
            "kd": [72.0, 71.0, 76.0, 70.0, 74.0],  # ega - kd swings both ways: unresolved
            "ega-node": [73.0, 75.0, 77.2, 74.0, 76.0],  # beats ega each seed: reversed
        }
    )
    assert compare.paired(table, "ega", "vanilla")["difference"] == pytest.approx(1.02)
    claims = compare.claims_table(table).set_index("claim")
    assert claims.loc["EGA beats vanilla", "verdict"] == "holds"
    assert claims.loc["EGA beats kd", "verdict"] == "unresolved at 5 seeds"
    assert claims.loc["node + edge beats the node term alone", "verdict"] == "reversed"
    assert "EGA beats crd" not in claims.index  # a method that did not run is left out
    assert claims.loc["EGA beats kd", "poster"] == pytest.approx(76.65 - 71.55)
    assert math.isnan(claims.loc["EGA beats vanilla", "poster"])  # not in the poster's tables


def test_claims_of_runs_of_the_joint_protocol_take_the_poster_s_joint_cells():
    """Plain labels ran under `protocol`; EGA's other protocol is labelled. The poster's
    differences were once the pretrained cells' whatever protocol the plain runs had."""
    table = runs(
        {
            "ega": [71.0, 73.0, 75.0],
            "crd": [70.0, 72.5, 74.0],
            "kd": [69.0, 70.0, 71.0],
            "ega (pretrained)": [72.0, 73.5, 75.5],
        }
    )
    claims = compare.claims_table(table, "joint").set_index("claim")
    assert claims.loc["EGA beats crd", "poster"] == pytest.approx(76.11 - 75.51)
    assert math.isnan(claims.loc["EGA beats kd", "poster"])  # the poster has no joint KD
    protocols = claims.loc["EGA's pretrained protocol beats its joint one"]
    assert protocols["difference"] == pytest.approx(2 / 3)  # pretrained minus joint, paired
    assert protocols["poster"] == pytest.approx(76.65 - 76.11)


def test_interval_text_says_when_there_is_no_interval():
    assert compare.interval_text(compare.paired_interval([1.0, 2.0, 3.0])) == "+2.00 [-0.48, +4.48]"
    assert compare.interval_text(compare.paired_interval([1.5])) == "+1.50 (1 seed, no interval)"
    assert compare.verdict(compare.paired_interval([1.5])) == "unresolved at 1 seed"
    assert compare.verdict(compare.paired_interval([1.5, -1.0])) == "unresolved at 2 seeds"


def test_copies_of_one_seed_are_one_seed_not_a_resolved_interval():
    from egalib.experiments.cli import build_parser

    args = build_parser().parse_args("compare --methods ega vanilla ega --seeds 1 1 0 1".split())
    assert args.methods == ["ega", "vanilla"] and args.seeds == [1, 0]
    copies = pd.DataFrame({"method": ["ega"] * 3 + ["vanilla"], "seed": [1] * 4})
    copies["top1"] = [77.0, 77.0, 77.0, 75.0]
    with pytest.raises(ValueError, match="^ega has more than one run of seed 1; pair one run"):
        compare.paired(copies, "ega", "vanilla")


def finished_run(runs_dir, method, seed, top1, **given):
    """A run folder as `fit` leaves it, as far as `load_runs` and `status` read it."""
    import json

    from egalib.config import RunConfig

    config = RunConfig.from_profile(
        "smoke", method=method, seed=seed, runs_dir=str(runs_dir), **given
    )
    folder = runs_dir / config.run_name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    metrics = {"top1": top1, "selected_top1": top1 - 1, "val_top1": top1 + 1}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_compare_pairs_each_setting_s_runs_by_seed_against_the_chosen_method(tmp_path):
    from egalib.runs import load_runs

    for seed, (v, e) in enumerate([(70.0, 71.0), (72.0, 74.0), (71.0, 72.5)]):
        finished_run(tmp_path, "vanilla", seed, v)
        finished_run(tmp_path, "ega", seed, e)
        finished_run(tmp_path, "ega", seed, e - 3, beta=2.0)  # another weight: its own row
    finished_run(tmp_path, "vanilla", 0, 60.0, batch_size=8)  # another setting: its own table
    lines = compare.compare_runs(load_runs(tmp_path))
    ega = next(line for line in lines if line.startswith("| ega | "))
    interval = compare.paired_interval([1.0, 2.0, 1.5])
    assert ega == (f"| ega | 0 1 2 | 72.50 ± 1.50 | {compare.interval_text(interval)} | holds |")
    assert any(line.startswith("| ega (beta 2) | 0 1 2 | 69.50 ± 1.50 | -1.50") for line in lines)
    assert sum("batch_size 8" in line for line in lines) == 1
    assert sum(line.startswith("| vanilla | ") for line in lines) == 2
    by_val = compare.compare_runs(load_runs(tmp_path), score="val_top1")
    assert any(line.startswith("| ega | 0 1 2 | 73.50 ± 1.50") for line in by_val)


def test_compare_against_a_method_measures_against_its_plain_runs_not_a_variant(tmp_path):
    """`ega (beta 0.3)` sorts before `ega`: it was once the reference of "minus ega", and ega
    was reported as "ega minus ega"."""
    from egalib.runs import load_runs

    for seed, top1 in enumerate([70.0, 72.0, 71.0]):
        finished_run(tmp_path, "ega", seed, top1)
        finished_run(tmp_path, "ega", seed, top1 + 5, beta=0.3)
        finished_run(tmp_path, "vanilla", seed, top1 - 1)
    lines = compare.compare_runs(load_runs(tmp_path), against="ega")
    assert "| run | seeds | top1, mean ± sd | minus ega | verdict |" in lines
    assert any(line.startswith("| ega | 0 1 2 | 71.00 ± 1.00 |  | ") for line in lines)
    assert any(
        line.startswith("| ega (beta 0.3) | 0 1 2 | 76.00 ± 1.00 | +5.00 ") for line in lines
    )
    assert any(line.startswith("| vanilla | 0 1 2 | 70.00 ± 1.00 | -1.00 ") for line in lines)


def test_compare_against_a_method_with_one_variant_names_it_and_with_several_pairs_none(tmp_path):
    from egalib.runs import load_runs

    for seed in (0, 1):
        finished_run(tmp_path, "vanilla", seed, 70.0 + seed)
    for beta in (0.3, 3.0):
        for seed in (0, 1):
            finished_run(tmp_path, "ega", seed, 70.0 + beta + seed, beta=beta)
        one = compare.compare_runs(load_runs(tmp_path), against="ega")
        if beta == 0.3:
            assert "| run | seeds | top1, mean ± sd | minus ega (beta 0.3) | verdict |" in one
            assert any(line.startswith("| vanilla | 0 1 | 70.50 ± 0.71 | -0.30 ") for line in one)
    minus = "minus ega (none of its runs here is plain ega)"
    header = one.index(f"| run | seeds | top1, mean ± sd | {minus} | verdict |")
    assert all(line.endswith("|  |  |") for line in one[header + 2 :])  # nothing is paired


def test_with_both_protocols_each_run_is_measured_against_its_own_protocol_s(tmp_path):
    from egalib.runs import load_runs

    for seed in (0, 1):
        finished_run(tmp_path, "vanilla", seed, 70.0 + seed)
        finished_run(tmp_path, "vanilla", seed, 60.0 + seed, protocol="joint")
        finished_run(tmp_path, "ega", seed, 72.0 + seed)
        finished_run(tmp_path, "ega", seed, 62.0 + 2 * seed, protocol="joint")
    lines = compare.compare_runs(load_runs(tmp_path))
    assert "| run | seeds | top1, mean ± sd | minus vanilla | verdict |" in lines
    assert any(
        line.startswith("| ega [pretrained] | 0 1 | 72.50 ± 0.71 | +2.00 ") for line in lines
    )
    assert any(line.startswith("| ega [joint] | 0 1 | 63.00 ± 1.41 | +2.50 ") for line in lines)


def test_a_difference_over_fewer_seeds_than_its_row_says_how_many_it_pairs(tmp_path):
    from egalib.runs import load_runs

    for seed, top1 in enumerate([70.0, 71.0, 75.0]):
        finished_run(tmp_path, "ega", seed, top1)
    for seed, top1 in enumerate([69.0, 69.5]):  # vanilla has seeds 0 and 1 only
        finished_run(tmp_path, "vanilla", seed, top1)
    lines = compare.compare_runs(load_runs(tmp_path))
    interval = compare.interval_text(compare.paired_interval([1.0, 1.5]))
    ega = f"| ega | 0 1 2 | 72.00 ± 2.65 | {interval} (2 seeds paired) | unresolved at 2 seeds |"
    assert ega in lines


def test_runs_that_differ_in_a_field_outside_the_setting_are_told_apart_not_hidden(tmp_path):
    from egalib.runs import load_runs

    for seed in (0, 1):
        finished_run(tmp_path, "vanilla", seed, 70.0 + seed)
        finished_run(tmp_path, "kd", seed, 72.0 + seed)
    common = compare.compare_runs(load_runs(tmp_path))
    assert common[0].endswith("val_size 256, test_size 256")  # nothing else differs: unnamed
    assert any(line.startswith("| kd | 0 1 | 72.50 ± 0.71 | +2.00 ") for line in common)
    finished_run(tmp_path, "kd", 0, 60.0, kd_temperature=8.0)  # was hidden behind the kd row
    finished_run(tmp_path, "vanilla", 0, 50.0, padding=0)  # was paired with the kd of padding 4
    lines = compare.compare_runs(load_runs(tmp_path))
    assert "| kd (kd_temperature 4) | 0 1 | 72.50 ± 0.71 | +2.00 [+2.00, +2.00] | holds |" in lines
    assert any(line.startswith("| kd (kd_temperature 8) | 0 | 60.00 (1 seed") for line in lines)
    assert "| vanilla | 0 1 | 70.50 ± 0.71 |  |  |" in lines  # one temperature: none named
    headings = [line for line in lines if line.startswith("dataset ")]
    assert [heading.rsplit(", ", 1)[-1] for heading in headings] == ["padding 4", "padding 0"]
    assert lines[lines.index(headings[1]) + 4] == "| vanilla | 0 | 50.00 (1 seed, no sd) |  |  |"


def test_runs_without_a_validation_split_are_named_when_compared_by_a_validation_score(tmp_path):
    import json

    from egalib.runs import load_runs

    for method in ("vanilla", "ega"):
        folder = finished_run(tmp_path, method, 0, 70.0, val_size=0)
        metrics = {"top1": 70.0, "selected_top1": None, "val_top1": None}  # as fit writes them
        (folder / "metrics.json").write_text(json.dumps(metrics))
    runs = load_runs(tmp_path)
    assert any(line.startswith("| ega | 0 | 70.00") for line in compare.compare_runs(runs))
    for score in ("val_top1", "selected_top1"):  # was "a paired difference is NaN"
        with pytest.raises(ValueError) as refused:
            compare.compare_runs(runs, score=score)
        assert str(refused.value) == (
            f"{runs['run'][0]} and 1 more have no {score}: a run trained with val_size 0 holds "
            "out no validation split; compare by --score top1, or give a --runs-dir whose runs "
            "held one out."
        )


def test_compare_refuses_the_flags_of_its_other_mode(tmp_path, capsys):
    from egalib.experiments.cli import main

    train = ["compare", "--methods", "ega", "--profile", "smoke", "--runs-dir", str(tmp_path)]
    refusals = {  # were ignored: the table of --methods is against vanilla, by test top-1
        ("--against", "kd"): "--against applies",
        ("--against", "kd", "--score", "val_top1"): "--against and --score apply",
    }
    for flags, said in refusals.items():
        assert main([*train, *flags]) == 2
        assert capsys.readouterr().err.startswith(f"error: {said} only without --methods, ")
    assert not any(tmp_path.iterdir())  # nothing trained
    assert main(["compare", "--runs-dir", str(tmp_path), "--seeds", "0"]) == 2  # was ignored
    assert capsys.readouterr().err.startswith("error: --seeds applies only with --methods, ")


def test_compare_against_a_method_without_runs_names_the_methods_there(tmp_path, capsys):
    from egalib.experiments.cli import main

    for method in ("vanilla", "ega"):
        finished_run(tmp_path, method, 0, 70.0)
    for against in ("nosuch", "kd"):  # printed a table with empty difference columns
        assert main(["compare", "--runs-dir", str(tmp_path), "--against", against]) == 2
        assert capsys.readouterr().err == (
            f"error: --against {against}: no finished run under {tmp_path} is of that method; "
            "give one of those there: ega, vanilla.\n"
        )
    assert not (tmp_path / "compare.md").exists()
    assert main(["compare", "--runs-dir", str(tmp_path), "--against", "ega"]) == 0
    assert "| vanilla | 0 | 70.00 (1 seed, no sd) | +0.00 (1 seed, no interval) |" in (
        capsys.readouterr().out
    )


CONFIG_DAMAGES = {
    "not an object": (lambda path: path.write_text("[1, 2]"), "does not hold a JSON object"),
    # each of these stopped load_runs and compare with Python's own error
    "missing": (lambda path: path.unlink(), "cannot be read"),
    "a folder": (lambda path: path.unlink() or path.mkdir(), "cannot be read"),
    "nested too deep": (lambda path: path.write_text("[" * 100_000), "not valid JSON"),
}


@pytest.mark.parametrize("damage", CONFIG_DAMAGES)
def test_a_finished_folder_that_cannot_be_read_stops_load_runs_or_is_left_out_by_name(
    tmp_path, damage
):
    from egalib.runs import load_runs

    finished_run(tmp_path, "vanilla", 0, 70.0)
    broken = finished_run(tmp_path, "ega", 0, 71.0)
    write, says = CONFIG_DAMAGES[damage]
    write(broken / "config.json")
    with pytest.raises(ValueError, match=says):
        load_runs(tmp_path)
    unreadable = []
    frame = load_runs(tmp_path, unreadable)
    assert frame.method.tolist() == ["vanilla"]
    assert len(unreadable) == 1 and str(broken / "config.json") in unreadable[0]


def test_status_of_a_folder_that_is_not_there_says_so(tmp_path):
    with pytest.raises(ValueError, match="there is no folder .*typo; give the --runs-dir"):
        cluster.folder_status(tmp_path / "typo")
    assert cluster.folder_status(tmp_path) == ["0 finished, 0 running, 0 failed, 0 missing"]


@pytest.mark.integration
def test_status_lists_every_run_folder_and_compare_reads_them_from_the_command_line(tmp_path):
    finished_run(tmp_path, "vanilla", 0, 70.0)
    broken = tmp_path / "not-a-run"
    broken.mkdir()
    (broken / "config.json").write_text("[1, 2]")
    unreadable = finished_run(tmp_path, "ega", 0, 71.0)
    (unreadable / "config.json").write_text("{")
    cli = lambda *args: run_egalib(*args, "--runs-dir", str(tmp_path))
    status = cli("status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == f"run folders under {tmp_path}:"
    assert any(
        line.startswith("finished  fashion-mnist_") and "top-1 70.00 %" in line for line in lines
    )
    assert any(line.startswith("failed    not-a-run config.json not readable") for line in lines)
    assert lines[-1] == "1 finished, 0 running, 2 failed, 0 missing"
    compared = cli("compare")  # the folder it cannot read is named, the others compared
    assert compared.returncode == 0 and "| vanilla | 0 | 70.00 (1 seed, no sd) |" in compared.stdout
    assert compared.stderr.startswith(f"left out: {unreadable / 'config.json'} is not valid JSON")
    assert "| vanilla | 0 | 70.00" in (tmp_path / "compare.md").read_text()
    assert "vanilla" in (tmp_path / "compare.csv").read_text().splitlines()[1]
    (tmp_path / "empty").mkdir()
    nothing = run_egalib("compare", "--runs-dir", str(tmp_path / "empty"))
    assert nothing.returncode == 2 and nothing.stderr.startswith("error: no finished runs under")


def test_the_regime_study_s_differences_carry_the_interval_that_compare_gives():
    from egalib.experiments import study

    rows = [
        dict(method=method, batch_size=8, seed=seed, val_top1=top1, sweep=False)
        for seed, pair in enumerate([(70.0, 71.0), (72.0, 74.0), (71.0, 72.5)])
        for method, top1 in zip(("vanilla", "ega"), pair)
    ]
    table = pd.DataFrame(rows).assign(partners=0.7, node_diagonal=0.3)
    [ega] = study.paired_differences(table).itertuples()
    expected = compare.paired_interval([1.0, 2.0, 1.5])
    assert (ega.difference, ega.seeds) == (expected["difference"], 3)
    assert (ega.low, ega.high) == pytest.approx((expected["low"], expected["high"]))
    assert compare.verdict(ega._asdict()) == "holds"
