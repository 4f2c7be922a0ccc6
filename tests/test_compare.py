"""Paired differences with t-intervals, and the claims table's verdicts."""

import math

import pandas as pd
import pytest

from egalib.experiments import compare


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


def test_interval_text_says_when_there_is_no_interval():
    assert compare.interval_text(compare.paired_interval([1.0, 2.0, 3.0])) == "+2.00 [-0.48, +4.48]"
    assert compare.interval_text(compare.paired_interval([1.5])) == "+1.50 (1 seed, no interval)"
