"""Filesystem faults are one line (``error: cannot write PATH: REASON``, exit 2), found before
any cell runs where they can be, and never cost a finished record.

The tests run as the user CI runs as; root ignores permission bits, so read-only folders are
not simulated here. The faults used instead are those root cannot bypass: a file where a folder
is expected (and the reverse), and the file-size limit (``RLIMIT_FSIZE``, ``EFBIG``), which is
how a full disk looks to a writer.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.core.atomic import WriteError, atomic_write_text, check_writable

CLI = [sys.executable, "-m", "bench.interfaces.cli"]

TINY = {
    "name": "fs",
    "datasets": [{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.2],
    "defenses": ["none", "oracle_filter"],
    "seeds": 2,
    "recovery": {"fractions": [0, 0.2], "bootstrap": 0},
}  # 8 cells


def _run(config: Path, out: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "run", str(config), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "fs.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _one_line(proc: subprocess.CompletedProcess, path: Path, reason: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"error: cannot write {path}"), errors[0]
    assert reason in errors[0], errors[0]


def test_an_output_path_that_is_a_file(config, tmp_path):
    out = tmp_path / "out"
    out.write_text("not a folder")
    proc = _run(config, out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: cannot write ") and str(out) in proc.stderr
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize(
    ("make", "where", "reason"),
    [
        (lambda out: (out / "cells").write_text("x"), "cells", "a file is in the way"),
        (lambda out: (out / "results.parquet").mkdir(), "results.parquet", "Is a directory"),
        (lambda out: (out / "report.md").mkdir(), "report.md", "Is a directory"),
    ],
    ids=["cells-is-a-file", "table-is-a-folder", "report-is-a-folder"],
)
def test_a_path_in_the_way_stops_the_run_before_any_cell(config, tmp_path, make, where, reason):
    out = tmp_path / "out"
    out.mkdir()
    make(out)
    proc = _run(config, out)
    _one_line(proc, out / where, reason)
    records = list((out / "cells").glob("*.json")) if (out / "cells").is_dir() else []
    assert records == []  # nothing computed: the fault was found first


def test_a_record_path_that_is_a_folder_stops_before_computing(config, tmp_path):
    out = tmp_path / "out"
    assert _run(config, out).returncode == 0
    finished = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")}
    victim = out / "cells" / sorted(finished)[0]
    victim.unlink()
    victim.mkdir()
    proc = _run(config, out)
    _one_line(proc, victim, "Is a directory")
    kept = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json") if p.is_file()}
    assert kept == {k: v for k, v in finished.items() if k != victim.name}


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_mid_run_is_one_line_and_loses_no_finished_record(config, tmp_path):
    """The file-size limit lets the records (a few KB each) through and stops the results
    table: the run ends with one line, every record intact, and a rerun without the limit
    computes nothing and writes the table."""
    out = tmp_path / "out"
    proc = _run(config, out, preexec_fn=_limit_file_size(8 * 1024))  # records ~4 KB, table ~30
    records = sorted((out / "cells").glob("*.json"))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert error.startswith(f"error: cannot write {out}/results.") and "File too large" in error
    assert len(records) == 8
    for path in records:
        assert json.loads(path.read_text())["status"] == "ok"  # complete, valid JSON
    again = _run(config, out)
    assert again.returncode == 0, again.stderr
    assert "(0 run, 8 cached, 0 failed)" in again.stdout


def test_check_writable_and_atomic_writes_name_the_path(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(WriteError, match=rf"cannot write {blocker}: a file is in the way"):
        check_writable(blocker)
    with pytest.raises(WriteError, match=rf"cannot write {blocker}/a.txt: Not a directory"):
        atomic_write_text(blocker / "a.txt", "hello")
    target = tmp_path / "dir"
    target.mkdir()
    with pytest.raises(WriteError, match=rf"cannot write {target}: Is a directory"):
        atomic_write_text(target, "hello")
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file went with the failure
