"""Document assembly and rendering: :func:`build_report` puts the sections together,
:func:`render_markdown` renders them, :func:`write_report` draws the plots and writes the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.certified import certified_section, plot_certified
from bench.analysis.compare import check_unique_rows
from bench.analysis.document import Plot, Report, Section
from bench.analysis.plots import MAX_PLOT_PAIRS, pairs_note, plot_pairs, write_plots
from bench.analysis.recovery import estimate_recovery
from bench.analysis.report.clean_budget import budget_section
from bench.analysis.report.failures import closing_sections
from bench.analysis.report.frames import PairSplit, at_f0, dataset_model_pairs
from bench.analysis.report.header import (
    header_section,
    override_settings,
    precision_target,
    report_settings,
)
from bench.analysis.report.needed import needed_section
from bench.analysis.report.rule import rule_section
from bench.analysis.report.summary import findings_section, summary_section
from bench.analysis.report.tables import accuracy_section, filter_section, targeted_section
from bench.core.atomic import output_target
from bench.core.schema import (
    DEFAULT_METRIC,
    FALLBACK_METRICS,
    check_table,
)
from bench.core.store import (
    atomic_write_text,
    read_columns,
    read_run_config,
    read_run_meta,
    read_table,
)
from bench.core.types import PoisonBenchError


def build_report(
    df: pd.DataFrame,
    meta: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    plots: Sequence[Plot] = (),
    name: str = "run",
    metric: str | None = None,
    tolerance: float | None = None,
) -> Report:
    """The report of a results table as values: a :class:`Report` of one :class:`Section` per
    part (see :mod:`bench.analysis.report`), each computed by its own module.

    metric, tolerance: the recovery metric and tolerance instead of the run's (``poisonbench
    report --metric``; :func:`override_settings` checks them, the header says so)."""
    meta = meta or {}
    config = config or {}
    settings = override_settings(df, report_settings(meta, config), metric, tolerance)
    metric, tolerance = str(settings["metric"]), float(settings["tolerance"])
    title = str(meta.get("name") or config.get("name") or name)
    description = str(config.get("description") or "")
    report = Report(title, description, [header_section(df, meta, config, settings)])
    ok = df[df["status"] == "ok"] if "status" in df else df.iloc[0:0]
    if ok.empty or "extra_fraction" not in df:
        empty = Section("Results", paragraphs=["_No cell finished: there are no numbers to show._"])
        report.sections += [empty, *closing_sections(df)]
        return report

    rec = estimate_recovery(
        df,
        metric,
        tolerance,
        n_boot=int(settings["bootstrap"]),
        fallback=FALLBACK_METRICS.get(metric),
    )
    acc_metric = metric if metric in ("accuracy", "macro_f1") else "accuracy"
    pairs = dataset_model_pairs(ok)
    target = precision_target(meta)
    # the estimates and the f = 0 rows split once by (dataset, model), each pair's rows shared
    # by the sections (the summary and the per-configuration tables read the f = 0 rows only)
    f0 = at_f0(df)
    rec_of, f0_of = PairSplit(rec, keep=True), PairSplit(f0, keep=True)
    sections = [
        findings_section(df, rec, pairs, target, metric, tolerance, rec_of=rec_of),
        summary_section(f0, rec, pairs, metric, tolerance, target, f0_of, rec_of),
        needed_section(rec, pairs, metric, tolerance, rec_of),
        budget_section(df, acc_metric),
        rule_section(rec, pairs, metric, rec_of),
        accuracy_section(f0, pairs, acc_metric, f0_of),
        targeted_section(f0, pairs, f0_of),
        filter_section(f0, pairs, f0_of),
        certified_section(df, list(plots)),
        plots_section(plots),
        *closing_sections(df),
    ]
    report.sections += [s for s in sections if s is not None]
    return report


def plots_section(plots: Sequence[Plot]) -> Section:
    """The "Plots" section: every plot drawn beside the report, in order."""
    section = Section("Plots", images=[(plot.title, plot.filename) for plot in plots])
    if not plots:
        section.paragraphs.append("_No plots were drawn._")
    return section


def render_markdown(report: Report) -> str:
    """The report's markdown, through the template ``bench/analysis/templates/report.md.j2``."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bench.analysis", "templates"),
        autoescape=False,  # markdown, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    text = env.get_template("report.md.j2").render(report=report)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"


#: columns no part of the report reads (nested JSON: per-class scores, per-source and GLC
#: details, removed rows per class; the dataset fingerprints): not decoded, the bulk of
#: reading a large table
UNREAD_COLUMNS = (
    "per_class", "removed_per_class", "per_source", "glc_corruption", "dataset_fingerprint"
)  # fmt: skip
#: nested JSON only the plots read (and, for the attack success rate, its clean reference):
#: :func:`write_report` reads them for the plotted pairs' rows only
PLOT_COLUMNS = ("confusion", "pred_distribution")


def load_report_inputs(
    run_dir: str | Path, exclude: Sequence[str] = ()
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """A run directory's results table, ``run.json`` and ``config.yaml`` (PoisonBenchError
    naming the file when one is unusable). The :data:`UNREAD_COLUMNS` and ``exclude`` are
    not read."""
    run_dir = Path(run_dir)
    table = read_table(run_dir, exclude=(*UNREAD_COLUMNS, *exclude))
    if not table.empty:
        check_table(table, where=str(run_dir))
        check_unique_rows(table, str(run_dir))
        finished = table["status"] == "ok"
        if finished.any() and DEFAULT_METRIC not in table.columns:
            raise PoisonBenchError(
                f"{run_dir}: results table lacks the metric column {DEFAULT_METRIC} though "
                f"{int(finished.sum())} rows finished (a damaged or hand-edited table?)"
            )
    return table, read_run_meta(run_dir), read_run_config(run_dir)


def render_report(
    run_dir: str | Path,
    plots: Sequence[Plot] | None = None,
    metric: str | None = None,
    tolerance: float | None = None,
) -> str:
    """The report's markdown for ``run_dir``. ``plots`` are linked in the plots section (by
    default, the PNG files an earlier :func:`write_report` drew there); ``metric`` and
    ``tolerance`` override the run's recovery settings (:func:`build_report`)."""
    run_dir = Path(run_dir)
    df, meta, config = load_report_inputs(run_dir)
    if plots is None:
        plots = _drawn_plots(run_dir)
    report = build_report(df, meta, config, plots, run_dir.name, metric, tolerance)
    return render_markdown(report)


def _drawn_plots(folder: Path) -> list[Plot]:
    """The PNG files an earlier :func:`write_report` drew in ``folder``."""
    return [Plot(p.stem.replace("-", " "), p.name, "file") for p in sorted(folder.glob("*.png"))]


def write_report(
    run_dir: str | Path,
    metric: str | None = None,
    tolerance: float | None = None,
    out: str | Path | None = None,
    max_plot_pairs: int | None = MAX_PLOT_PAIRS,
) -> Path:
    """Draw the plots and write ``report.md`` in ``run_dir``; returns the report's path.

    metric, tolerance: the recovery metric and tolerance instead of the run's (checked by
    :func:`override_settings`: a metric the table does not measure is a ParamError naming
    the choices). out: write the report there instead (e.g. ``report-accuracy.md``, so the
    run's own report stays), with the plots beside it; a device or a pipe (``/dev/stdout``)
    gets the markdown only, linking the plots already drawn in ``run_dir``. max_plot_pairs:
    draw the plots of at most this many (dataset, model) pairs (0 or None: all;
    :func:`bench.analysis.plots.plot_pairs` says which); the plots section says how many
    were left out.
    """

    run_dir = Path(run_dir)
    df, meta, config = load_report_inputs(run_dir, exclude=PLOT_COLUMNS)
    settings = override_settings(df, report_settings(meta, config), metric, tolerance)
    if settings["metric"] == "attack_success_rate":  # its clean reference: confusion matrices
        df = df.assign(**read_columns(run_dir, ["confusion"]))
    path = run_dir / "report.md" if out is None else Path(out)
    plot_metric = (
        settings["metric"] if settings["metric"] in ("accuracy", "macro_f1") else "accuracy"
    )
    plots: list[Plot] = []
    note = None
    if output_target(path)[1] != "file":  # a device or a pipe: link the plots already drawn
        plots = _drawn_plots(run_dir)
    elif not df.empty and "extra_fraction" in df and (df["status"] == "ok").any():
        folder = path.parent
        folder.mkdir(parents=True, exist_ok=True)
        pairs, n_pairs = plot_pairs(df, plot_metric, max_plot_pairs)
        note = pairs_note(len(pairs), n_pairs)
        rows = pd.MultiIndex.from_frame(df[["dataset_id", "model_id"]]).isin(pairs)
        drawn = df[rows].reset_index(drop=True)
        nested = read_columns(run_dir, [c for c in PLOT_COLUMNS if c not in df], rows)
        drawn = drawn.assign(**{c: nested[c].to_numpy() for c in nested.columns})
        plots = write_plots(
            drawn,
            folder,
            metric=plot_metric,
            tolerance=float(settings["tolerance"]),
            pairs=pairs,
        )
        plots += plot_certified(df, folder)
    report = build_report(df, meta, config, plots, run_dir.name, metric, tolerance)
    if note is not None:
        report.section("Plots").paragraphs.insert(0, note)
    atomic_write_text(path, render_markdown(report))
    return path
