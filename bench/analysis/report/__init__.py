"""The markdown report, generated from the results table and ``run.json`` (never hand-edited).

Data first, text second: :func:`build_report` computes every table (DataFrames) and sentence of
the report as values (a :class:`Report` of :class:`Section` objects, testable one by one), and
:func:`render_markdown` renders them through the template ``bench/analysis/templates/report.md.j2``.
:func:`write_report` draws the plots (PNG files beside ``report.md``) and writes the file.

Groups are configurations (``schema.GROUP_KEYS``: ids), shown by their labels (unique per id):
two settings of one defense are two columns, never one average.

One module per group of sections, in the report's order:

- :mod:`~bench.analysis.report.header`: the run (seeds behind each number, config, versions,
  dataset fingerprints, cells run/cached/failed, wall and compute time, efficiency);
- :mod:`~bench.analysis.report.summary`: the findings table and the summary in plain words;
- :mod:`~bench.analysis.report.needed`: extra clean data needed, the defense value in rows
  and the label-noise theory line;
- :mod:`~bench.analysis.report.clean_budget`: the best use of a clean-data budget (only when a
  defense learns from trusted rows; the analysis is :mod:`bench.analysis.budget`);
- :mod:`~bench.analysis.report.rule`: the rule-of-thumb check;
- :mod:`~bench.analysis.report.tables`: accuracy, targeted-flip effect, filter quality;
- certified accuracy (:mod:`bench.analysis.certified`), plots, and
  :mod:`~bench.analysis.report.failures`: skipped rows and failed cells;

with :mod:`~bench.analysis.report.frames` (ordering, pivots, cell formats) under them all and
:mod:`~bench.analysis.report.render` (assembly, rendering, files) over them.
"""

from __future__ import annotations

from bench.analysis.budget import budget_uses, budget_verdicts, has_budget_uses
from bench.analysis.document import Plot, Report, Section, Table
from bench.analysis.formats import fmt_recovery
from bench.analysis.report.clean_budget import budget_section, budget_table
from bench.analysis.report.failures import closing_sections, failed_reasons
from bench.analysis.report.frames import defense_order, mean_std, pivot_defenses
from bench.analysis.report.header import (
    header_section,
    metric_choices,
    override_settings,
    precision_target,
    report_settings,
    seeds_sentence,
)
from bench.analysis.report.needed import defense_value_table, recovery_table, theory_table
from bench.analysis.report.render import (
    build_report,
    load_report_inputs,
    plots_section,
    render_markdown,
    render_report,
    write_report,
)
from bench.analysis.report.rule import (
    RULE_OF_THUMB,
    rule_of_thumb_table,
    rule_summary,
    rule_verdict,
)
from bench.analysis.report.summary import findings_section, summary_lines, summary_section
from bench.analysis.report.tables import accuracy_table, filter_table, targeted_tables

__all__ = [
    "RULE_OF_THUMB",
    "Plot",
    "Report",
    "Section",
    "Table",
    "accuracy_table",
    "budget_section",
    "budget_table",
    "budget_uses",
    "budget_verdicts",
    "build_report",
    "closing_sections",
    "defense_order",
    "defense_value_table",
    "failed_reasons",
    "filter_table",
    "findings_section",
    "fmt_recovery",
    "has_budget_uses",
    "header_section",
    "load_report_inputs",
    "mean_std",
    "metric_choices",
    "override_settings",
    "pivot_defenses",
    "plots_section",
    "precision_target",
    "recovery_table",
    "render_markdown",
    "render_report",
    "report_settings",
    "rule_of_thumb_table",
    "rule_summary",
    "rule_verdict",
    "seeds_sentence",
    "summary_lines",
    "summary_section",
    "targeted_tables",
    "theory_table",
    "write_report",
]
