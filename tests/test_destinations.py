"""Where results are written (issue 28, items 5, 6 and 11's --out): ``baseline`` never writes
into a run directory and writes its two files in one step; a run never goes into a folder
that holds anything but a run (``out=""`` once meant the current directory), nor to a path
that cannot be written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import poisonbench as pb
from bench.interfaces.cli import main
from bench.run.config import ConfigError, parse_config
from bench.run.orchestrate import run_config
from tests.tiny import tiny

ROOT = Path(__file__).resolve().parents[1]

TINY = tiny(recovery={"fractions": [0]})


def _run(folder: Path, **changes) -> Path:
    run_config(parse_config({**TINY, **changes}), folder, jobs=1, progress=False)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two finished runs; B with 2 seeds, so its table differs from A's."""
    a = _run(tmp_path_factory.mktemp("runs") / "a")
    b = _run(a.parent / "b", seeds=2)
    return a, b


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# item 5: baseline
# ---------------------------------------------------------------------------------------------


def test_baseline_into_a_run_directory_is_refused_and_leaves_it_alone(runs, capsys):
    a, b = runs
    before = _snapshot(b)
    assert main(["baseline", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write baseline into ")
    assert "it is a run directory (it holds cells, config.yaml" in err
    assert main(["baseline", str(a), str(b), "--force"]) == 2  # --force never allows it
    assert main(["baseline", str(a), str(b / "results.parquet"), "--force"]) == 2
    assert main(["compare", str(b), str(a), "--write-baseline"]) == 2
    assert _snapshot(b) == before


def test_an_existing_baseline_is_replaced_only_with_force(runs, tmp_path, capsys):
    a, b = runs
    dest = tmp_path / "baseline"
    assert main(["baseline", str(a), str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["results.parquet", "run.json"]
    first = _snapshot(dest)
    assert main(["baseline", str(b), str(dest)]) == 2
    assert "already holds a baseline (results.parquet, run.json); add --force" in (
        capsys.readouterr().err
    )
    assert _snapshot(dest) == first
    assert main(["baseline", str(b), str(dest), "--force"]) == 0
    assert _snapshot(dest)["run.json"] == (b / "run.json").read_bytes()
    assert len(pd.read_parquet(dest / "results.parquet")) == len(
        pd.read_parquet(b / "results.parquet")
    )
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    assert main(["baseline", str(a), str(other), "--force"]) == 2
    assert "holds files that are not a baseline's (todo.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["todo.txt"]


def test_a_stop_signal_during_the_baseline_write_never_tears_it(runs, tmp_path):
    """SIGTERM arrives right after the first of the two files is renamed into place (the
    moment that once left the new table beside the old run.json): the second rename still
    happens, then the signal ends the process."""
    a, b = runs
    dest = tmp_path / "baseline"
    assert main(["baseline", str(a), str(dest)]) == 0
    code = (
        "import os, signal, sys\n"
        "import bench.analysis.baseline as baseline\n"
        "real = os.replace\n"
        "def replace(src, dst):\n"
        "    real(src, dst)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "baseline.os.replace = replace\n"
        "from bench.interfaces.cli import main\n"
        f"sys.exit(main(['baseline', {str(b)!r}, {str(dest)!r}, '--force']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == -signal.SIGTERM, done.stderr[-2000:]
    assert (dest / "run.json").read_bytes() == (b / "run.json").read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_parquet(dest / "results.parquet"), pd.read_parquet(b / "results.parquet")
    )
    assert sorted(p.name for p in dest.iterdir()) == ["results.parquet", "run.json"]


# ---------------------------------------------------------------------------------------------
# item 6: pb.run(out="") and other destinations
# ---------------------------------------------------------------------------------------------


def test_api_out_empty_is_the_default_not_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("mine: true\n")
    (tmp_path / "report.md").write_text("my report\n")
    result = pb.run(TINY, out="", progress=False, report=False)
    assert Path(result.path).resolve() == (tmp_path / "results" / "runs" / "tiny").resolve()
    assert (tmp_path / "config.yaml").read_text() == "mine: true\n"
    assert (tmp_path / "report.md").read_text() == "my report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "report.md", "results"]


def test_a_run_never_goes_into_a_folder_holding_other_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("mine: true\n")
    with pytest.raises(ConfigError, match=r"out: '\.' holds files but no run \(config\.yaml\)"):
        pb.run(TINY, out=".", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
    import bench

    package = Path(bench.__file__).parent
    with pytest.raises(ConfigError, match=r"is inside the bench package"):
        pb.run(TINY, out=package / "runs", progress=False)
    assert not (package / "runs").exists()
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    assert main(["run", str(config), "--out", ".", "--quiet"]) == 2
    assert "error: out: '.' holds files but no run" in capsys.readouterr().err
    # an earlier run's directory resumes as before
    out = tmp_path / "again"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--no-report"]) == 0
    assert main(["run", str(config), "--out", str(out), "--quiet", "--no-report"]) == 0


def test_a_new_run_directory_may_hold_the_mlflow_store_it_starts_with(tmp_path):
    """``--mlflow`` creates its default store (mlflow.db, mlartifacts/) in the run directory
    before the run: that folder is the run's own, not a folder of other files."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "mlflow.db").write_bytes(b"")
    (out / "mlartifacts").mkdir()
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    assert main(["run", str(config), "--out", str(out), "--quiet", "--no-report"]) == 0
    assert (out / "results.parquet").is_file()


def test_a_non_utf8_out_is_refused_before_any_cell(tmp_path):
    """A non-UTF-8 byte in ``--out`` (through a real argv: Python decodes it with
    surrogateescape): exit 2 at once, nothing created or computed."""
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    out = os.fsencode(tmp_path) + b"/run-\xff"
    done = subprocess.run(
        [sys.executable, "-m", "bench.interfaces.cli", "run", os.fsencode(config), "--out", out],
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, err[-2000:]
    assert "error: out: " in err and "is not valid UTF-8" in err
    assert not os.path.lexists(out)
    shutil.rmtree(tmp_path / "results", ignore_errors=True)
