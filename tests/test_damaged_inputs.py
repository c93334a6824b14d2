"""compare and report on damaged inputs (issue 28, item 10): each is exit 2 with the reason,
never ``internal error``; a NEW whose every cell failed is a regression (exit 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.interfaces.cli import main
from bench.run.config import parse_config
from bench.run.orchestrate import run_config
from tests.tiny import tiny

TINY = tiny(seeds=2, recovery={"fractions": [0, 0.5], "bootstrap": 100})


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("damaged") / "base"
    run_config(parse_config(TINY), out, jobs=1, progress=False)
    return out


def copy_run(base: Path, folder: Path, edit=None) -> Path:
    """``base``'s table and run.json in ``folder``, the table passed through ``edit``."""
    folder.mkdir()
    table = pd.read_parquet(base / "results.parquet")
    (edit(table) if edit else table).to_parquet(folder / "results.parquet")
    shutil.copy(base / "run.json", folder / "run.json")
    return folder


def cli(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_a_base_without_the_accuracy_column(base, tmp_path, capsys):
    damaged = copy_run(base, tmp_path / "noacc", lambda t: t.drop(columns=["accuracy"]))
    for argv in (("compare", str(damaged), str(base)), ("compare", str(base), str(damaged))):
        code, err = cli(capsys, *argv)
        assert code == 2, err
        assert "results table lacks the" in err and "column accuracy" in err
        assert "internal error" not in err
    code, err = cli(capsys, "report", str(damaged))
    assert code == 2 and "lacks the metric column accuracy" in err, err


def test_a_new_with_duplicated_rows(base, tmp_path, capsys):
    doubled = copy_run(base, tmp_path / "dup", lambda t: pd.concat([t, t]))
    code, err = cli(capsys, "compare", str(base), str(doubled))
    assert code == 2, err
    assert "16 rows repeat a configuration, seed and extra-clean fraction" in err
    code, err = cli(capsys, "report", str(doubled))
    assert code == 2 and "rows repeat a configuration" in err, err


@pytest.mark.parametrize("tolerance", [-5, "nan"])
def test_a_run_json_with_a_negative_tolerance(base, tmp_path, capsys, tolerance):
    damaged = copy_run(base, tmp_path / "tol")
    meta = json.loads((damaged / "run.json").read_text())
    meta["recovery"]["tolerance"] = float(tolerance) if tolerance == "nan" else tolerance
    (damaged / "run.json").write_text(json.dumps(meta))
    code, err = cli(capsys, "compare", str(damaged), str(base))
    assert code == 2, err
    assert "run.json: recovery.tolerance must be a finite number >= 0" in err
    code, err = cli(capsys, "report", str(damaged))
    assert code == 2 and "recovery.tolerance must be a finite number >= 0" in err, err


def test_a_results_parquet_that_is_a_directory(base, tmp_path, capsys):
    damaged = tmp_path / "pqdir"
    (damaged / "results.parquet").mkdir(parents=True)
    for argv in (("compare", str(base), str(damaged)), ("report", str(damaged))):
        code, err = cli(capsys, *argv)
        assert code == 2, err
        assert "results.parquet is a folder, not a results table file" in err


def test_every_cell_failed_in_new_is_a_regression(base, tmp_path, capsys):
    """What a run whose every cell failed writes: failed rows with their error and none of
    the metric columns (no row ever had them)."""

    def all_failed(table: pd.DataFrame) -> pd.DataFrame:
        metrics = ["accuracy", "macro_f1", "log_loss", "source_accuracy", "attack_success_rate"]
        out = table.drop(columns=[c for c in metrics if c in table.columns])
        return out.assign(status="failed", error="ModelOutputError: model logreg: NaN")

    failed = copy_run(base, tmp_path / "failed", all_failed)
    code, err = cli(capsys, "compare", str(base), str(failed), "--json", str(tmp_path / "c.json"))
    assert code == 1, err
    summary = json.loads((tmp_path / "c.json").read_text())
    assert summary["counts"]["failed_in_new"] == 4
    assert summary["counts"]["regressions"] > 0
