"""Page: the results explorer for a run directory (filter, tables, charts, report, download).

Every header shows a column's human name (``bench.interfaces.app.columns``) with the column name in its
help text; the filters and charts group by ``explorer.GROUP_COLUMNS``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from bench.core.types import PoisonBenchError
from bench.interfaces.app import RUN_DIR_ENV, charts, columns, explorer

RUNS_ROOT = Path("results") / "runs"
#: fractions shown as percentages in the tables
PERCENT_COLUMNS = ("rate", "poison_fraction")


@st.cache_data(max_entries=8, show_spinner="Reading the results table…")
def _load(run_dir: str, stamp: float) -> explorer.RunResults:
    # ``stamp`` (the table's modification time) makes a rewritten table a new cache entry.
    return explorer.load_run(run_dir)


def _stamp(run_dir: Path) -> float:
    for name in ("results.parquet", "results.csv"):
        if (run_dir / name).exists():
            return (run_dir / name).stat().st_mtime
    return 0.0


st.title("Results explorer")
st.caption(
    "Pick a run directory (written by `poisonbench run`), filter by attack, rate and defense, "
    "and download the rows you kept."
)

state = st.session_state
found = explorer.find_runs(RUNS_ROOT)
state.setdefault(
    "explorer_run_dir", os.environ.get(RUN_DIR_ENV) or (str(found[0]) if found else "")
)
run_dir = st.text_input("Run directory", key="explorer_run_dir").strip()
if found:
    st.caption("Runs under results/runs: " + ", ".join(f"`{p}`" for p in found))
if not run_dir:
    st.info("Give a run directory, e.g. results/runs/quick (make bench writes it).")
    st.stop()
try:
    results = _load(run_dir, _stamp(Path(run_dir)))
except PoisonBenchError as exc:
    st.error(str(exc))
    st.stop()

table = results.table
meta = results.meta
summary = meta.get("summary", {})
n_cells = table["cell_id"].nunique() if "cell_id" in table else len(table)
n_failed = int((table.get("status") == "failed").sum()) if "status" in table else 0
s1, s2, s3, s4 = st.columns(4)
s1.metric("Run", meta.get("name", Path(run_dir).name))
s2.metric("Cells", n_cells)
s3.metric("Rows", len(table))
s4.metric("Failed rows", n_failed)
if summary.get("wall_seconds") is not None:
    versions = " · ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    st.caption(f"Wall time {summary['wall_seconds']:.1f} s. {versions}")

# ---------------------------------------------------------------------------------------------
# Filters: every value visible, one click to drop or restore it
# ---------------------------------------------------------------------------------------------


def _column_config(frame: pd.DataFrame) -> dict[str, Any]:
    """Human header names, with the column name as help, for the frame's columns that are
    results-table columns (a pivoted table's defense columns keep their names)."""
    config: dict[str, Any] = {}
    for c in frame.columns:
        if not isinstance(c, str) or c not in table.columns:
            continue
        if c in PERCENT_COLUMNS:
            config[c] = st.column_config.NumberColumn(
                columns.title(c), help=columns.help_text(c), format="percent"
            )
        else:
            config[c] = st.column_config.Column(columns.title(c), help=columns.help_text(c))
    return config


options = explorer.filter_options(table)
chosen: dict[str, list | None] = {}
with st.container(border=True):
    st.caption("Click a value to leave it out, click it again to bring it back.")
    single_ok = (explorer.GROUP_COLUMNS["dataset"], explorer.GROUP_COLUMNS["model"])
    for column in (c for c in explorer.FILTERS if c in options):
        values = options[column]
        if column in single_ok and len(values) < 2:
            continue  # one dataset or model: nothing to choose
        labels = explorer.option_labels(table, column)
        picked = st.pills(
            explorer.FILTERS[column],
            values,
            selection_mode="multi",
            default=values,
            key=f"explorer_{column}",
            format_func=lambda v, labels=labels: labels.get(v, str(v)),
            help=columns.help_text(column),
        )
        chosen[column] = list(picked or [])
    metrics = explorer.available_metrics(table) or ["accuracy"]
    metric = st.selectbox(
        "Metric",
        metrics,
        key="explorer_metric",
        format_func=columns.title,
        help="What the summary table and the charts show",
    )
metric_name = columns.title(metric)

filtered = explorer.filter_table(table, chosen)
st.caption(f"{len(filtered)} of {len(table)} rows match.")
if filtered.empty:
    st.warning("No rows match these filters: pick at least one value in each.")
    st.stop()

# ---------------------------------------------------------------------------------------------
# The report's tables and charts, for the filtered rows
# ---------------------------------------------------------------------------------------------

st.subheader(f"Summary table: {metric_name.lower()}")
st.caption("Mean ± std over seeds with no extra clean data; columns are defenses.")
summary_table = explorer.summary_table(filtered, metric)
if summary_table.empty:
    st.info(f"No {metric_name.lower()} values in the filtered rows.")
else:
    st.dataframe(
        summary_table, hide_index=True, width="stretch", column_config=_column_config(summary_table)
    )


@st.cache_data(max_entries=8, show_spinner="Estimating the extra clean data needed…")
def _recovery(run_dir: str, stamp: float) -> object:
    loaded = _load(run_dir, stamp)
    return explorer.recovery_estimates(loaded.table, loaded.meta)


@st.cache_data(max_entries=32, show_spinner=False)
def _report_tables(run_dir: str, stamp: float, chosen: dict) -> list:
    loaded = _load(run_dir, stamp)
    return explorer.report_tables(loaded.table, _recovery(run_dir, stamp), chosen)


for title, frame in _report_tables(run_dir, _stamp(Path(run_dir)), chosen):
    st.subheader(title)
    note = explorer.table_note(title)
    if note:
        st.caption(note)
    st.dataframe(frame, hide_index=True, width="stretch", column_config=_column_config(frame))

attack_col = explorer.LABEL_COLUMNS["attack"]
defense_col = explorer.LABEL_COLUMNS["defense"]
by_rate = explorer.metric_by_rate(filtered, metric)
if not by_rate.empty and by_rate["rate"].nunique() > 1:
    st.subheader(f"{metric_name} vs poison rate")
    st.caption(
        "One panel per attack (rate 0 is the clean model), one line per defense; click a "
        "defense in the legend to highlight it (shift-click for several)."
    )
    st.altair_chart(charts.rate_chart(by_rate, metric, attack_col, defense_col), width="content")

by_fraction = explorer.metric_by_fraction(filtered, metric)
if not by_fraction.empty and by_fraction["extra_fraction"].nunique() > 1:
    st.subheader(f"Recovery: {metric_name.lower()} vs extra clean data")
    st.caption(
        "One panel per attack and poison rate, one line per defense; the grey dashed line is "
        "the clean model (no attack, no defense) with the same extra clean data. Click a "
        "defense in the legend to highlight it."
    )
    st.altair_chart(
        charts.recovery_chart(by_fraction, metric, defense_col, explorer.CLEAN_CURVE),
        width="content",
    )

if results.plots:
    st.subheader("Plots")
    st.caption(
        "The PNG plots the run wrote beside report.md. They show the whole run as it finished: "
        "**the filters above do not apply to them** (the charts above follow the filters)."
    )
    cols = st.columns(2)
    for i, path in enumerate(results.plots):
        cols[i % 2].image(str(path), caption=str(path.relative_to(results.run_dir)))


def _draw_report(blocks: list[explorer.ReportBlock]) -> None:
    """report.md as GitHub renders it: collapsible <details>, images from the run directory."""
    for block in blocks:
        if block.kind == "details":
            with st.expander(block.text):
                _draw_report(list(block.children))
        elif block.kind == "image":
            if block.exists:
                st.image(str(block.path), caption=block.text or None)
            else:
                st.warning(f"Image not found: {block.path}")
        else:
            st.markdown(block.text)


if results.report:
    with st.expander("Report (report.md)"):
        st.caption("The report the run wrote, for the whole run (the filters do not apply to it).")
        _draw_report(explorer.report_blocks(results.report, results.run_dir))

# ---------------------------------------------------------------------------------------------
# Filtered rows and the CSV download
# ---------------------------------------------------------------------------------------------

st.subheader("Filtered rows")
all_columns = list(filtered.columns)
picked_columns = st.multiselect(
    "Columns",
    all_columns,
    default=explorer.display_columns(filtered),
    key="explorer_columns",
    format_func=lambda c: (
        columns.title(c)
        if columns.title(c).lower() == c.replace("_", " ")
        else f"{columns.title(c)} ({c})"
    ),
)
rows = filtered[picked_columns or all_columns]
st.dataframe(rows, hide_index=True, width="stretch", column_config=_column_config(rows))
st.download_button(
    "Download the filtered table (CSV)",
    data=explorer.to_csv_bytes(filtered),
    file_name=f"{Path(run_dir).name}-filtered.csv",
    mime="text/csv",
    key="explorer_download",
)
