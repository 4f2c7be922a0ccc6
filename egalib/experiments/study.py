"""When EGA helps: the regime study.

EGA's node term asks each student embedding to correlate with its own teacher embedding and with
no other one in the batch. When a batch holds many images of the same class (many same-class
partners), that asks the student to tell apart images whose teacher embeddings are alike. The
study trains vanilla, ega, ega-node and ega-edge at batch 8, 16, 32 and 64 (the learning rate
scaled as 0.05 x B / 64) and EGA with several beta at batch 64, over paired seeds, and records
for each run its last epoch's validation top-1 (what the demo's batch size is chosen on; the
study reads no test accuracy) and what the node term met on test batches of its own size
(`analysis.node_matrix_stats`, descriptive). `python -m egalib study regime` writes one row per
run to <runs-dir>/regime-<profile>.csv and a card (command, commit, date, device); the demo's
ships in egalib/data/results/.
"""

import datetime
import json
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from ..analysis import node_matrix_stats
from ..config import RunConfig, profile_seeds
from ..files import PACKAGE_DATA, atomic_write_text, device_name, git_commit
from ..runs import Run
from . import weights
from .cluster import LOCAL, Launcher
from .compare import t_interval
from .paper_tables import seed_summary

BATCHES = (8, 16, 32, 64)
METHODS = ("vanilla", "ega", "ega-node", "ega-edge")
BETAS = (0.03, 0.1, 0.3, 1.0)  # EGA's beta at batch 64, beside the profile's own
LR_AT_64 = 0.05  # docs/method.md's learning rate, for batch 64
RESULTS = PACKAGE_DATA / "results"  # the shipped summaries, package data
SIZES = {"smoke": {"batches": (8, 16), "betas": (0.1, 1.0)}}  # seconds, for the tests


def regime_configs(profile: str = "demo", seeds=None, runs_dir: str = "runs") -> list[RunConfig]:
    """Every run of the study: methods x batch sizes x seeds, then EGA's beta sweep at 64."""
    sizes = SIZES.get(profile, {})
    batches, betas = sizes.get("batches", BATCHES), sizes.get("betas", BETAS)
    seeds = seeds or profile_seeds(profile)
    make = lambda b, **values: RunConfig.from_profile(
        profile, batch_size=b, lr=LR_AT_64 * b / 64, runs_dir=runs_dir, **values
    )
    configs = [make(b, method=m, seed=s) for b in batches for m in METHODS for s in seeds]
    used = ega_beta(profile)
    sweep = [
        make(max(batches), method="ega", beta=beta, seed=s)
        for beta in betas
        if beta != used
        for s in seeds
    ]
    return configs + sweep


def ega_beta(profile: str) -> float:
    """EGA's beta at `profile`: the method table's, or the one the profile chose."""
    return RunConfig.from_profile(profile, method="ega").weights.beta


def sweeps(config: RunConfig, profile: str) -> bool:
    """Whether the run is one of the beta sweep's, not at the profile's own weight."""
    return config.method == "ega" and config.weights.beta != ega_beta(profile)


def run_row(config: RunConfig) -> dict:
    """One finished run of the study as a row of the summary."""
    run = Run(config.run_path)
    e = run.load_embeddings()
    stats = node_matrix_stats(e["xs"], e["xt"], e["labels"], config.batch_size, config.seed)
    return {
        "method": config.method,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "beta": config.weights.beta,
        "seed": config.seed,
        "val_top1": run.metrics["val_top1"],  # what the study chooses on; no test accuracy
        **stats,
        "run": config.run_name,
    }


def regime_row(config: RunConfig, profile: str) -> dict:
    return {**run_row(config), "sweep": sweeps(config, profile)}


def run(
    name: str,
    profile: str = "demo",
    seeds=None,
    runs_dir: str = "runs",
    launcher: Launcher = LOCAL,
    out: Path | None = None,
    methods=None,
) -> pd.DataFrame:
    """Train what is missing of study `name`, regime or weights (`methods`: the weights study of
    those methods only), here or on Slurm by `launcher`, then write its summary (one row per
    run) and its card to `out` (None: write nothing)."""
    if name == "regime":
        configs, may_fail = regime_configs(profile, seeds, runs_dir), None
        row = partial(regime_row, profile=profile)
    else:
        configs = weights.weight_configs(profile, seeds, runs_dir, methods)
        row, may_fail = weights.weight_row, weights.diverged
    return summarize(f"{name}-{profile}", configs, row, launcher, out, may_fail)


def summarize(
    name: str, configs, row, launcher: Launcher, out: Path | None, may_fail=None
) -> pd.DataFrame:
    """A study's runs trained where missing, one `row(config)` each, written as out/<name>.csv
    with its card out/<name>.json (None: write nothing). `may_fail(config)` says whether a run
    that did not finish is a result (a weight that diverges) rather than an error."""
    began = time.time()
    try:
        launcher.train(configs)
    except RuntimeError:
        if may_fail is None or not all(Run(c.run_path).finished or may_fail(c) for c in configs):
            raise
    table = pd.DataFrame([row(c) for c in configs])
    if out is not None:
        atomic_write_text(Path(out) / f"{name}.csv", table.to_csv(index=False))
        atomic_write_text(Path(out) / f"{name}.json", json.dumps(card(began), indent=2))
    return table


def card(began: float) -> dict:
    """How the summary was made: the command, the commit, the date, the device, the wall time."""
    return {
        "command": "python -m egalib " + " ".join(sys.argv[1:]),
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"{device_name(torch.device('cpu'))}, {torch.get_num_threads()} threads",
        "wall_s": round(time.time() - began, 1),
    }


def paired_differences(table: pd.DataFrame, baseline: str = "vanilla") -> pd.DataFrame:
    """Per method and batch size at the profile's weights: validation top-1 minus the
    baseline's at the same seed and batch size, its mean, sample sd and 95 % interval (`low`,
    `high`) over the `seeds` that both have (NaN with one seed, or a NaN score), beside the mean
    partners and N_st diagonal."""
    rows = table[~table.sweep]
    keys = ["method", "batch_size"]
    summary = seed_summary(rows, by=keys, baseline=baseline, score="val_top1")
    summary = summary.join(rows.groupby(keys)[["partners", "node_diagonal"]].mean())
    summary = summary.drop(baseline, level="method").reset_index()
    summary = summary.rename(columns={"sd": "val_top1_sd", "difference_sd": "sd"})
    summary["seeds"] = summary.pop("paired")  # the seeds of the difference: those both have
    intervals = [t_interval(r.difference, r.sd, r.seeds) for r in summary.itertuples()]
    summary[["low", "high"]] = [[i["low"], i["high"]] for i in intervals]
    return summary[[*keys, "difference", "sd", "low", "high", "seeds", "partners", "node_diagonal"]]
