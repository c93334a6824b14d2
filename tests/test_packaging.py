"""Packaging smoke test (PyOD's CI does the same): build the wheel, install it somewhere fresh
without the network, and run ``poisonbench list`` from the installed copy, not the source tree.

The wheel is built from a copy of the tree so the shared working tree gets no ``build/`` or
``*.egg-info``. ``pip install --no-deps --no-index --target`` installs only our wheel; its
dependencies come from this interpreter's site-packages (no download).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(60)  # build + install + two subprocesses: keep it quick
PACKAGES = ("bench", "attacks", "defenses", "poisonbench")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("packaging")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    dist = work / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(dist), str(src)],
        cwd=work,
    )  # fmt: skip
    (wheel,) = dist.glob("poisonbench-*.whl")
    target = work / "site"
    _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(target), str(wheel)],
        cwd=work,
    )  # fmt: skip
    return target


def test_wheel_holds_every_package_and_module(installed):
    source = {
        p.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    shipped = {
        p.relative_to(installed).as_posix()
        for package in PACKAGES
        for p in (installed / package).rglob("*.py")
    }
    assert source <= shipped, f"not in the wheel: {sorted(source - shipped)}"
    assert not (installed / "tests").exists(), "tests do not belong in the wheel"
    (dist_info,) = installed.glob("poisonbench-*.dist-info")
    entry_points = (dist_info / "entry_points.txt").read_text()
    assert re.search(r"poisonbench\s*=\s*bench\.interfaces\.cli:console", entry_points)


def test_installed_poisonbench_list_names_every_plugin(installed, tmp_path):
    from attacks import ATTACKS
    from bench.data.datasets import DATASETS
    from bench.models import MODELS
    from defenses import DEFENSES

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(installed)
    where = _run(
        [sys.executable, "-c", "import bench, attacks, defenses, poisonbench; "
         "print(bench.__file__); print(attacks.__file__); print(defenses.__file__); "
         "print(poisonbench.__file__)"],
        cwd=tmp_path,
        env=env,
    )  # fmt: skip
    for line in where.split():
        assert Path(line).resolve().is_relative_to(installed.resolve()), (
            f"imported {line}, not the installed copy"
        )
    # The console script pip wrote, run with the installed packages on the path.
    script = installed / "bin" / "poisonbench"
    cmd = (
        [str(script), "list"]
        if script.exists()
        else [sys.executable, "-m", "bench.interfaces.cli", "list"]
    )
    text = _run(cmd, cwd=tmp_path, env=env)
    for registry in (ATTACKS, MODELS, DEFENSES, DATASETS):
        for name in registry:
            assert re.search(rf"^\s+{re.escape(name)}\s", text, re.M), f"{name} not listed"


def test_wheel_metadata(installed):
    (dist_info,) = installed.glob("poisonbench-*.dist-info")
    metadata = (dist_info / "METADATA").read_text()
    assert "Name: poisonbench" in metadata
    assert "Requires-Dist: scikit-learn" in metadata
    assert "Provides-Extra: dev" in metadata
    with zipfile.ZipFile(next((installed.parent / "dist").glob("*.whl"))) as wheel:
        assert not [n for n in wheel.namelist() if n.endswith((".pyc", ".parquet", ".json"))]
