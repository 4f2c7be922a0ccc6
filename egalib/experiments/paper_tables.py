"""The poster's tables filled with our finished runs, beside the paper's numbers.

A run fills a cell when it is a run that `reproduce` trains for that cell, of `epochs` epochs
(the paper's 240 by default): its config is the cell's in everything that shapes results but the
seed. A run of another weight, size or setting (a study's, say) fills none. A cell without such
a run stays empty ("–"): it is never filled with another run or with the paper's number. Where
several seeds match a cell, the cell shows their mean top-1 and says how many.

`table_cells` gives one row per cell (the long form written to tables.csv), `paper_table` the
poster's layout (rows: methods, columns: the cells' teacher / student or dataset), and
`write_tables` writes every table to <runs_dir>/tables.md and <runs_dir>/tables.csv.
"""

import json
import math
from pathlib import Path

import pandas as pd

from ..config import RunConfig
from ..files import atomic_write_text
from ..runs import load_runs
from .reproduce import SUPERVISED_ROWS, table_configs, table_rows

# (table, protocol, title) of every table, in the poster's order.
TABLE_LAYOUTS = (
    ("architectures", "pretrained", "Different architectures (teacher head trained first)"),
    ("architectures", "joint", "Teacher and student trained simultaneously"),
    ("supervised-teachers", "pretrained", "Supervised teachers"),
    ("datasets", "pretrained", "Different datasets (teacher head trained first)"),
    ("datasets", "joint", "Different datasets, teacher and student trained simultaneously"),
)
LONG_COLUMNS = [
    "table",
    "protocol",
    "teacher",
    "student",
    "dataset",
    "method",
    "ours",
    "paper",
    "diff",
]
MISSING = "–"
RUN_COLUMNS = [
    "method",
    "teacher",
    "student",
    "dataset",
    "protocol",
    "epochs",
    "top1",
    "selected_top1",
]
SUPERVISED_NOTE = (
    "The poster lost the method names of the supervised-teacher table; its eight rows are read "
    "as " + ", ".join(SUPERVISED_ROWS.values()) + " (the order of the other tables without "
    "IRG). This is an assumption (egalib.experiments.reproduce.SUPERVISED_ROWS)."
)


def setting_key(values: dict) -> str | None:
    """What shapes a run's results, its seed and folder name aside, as text; None where `values`
    is no valid config."""
    values = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}
    try:
        shaping = RunConfig.from_dict(values).shaping()
    except (TypeError, ValueError):  # e.g. a method of a plugin that is not loaded
        return None
    shaping = {k: v for k, v in shaping.items() if k not in ("seed", "name")}
    return json.dumps({k: _whole(v) for k, v in shaping.items()}, sort_keys=True, default=str)


def _whole(value):
    """4000.0 as 4000: a column of runs with gaps holds its whole numbers as floats."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def run_keys(runs: pd.DataFrame | None) -> pd.Series:
    """`setting_key` of each run, on the runs' index."""
    if runs is None or len(runs) == 0:
        return pd.Series(dtype=object)
    return pd.Series([setting_key(row) for row in runs.to_dict("records")], index=runs.index)


def table_cells(table: str, protocol: str, runs: pd.DataFrame, epochs: int = 240) -> pd.DataFrame:
    """One row per cell of a poster table: our top-1 (NaN without a matching run), the paper's,
    their difference, how many runs matched, and whether ours is the best of its column."""
    cells = table_rows(table, protocol)
    configs = table_configs(table, protocol, seeds=(0,), epochs=epochs)  # one a cell, in order
    keys = run_keys(runs)
    rows = []
    for cell, config in zip(cells.itertuples(), configs):
        wanted = dict(
            teacher=cell.teacher,
            student=cell.student,
            dataset=cell.dataset,
            method=cell.egalib_method,
            protocol=cell.egalib_protocol,
        )
        hit = runs[keys == setting_key(config.to_dict())] if len(keys) else keys
        hit = hit.drop_duplicates("seed")  # one run a seed (another --name is the same cell)
        ours = float(hit["top1"].mean(skipna=False)) if len(hit) else float("nan")
        rows.append(
            {
                "table": table,
                **wanted,
                "ours": ours,
                "paper": float(cell.top1),
                "diff": ours - float(cell.top1),
                "runs": len(hit),
                "row": cell.method,
                "column": _column_label(table, cell),
            }
        )
    out = pd.DataFrame(rows)
    out[["ours", "diff"]] = out[["ours", "diff"]].round(2)
    best = out.groupby("column")["ours"].transform("max")
    out["best"] = out["ours"].notna() & (out["ours"] == best)
    return out


def _column_label(table: str, cell) -> str:
    if table == "datasets":
        return cell.dataset
    if table == "supervised-teachers":
        return cell.teacher
    return f"{cell.teacher} / {cell.student}"


def _row_label(table: str, cell: pd.Series) -> str:
    if table == "supervised-teachers":
        return f"{cell['method']} ({cell['row']}, assumed)"
    return cell["row"]


def format_cell(
    ours: float, paper: float, runs: int = 1, best: bool = False, bold=("**", "**")
) -> str:
    """'ours (paper P, +D)'; '– (paper P)' without a run; the best of a column in bold."""
    paper_text = "n/a" if pd.isna(paper) else f"{paper:.2f}"
    if pd.isna(ours):
        return f"{MISSING} (paper {paper_text})"
    number = f"{ours:.2f}"
    if best:
        number = f"{bold[0]}{number}{bold[1]}"
    diff = "" if pd.isna(paper) else f", {ours - paper:+.2f}"
    several = f" [mean of {runs} runs]" if runs > 1 else ""
    return f"{number} (paper {paper_text}{diff}){several}"


def paper_table(
    table: str, protocol: str, runs: pd.DataFrame, epochs: int = 240, bold=("**", "**")
) -> pd.DataFrame:
    """The poster's layout of one table: rows are methods, columns the cells' teacher / student
    (or dataset, or supervised teacher); each entry says ours, the paper's and the difference."""
    cells = table_cells(table, protocol, runs, epochs)
    cells["text"] = [format_cell(c.ours, c.paper, c.runs, c.best, bold) for c in cells.itertuples()]
    cells["row_label"] = [_row_label(table, c) for _, c in cells.iterrows()]
    wide = cells.pivot(index="row_label", columns="column", values="text")
    wide = wide.loc[list(dict.fromkeys(cells["row_label"])), list(dict.fromkeys(cells["column"]))]
    wide.index.name, wide.columns.name = "method", None
    return wide


def finished_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Every finished run, whatever its size: what exists under the runs folder."""
    if runs is None or len(runs) == 0:
        return pd.DataFrame(columns=RUN_COLUMNS)
    out = runs[[c for c in RUN_COLUMNS if c in runs]]
    return out.sort_values(["dataset", "teacher", "student", "protocol", "epochs", "method"])


def _text(value) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.2f}"
    return str(value)


def to_markdown(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub markdown table (no extra dependency); floats with two decimals."""
    header = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for label, row in frame.iterrows():
        values = [str(label)] if index else []
        values += [_text(v) for v in row]
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in values) + " |")
    return "\n".join(lines)


def all_cells(runs: pd.DataFrame, epochs: int = 240) -> pd.DataFrame:
    """The long form of every table: the rows of tables.csv."""
    parts = [table_cells(table, protocol, runs, epochs) for table, protocol, _ in TABLE_LAYOUTS]
    return pd.concat(parts, ignore_index=True)


def tables_markdown(runs: pd.DataFrame, epochs: int = 240) -> str:
    """Every table as markdown, each with a line saying how many of its cells have a run."""
    lines = [
        "# The poster's tables: our runs beside the paper's numbers",
        "",
        f"Each cell: our top-1 (%, last epoch, runs of exactly {epochs} epochs) (the paper's "
        f"top-1, ours - paper). {MISSING}: no such run. Bold: our best in the column.",
    ]
    for table, protocol, title in TABLE_LAYOUTS:
        cells = table_cells(table, protocol, runs, epochs)
        filled = int(cells["ours"].notna().sum())
        lines += [
            "",
            f"## {title}",
            "",
            f"table `{table}`, protocol `{protocol}`: {filled} of {len(cells)} cells have a run.",
        ]
        if filled == 0:
            lines[-1] += f" The table is empty: no finished {epochs}-epoch run matches its cells."
        if table == "supervised-teachers":
            lines += ["", SUPERVISED_NOTE]
        lines += ["", to_markdown(paper_table(table, protocol, runs, epochs))]
    finished = finished_runs(runs)
    lines += ["", "## All finished runs", "", f"{len(finished)} finished runs, of any size."]
    if len(finished):
        lines += ["", to_markdown(finished, index=False)]
    return "\n".join(lines) + "\n"


def write_tables(runs_dir: str | Path, epochs: int = 240) -> tuple[Path, Path]:
    """Write every table to <runs_dir>/tables.md and (long form) <runs_dir>/tables.csv."""
    runs_dir = Path(runs_dir)
    runs = load_runs(runs_dir)
    md, csv = runs_dir / "tables.md", runs_dir / "tables.csv"
    atomic_write_text(md, tables_markdown(runs, epochs))
    atomic_write_text(csv, all_cells(runs, epochs)[LONG_COLUMNS].to_csv(index=False))
    return md, csv


def seed_summary(
    runs: pd.DataFrame, by=("method",), baseline: str = "vanilla", score: str = "top1"
) -> pd.DataFrame:
    """Per group of `by`: the mean and sample sd over seeds of `score` (a column of `runs`, also
    the mean's column), and the paired difference to `baseline` (its run with the same seed and
    the same other keys), mean and sd over the `paired` seeds that both have. An sd needs two
    seeds: with one it is NaN, and `mean_sd` says so in words. A NaN score gives NaN, never a
    mean of the others."""
    keys = [k for k in by if k != "method"]
    base = runs[runs["method"] == baseline].set_index([*keys, "seed"])[score].rename("base")
    joined = runs.join(base.to_frame().assign(paired=True), on=[*keys, "seed"])
    joined["difference"] = joined[score] - joined["base"]
    mean, sd = (lambda s: s.mean(skipna=False)), (lambda s: s.std(skipna=False))
    summary = joined.groupby(list(by), sort=False).agg(
        seeds=("seed", "nunique"), **{score: (score, mean)}, sd=(score, sd)
    )
    paired = joined[joined["paired"].notna()].groupby(list(by), sort=False)["difference"]
    differences = paired.agg(paired="size", difference=mean, difference_sd=sd)
    return summary.join(differences).fillna({"paired": 0}).astype({"paired": int})


def mean_sd(mean: float, sd: float, seeds: int, signed: bool = False) -> str:
    """'75.02 ± 0.81'; with one seed '75.02 (1 seed, no sd)'; '–' for a missing mean."""
    if pd.isna(mean):
        return MISSING
    number = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return f"{number} ± {sd:.2f}" if seeds > 1 else f"{number} (1 seed, no sd)"
