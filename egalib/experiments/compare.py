"""Paired comparisons over seeds, and the poster's claims checked on them.

Two runs with the same seed see the same batches and views, so a comparison takes the difference
of their top-1 seed by seed. Its 95 % interval is Student's t over those differences
(n - 1 degrees of freedom); the difference is *resolved* when the interval excludes 0.
"""

import math
from dataclasses import fields

import numpy as np
import pandas as pd
from scipy import stats

from ..config import EXECUTION_ONLY, RunConfig
from .paper import paper_top1
from .paper_tables import mean_sd

LEVEL = 0.95
# the poster's claims that the embedded default can test: (claim, method a, method b), each
# read as "a beats b", both under the protocol of the runs compared unless one is named
BASELINES = ("vanilla", "kd", "fitnet", "pkt", "rkd", "nce", "irg", "sp", "crd", "ccl")
CLAIMS = (
    *((f"EGA beats {b}", "ega", b) for b in BASELINES),
    ("node + edge beats the node term alone", "ega", "ega-node"),
    ("node + edge beats the edge term alone", "ega", "ega-edge"),
    ("EGA + KD beats EGA", "ega+kd", "ega"),
    ("EGA's pretrained protocol beats its joint one", "ega (pretrained)", "ega (joint)"),
)


def paired_interval(differences) -> dict:
    """The mean of paired differences, its t-interval and the number of seeds (a NaN interval
    with one seed)."""
    d = np.asarray(differences, dtype=float)
    if np.isnan(d).any():
        raise ValueError("a paired difference is NaN; every run compared needs a finite top-1.")
    n = len(d)
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    return t_interval(float(d.mean()) if n else math.nan, sd, n)


def t_interval(mean: float, sd: float, n: int) -> dict:
    """The interval of the mean of n paired differences whose sample sd is `sd` (NaN with fewer
    than two)."""
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
    return {"difference": mean, "low": mean - half, "high": mean + half, "seeds": n}


def paired(runs: pd.DataFrame, a: str, b: str, score: str = "top1") -> dict:
    """`a` minus `b` (values of the `method` column), seed by seed over the seeds both have."""
    x = runs[runs.method == a].set_index("seed")[score]
    y = runs[runs.method == b].set_index("seed")[score]
    for method, values in ((a, x), (b, y)):
        if values.index.has_duplicates:  # copies of one run would narrow the interval to nothing
            raise ValueError(
                f"{method} has more than one run of seed "
                f"{values.index[values.index.duplicated()][0]}; pair one run per seed."
            )
    seeds = x.index.intersection(y.index)
    return paired_interval((x[seeds] - y[seeds]).to_numpy())


def verdict(interval: dict) -> str:
    if interval["low"] > 0:
        return "holds"
    if interval["high"] < 0:
        return "reversed"
    return f"unresolved at {counted(interval['seeds'], 'seed')}"


def counted(count: int, thing: str) -> str:
    """`1 seed`, `2 seeds`: a count with its noun, plural where it is not one."""
    return f"{count} {thing}" if count == 1 else f"{count} {thing}s"


def claim_cell(name: str, protocol: str) -> tuple[str, str]:
    """A claim's side as (method, protocol): `ega (joint)` is EGA under the joint protocol, a
    plain name the method under `protocol`."""
    method, _, named = name.partition(" (")
    return method, named.removesuffix(")") or protocol


def poster_difference(a: tuple[str, str], b: tuple[str, str]) -> float:
    """The poster's a minus b, each a (method, protocol), on CIFAR-100, ViT-B/32 to resnet8x4
    (NaN where it lacks one)."""
    top1 = lambda cell: paper_top1("clip-vit-b32", "resnet8x4", "cifar100", *cell)
    return top1(a) - top1(b)


def claims_table(runs: pd.DataFrame, protocol: str = "pretrained") -> pd.DataFrame:
    """Each claim whose two sides both ran: the measured paired difference, its interval, the
    verdict, and the poster's own difference beside it. A plain label in `runs` ran under
    `protocol`; `ega (joint)` (or `ega (pretrained)`) under the protocol it names."""
    label = lambda cell: cell[0] if cell[1] == protocol else f"{cell[0]} ({cell[1]})"
    present, rows = set(runs.method), []
    for claim, *sides in CLAIMS:
        a, b = (claim_cell(side, protocol) for side in sides)
        if {label(a), label(b)} <= present:
            interval = paired(runs, label(a), label(b))
            poster = poster_difference(a, b)
            rows.append(
                {"claim": claim, **interval, "verdict": verdict(interval), "poster": poster}
            )
    return pd.DataFrame(rows)


def interval_text(interval: dict) -> str:
    """'+1.53 [+0.81, +2.25]'; with one seed '+1.53 (1 seed, no interval)'."""
    mean = f"{interval['difference']:+.2f}"
    if interval["seeds"] < 2:
        return f"{mean} (1 seed, no interval)"
    return f"{mean} [{interval['low']:+.2f}, {interval['high']:+.2f}]"


# what makes runs comparable: they differ only in method, weights, options, protocol and seed
SETTING = ("dataset", "teacher", "student", "epochs", "batch_size", "lr", "embed_dim")
SETTING += ("train_size", "val_size", "test_size")
# a run's own choices, which its label names: its weights and options where given, kd_temperature
# where the runs of its method differ in it
OWN = ("method", "protocol", "seed", "name", "gamma", "alpha", "beta", "options", "kd_temperature")
# every other field that shapes results (momentum, padding, ...) splits settings too; the
# heading names it where the runs differ in it
MORE_SETTING = [f.name for f in fields(RunConfig) if f.name not in SETTING + OWN + EXECUTION_ONLY]


def run_label(row: dict, protocols: int, temperatures: int = 1) -> str:
    """The method, with the weights and options given in place of its defaults (and its
    kd_temperature where its runs have `temperatures` of them), and its protocol where runs of
    both are compared."""
    given = [f"{k} {row[k]:g}" for k in ("gamma", "alpha", "beta") if pd.notna(row.get(k))]
    options = row.get("options")
    given += [f"{k} {v:g}" for k, v in (options if isinstance(options, dict) else {}).items()]
    given += [f"kd_temperature {row['kd_temperature']:g}"] if temperatures > 1 else []
    label = row["method"] + (f" ({', '.join(given)})" if given else "")
    return label + (f" [{row['protocol']}]" if protocols > 1 else "")


def check_scores(runs: pd.DataFrame, score: str) -> None:
    """Every run has the validation `score`: one trained with val_size 0 has none."""
    missing = runs.loc[runs[score].isna(), "run"].tolist() if score != "top1" else []
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ValueError(
            f"{missing[0]}{more} {'have' if more else 'has'} no {score}: a run trained with "
            "val_size 0 holds out no validation split; compare by --score top1, or give a "
            "--runs-dir whose runs held one out."
        )


def reference_label(labels, against: str, label: str) -> str | None:
    """The runs that the run labelled `label` is measured against: `against` at its defaults
    (of the run's protocol where both protocols are compared), else its one variant (say
    `ega (beta 0.3)`); None where several variants and no plain one leave the choice open."""
    protocol = label[label.rfind(" [") :] if label.endswith("]") else ""
    variants = [other for other in labels if other.split(" ")[0] == against]
    for wanted in (against + protocol, against):
        if wanted in variants:
            return wanted
    plain = [other for other in variants if other.startswith(against + " [")]
    choices = plain or variants  # the other protocol's plain runs, else any variant
    return choices[0] if len(choices) == 1 else None


def compare_runs(runs: pd.DataFrame, against: str = "vanilla", score: str = "top1") -> list[str]:
    """Markdown lines: per setting, each method's mean ± sd over its seeds and its paired
    difference to `against` (a method of the same setting) with its 95 % interval."""
    check_scores(runs, score)
    lines = []
    split = [*SETTING, *(k for k in MORE_SETTING if k in runs and runs[k].nunique() > 1)]
    for setting, group in runs.groupby(split, dropna=False, sort=False):
        protocols = group.protocol.nunique()
        temperatures = group.groupby("method").kd_temperature.nunique()
        labels = [
            run_label(row, protocols, temperatures[row["method"]])
            for row in group.to_dict("records")
        ]
        group = group.assign(method=labels).drop_duplicates(["method", "seed"], keep="last")
        named = ", ".join(f"{k} {'all' if pd.isna(v) else v}" for k, v in zip(split, setting))
        labels = list(group.method.unique())
        references = {label: reference_label(labels, against, label) for label in labels}
        found = sorted({r.split(" [")[0] for r in references.values() if r})
        minus = ", ".join(found) or f"{against} (none of its runs here is plain {against})"
        lines += ["", named, "", f"| run | seeds | {score}, mean ± sd | minus {minus} | verdict |"]
        lines += ["| --- | --- | ---: | ---: | --- |"]
        for method, runs_of in group.groupby("method", sort=False):
            values = runs_of[score].astype(float)
            seeds = " ".join(map(str, sorted(runs_of.seed)))
            difference = verdict_text = ""
            if (reference := references[method]) and method != reference:
                interval = paired(group, method, reference, score)
                if interval["seeds"]:
                    difference, verdict_text = interval_text(interval), verdict(interval)
                if 1 < interval["seeds"] < len(values):  # the seeds that both have
                    difference += f" ({interval['seeds']} seeds paired)"
            row = f"| {method} | {seeds} | {mean_sd(values.mean(), values.std(), len(values))} |"
            lines.append(f"{row} {difference} | {verdict_text} |")
    return lines[1:]
