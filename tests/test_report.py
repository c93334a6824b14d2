"""The report: every section from a small stored run, table headers, plots, regeneration."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from bench.analysis.recovery import estimate_recovery
from bench.analysis.report import (
    fmt_recovery,
    recovery_table,
    render_report,
    rule_verdict,
    write_report,
)
from bench.interfaces.cli import main

TINY = """
name: tiny-report
description: A tiny run for the report tests.
datasets: [{name: iris, split: {train: 0.5, test: 0.3}}]
models: [logreg]
attacks:
  - {name: label_flip, mode: targeted, source: 1, target: 2}
  - {name: label_flip, mode: random}
rates: [0, 0.05, 0.5]
defenses: [none, iforest, oracle_filter, {name: random_filter, contamination: 0.1}]
seeds: 2
recovery: {fractions: [0, 0.25, 0.5], bootstrap: 50}
"""

SECTIONS = [
    "# poisonbench report: tiny-report",
    "## Run",
    "### Datasets",
    "### Versions",
    "<summary>Config</summary>",
    "## Summary",
    "## Extra clean data needed",
    "#### Defense value on iris / logreg (clean rows saved)",
    "#### Theory line for random label flips on iris / logreg",
    "## Rule-of-thumb check",
    "## Accuracy (mean ± std over seeds, f = 0)",
    "## Targeted flips: source-class accuracy and attack success rate",
    "## Filter quality",
    "## Plots",
    "## Skipped rows",
]

#: snapshot of the table headers (columns of every table the report writes for this run)
HEADERS = [
    "| attack | rate | none | iforest | oracle_filter | random_filter |",
    "| attack | rate | iforest | oracle_filter | random_filter |",
    "| attack | rate | flipped share η | measured | 1/(1−2η)² − 1 | K-class: 1/m² − 1 "
    "| K-class, clean extra rows | poison share after f_needed |",
    "| attack | rate | rule of thumb | measured | verdict |",
    "| dataset | fingerprint | classes | n_train | n_pool | n_test | pool (× n_train) |",
    "| package | version |",
    "| dataset | reason | rows | from_fraction |",
]


def _headers(markdown: str) -> set[str]:
    """Every table header line, with cell padding removed."""
    lines = markdown.splitlines()
    out = set()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and re.match(r"^\|[:\- |]+\|$", lines[i + 1]):
            out.add("| " + " | ".join(c.strip() for c in line.strip("|").split("|")) + " |")
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    config = root / "tiny.yaml"
    config.write_text(TINY)
    out = root / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    return out


def test_report_has_every_section_and_the_table_headers(run_dir):
    text = (run_dir / "report.md").read_text()
    for section in SECTIONS:
        assert section in text, section
    headers = _headers(text)
    for header in HEADERS:
        assert header in headers, header
    # the pool on iris (30 rows = 0.4× n_train) cannot give 0.5×: the report must say so
    assert "Clean pool exhausted on iris" in text
    assert "The clean pool ran out" in text
    assert "†" in text
    # header numbers come from run.json
    assert re.search(
        r"\d+ cells: \*\*\d+ run, \d+ cached, 0 failed\*\*; \d+ of \d+ fits computed, \d+ cached; "
        r"wall time [\d.]+ s; the cells' compute [\d.]+ s on 1 worker\(s\): efficiency [\d.]+",
        text,
    )
    assert "every mean, interval and comparison below is over 2 seed(s)" in text


def test_plots_are_written_linked_and_non_empty_pngs(run_dir):
    text = (run_dir / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(links) >= 4
    kinds = {"vs-rate", "recovery", "confusion", "predictions"}
    assert all(any(k in link for link in links) for k in kinds)
    for link in links:
        data = (run_dir / link).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_report_command_regenerates_everything_from_the_table(run_dir, capsys):
    before = (run_dir / "report.md").read_text()
    for png in run_dir.glob("*.png"):
        png.unlink()
    (run_dir / "report.md").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert "report:" in capsys.readouterr().out
    assert (run_dir / "report.md").read_text() == before  # deterministic, bootstrap included
    assert len(list(run_dir.glob("*.png"))) >= 4


def test_render_without_plots_links_the_existing_files(run_dir):
    text = render_report(run_dir)
    assert "![" in text and "_No plots were drawn._" not in text


def test_report_of_a_run_with_no_filters_or_targeted_attacks(tmp_path):
    config = tmp_path / "plain.yaml"
    config.write_text(
        TINY.replace("tiny-report", "plain")
        .replace("  - {name: label_flip, mode: targeted, source: 1, target: 2}\n", "")
        .replace(
            "[none, iforest, oracle_filter, {name: random_filter, contamination: 0.1}]", "[none]"
        )
        .replace("seeds: 2", "seeds: 1")
    )
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    text = write_report(out).read_text()
    assert "_No targeted attack in this run._" in text
    assert "## Filter quality" in text


# --- formatting ----------------------------------------------------------------------------------


def _row(**kw):
    base = {
        "f_needed": 0.5,
        "f_low": 0.25,
        "f_high": 1.0,
        "f_max": 2.0,
        "pool_exhausted": False,
    }
    return pd.Series({**base, **kw})


def test_recovery_cells_read_like_the_issue_says():
    assert fmt_recovery(_row()) == "0.5× [0.25–1]"
    assert fmt_recovery(_row(f_needed=math.inf, f_low=1.0, f_high=math.inf)) == "> 2×"
    assert fmt_recovery(_row(f_needed=math.inf, f_max=0.4, pool_exhausted=True)) == "> 0.4×†"
    assert fmt_recovery(_row(f_high=math.inf)) == "0.5× [0.25–2+]"
    assert fmt_recovery(_row(f_needed=math.nan)) == "–"


def test_rule_verdicts():
    assert rule_verdict(_row(f_needed=0.4, f_low=0.2, f_high=0.6), 0.3, 0.5) == "holds"
    assert rule_verdict(_row(f_needed=0.1, f_low=0.0, f_high=0.2), 0.3, 0.5) == "needs less"
    assert rule_verdict(_row(f_needed=1.5, f_low=1.0, f_high=2.0), 0.3, 0.5) == "needs more"
    assert rule_verdict(_row(f_needed=math.inf, f_max=6.0), 3.0, 5.0) == "needs more"
    assert rule_verdict(_row(f_needed=math.inf, f_max=2.0), 3.0, 5.0).startswith("unknown")


def test_recovery_table_orders_defenses_with_baselines_last():
    from bench.core.schema import NO_DEFENSE_ID, defense_id, plugin_id

    rows = []
    for d in ("random_filter", "oracle_filter", "lof", "none", "iforest"):
        rows.append(
            {
                **_row(),
                "attack": "a",
                "attack_id": plugin_id("a", {}),
                "attack_label": "a",
                "rate": 0.1,
                "defense": d,
                "defense_id": NO_DEFENSE_ID
                if d == "none"
                else defense_id([{"name": d, "params": {}}]),
                "defense_label": d,
                "defense_reference": d in ("oracle_filter", "random_filter"),
            }
        )
    table = recovery_table(pd.DataFrame(rows))
    assert list(table.columns) == [
        "attack", "rate", "none", "iforest", "lof", "oracle_filter", "random_filter"
    ]  # fmt: skip


# --- the report as data: its numbers equal independent pandas computations -----------------------


def _report(run_dir):
    from bench.analysis.report import build_report, load_report_inputs

    table, meta, config = load_report_inputs(run_dir)
    return table, build_report(table, meta, config)


def _cell(frame: pd.DataFrame, attack: str, rate: str, column: str) -> str:
    row = frame[(frame["attack"] == attack) & (frame["rate"] == rate)]
    assert len(row) == 1, (attack, rate)
    return row.iloc[0][column]


def test_accuracy_table_equals_a_pandas_groupby_of_the_results_table(run_dir):
    table, report = _report(run_dir)
    frame = report.section("Accuracy").subsections[0].tables[0].frame
    ok = table[(table["status"] == "ok") & (table["extra_fraction"] == 0)]
    stats = ok.groupby(["attack_label", "rate", "defense_label"])["accuracy"].agg(["mean", "std"])
    assert len(stats) == sum((frame[c] != "–").sum() for c in frame.columns[2:])
    for (attack, rate, defense), (mean, std) in stats.iterrows():
        expected = f"{mean:.3f} ± {std:.3f}"
        assert _cell(frame, attack, f"{rate:.0%}", defense) == expected


def test_extra_clean_table_equals_estimate_recovery(run_dir):
    table, report = _report(run_dir)
    rec = estimate_recovery(table, "accuracy", 0.005, n_boot=1000)
    frame = report.section("Extra clean data needed").subsections[0].tables[0].frame
    attacked = rec[rec["attack"] != "none"]
    assert len(attacked) == sum((frame[c] != "–").sum() for c in frame.columns[2:])
    for _, r in attacked.iterrows():
        assert _cell(frame, r["attack_label"], f"{r['rate']:.0%}", r["defense_label"]) == (
            fmt_recovery(r)
        )


def test_filter_quality_cells_are_the_seed_means(run_dir):
    table, report = _report(run_dir)
    frame = report.section("Filter quality").subsections[0].tables[0].frame
    ok = table[(table["status"] == "ok") & (table["extra_fraction"] == 0) & (table["rate"] > 0)]
    iforest = ok[ok["defense"] == "iforest"]
    for (attack, rate), g in iforest.groupby(["attack_label", "rate"]):
        p, r, auc = (g[c].mean() for c in ("det_precision", "det_recall", "det_roc_auc"))
        text = _cell(frame, attack, f"{rate:.0%}", "iforest")
        assert text.startswith(
            " / ".join("–" if math.isnan(v) else f"{v:.2f}" for v in (p, r, auc))
        ), text
        assert text.endswith(f"({g['clean_removed'].mean():.0f})")


def _synthetic(gains: dict[str, list[float]]) -> pd.DataFrame:
    """A table: clean reference, and 20 % random flips under `none` and each defense whose
    per-seed accuracy gain over `none` is given."""
    from bench.core.schema import NO_ATTACK_ID, NO_DEFENSE_ID, dataset_id, defense_id, plugin_id

    ds = dataset_id({"name": "d", "split": {"train": 100, "test": 50, "pool": "rest"}})
    attack = plugin_id("label_flip", {"mode": "random"})
    rows = []
    seeds = range(len(next(iter(gains.values()))))
    for seed in seeds:
        common = {
            "dataset": "d", "dataset_id": ds, "dataset_label": "d", "model": "m",
            "model_id": plugin_id("m", {}), "model_label": "m", "seed": seed, "status": "ok",
            "extra_fraction": 0.0, "n_train": 100, "n_pool": 500, "n_eligible": 100,
            "n_poisoned": 20, "poison_fraction": 0.2, "n_removed": 0, "clean_removed": 0,
            "defense_reference": False,
        }  # fmt: skip
        base = 0.7 + 0.03 * ((seed * 7) % 5)
        rows.append({**common, "cell_id": f"c{seed}", "attack": "none", "attack_id": NO_ATTACK_ID,
                     "attack_label": "none", "rate": 0.0, "defense": "none",
                     "defense_id": NO_DEFENSE_ID, "defense_label": "none", "accuracy": 0.95})  # fmt: skip
        for name, gain in {"none": [0.0] * len(gains[next(iter(gains))]), **gains}.items():
            rows.append({**common, "cell_id": f"{name}{seed}", "attack": "label_flip",
                         "attack_id": attack, "attack_label": "label_flip(random)", "rate": 0.2,
                         "defense": name,
                         "defense_id": NO_DEFENSE_ID if name == "none"
                         else defense_id([{"name": name, "params": {}}]),
                         "defense_label": name, "accuracy": base + gain[seed]})  # fmt: skip
    return pd.DataFrame(rows)


def _gain_cells(report) -> list[str]:
    """The findings tables' "best deployable defense" cells, in order."""
    cells = []
    for sub in report.section("Findings").subsections:
        for table in sub.tables:
            cells += table.frame["best deployable defense (paired gain, f = 0)"].tolist()
    return cells


def test_findings_name_the_defense_the_paired_numbers_resolve():
    from bench.analysis.report import build_report

    # "steady" gains 4 points on every seed; "wild" gains more on average but not reliably
    table = _synthetic({"steady": [0.04, 0.041, 0.039, 0.04], "wild": [0.3, -0.2, 0.25, -0.1]})
    (cell,) = _gain_cells(build_report(table, {"recovery": {"bootstrap": 0}}))
    gain = (
        table[table["defense"] == "steady"]["accuracy"].to_numpy()
        - table[(table["defense"] == "none") & (table["rate"] == 0.2)]["accuracy"].to_numpy()
    )
    assert cell.startswith(f"steady {gain.mean() * 100:+.1f} pts [")
    assert "n.s." not in cell and "tolerance" not in cell


def test_findings_name_no_winner_when_the_interval_includes_zero():
    from bench.analysis.report import build_report

    table = _synthetic({"wild": [0.3, -0.2, 0.25, -0.1]})
    (cell,) = _gain_cells(build_report(table, {"recovery": {"bootstrap": 0}}))
    assert cell.startswith("wild +6.2 pts [") and cell.endswith(" n.s.")


def test_findings_say_a_resolved_gain_within_the_tolerance_is_within_it():
    """A gain whose interval excludes 0 but whose mean is below the tolerance names no winner,
    and the cell does not call it indistinguishable (it is distinguishable, just small)."""
    from bench.analysis.report import build_report

    table = _synthetic({"small": [0.002, 0.003, 0.002, 0.003]})
    meta = {"recovery": {"bootstrap": 0, "tolerance": 0.005}}
    (cell,) = _gain_cells(build_report(table, meta))
    assert cell.startswith("small +0.") and cell.endswith("within tolerance")


def test_the_summary_is_short_and_its_numbers_are_the_tables():
    from bench.analysis.report import build_report

    table = _synthetic({"steady": [0.04, 0.041, 0.039, 0.04]})
    report = build_report(table, {"recovery": {"bootstrap": 0}})
    bullets = report.section("Summary").bullets
    assert 1 <= len(bullets) <= 10
    lost = 0.95 - table[(table["defense"] == "none") & (table["rate"] == 0.2)]["accuracy"].mean()
    assert f"({lost * 100:.1f} points lost)" in bullets[0]
    (row,) = report.section("Findings").subsections[0].tables[0].frame.to_dict("records")
    assert row["accuracy lost"] == f"{lost * 100:+.1f} pts"
    assert row["seeds"] == 4


def test_failed_cells_are_a_section_with_distinct_reasons_and_counts(run_dir):
    from bench.analysis.report import build_report, failed_reasons

    table, _ = _report(run_dir)
    broken = table.copy()
    first = broken["cell_id"].drop_duplicates().iloc[:3]
    for i, cell in enumerate(first):
        rows = broken["cell_id"] == cell
        broken.loc[rows, "status"] = "failed"
        broken.loc[rows, "error"] = "ValueError: boom" if i < 2 else "OSError: disk"
    reasons = failed_reasons(broken).set_index("reason")
    assert reasons.loc["ValueError: boom", "cells"] == 2
    assert reasons.loc["OSError: disk", "cells"] == 1
    section = build_report(broken, {"recovery": {"bootstrap": 0}}).section("Failed cells")
    assert "3 cell(s) failed" in section.paragraphs[0]


def test_a_run_where_every_cell_failed_still_reports_why(run_dir):
    from bench.analysis.report import build_report, render_markdown

    table, _ = _report(run_dir)
    table = table.assign(status="failed", error="PoisonBenchError: no model can do this")
    text = render_markdown(build_report(table, {}, {}))
    assert "## Failed cells" in text and "no model can do this" in text
    assert "_No cell finished: there are no numbers to show._" in text
    assert "![" not in text


def test_findings_name_no_winner_when_every_defense_costs_accuracy():
    """A defense that reliably *loses* accuracy is not the "best deployable defense": the cell
    says none gains (it was shown as a winner with `n.s.` before)."""
    from bench.analysis.report import build_report

    table = _synthetic({"hurts": [-0.02, -0.021, -0.019, -0.02]})
    (cell,) = _gain_cells(build_report(table, {"recovery": {"bootstrap": 0}}))
    assert cell.startswith("none gains (best: hurts -2.0 pts [")
