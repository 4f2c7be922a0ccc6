"""The paper's published numbers (egalib/data/paper/results.csv, copied from the poster's tables).

Its `protocol` column says `sequential` (teacher head trained first: egalib's `pretrained`) or
`simultaneous` (egalib's `joint`); method names are the poster's (KD, FitNet, ..., EGA+KD).
"""

import pandas as pd

from ..files import PACKAGE_DATA, read_table

PROTOCOLS = {"sequential": "pretrained", "simultaneous": "joint"}
COLUMNS = ("table", "teacher", "student", "dataset", "method", "protocol", "top1")


def paper_results() -> pd.DataFrame:
    """One row per table cell, with egalib's method and protocol names added."""
    path, fix = PACKAGE_DATA / "paper" / "results.csv", "restore the file from git."
    table = read_table(path, fix, COLUMNS)
    words = pd.to_numeric(table["top1"], errors="coerce").isna() & table["top1"].notna()
    if words.any() or not table["protocol"].isin(list(PROTOCOLS)).all():
        raise ValueError(
            f"{path} needs a number (or nothing) in every top1 cell and a protocol of "
            f"{' or '.join(PROTOCOLS)} in every row; {fix}"
        )
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
