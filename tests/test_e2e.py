"""End-to-end through the CLI (``bench.interfaces.cli.main``) on tiny configs: the table and its documented
columns, resume, ``--fresh``, ``--jobs 2`` == ``--jobs 1``, determinism, failed cells."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from bench.interfaces.cli import main

#: the docs page that documents the table's columns (the README's "Results table" section once)
RESULTS_TABLE_PAGE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "results-table.md"

TINY = """
name: tiny
datasets: [{name: iris, split: {train: 0.5, test: 0.3}}]
models: [logreg]
attacks:
  - {name: label_flip, mode: random}
  - {name: label_flip, mode: targeted, source: 1, target: 2}
rates: [0, 0.3]
defenses: [none, iforest, [oracle_filter, label_smoothing]]
seeds: 2
recovery: {fractions: [0, 0.2, 1]}
"""
# (1 clean + 2 attacks × 1 rate) × 3 defenses × 2 seeds
TINY_CELLS = 18
# × 3 extra-clean fractions; f = 1 needs 75 pool rows but iris leaves 30: those rows are skipped
TINY_ROWS = TINY_CELLS * 3

#: a defense that removes every row: the f = 0 fit has no data, so those cells fail at run time
FAILING = """
name: failing
datasets: [{name: iris, split: {train: 0.5, test: 0.3}}]
models: [logreg]
attacks: [{name: label_flip, mode: random}]
rates: [0, 0.2]
defenses: [none, {name: random_filter, contamination: 1.0}]
seeds: 1
recovery: {fractions: [0]}
"""


def timing_free(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in df.columns if c.startswith("t_")])


def run(config: Path, out: Path, capsys, *extra: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["run", str(config), "--out", str(out), "--quiet", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def summary_counts(stdout: str) -> tuple[int, int, int, int]:
    match = re.search(r"(\d+) cells \((\d+) run, (\d+) cached, (\d+) failed\)", stdout)
    assert match, stdout
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


STEP_DETAILS_PARAGRAPH = "**Defense step details.**"


def results_table_text() -> str:
    """The "Results table" page, without its title."""
    text = RESULTS_TABLE_PAGE.read_text()
    assert text.startswith("# Results table\n"), "docs/guide/results-table.md lost its title"
    return text.split("\n", 1)[1]


def documented_columns() -> set[str]:
    """The column names the docs' "Results table" page lists in backticks."""
    section = results_table_text()
    # Step details are columns only in runs with the defense that records them (checked
    # against the schema in test_step_detail_columns_in_the_docs_are_schema_columns).
    section = "\n\n".join(
        p for p in section.split("\n\n") if not p.startswith(STEP_DETAILS_PARAGRAPH)
    )
    names = set(re.findall(r"`([a-z_][a-z0-9_]*)`", section))
    values = {
        "ok", "failed", "skipped", "none", "pool_exhausted", "early_stop", "iforest",
        "symmetric_label_noise",
    }  # fmt: skip
    # Early-stop columns exist only when recovery.early_stop is on (not in this tiny config).
    return {n for n in names - values if not n.startswith("early_stop")}


def test_step_detail_columns_in_the_docs_are_schema_columns():
    """The docs' step-details paragraph names columns the schema defines (or defenses)."""
    from bench.core.schema import COLUMN_BY_NAME
    from defenses import DEFENSES

    text = results_table_text()
    (paragraph,) = [p for p in text.split("\n\n") if p.startswith(STEP_DETAILS_PARAGRAPH)]
    names = set(re.findall(r"`([a-z_][a-z0-9_]*)`", paragraph))
    assert len(names) > 10
    unknown = names - set(COLUMN_BY_NAME) - set(DEFENSES) - {"step"}
    assert not unknown, f"step details the schema does not define: {sorted(unknown)}"


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The tiny config run three ways: --jobs 1, --jobs 2 (other dir), and --jobs 1 rerun."""
    root = tmp_path_factory.mktemp("e2e")
    config = root / "tiny.yaml"
    config.write_text(TINY)
    return root, config


@pytest.fixture(scope="module")
def first_run(tiny_runs):
    root, config = tiny_runs
    out = root / "jobs1"
    code = main(["run", str(config), "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_tiny_run_writes_the_documented_table(first_run):
    out = first_run
    table = pd.read_parquet(out / "results.parquet")
    csv = pd.read_csv(out / "results.csv")
    assert len(table) == len(csv) == TINY_ROWS
    assert list(table.columns) == list(csv.columns)
    documented = documented_columns()
    assert len(documented) > 30, "the docs' Results table page was not found or not parsed"
    missing = documented - set(table.columns)
    assert not missing, f"documented columns missing from the table: {sorted(missing)}"
    ok = table["extra_fraction"] < 1
    assert set(table.loc[ok, "status"]) == {"ok"}
    assert table.loc[ok, "error"].isna().all()
    skipped = table[~ok]
    assert set(skipped["status"]) == {"skipped"} and len(skipped) == TINY_CELLS
    assert set(skipped["skip_reason"]) == {"pool_exhausted"}
    assert skipped["error"].str.contains("clean pool exhausted").all()
    assert skipped["accuracy"].isna().all()
    assert len(list((out / "cells").glob("*.json"))) == TINY_CELLS
    assert table["cell_id"].nunique() == TINY_CELLS
    for name in ("config.yaml", "run.json", "report.md"):
        assert (out / name).exists(), name
    assert json.loads((out / "run.json").read_text())["summary"]["cells"] == TINY_CELLS
    # One clean reference per (defense, seed): rate 0 is the attack 'none'.
    assert set(table.loc[table["rate"] == 0, "attack"]) == {"none"}
    assert set(table.loc[table["rate"] > 0, "attack"]) == {"label_flip"}
    # Paired comparisons: every defense sees the same poisoned set for an (attack, rate, seed).
    poisoned = table[table["rate"] > 0]
    per_key = poisoned.groupby(["attack_id", "rate", "seed"])["n_poisoned"].nunique()
    assert (per_key == 1).all()
    targeted = poisoned[poisoned["attack_label"].str.contains("→")]
    random_flips = poisoned[~poisoned["attack_label"].str.contains("→")]
    fitted = targeted["status"] == "ok"
    assert targeted.loc[fitted, "attack_success_rate"].notna().all()
    assert random_flips["attack_success_rate"].isna().all()
    assert (targeted["n_poisoned"] == (0.3 * targeted["n_eligible"] + 0.5).astype(int)).all()
    # The oracle removes exactly the poison; unfiltered cells have no detection metrics.
    oracle = table[table["defense"].str.startswith("oracle_filter") & (table["rate"] > 0)]
    assert (oracle["det_precision"] == 1).all() and (oracle["det_recall"] == 1).all()
    assert (oracle["n_removed"] == oracle["n_poisoned"]).all()
    assert table.loc[table["defense"] == "none", "det_precision"].isna().all()
    # Extra clean data adds f × n_train rows to the fit.
    f = table[table["extra_fraction"] == 0.2]
    assert (f["n_extra"] == (0.2 * f["n_train"]).round().astype(int)).all()
    # Nested columns are JSON text.
    confusion = json.loads(table["confusion"].iloc[0])
    assert len(confusion) == 3 and sum(map(sum, confusion)) == table["n_test"].iloc[0]
    # The report's table comes from the results.
    assert "label_flip" in (out / "report.md").read_text()


def test_rerun_executes_zero_cells_and_fresh_reruns_all(first_run, tiny_runs, capsys):
    _root, config = tiny_runs
    out = first_run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    table = pd.read_parquet(out / "results.parquet")
    code, stdout, _ = run(config, out, capsys)
    assert code == 0
    assert summary_counts(stdout) == (TINY_CELLS, 0, TINY_CELLS, 0)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    assert after == before, "a cached rerun must not rewrite records"
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), table)

    # An interrupted run resumes: a missing record is the only cell that runs.
    next(iter((out / "cells").glob("*.json"))).unlink()
    code, stdout, _ = run(config, out, capsys)
    assert summary_counts(stdout) == (TINY_CELLS, 1, TINY_CELLS - 1, 0)

    # A corrupt record is reported and recomputed, never trusted.
    victim = next(iter((out / "cells").glob("*.json")))
    victim.write_text("{not json")
    code, stdout, stderr = run(config, out, capsys)
    assert summary_counts(stdout) == (TINY_CELLS, 1, TINY_CELLS - 1, 0)
    assert victim.name in stderr and "recomputed" in stderr

    # --fresh recomputes everything, and a fresh run is deterministic.
    code, stdout, _ = run(config, out, capsys, "--fresh")
    assert code == 0
    assert summary_counts(stdout) == (TINY_CELLS, TINY_CELLS, 0, 0)
    pd.testing.assert_frame_equal(
        timing_free(pd.read_parquet(out / "results.parquet")), timing_free(table)
    )


def test_jobs_2_gives_the_same_table_as_jobs_1(first_run, tiny_runs, capsys):
    root, config = tiny_runs
    out = root / "jobs2"
    code, stdout, _ = run(config, out, capsys, "--jobs", "2")
    assert code == 0
    assert summary_counts(stdout) == (TINY_CELLS, TINY_CELLS, 0, 0)
    one = timing_free(pd.read_parquet(first_run / "results.parquet"))
    two = timing_free(pd.read_parquet(out / "results.parquet"))
    assert not one.empty
    pd.testing.assert_frame_equal(one, two)


def test_a_failing_cell_is_recorded_and_the_run_goes_on(tmp_path, capsys):
    config = tmp_path / "failing.yaml"
    config.write_text(FAILING)
    out = tmp_path / "run"
    code, stdout, stderr = run(config, out, capsys)
    assert code == 0, "a failed cell does not fail the run"
    n_cells, n_run, _n_cached, n_failed = summary_counts(stdout)
    assert (n_cells, n_run, n_failed) == (4, 4, 2)  # the two random_filter(1.0) cells
    table = pd.read_parquet(out / "results.parquet")
    failed = table[table["status"] == "failed"]
    assert len(failed) == 2
    assert set(failed["defense"]) == {"random_filter"}
    assert failed["error"].str.len().gt(0).all()
    assert failed["error"].str.contains("Error").all(), "the error names the exception"
    assert failed["accuracy"].isna().all()
    ok = table[table["status"] == "ok"]
    assert len(ok) == 2 and ok["accuracy"].notna().all()
    assert "failed:" in stderr
    records = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert sorted(r["status"] for r in records) == ["failed", "failed", "ok", "ok"]
    # the record keeps the traceback's tail for debugging; the row keeps the one-line reason
    assert all("Traceback" in r["error"] for r in records if r["status"] == "failed")
    assert "Failed cells" in (out / "report.md").read_text()
    # Failed cells are retried on the next run; finished ones are not.
    code, stdout, _ = run(config, out, capsys)
    assert summary_counts(stdout) == (4, 2, 2, 2)


def test_list_shows_every_registered_plugin(capsys):
    from attacks import ATTACKS
    from bench.data.datasets import DATASETS
    from bench.models import MODELS
    from defenses import DEFENSES

    capsys.readouterr()
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for registry in (ATTACKS, MODELS, DEFENSES, DATASETS):
        for name in registry:
            assert re.search(rf"^\s+{re.escape(name)}\s", text, re.M), name
    assert "contamination: float = 0.1" in text  # parameters with defaults


def test_report_command_rewrites_the_report(first_run, capsys):
    (first_run / "report.md").unlink()
    assert main(["report", str(first_run)]) == 0
    assert (first_run / "report.md").read_text().startswith("# poisonbench report")


def test_report_on_a_missing_run_is_a_clear_error(tmp_path, capsys):
    capsys.readouterr()
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_a_run_where_every_cell_fails_still_reports_why(tmp_path, capsys):
    config = tmp_path / "all-fail.yaml"
    config.write_text(
        FAILING.replace("name: failing", "name: all-fail").replace(
            "defenses: [none, {name: random_filter, contamination: 1.0}]",
            "defenses: [{name: random_filter, contamination: 1.0}]",
        )
    )
    out = tmp_path / "run"
    code, stdout, stderr = run(config, out, capsys)
    assert code == 0 and "Traceback" not in stderr
    assert summary_counts(stdout) == (2, 2, 0, 2)
    # one line per distinct reason, with its count
    lines = [line for line in stderr.splitlines() if line.startswith("failed: ")]
    assert len(lines) == 1 and lines[0].startswith("failed: 2 cell(s): ")
    report = (out / "report.md").read_text()
    assert "## Failed cells" in report and "2 cell(s) failed" in report
    assert "_No cell finished: there are no numbers to show._" in report
    assert "![" not in report and not list(out.glob("*.png"))
