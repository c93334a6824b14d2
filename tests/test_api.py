"""The Python API (``import poisonbench as pb``): the same table as the CLI, resume, compare,
load, errors as exceptions, a light import, and plug-ins registered by a notebook session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import poisonbench as pb
from bench.analysis.recovery import estimate_recovery
from bench.interfaces.cli import main

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {
    "name": "api",
    "datasets": [{"name": "iris", "split": {"train": 60, "test": 45}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.3],
    "defenses": ["none", "iforest"],
    "seeds": 2,
    "recovery": {"fractions": [0, 0.5], "metric": "macro_f1", "tolerance": 0.02, "bootstrap": 30},
}


def without_timings(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=[c for c in table.columns if c.startswith("t_")])


@pytest.fixture(scope="module")
def api_run(tmp_path_factory) -> pb.Run:
    out = tmp_path_factory.mktemp("api") / "run"
    return pb.run(CONFIG, out=out, progress=False)


def test_the_api_returns_the_same_table_as_the_cli(api_run, tmp_path):
    path = tmp_path / "api.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    assert main(["run", str(path), "--out", str(tmp_path / "cli"), "-q"]) == 0
    cli = pd.read_parquet(tmp_path / "cli" / "results.parquet")
    assert len(cli) == 16 and set(cli["status"]) == {"ok"}  # 8 cells × 2 fractions
    pd.testing.assert_frame_equal(without_timings(api_run.table), without_timings(cli))
    # and a YAML path given to the API reads the same as the dict
    from_file = pb.run(path, out=tmp_path / "from-file", progress=False, report=False)
    pd.testing.assert_frame_equal(without_timings(from_file.table), without_timings(cli))


def test_a_run_writes_the_report_and_says_what_it_did(api_run):
    assert api_run.report_path == api_run.path / "report.md"
    assert api_run.report_path.read_text().startswith("# ")
    assert api_run.summary["cells"] == 8 and api_run.summary["fits_run"] == 16
    assert api_run.name == "api" and api_run.failures.empty
    assert api_run.config["recovery"]["metric"] == "macro_f1"


def test_recovery_uses_the_runs_settings_by_default(api_run):
    table = api_run.table
    expected = estimate_recovery(table, "macro_f1", 0.02, n_boot=30)
    pd.testing.assert_frame_equal(api_run.recovery(), expected)
    other = estimate_recovery(table, "accuracy", 0.1, n_boot=30)
    pd.testing.assert_frame_equal(api_run.recovery(metric="accuracy", tolerance=0.1), other)
    assert not expected["f_needed"].equals(other["f_needed"])  # the settings do matter here


def test_resume_through_the_api_computes_nothing(api_run, tmp_path):
    out = tmp_path / "copy"  # a copy: the module's run stays as it was for the other tests
    shutil.copytree(api_run.path, out)
    records = sorted((out / "cells").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in records]
    again = pb.run(CONFIG, out=out, progress=False, report=False)
    assert again.summary["run"] == 0 and again.summary["fits_run"] == 0
    assert again.summary["cached"] == 8 and again.summary["fits_cached"] == 16
    assert [p.stat().st_mtime_ns for p in records] == stamps
    pd.testing.assert_frame_equal(without_timings(again.table), without_timings(api_run.table))


def test_load_is_the_same_object_without_computing(api_run, monkeypatch):
    import bench.run.orchestrate

    monkeypatch.setattr(bench.run.orchestrate, "run_config", None)  # any run would fail
    loaded = pb.load(api_run.path)
    assert isinstance(loaded, pb.Run)
    pd.testing.assert_frame_equal(loaded.table, api_run.table)
    assert loaded.summary == api_run.summary
    assert loaded.summary == json.loads((api_run.path / "run.json").read_text())["summary"]
    pd.testing.assert_frame_equal(loaded.recovery(), api_run.recovery())


def test_load_of_a_directory_without_results_is_an_error(tmp_path):
    with pytest.raises(pb.PoisonBenchError, match="no such run directory"):
        pb.load(tmp_path / "nothing")
    with pytest.raises(pb.PoisonBenchError, match=r"holds no results\.parquet"):
        pb.load(tmp_path)


def test_compare_of_a_run_with_itself_passes(api_run):
    result = pb.compare(api_run, api_run.path)
    assert isinstance(result, pb.Comparison)
    assert result.exit_code == 0 and result.regressions.empty
    assert len(result.checks) > 0 and set(result.checks["verdict"]) == {"ok"}
    assert "no regression" in result.to_markdown()
    assert result.settings.recovery_metric == "macro_f1"  # from BASE's run.json


def test_compare_flags_a_regression_in_a_table(api_run):
    worse = api_run.table.copy()
    rows = (worse["defense"] == "iforest") & (worse["rate"] > 0)
    worse.loc[rows, "accuracy"] = worse.loc[rows, "accuracy"] - 0.3
    result = pb.compare(api_run.table, worse, metrics=["accuracy"])
    assert result.exit_code == 1
    assert set(result.regressions["defense_label"]) == {"iforest"}
    assert set(result.regressions["metric"]) == {"accuracy"}
    np.testing.assert_allclose(result.regressions["change"], -0.3, atol=1e-9)
    with pytest.raises(pb.CompareError, match="lacks columns"):
        pb.compare(api_run.table, worse.drop(columns=["status"]))


def test_errors_are_exceptions_not_exit_codes(api_run, tmp_path):
    with pytest.raises(pb.ConfigError) as info:
        pb.run({**CONFIG, "rates": [0, 2]}, out=tmp_path / "bad", progress=False)
    assert info.value.field == "rates[1]"
    with pytest.raises(pb.ConfigError, match=r"datasets\[0\].split.train: expected plain data"):
        pb.run(
            {**CONFIG, "datasets": [{"name": "iris", "split": {"train": object()}}]},
            out=tmp_path / "bad",
        )
    with pytest.raises(pb.ParamError, match="jobs: expected an integer >= 1"):
        pb.run(CONFIG, jobs=0, out=tmp_path / "bad")
    with pytest.raises(pb.DatasetError, match=r"datasets\[0\]"):
        pb.run(
            {**CONFIG, "datasets": [{"name": "iris", "split": {"train": 140, "test": 45}}]},
            out=tmp_path / "bad",
        )
    from bench.core.store import RunLock

    with RunLock(api_run.path), pytest.raises(pb.RunLockedError):
        pb.run(CONFIG, out=api_run.path, progress=False)


def test_a_dict_with_numpy_values_runs_and_is_saved_as_plain_yaml(tmp_path):
    config = {
        **CONFIG,
        "rates": [np.float64(0.0), np.float64(0.3)],
        "seeds": [np.int64(0)],
        "recovery": {"fractions": (0, 0.5), "bootstrap": 0},
    }
    run = pb.run(config, out=tmp_path / "np", progress=False, report=False)
    saved = yaml.safe_load((tmp_path / "np" / "config.yaml").read_text())
    assert saved["rates"] == [0.0, 0.3] and saved["seeds"] == [0]
    assert sorted(run.table["rate"].unique()) == [0.0, 0.3]


def test_importing_poisonbench_is_light():
    """``import poisonbench`` loads none of the harness; using it loads no torch."""
    code = textwrap.dedent(
        """
        import sys
        import poisonbench as pb
        heavy = ("torch", "sklearn", "pandas", "pyod", "bench", "attacks", "defenses")
        print("IMPORT", sorted(m for m in heavy if m in sys.modules))
        assert "knn" not in pb.defenses and "iforest" in pb.defenses
        assert {"label_flip"} <= set(pb.attacks) and "cnn" in pb.models and "iris" in pb.datasets
        config = pb.parse_config({
            "datasets": [{"name": "mnist-5k", "split": {"train": 100, "test": 100}}],
            "models": ["cnn"], "attacks": ["label_flip"], "rates": [0, 0.1],
            "defenses": ["none"], "seeds": 1,
        })
        print("USE", sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "IMPORT []" in out.stdout
    assert "USE []" in out.stdout


NOTEBOOK = """
import warnings
from dataclasses import dataclass

import numpy as np
import poisonbench as pb

@pb.defenses.register("notebook_filter")
@dataclass(frozen=True)
class NotebookFilter(pb.Filter):
    '''Remove the first tenth of the rows (a plug-in defined in a notebook cell).'''

    def score(self, train, ctx, rng):
        removed = np.arange(len(train)) < len(train) // 10
        return removed.astype(float), removed

config = {
    "name": "notebook",
    "datasets": [{"name": "iris", "split": {"train": 60, "test": 45}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.2],
    "defenses": ["none", "notebook_filter"],
    "seeds": 1,
    "recovery": {"fractions": [0], "bootstrap": 0},
}
run = pb.run(config, out=OUT + "/one", progress=False, report=False)
table = run.table
print("JOBS1", sorted(set(table["status"])), int(table.loc[table["defense"] == "notebook_filter", "n_removed"].max()))
try:
    pb.run(config, out=OUT + "/two", jobs=2, progress=False)
except pb.ConfigError as exc:
    print("JOBS2", exc)
"""


@pytest.mark.timeout(300)
def test_a_plugin_registered_in_a_notebook_runs_in_process_and_is_refused_for_workers(tmp_path):
    code = f"OUT = {str(tmp_path)!r}\n" + NOTEBOOK
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=280, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "JOBS1 ['ok'] 6" in out.stdout
    (line,) = [line for line in out.stdout.splitlines() if line.startswith("JOBS2")]
    assert "defenses[1]: defense 'notebook_filter' was registered in __main__" in line
    assert "the 2 worker processes cannot see" in line
    assert "list that module under `plugins:`" in line
    assert not list((tmp_path / "two").rglob("*.json")), "nothing may run before the refusal"
