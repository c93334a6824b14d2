"""``poisonbench gate CONFIG BASELINE``: the regression gate in one command (issue 22, item 8).

It must say what ``run --fresh`` and ``compare`` would say, with ``compare``'s exit statuses,
read the baseline before it runs anything, and write its diff beside the run's table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.interfaces.cli import main
from tests.tiny import tiny

ROOT = Path(__file__).resolve().parents[1]
POISONBENCH = str(Path(sys.executable).parent / "poisonbench")


def _config(tmp_path: Path, name: str = "gated", **changes) -> Path:
    path = tmp_path / f"{name}.yaml"
    raw = tiny(name=name, seeds=3, defenses=["none", "oracle_filter"], **changes)
    path.write_text(json.dumps(raw))
    return path


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """A baseline of the tiny config: a run of it copied by ``poisonbench baseline``."""
    root = tmp_path_factory.mktemp("gate")
    run = root / "run"
    assert main(["run", str(_config(root)), "--out", str(run), "--quiet", "--no-report"]) == 0
    assert main(["baseline", str(run), str(root / "baseline")]) == 0
    return root / "baseline"


def test_a_gate_against_its_own_baseline_passes_and_writes_the_diff_beside_the_table(
    tmp_path, baseline, capsys
):
    out = tmp_path / "run"
    code = main(["gate", str(_config(tmp_path)), str(baseline), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "gated: 12 cells (12 run, 0 cached, 0 failed)" in captured.out  # the run's summary
    assert "no regression" in captured.out.lower()
    assert (out / "results.parquet").is_file() and not (out / "report.md").exists()
    summary = json.loads((out / "compare.json").read_text())
    assert summary["exit_code"] == 0
    assert (out / "compare.md").read_text() in captured.out


def test_a_gate_runs_afresh_and_writes_the_report_and_the_diff_where_asked(
    tmp_path, baseline, capsys
):
    out = tmp_path / "run"
    config = str(_config(tmp_path))
    assert main(["run", config, "--out", str(out), "--quiet", "--no-report"]) == 0
    md, js = tmp_path / "diff.md", tmp_path / "diff.json"
    argv = ["gate", config, str(baseline), "--out", str(out), "--quiet", "--report"]
    code = main([*argv, "--markdown", str(md), "--json", str(js)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "(12 run, 0 cached, 0 failed)" in captured.out  # nothing taken from the earlier run
    assert (out / "report.md").is_file()
    assert md.is_file() and json.loads(js.read_text())["exit_code"] == 0
    assert not (out / "compare.md").exists()


def test_a_weakened_model_fails_the_gate_with_exit_1(tmp_path, baseline, capsys):
    weak = {"name": "logreg", "params": {"C": 1e-4}}
    config = _config(tmp_path, models=[weak])
    code = main(["gate", str(config), str(baseline), "--out", str(tmp_path / "run"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "regression" in captured.out.lower()
    assert json.loads((tmp_path / "run" / "compare.json").read_text())["exit_code"] == 1


def test_an_unusable_baseline_stops_the_gate_before_it_runs(tmp_path, capsys):
    out = tmp_path / "run"
    for base in (tmp_path / "missing", tmp_path / "empty.csv"):
        if base.suffix:
            base.write_text("not,a,results,table\n1,2,3,4\n")
        code = main(["gate", str(_config(tmp_path)), str(base), "--out", str(out), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2
        assert err.startswith("error: ") and "Traceback" not in err
        assert not out.exists()  # nothing was run or written


def test_the_gate_command_of_the_executable_runs_on_two_workers(tmp_path, baseline):
    """The installed entry point (``console``: exit status, frozen heap at exit) and the local
    pool with its cut tail, as ``make gate`` runs them."""
    out = tmp_path / "run"
    command = [POISONBENCH, "gate", str(_config(tmp_path)), str(baseline), "--out", str(out)]
    done = subprocess.run(
        [*command, "--jobs", "2", "--quiet"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "on 2 worker(s)" in done.stdout
    assert done.stderr == ""
    assert json.loads((out / "compare.json").read_text())["exit_code"] == 0
