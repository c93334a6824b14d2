"""The markdown report, generated from the results table (never hand-edited)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.store import atomic_write_text, read_table


def mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def accuracy_table(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """``metric`` mean ± std over seeds at f = 0: rows (dataset, model, attack, rate), columns
    defenses. The rate-0 clean cells (attack ``none``) head each dataset and model."""
    ok = df[(df["status"] == "ok") & (df["extra_fraction"] == 0)]
    table = (
        ok.groupby(["dataset", "model", "attack_label", "rate", "defense"], sort=True)[metric]
        .apply(mean_std)
        .unstack("defense")
        .fillna("–")
    )
    return table


def render_report(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    df = read_table(run_dir)
    meta = {}
    if (run_dir / "run.json").exists():
        meta = json.loads((run_dir / "run.json").read_text())
    lines = [f"# poisonbench report: {meta.get('name', run_dir.name)}", ""]
    summary = meta.get("summary")
    if summary:
        lines.append(
            f"{summary['cells']} cells: {summary['run']} run, {summary['cached']} cached, "
            f"{summary['failed']} failed; wall time {summary['wall_seconds']:.1f} s."
        )
        lines.append("")
    lines += ["## Accuracy (mean ± std over seeds, no extra clean data)", ""]
    lines.append(accuracy_table(df).reset_index().to_markdown(index=False))
    failed = df[df["status"] == "failed"]
    if not failed.empty:
        lines += ["", "## Failed cells", ""]
        lines.append(
            failed[
                ["cell_id", "dataset", "attack_label", "rate", "defense", "seed", "error"]
            ].to_markdown(index=False)
        )
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path) -> Path:
    path = Path(run_dir) / "report.md"
    atomic_write_text(path, render_report(run_dir))
    return path
