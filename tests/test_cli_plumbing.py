"""CLI plumbing (issue 28, item 11): worker counts, closed output streams, subcommand usage.
(A non-UTF-8 ``--out`` is in ``test_destinations.py``.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import bench.run.workers
from bench.interfaces.cli import main
from bench.run.orchestrate import RunOptions
from bench.run.workers import cap_workers

ROOT = Path(__file__).resolve().parents[1]

#: 2 tasks (one per rate: a task is one poisoned training set)
TWO_TASKS = {
    "name": "two",
    "datasets": [{"name": "iris", "split": {"train": 60, "test": 45}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.2],
    "defenses": ["none"],
    "seeds": 1,
    "recovery": {"fractions": [0]},
}


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "two.yaml"
    path.write_text(json.dumps(TWO_TASKS))
    return path


def test_workers_are_capped_at_the_task_count_and_warned_above_the_cores(monkeypatch):
    assert cap_workers(RunOptions(jobs=10**9), 2).jobs == 2
    assert cap_workers(RunOptions(jobs=100), 7).jobs == 7
    assert cap_workers(RunOptions(jobs=3), 1).jobs == 2  # still workers, not in-process
    assert cap_workers(RunOptions(jobs=1), 50).jobs == 1
    dask = cap_workers(RunOptions(executor="dask-local", workers=10**9), 3)
    assert dask.workers == 3
    monkeypatch.setattr(bench.run.workers, "cpu_count", lambda: 2)
    warned: list[str] = []
    assert cap_workers(RunOptions(jobs=8), 20, warned.append).jobs == 8
    assert warned == [
        "8 worker processes on 2 cores: each fit runs slower when they share cores; --jobs 2 "
        "is usually faster"
    ]
    cap_workers(RunOptions(jobs=2), 20, warned.append)
    assert len(warned) == 1


def test_a_huge_jobs_runs_two_tasks_on_two_workers(tmp_path, capsys):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    code = main(
        ["run", str(config), "--out", str(out), "--jobs", "9" * 23, "--quiet", "--no-report"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "on 2 worker(s)" in captured.out
    assert "internal error" not in captured.err


@pytest.mark.parametrize("closed", ["2>&-", ">&- 2>&-"])
def test_a_run_with_closed_output_streams_still_runs(tmp_path, closed):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    command = (
        f"{sys.executable} -m bench.interfaces.cli run {config} --out {out} --no-report {closed}"
    )
    done = subprocess.run(["bash", "-c", command], timeout=180, cwd=ROOT, capture_output=True)
    assert done.returncode == 0, done
    assert (out / "results.parquet").is_file()
    assert len(list((out / "cells").glob("*.json"))) == 2


def test_a_bad_flag_on_a_subcommand_prints_that_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["compare", "--bogus", "a", "b"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: poisonbench compare ")
    assert "poisonbench compare: error: unrecognized arguments: --bogus" in err
    with pytest.raises(SystemExit):
        main(["run", "x.yaml", "--jobs", "0"])
    assert "usage: poisonbench run " in capsys.readouterr().err
