"""Each method at its own best weight: the weights study.

The method table's weights are the CRD code base's, tuned for CIFAR-100 at batch 64 on other
features; at another regime they can be far off (PKT's loss is a mean over the B x B matrix, so
its effective weight grows as the batch shrinks). The study trains each method with its main
weight on one log grid, the same for every method: the paper's weight times 0.001, 0.01, 0.1, 1
and 10, each with the same paired seeds. That weight is beta, and for KD alpha with the CE weight
gamma at 1, as every other method's (KD's temperature stays 4). It reads only the validation
split: the chosen weight is the grid point with the best mean last-epoch validation top-1.
`python -m egalib study weights` writes one row per run to <runs-dir>/weights-<profile>.csv,
without any test accuracy, and a card (command, commit, date, device); the demo's ships in
egalib/data/results/.
"""

import math

import pandas as pd

from ..config import RunConfig
from ..methods import METHODS
from ..runs import Run
from .cluster import ERROR

FACTORS = (0.001, 0.01, 0.1, 1.0, 10.0)  # times the paper's weight: four decades
SEEDS = (0, 1)  # paired: every grid point of every method sees the same batches and views
SMOKE_FACTORS = (0.1, 1.0)  # seconds, for the tests


def tuned(method: str) -> str:
    """The weight the study tunes: KD's alpha, every other method's beta."""
    return "alpha" if method == "kd" else "beta"


def grid(method: str, profile: str) -> list[float]:
    """The method's grid: its paper weight times each factor, to 6 significant digits."""
    factors = SMOKE_FACTORS if profile == "smoke" else FACTORS
    paper = getattr(METHODS[method], tuned(method))
    return [float(f"{paper * factor:.6g}") for factor in factors]


def weight_configs(
    profile: str = "demo", seeds=None, runs_dir: str = "runs", methods=None
) -> list[RunConfig]:
    """vanilla at each seed, then every other method (or those of `methods`) at each weight of
    its grid and each seed."""
    if methods and set(methods) == {"vanilla"}:  # it would train vanilla and choose nothing
        raise ValueError(
            "--methods vanilla leaves nothing to tune: vanilla has no weight, and the study "
            "always trains it as the reference; name the methods to tune."
        )
    make = lambda **values: RunConfig.from_profile(profile, runs_dir=runs_dir, **values)
    seeds = seeds or SEEDS
    configs = [make(method="vanilla", seed=s) for s in seeds]
    for method in methods or METHODS:
        if method == "vanilla":
            continue
        fixed = {"gamma": 1.0} if method == "kd" else {}
        for value in grid(method, profile):
            weight = {tuned(method): value, **fixed}
            configs += [make(method=method, seed=s, **weight) for s in seeds]
    return configs


def diverged(config: RunConfig) -> bool:
    """Whether the run stopped on a non-finite loss (`train.DivergenceError`)."""
    error = config.run_path / ERROR
    return error.is_file() and "DivergenceError" in error.read_text(errors="replace")


def weight_row(config: RunConfig) -> dict:
    """One run of the study: its weight and its validation top-1 (NaN where it diverged),
    nothing of the test."""
    run = Run(config.run_path)
    metrics = run.metrics if run.finished else {"val_top1": math.nan}
    key = tuned(config.method)
    return {
        "method": config.method,
        "weight": key,
        "value": getattr(config.weights, key),
        "paper": getattr(METHODS[config.method], key),
        "seed": config.seed,
        "val_top1": metrics["val_top1"],
        "diverged": not run.finished,
        "run": config.run_name,
    }


def chosen_weights(table: pd.DataFrame) -> pd.DataFrame:
    """Per method: the grid point with the best mean validation top-1 over the seeds (a point
    where a seed diverged has no mean and is never chosen; a method with no other point has
    none, NaN), that mean, vanilla's, and whether the point is interior to the grid (not its
    smallest or largest)."""
    vanilla = table.loc[table.method == "vanilla", "val_top1"].mean()
    points = table[table.method != "vanilla"].groupby(["method", "weight", "value"], sort=False)
    mean = lambda scores: scores.mean(skipna=False)
    means = points.agg(
        paper=("paper", "first"), val_top1=("val_top1", mean), seeds=("seed", "nunique")
    )
    rows = []
    for (method, weight), group in means.reset_index().groupby(["method", "weight"], sort=False):
        best = group.loc[group.val_top1.fillna(-math.inf).idxmax()]
        chosen = math.nan if math.isnan(best.val_top1) else best.value
        interior = group.value.min() < chosen < group.value.max()
        rows.append(
            {
                "method": method,
                "weight": weight,
                "paper": best.paper,
                "chosen": chosen,
                "val_top1": best.val_top1,
                "vanilla_val_top1": vanilla,
                "interior": bool(interior),
                "seeds": int(best.seeds),
            }
        )
    return pd.DataFrame(rows)
