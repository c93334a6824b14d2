"""What the results explorer shows for a run directory, as pure functions of its results table.

Nothing here imports Streamlit; the page draws these frames and the tests call them directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.store import NESTED_COLUMNS, read_table
from bench.types import PoisonBenchError

#: the filters the page offers: table column → label
FILTERS = {
    "dataset": "Dataset",
    "model": "Model",
    "attack_label": "Attack",
    "rate": "Rate",
    "defense": "Defense",
}
#: metrics a chart may show (those present in the table are offered)
METRICS = (
    "accuracy",
    "macro_f1",
    "log_loss",
    "attack_success_rate",
    "source_accuracy",
    "det_f1",
    "det_roc_auc",
)
#: columns shown by default (the rest can be picked)
DEFAULT_COLUMNS = (
    "dataset",
    "model",
    "attack_label",
    "rate",
    "defense",
    "seed",
    "extra_fraction",
    "accuracy",
    "macro_f1",
    "log_loss",
    "attack_success_rate",
    "n_poisoned",
    "n_removed",
    "status",
)
#: where plots may lie, relative to the run directory
PLOT_GLOBS = ("*.png", "plots/**/*.png", "figures/**/*.png")


@dataclass
class RunResults:
    """A run directory's table, metadata (``run.json``), report text and plot files."""

    run_dir: Path
    table: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    report: str | None = None
    plots: list[Path] = field(default_factory=list)


def find_runs(root: str | Path) -> list[Path]:
    """Run directories under ``root`` (``root`` itself included): those holding a results table,
    sorted by path."""
    root = Path(root)
    if not root.is_dir():
        return []
    candidates = [root, *(p for p in root.iterdir() if p.is_dir())]
    return sorted(
        p for p in candidates if (p / "results.parquet").exists() or (p / "results.csv").exists()
    )


def load_run(run_dir: str | Path) -> RunResults:
    """Read a run directory. Raises PoisonBenchError when it holds no results table."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PoisonBenchError(f"{run_dir} is not a directory")
    table = read_table(run_dir)
    meta: dict[str, Any] = {}
    if (run_dir / "run.json").exists():
        try:
            meta = json.loads((run_dir / "run.json").read_text())
        except (OSError, json.JSONDecodeError):
            meta = {}
    report_path = run_dir / "report.md"
    report = report_path.read_text() if report_path.exists() else None
    plots = sorted({p for pattern in PLOT_GLOBS for p in run_dir.glob(pattern)})
    return RunResults(run_dir=run_dir, table=table, meta=meta, report=report, plots=plots)


def filter_options(table: pd.DataFrame) -> dict[str, list[Any]]:
    """The sorted distinct values of each filter column present in ``table``."""
    return {
        column: sorted(table[column].dropna().unique().tolist())
        for column in FILTERS
        if column in table
    }


def filter_table(table: pd.DataFrame, chosen: dict[str, list[Any] | None]) -> pd.DataFrame:
    """The rows whose value in each filter column is among the chosen ones (None or a missing
    key: no restriction; an empty list: no rows)."""
    keep = pd.Series(True, index=table.index)
    for column, values in chosen.items():
        if values is None or column not in table:
            continue
        keep &= table[column].isin(values)
    return table[keep].reset_index(drop=True)


def available_metrics(table: pd.DataFrame) -> list[str]:
    """The chartable metrics with at least one number in ``table``."""
    return [m for m in METRICS if m in table and table[m].notna().any()]


def ok_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == "ok"] if "status" in table else table


def metric_by_rate(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and std over seeds of ``metric`` with no extra clean data, per (dataset, model,
    attack, defense, rate): the poison-level curves. Columns: the keys, ``mean``, ``std``, ``n``.
    The clean reference (attack ``none`` at rate 0) is repeated as rate 0 of every attack."""
    ok = ok_rows(table)
    ok = ok[ok["extra_fraction"] == 0] if "extra_fraction" in ok else ok
    clean = ok[ok["attack"] == "none"]
    attacked = ok[ok["attack"] != "none"]
    parts = [attacked]
    for label in attacked["attack_label"].unique():
        parts.append(clean.assign(attack_label=label))
    if attacked.empty:
        parts = [clean]
    data = pd.concat(parts, ignore_index=True)
    keys = ["dataset", "model", "attack_label", "defense", "rate"]
    if data.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n"])
    grouped = data.groupby(keys, sort=True)[metric]
    out = grouped.agg(mean="mean", std="std", n="count").reset_index()
    return out


def metric_by_fraction(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean over seeds of ``metric`` per extra-clean fraction for every (dataset, model, attack,
    rate, defense): the recovery curves. Columns: the keys, ``extra_fraction``, ``mean``, ``n``."""
    ok = ok_rows(table)
    keys = ["dataset", "model", "attack_label", "rate", "defense", "extra_fraction"]
    if ok.empty or "extra_fraction" not in ok:
        return pd.DataFrame(columns=[*keys, "mean", "n"])
    out = ok.groupby(keys, sort=True)[metric].agg(mean="mean", n="count").reset_index()
    out["curve"] = (
        out["attack_label"] + " @ " + out["rate"].map("{:g}".format) + " / " + out["defense"]
    )
    return out


def summary_table(table: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """The report's table (``bench.report.accuracy_table``: mean ± std over seeds at f = 0, rows
    (dataset, model, attack, rate), columns defenses) for the filtered rows."""
    from bench.report import accuracy_table

    ok = ok_rows(table)
    if ok.empty or metric not in ok or ok[metric].isna().all():
        return pd.DataFrame()
    return accuracy_table(ok, metric).reset_index()


def display_columns(table: pd.DataFrame) -> list[str]:
    """Columns shown by default: the main identity and metric columns present in ``table``."""
    return [c for c in DEFAULT_COLUMNS if c in table]


def to_csv_bytes(table: pd.DataFrame) -> bytes:
    """The table as UTF-8 CSV (what the download button serves); nested columns stay JSON."""
    return table.to_csv(index=False).encode("utf-8")


def plain_columns(table: pd.DataFrame) -> list[str]:
    """All columns except the nested JSON ones (which make wide, unreadable cells)."""
    return [c for c in table.columns if c not in NESTED_COLUMNS]


def recovery_estimates(table: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
    """The report's extra-clean-data estimates (``bench.recovery.estimate_recovery``) for the
    whole table, with the run's own recovery settings from ``run.json`` (metric, tolerance,
    bootstrap), so the numbers are the report's."""
    from bench.recovery import estimate_recovery

    settings = meta.get("recovery") or {}
    ok = ok_rows(table)
    if ok.empty or "extra_fraction" not in ok:
        return pd.DataFrame()
    return estimate_recovery(
        table,
        settings.get("metric", "accuracy"),
        float(settings.get("tolerance", 0.005)),
        n_boot=int(settings.get("bootstrap", 1000)),
    )


def report_tables(
    table: pd.DataFrame, rec: pd.DataFrame, chosen: dict[str, list[Any] | None]
) -> list[tuple[str, pd.DataFrame]]:
    """The report's tables (``bench.report``) for the chosen rows, per dataset and model:
    extra clean data needed, clean rows each defense saves, attack success rate of targeted
    flips and filter quality. Returns (title, table) pairs, empty tables left out.

    The recovery estimates ``rec`` come from the whole table (they need the clean reference,
    which a rate filter would drop) and are then cut to the chosen attacks, rates, defenses.
    """
    from bench import report

    rows = filter_table(table, chosen)
    rec = filter_table(rec, chosen) if not rec.empty else rec
    out: list[tuple[str, pd.DataFrame]] = []
    pairs = sorted({(d, m) for d, m in rows[["dataset", "model"]].itertuples(index=False)})
    for dataset, model in pairs:
        where = f"{dataset} / {model}"
        r = rec[(rec["dataset"] == dataset) & (rec["model"] == model)] if not rec.empty else rec
        sub = rows[(rows["dataset"] == dataset) & (rows["model"] == model)]
        parts = []
        if not r.empty and (r["attack"] != "none").any():
            parts.append(("Extra clean data needed (× n_train)", report.recovery_table(r)))
            if ((r["attack"] != "none") & (r["defense"] != "none")).any():
                parts.append(("Clean rows saved by each defense", report.defense_value_table(r)))
        _, asr = report.targeted_tables(sub)
        parts.append(("Attack success rate (targeted flips)", asr))
        parts.append(
            (
                "Filter quality: precision / recall / ROC-AUC (clean removed)",
                report.filter_table(sub),
            )
        )
        out += [(f"{title}: {where}", t.reset_index()) for title, t in parts if not t.empty]
    return out
