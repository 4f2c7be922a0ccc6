"""Paired comparisons over seeds, and the poster's claims checked on them.

Two runs with the same seed see the same batches and views, so a comparison takes the difference
of their top-1 seed by seed. Its 95 % interval is Student's t over those differences
(n - 1 degrees of freedom); the difference is *resolved* when the interval excludes 0.
"""

import math

import numpy as np
import pandas as pd
from scipy import stats

from .paper import paper_top1

LEVEL = 0.95
# the poster's claims that the embedded default can test: (claim, method a, method b), each
# read as "a beats b"; "ega (joint)" is EGA with the joint protocol, every other the pretrained
BASELINES = ("vanilla", "kd", "fitnet", "pkt", "rkd", "nce", "irg", "sp", "crd", "ccl")
CLAIMS = (
    *((f"EGA beats {b}", "ega", b) for b in BASELINES),
    ("node + edge beats the node term alone", "ega", "ega-node"),
    ("node + edge beats the edge term alone", "ega", "ega-edge"),
    ("EGA + KD beats EGA", "ega+kd", "ega"),
    ("EGA's pretrained protocol beats its joint one", "ega", "ega (joint)"),
)
JOINT = " (joint)"  # the label of a run of the joint protocol where the others are pretrained


def paired_interval(differences) -> dict:
    """The mean of paired differences, its t-interval and the number of seeds (a NaN interval
    with one seed)."""
    d = np.asarray(differences, dtype=float)
    if np.isnan(d).any():
        raise ValueError("a paired difference is NaN; every run compared needs a finite top-1.")
    n, mean = len(d), float(d.mean()) if len(d) else math.nan
    half = math.nan
    if n > 1:
        half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return {"difference": mean, "low": mean - half, "high": mean + half, "seeds": n}


def paired(runs: pd.DataFrame, a: str, b: str, score: str = "top1") -> dict:
    """`a` minus `b` (values of the `method` column), seed by seed over the seeds both have."""
    x = runs[runs.method == a].set_index("seed")[score]
    y = runs[runs.method == b].set_index("seed")[score]
    seeds = x.index.intersection(y.index)
    return paired_interval((x[seeds] - y[seeds]).to_numpy())


def verdict(interval: dict) -> str:
    if interval["low"] > 0:
        return "holds"
    if interval["high"] < 0:
        return "reversed"
    return f"unresolved at {interval['seeds']} seeds"


def poster_difference(a: str, b: str) -> float:
    """The poster's a minus b on CIFAR-100, ViT-B/32 to resnet8x4 (NaN where it lacks one)."""
    top1 = lambda m: paper_top1(
        "clip-vit-b32",
        "resnet8x4",
        "cifar100",
        m.removesuffix(JOINT),
        "joint" if m.endswith(JOINT) else "pretrained",
    )
    return top1(a) - top1(b)


def claims_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Each claim whose two methods both ran: the measured paired difference, its interval,
    the verdict, and the poster's own difference beside it."""
    present, rows = set(runs.method), []
    for claim, a, b in CLAIMS:
        if {a, b} <= present:
            interval = paired(runs, a, b)
            rows.append(
                {
                    "claim": claim,
                    **interval,
                    "verdict": verdict(interval),
                    "poster": poster_difference(a, b),
                }
            )
    return pd.DataFrame(rows)


def interval_text(interval: dict) -> str:
    """'+1.53 [+0.81, +2.25]'; with one seed '+1.53 (1 seed, no interval)'."""
    mean = f"{interval['difference']:+.2f}"
    if interval["seeds"] < 2:
        return f"{mean} (1 seed, no interval)"
    return f"{mean} [{interval['low']:+.2f}, {interval['high']:+.2f}]"
