"""What the results explorer shows for a run directory, as pure functions of its results table.

Nothing here imports Streamlit; the page draws these frames and the tests call them directly.
Every grouping and filter by dataset, model, attack or defense goes through
:data:`GROUP_COLUMNS` (see :func:`group_keys`), and what the page shows for them through
:data:`LABEL_COLUMNS`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.recovery import estimate_recovery
from bench.analysis.report import (
    accuracy_table,
    defense_value_table,
    recovery_table,
    targeted_tables,
)
from bench.analysis.report import filter_table as filter_quality_table
from bench.core.schema import FALLBACK_METRICS, NESTED_COLUMNS, NO_ATTACK_ID, NO_DEFENSE_ID
from bench.core.store import read_table
from bench.core.types import PoisonBenchError

#: The column that identifies each dataset, model, attack and defense wherever the explorer
#: groups or filters rows: the configuration ids (``bench.core.schema``), never a display string.
GROUP_COLUMNS: dict[str, str] = {
    "dataset": "dataset_id",
    "model": "model_id",
    "attack": "attack_id",
    "defense": "defense_id",
}
#: the column the page shows for each of them (unique per id by construction)
LABEL_COLUMNS: dict[str, str] = {
    "dataset": "dataset_label",
    "model": "model_label",
    "attack": "attack_label",
    "defense": "defense_label",
}


def group_keys(*roles: str) -> list[str]:
    """The columns to group by for ``roles`` (``"attack"``, ``"rate"``, ...): each role's
    :data:`GROUP_COLUMNS` column, followed by its label column when that differs (a label is a
    function of the id, so the groups are the same and the label is kept for display); a role
    that is not in GROUP_COLUMNS (``rate``, ``extra_fraction``) is a column itself."""
    columns: list[str] = []
    for role in roles:
        for column in (GROUP_COLUMNS.get(role, role), LABEL_COLUMNS.get(role, role)):
            if column not in columns:
                columns.append(column)
    return columns


#: the filters the page offers, in page order: table column → title
FILTERS = {
    GROUP_COLUMNS["attack"]: "Attack",
    "rate": "Poison rate",
    GROUP_COLUMNS["defense"]: "Defense",
    GROUP_COLUMNS["dataset"]: "Dataset",
    GROUP_COLUMNS["model"]: "Model",
}
#: how the extra-clean-data cells (``0.79× [0.15–2+]``) read, shown beside those tables
INTERVAL_NOTE = (
    "How to read a cell such as `0.79× [0.15–2+]`: about 0.79 × the training rows of extra "
    "clean data bring the mean accuracy over seeds back within the tolerance of the clean model "
    "(interpolated between the fractions measured); `[0.15–2+]` is its 95 % interval over "
    "seeds (a t-test on the paired per-seed curves; the per-seed range with fewer than 3 seeds), and `2+` means the interval's upper end lies beyond the largest fraction "
    "measured (2×). `> 2×`: not recovered within the fractions measured; `†`: the clean pool "
    "ran out first; `–`: no estimate."
)
ROWS_NOTE = (
    "Clean rows each defense saves: the undefended extra fraction minus the defended one, "
    "× training rows, [its 95 % interval, the two curves paired by seed]; `n.s.`: the interval "
    "includes 0 (not distinguishable from no defense at this seed count). `≥` marks a lower "
    "bound (the undefended curve never recovered); `–` that the defended curve never recovered."
)
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
    "dataset_label",
    "model_label",
    "attack_label",
    "rate",
    "defense_label",
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


def option_labels(table: pd.DataFrame, column: str) -> dict[Any, str]:
    """What the page shows for each value of a filter column: its label (from
    :data:`LABEL_COLUMNS`) when the column is an id, the value itself otherwise; rates as
    percentages."""
    if column == "rate":
        return {v: _percent(v) for v in table[column].dropna().unique()}
    role = next((r for r, c in GROUP_COLUMNS.items() if c == column), None)
    label = LABEL_COLUMNS.get(role, column) if role else column
    if label == column or label not in table:
        return {v: str(v) for v in table[column].dropna().unique()}
    pairs = table[[column, label]].drop_duplicates(column)
    return dict(zip(pairs[column], pairs[label].astype(str), strict=True))


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
    """The rows with status ``ok`` (all rows when the table has no status column)."""
    return table[table["status"] == "ok"] if "status" in table else table


def _is_clean(table: pd.DataFrame) -> pd.Series:
    """The clean reference rows: no attack (a rate-0 cell is always the ``none`` attack)."""
    return table["attack_id"] == NO_ATTACK_ID


def metric_by_rate(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and std over seeds of ``metric`` with no extra clean data, per (dataset, model,
    attack, defense, rate): the poison-level curves. Columns: the :func:`group_keys` of those,
    ``mean``, ``std``, ``n``. The clean reference (attack ``none`` at rate 0) is repeated as rate
    0 of every attack; groups with no value of ``metric`` (an untargeted attack's attack success
    rate) are left out, so a chart's legend lists only the lines it draws."""
    keys = group_keys("dataset", "model", "attack", "defense", "rate")
    ok = ok_rows(table)
    ok = ok[ok["extra_fraction"] == 0] if "extra_fraction" in ok else ok
    clean = ok[_is_clean(ok)]
    attacked = ok[~_is_clean(ok)]
    attack_cols = group_keys("attack")
    parts = [attacked]
    for values in attacked[attack_cols].drop_duplicates().itertuples(index=False):
        parts.append(clean.assign(**dict(zip(attack_cols, values, strict=True))))
    if attacked.empty:
        parts = [clean]
    data = pd.concat(parts, ignore_index=True)
    data = data[data[metric].notna()] if metric in data else data.iloc[0:0]
    if data.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n"])
    grouped = data.groupby(keys, sort=True)[metric]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


#: the defense label the clean reference curve gets in the recovery chart's panels
CLEAN_CURVE = "clean model (no attack)"


def metric_by_fraction(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean over seeds of ``metric`` per extra-clean fraction for every (dataset, model, attack,
    rate, defense): the recovery curves. Columns: the :func:`group_keys` of those,
    ``extra_fraction``, ``mean``, ``n``, and ``panel`` (``"<attack> at <rate>"``, one chart
    panel per attack and rate). The clean model's curve (no attack, no defense) is added to
    every panel as defense :data:`CLEAN_CURVE`; groups with no value of ``metric`` are left
    out."""
    keys = group_keys("dataset", "model", "attack", "rate", "defense", "extra_fraction")
    columns = [*keys, "mean", "n", "panel"]
    ok = ok_rows(table)
    if ok.empty or "extra_fraction" not in ok or metric not in ok:
        return pd.DataFrame(columns=columns)
    ok = ok[ok[metric].notna()].assign(_clean=_is_clean)
    out = ok.groupby([*keys, "_clean"], sort=True)[metric].agg(mean="mean", n="count")
    out = out.reset_index()
    clean_mask = out.pop("_clean").astype(bool)
    clean = out[clean_mask & (out[GROUP_COLUMNS["defense"]] == NO_DEFENSE_ID)]
    attacked = out[~clean_mask]
    parts = [attacked]
    panel_cols = group_keys("dataset", "model", "attack", "rate")
    for values in attacked[panel_cols].drop_duplicates().itertuples(index=False):
        ident = dict(zip(panel_cols, values, strict=True))
        same = pd.Series(True, index=clean.index)
        for column in group_keys("dataset", "model"):
            same &= clean[column] == ident[column]
        extra = {c: ident[c] for c in group_keys("attack", "rate")}
        extra.update(dict.fromkeys(group_keys("defense"), CLEAN_CURVE))
        parts.append(clean[same].assign(**extra))
    data = pd.concat(parts, ignore_index=True) if not attacked.empty else out
    if data.empty:
        return pd.DataFrame(columns=columns)
    label = LABEL_COLUMNS["attack"]
    data["panel"] = data[label].astype(str) + " at " + data["rate"].map(_percent)
    return data[columns].reset_index(drop=True)


def _percent(rate: float) -> str:
    return f"{rate:.0%}" if round(rate * 100, 6).is_integer() else f"{rate:.1%}"


def summary_table(table: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """The report's table (``bench.analysis.report.accuracy_table``: mean ± std over seeds at f = 0, rows
    (dataset, model, attack, rate), columns defenses) for the filtered rows."""
    ok = ok_rows(table)
    if ok.empty or metric not in ok or ok[metric].isna().all():
        return pd.DataFrame()
    parts = []
    for (_, _), sub in ok.groupby(["dataset_id", "model_id"], sort=True):
        frame = accuracy_table(sub, metric)
        if not frame.empty:
            frame.insert(0, "model", sub["model_label"].iloc[0])
            frame.insert(0, "dataset", sub["dataset_label"].iloc[0])
            parts.append(frame)
    return pd.concat(parts, ignore_index=True).fillna("–") if parts else pd.DataFrame()


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
    """The report's extra-clean-data estimates (``bench.analysis.recovery.estimate_recovery``) for the
    whole table, with the run's own recovery settings from ``run.json`` (metric, tolerance,
    bootstrap), so the numbers are the report's."""
    settings = meta.get("recovery") or {}
    ok = ok_rows(table)
    if ok.empty or "extra_fraction" not in ok:
        return pd.DataFrame()
    metric = settings.get("metric", "accuracy")
    return estimate_recovery(
        table,
        metric,
        float(settings.get("tolerance", 0.005)),
        n_boot=int(settings.get("bootstrap", 1000)),
        fallback=FALLBACK_METRICS.get(metric),
    )


def report_tables(
    table: pd.DataFrame, rec: pd.DataFrame, chosen: dict[str, list[Any] | None]
) -> list[tuple[str, pd.DataFrame]]:
    """The report's tables (``bench.analysis.report``) for the chosen rows, per dataset and model:
    extra clean data needed, clean rows each defense saves, attack success rate of targeted
    flips and filter quality. Returns (title, table) pairs, empty tables left out.

    The recovery estimates ``rec`` come from the whole table (they need the clean reference,
    which a rate filter would drop) and are then cut to the chosen attacks, rates, defenses.
    """
    rows = filter_table(table, chosen)
    rec = filter_table(rec, chosen) if not rec.empty else rec
    out: list[tuple[str, pd.DataFrame]] = []
    keys = ["dataset_id", "model_id", "dataset_label", "model_label"]
    pairs = rows[keys].drop_duplicates(["dataset_id", "model_id"]).itertuples(index=False)
    for dataset, model, dataset_label, model_label in sorted(pairs, key=lambda t: t[2:]):
        where = f"{dataset_label} / {model_label}"
        r = (
            rec[(rec["dataset_id"] == dataset) & (rec["model_id"] == model)]
            if not rec.empty
            else rec
        )
        sub = rows[(rows["dataset_id"] == dataset) & (rows["model_id"] == model)]
        parts = []
        attacked = (r["attack_id"] != NO_ATTACK_ID) if not r.empty else None
        if not r.empty and attacked.any():
            parts.append(("Extra clean data needed (× n_train)", recovery_table(r)))
            if (attacked & (r["defense_id"] != NO_DEFENSE_ID)).any():
                parts.append(("Clean rows saved by each defense", defense_value_table(r)))
        _, asr = targeted_tables(sub)
        parts.append(("Attack success rate (targeted flips)", asr))
        parts.append(
            (
                "Filter quality: precision / recall / ROC-AUC (clean removed)",
                filter_quality_table(sub),
            )
        )
        out += [(f"{title}: {where}", t) for title, t in parts if not t.empty]
    return out


def table_note(title: str) -> str | None:
    """How to read a table of :func:`report_tables` (the interval notation of the extra clean
    data needed, the rows a defense saves), or None."""
    if title.startswith("Extra clean data needed"):
        return INTERVAL_NOTE
    if title.startswith("Clean rows saved"):
        return ROWS_NOTE
    return None


# ---------------------------------------------------------------------------------------------
# report.md, rendered as GitHub renders it
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportBlock:
    """A piece of report.md: ``markdown`` (``text``), ``image`` (``path`` resolved against the
    run directory, ``text`` its alt text; ``exists`` False for a missing file) or ``details``
    (a collapsible ``<details>`` section: ``text`` its summary, ``children`` its blocks)."""

    kind: str
    text: str = ""
    path: Path | None = None
    exists: bool = True
    children: tuple[ReportBlock, ...] = ()


_IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<src><[^>]+>|[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_DETAILS_OPEN = re.compile(r"^\s*<details(?:\s[^>]*)?>\s*(?P<rest>.*)$", re.IGNORECASE)
_DETAILS_CLOSE = re.compile(r"^\s*</details>\s*$", re.IGNORECASE)
_SUMMARY = re.compile(r"<summary>(?P<text>.*?)</summary>", re.IGNORECASE | re.DOTALL)
_FENCE = re.compile(r"^\s*(```|~~~)")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def report_blocks(text: str, run_dir: str | Path) -> list[ReportBlock]:
    """report.md as blocks the page can draw the way GitHub renders the file: ``<details>``
    sections become collapsible blocks (Streamlit's markdown would print the tags), and images
    become image blocks with their path resolved against ``run_dir`` (a browser would resolve
    ``![..](plot.png)`` against the app's URL and show a broken image). Code fences are kept
    as they are, tags and images inside them included."""
    blocks, _ = _parse_blocks(text.splitlines(), 0, Path(run_dir))
    return blocks


def _parse_blocks(
    lines: list[str], start: int, run_dir: Path, closing: bool = False
) -> tuple[list[ReportBlock], int]:
    blocks: list[ReportBlock] = []
    chunk: list[str] = []
    fence: str | None = None
    i = start

    def flush() -> None:
        if chunk:
            blocks.extend(_split_images("\n".join(chunk), run_dir))
            chunk.clear()

    while i < len(lines):
        line = lines[i]
        found = _FENCE.match(line)
        if fence is not None:
            chunk.append(line)
            if found and found.group(1) == fence:
                fence = None
            i += 1
            continue
        if found:
            fence = found.group(1)
            chunk.append(line)
            i += 1
            continue
        if closing and _DETAILS_CLOSE.match(line):
            flush()
            return blocks, i + 1
        opened = _DETAILS_OPEN.match(line)
        if opened:
            flush()
            rest = opened.group("rest")
            inner_lines = lines[i + 1 :]
            summary = _SUMMARY.search(rest)
            if summary is None and inner_lines:  # <summary> on the next line
                summary = _SUMMARY.search(inner_lines[0])
                if summary is not None:
                    i += 1
            title = summary.group("text").strip() if summary else "Details"
            children, i = _parse_blocks(lines, i + 1, run_dir, closing=True)
            blocks.append(ReportBlock("details", _strip_tags(title), children=tuple(children)))
            continue
        chunk.append(line)
        i += 1
    flush()
    return blocks, i


def _strip_tags(text: str) -> str:
    return re.sub(r"<[^>]+>", "", text).strip()


def _split_images(text: str, run_dir: Path) -> list[ReportBlock]:
    """Markdown text split at its images (outside code fences): markdown and image blocks."""
    out: list[ReportBlock] = []
    pos = 0
    in_fence = False
    # images inside code fences are text: only split outside them
    spans = []
    offset = 0
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            for m in _IMAGE.finditer(line):
                if not _URL.match(m.group("src").strip("<>")):  # a URL is left to markdown
                    spans.append((offset + m.start(), offset + m.end(), m))
        offset += len(line)
    for begin, end, m in spans:
        before = text[pos:begin]
        if before.strip():
            out.append(ReportBlock("markdown", before.strip("\n")))
        path = (run_dir / m.group("src").strip("<>")).resolve()
        out.append(ReportBlock("image", m.group("alt"), path=path, exists=path.is_file()))
        pos = end
    after = text[pos:]
    if after.strip():
        out.append(ReportBlock("markdown", after.strip("\n")))
    return out
