"""The report: every section from a small stored run, table headers, plots, regeneration."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from bench.cli import main
from bench.report import (
    fmt_recovery,
    recovery_table,
    render_report,
    rule_verdict,
    write_report,
)

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
    "| dataset | fingerprint | n_train | n_pool | n_test | pool (× n_train) |",
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
    assert re.search(r"\d+ cells: \*\*\d+ run, \d+ cached, 0 failed\*\*; wall time", text)


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
    rec = pd.DataFrame(
        [
            {**_row(), "attack": "a", "attack_label": "a", "rate": 0.1, "defense": d}
            for d in ("random_filter", "oracle_filter", "lof", "none", "iforest")
        ]
    )
    table = recovery_table(rec)
    assert list(table.columns) == ["none", "iforest", "lof", "oracle_filter", "random_filter"]
