"""Page: the results explorer for a run directory (filter, tables, plots, CSV download)."""

from __future__ import annotations

import os
from pathlib import Path

import altair as alt
import streamlit as st

from bench.app import RUN_DIR_ENV, explorer
from bench.types import PoisonBenchError

RUNS_ROOT = Path("results") / "runs"


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
# Filters
# ---------------------------------------------------------------------------------------------

options = explorer.filter_options(table)
chosen: dict[str, list | None] = {}
with st.container(border=True):
    main_filters = [c for c in ("attack_label", "rate", "defense") if c in options]
    other_filters = [c for c in ("dataset", "model") if c in options and len(options[c]) > 1]
    cols = st.columns(len(main_filters) + len(other_filters) or 1)
    for col, column in zip(cols, main_filters + other_filters, strict=False):
        values = options[column]
        chosen[column] = col.multiselect(
            explorer.FILTERS[column],
            values,
            default=values,
            key=f"explorer_{column}",
            format_func=(lambda v: f"{v:g}") if column == "rate" else str,
        )
    metrics = explorer.available_metrics(table) or ["accuracy"]
    metric = st.selectbox("Metric", metrics, key="explorer_metric")

filtered = explorer.filter_table(table, chosen)
st.caption(f"{len(filtered)} of {len(table)} rows match.")
if filtered.empty:
    st.warning("No rows match these filters.")
    st.stop()

# ---------------------------------------------------------------------------------------------
# The report's tables and charts, for the filtered rows
# ---------------------------------------------------------------------------------------------

st.subheader(f"Summary table: {metric}")
st.caption("Mean ± std over seeds with no extra clean data; columns are defenses.")
summary_table = explorer.summary_table(filtered, metric)
if summary_table.empty:
    st.info(f"No {metric} values in the filtered rows.")
else:
    st.dataframe(summary_table, hide_index=True, width="stretch")


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
    st.dataframe(frame, hide_index=True, width="stretch")

by_rate = explorer.metric_by_rate(filtered, metric)
if not by_rate.empty and by_rate["rate"].nunique() > 1:
    st.subheader(f"{metric.replace('_', ' ').capitalize()} vs poison rate")
    st.altair_chart(
        alt.Chart(by_rate)
        .mark_line(point=True)
        .encode(
            x=alt.X("rate:Q", title="poison rate (fraction of eligible rows)"),
            y=alt.Y("mean:Q", title=f"mean {metric}", scale=alt.Scale(zero=False)),
            color=alt.Color("defense:N"),
            strokeDash=alt.StrokeDash("attack_label:N", title="attack"),
            tooltip=["dataset", "model", "attack_label", "defense", "rate", "mean", "std", "n"],
        )
        .properties(height=320),
        width="stretch",
    )

by_fraction = explorer.metric_by_fraction(filtered, metric)
if not by_fraction.empty and by_fraction["extra_fraction"].nunique() > 1:
    st.subheader(f"Recovery: {metric} vs extra clean data")
    st.altair_chart(
        alt.Chart(by_fraction)
        .mark_line(point=True)
        .encode(
            x=alt.X("extra_fraction:Q", title="extra clean data (× training rows)"),
            y=alt.Y("mean:Q", title=f"mean {metric}", scale=alt.Scale(zero=False)),
            color=alt.Color("curve:N", title="attack @ rate / defense"),
            tooltip=["curve", "extra_fraction", "mean", "n"],
        )
        .properties(height=320),
        width="stretch",
    )

if results.plots:
    st.subheader("Plots")
    cols = st.columns(2)
    for i, path in enumerate(results.plots):
        cols[i % 2].image(str(path), caption=str(path.relative_to(results.run_dir)))

if results.report:
    with st.expander("Report (report.md)"):
        st.markdown(results.report)

# ---------------------------------------------------------------------------------------------
# Filtered rows and the CSV download
# ---------------------------------------------------------------------------------------------

st.subheader("Filtered rows")
all_columns = list(filtered.columns)
columns = st.multiselect(
    "Columns", all_columns, default=explorer.display_columns(filtered), key="explorer_columns"
)
st.dataframe(filtered[columns or all_columns], hide_index=True, width="stretch")
st.download_button(
    "Download the filtered table (CSV)",
    data=explorer.to_csv_bytes(filtered),
    file_name=f"{Path(run_dir).name}-filtered.csv",
    mime="text/csv",
    key="explorer_download",
)
