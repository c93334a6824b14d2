"""Issue 22, items 4 and 5: nothing hangs, and a plug-in cannot exit the run.

- A FIFO or a device as a config, a table or an image file is refused up front, in one line
  (reading a FIFO with no writer would block forever); an image folder with a symlink loop is
  refused (the walk would never end); a ``size`` whose decoded array would not fit the memory
  limit is refused with the number.
- ``timeout:`` (or ``--timeout``) bounds a cell: a hung defense's cell is ``failed`` with
  ``timed out after N s``, its worker is replaced, and the run goes on to the end.
- A plug-in's ``sys.exit``, ``KeyboardInterrupt`` or other ``BaseException``: at import, an
  ``error: ... plugin MODULE ...`` line and exit 2; inside a cell, a failed cell
  (``plugin called sys.exit(3)``), with ``--jobs 1`` and ``--jobs 2``.

Runs with the hostile defense go through a subprocess (``tests/hostile_plugins.py`` on
PYTHONPATH), so that it never enters this process's registry.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.core.types import ParamError
from bench.data.datasets import DatasetError, load_dataset
from tests.tiny import tiny

CLI = [sys.executable, "-m", "bench.interfaces.cli"]
HERE = Path(__file__).parent

TINY = tiny(
    name="hostile",
    datasets=[{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
    recovery={"fractions": [0], "bootstrap": 0},
)  # 2 cells, well under a second


def _env(*folders: Path) -> dict[str, str]:
    path = os.pathsep.join([*map(str, folders), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def _cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env or _env()
    )


def _one_error(proc: subprocess.CompletedProcess, *parts: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def _rows(out: Path) -> dict[tuple[float, str], dict]:
    """(rate, defense name) -> the f=0 row of each stored record."""
    rows = {}
    for path in (out / "cells").glob("*.json"):
        record = json.loads(path.read_text())
        spec = record["spec"]
        key = (float(spec["rate"]), "+".join(s["name"] for s in spec["defense"]))
        rows[key] = record["rows"][0]
    return rows


# --- item 4: non-regular files, symlink loops, image size ------------------------------------


def test_a_fifo_as_the_config_is_refused_at_once(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    for command in (
        ["run", str(fifo), "--out", str(tmp_path / "out")],
        ["list", "--config", str(fifo)],
    ):
        proc = _cli(command, timeout=30)  # before: blocked for ever on the open
        _one_error(proc, "config: ", "is a FIFO (named pipe), not a regular file")
    assert not (tmp_path / "out").exists()


def test_a_fifo_as_a_table_or_an_image_is_refused(tmp_path):
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)
    with pytest.raises(DatasetError, match=r"is a FIFO \(named pipe\), not a regular file"):
        load_dataset("table", None, {"path": str(fifo), "target": "y"})
    root = _images(tmp_path / "images")
    os.mkfifo(root / "ant" / "zzz.png")
    with pytest.raises(DatasetError, match=r"zzz.png is a FIFO"):
        load_dataset("image_folder", None, {"path": str(root)})


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_device_as_a_table_is_refused(tmp_path):
    node = tmp_path / "zero.csv"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: reading never ends
    with pytest.raises(DatasetError, match="is a character device, not a regular file"):
        load_dataset("table", None, {"path": str(node), "target": "y"})


def _images(root: Path, per_class: int = 3) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, name in enumerate(("ant", "cat")):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            pixels = rng.integers(0, 40, size=(8, 8, 3), dtype=np.uint8)
            pixels[2 * i, :, :] = 250
            Image.fromarray(pixels).save(root / name / f"{j}.png")
    return root


def test_an_image_folder_with_a_symlink_loop_is_refused(tmp_path):
    root = _images(tmp_path / "images")
    (root / "cat" / "again").symlink_to(root / "cat")  # cat/again/again/... for ever
    started = time.perf_counter()
    with pytest.raises(DatasetError, match=r"cat/again is a symlink to a folder .*into the image"):
        load_dataset("image_folder", None, {"path": str(root)})
    assert time.perf_counter() - started < 5


def test_a_symlinked_subfolder_that_leaves_the_folder_is_refused(tmp_path):
    """Issue 28: a folder symlink that leaves the image folder has no bound and is refused
    (image_folder follows no folder symlink); a symlinked image file is read like a copy."""
    root = _images(tmp_path / "images")
    extra = _images(tmp_path / "more")
    (root / "cat" / "linked").symlink_to(extra / "cat")
    with pytest.raises(DatasetError, match=r"cat/linked is a symlink to a folder .*out of the"):
        load_dataset("image_folder", None, {"path": str(root)})
    (root / "cat" / "linked").unlink()
    (root / "cat" / "copy.png").symlink_to(extra / "cat" / "0.png")
    data = load_dataset("image_folder", None, {"path": str(root)})
    assert np.bincount(data.y).tolist() == [3, 4]


def test_an_image_size_beyond_the_memory_limit_is_refused_with_the_number(tmp_path):
    root = _images(tmp_path / "images", per_class=6)
    started = time.perf_counter()
    with pytest.raises(DatasetError, match=r"12 images of 4096×4096×3 need 2\.2 GiB"):
        load_dataset("image_folder", None, {"path": str(root), "size": [4096, 4096]})
    assert time.perf_counter() - started < 5
    small = load_dataset("image_folder", None, {"path": str(root), "size": [16, 16]})
    assert small.X.shape == (12, 3, 16, 16)


# --- item 4: the per-cell time limit ---------------------------------------------------------


def test_timeout_is_validated(tmp_path):
    from bench.run.config import parse_config

    assert parse_config({**TINY, "timeout": 30}).timeout == 30.0
    assert parse_config({**TINY, "timeout": 0}).timeout is None
    for bad in (-1, "soon", True, float("inf")):
        with pytest.raises(ParamError, match="timeout"):
            parse_config({**TINY, "timeout": bad})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(TINY))
    proc = _cli(["run", str(config), "--out", str(tmp_path / "o"), "--timeout", "-3"])
    _one_error(proc, "error: --timeout: expected seconds")


def _hostile_config(tmp_path: Path, action: str, **extra) -> Path:
    raw = {
        **TINY,
        "defenses": ["none", {"name": "hostile", "action": action}],
        "plugins": ["hostile_plugins"],
        **extra,
    }  # 4 cells in 2 tasks (rate 0: both ok; rate 0.2: the hostile cell misbehaves)
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_hung_defense_times_out_and_the_run_goes_on(tmp_path, jobs):
    config = _hostile_config(tmp_path, "sleep", timeout=2)
    out = tmp_path / "run"
    started = time.perf_counter()
    proc = _cli(
        ["run", str(config), "--out", str(out), "--quiet", "--no-report", "--jobs", jobs],
        env=_env(HERE),
        timeout=90,
    )
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "UserWarning" not in proc.stderr, proc.stderr
    rows = _rows(out)
    assert len(rows) == 4
    assert rows[(0.0, "none")]["status"] == "ok" and rows[(0.0, "hostile")]["status"] == "ok"
    # One process runs the rate-0.2 task whole: 2 cells, a limit of 2 × 2 s, both lost with
    # the worker. Two workers cut the run's last tasks into one piece per defense
    # (bench.run.schedule): the hung cell is a task of its own, with a limit of 2 s.
    cells = 2 if jobs == "1" else 1
    assert rows[(0.2, "hostile")]["status"] == "failed"
    assert rows[(0.2, "hostile")]["error"] == f"timed out after {2 * cells} s"
    assert f"4 cells (4 run, 0 cached, {cells} failed)" in proc.stdout
    assert wall < 40


def test_the_timeout_flag_overrides_the_config(tmp_path):
    config = _hostile_config(tmp_path, "sleep", timeout=600)
    out = tmp_path / "run"
    proc = _cli(
        ["run", str(config), "--out", str(out), "--quiet", "--no-report", "--timeout", "1.5"],
        env=_env(HERE),
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert _rows(out)[(0.2, "hostile")]["error"] == "timed out after 3 s"


# --- item 5: a plug-in cannot exit the run ---------------------------------------------------

IMPORT_FAULTS = {
    "exit": ("import sys\nsys.exit(3)\n", "called sys.exit(3) on import"),
    "base": (
        "class Out(BaseException):\n    pass\nraise Out('bye')\n",
        "raised Out: bye on import",
    ),
    "keyboard": ("raise KeyboardInterrupt\n", "raised KeyboardInterrupt on import"),
}


@pytest.mark.parametrize("fault", sorted(IMPORT_FAULTS))
def test_a_plugin_that_exits_on_import_is_one_error_line(tmp_path, fault):
    code, reason = IMPORT_FAULTS[fault]
    (tmp_path / "bad_plugin.py").write_text(code)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY, "plugins": ["bad_plugin"]}))
    proc = _cli(["run", str(config), "--out", str(tmp_path / "o"), "--quiet"], _env(tmp_path))
    _one_error(proc, "plugins[0]", "plugin 'bad_plugin'", reason)
    listed = _cli(["list", "--config", str(config)], _env(tmp_path))
    _one_error(listed, "plugin 'bad_plugin'", reason)


def test_a_model_module_that_exits_on_import_is_one_error_line(tmp_path):
    (tmp_path / "bad_model.py").write_text("import sys\nsys.exit(3)\n")
    config = tmp_path / "c.yaml"
    model = {"name": "sklearn", "estimator": "bad_model.Net"}
    config.write_text(yaml.safe_dump({**TINY, "models": [model]}))
    proc = _cli(["run", str(config), "--out", str(tmp_path / "o"), "--quiet"], _env(tmp_path))
    _one_error(proc, "plugin 'bad_model' called sys.exit(3) on import")


CELL_FAULTS = {
    "exit": "plugin called sys.exit(3)",
    "keyboard": "plugin raised KeyboardInterrupt",
    "base": "plugin raised Escape: out of here",
}


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("action", sorted(CELL_FAULTS))
def test_a_plugin_that_exits_in_a_cell_is_a_failed_cell(tmp_path, action, jobs):
    config = _hostile_config(tmp_path, action)
    out = tmp_path / "run"
    proc = _cli(
        ["run", str(config), "--out", str(out), "--quiet", "--no-report", "--jobs", jobs],
        env=_env(HERE),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "interrupted" not in proc.stderr, proc.stderr
    rows = _rows(out)
    assert rows[(0.2, "hostile")]["status"] == "failed"
    assert rows[(0.2, "hostile")]["error"] == CELL_FAULTS[action]
    assert {k: r["status"] for k, r in rows.items() if k != (0.2, "hostile")} == {
        (0.0, "none"): "ok",
        (0.0, "hostile"): "ok",
        (0.2, "none"): "ok",
    }
    assert "4 cells (4 run, 0 cached, 1 failed)" in proc.stdout


# --- item 3: the run directory removed or replaced mid-run -----------------------------------


@pytest.mark.parametrize("action", ["rmtree", "relock"])
def test_a_run_whose_directory_is_removed_or_relocked_says_so(tmp_path, action):
    config = _hostile_config(tmp_path, action)
    out = tmp_path / "run"
    proc = _cli(
        ["run", str(config), "--out", str(out), "--quiet", "--no-report"],
        env={**_env(HERE), "HOSTILE_TARGET": str(out)},
    )
    _one_error(proc, f"the run directory {out} was removed or replaced during the run")
    assert "cells (" not in proc.stdout  # no summary of cells that are not on disk
    if action == "rmtree":
        assert not out.exists()  # nothing recreated it
    else:
        assert not (out / "results.parquet").exists()
        assert len(list((out / "cells").glob("*.json"))) < 4
