"""The paper's published numbers (egalib/data/paper/results.csv, copied from the poster's tables).

Its `protocol` column says `sequential` (teacher head trained first: egalib's `pretrained`) or
`simultaneous` (egalib's `joint`); method names are the poster's (KD, FitNet, ..., EGA+KD).
"""

import pandas as pd

from ..files import PACKAGE_DATA

PROTOCOLS = {"sequential": "pretrained", "simultaneous": "joint"}


def paper_results() -> pd.DataFrame:
    """One row per table cell, with egalib's method and protocol names added."""
    table = pd.read_csv(PACKAGE_DATA / "paper" / "results.csv")
    table["egalib_method"] = table["method"].str.lower()
    table["egalib_protocol"] = table["protocol"].map(PROTOCOLS)
    return table


def paper_top1(teacher: str, student: str, dataset: str, method: str, protocol: str) -> float:
    """The published top-1 of one cell, or NaN where the paper has none (deduplicated: the
    same cell appears in more than one table with the same number, except where noted in the
    poster's oddities, where the first table's number is taken)."""
    t = paper_results()
    match = t[
        (t.teacher == teacher)
        & (t.student == student)
        & (t.dataset == dataset)
        & (t.egalib_method == method)
        & (t.egalib_protocol == protocol)
    ]
    return float(match["top1"].iloc[0]) if len(match) else float("nan")
