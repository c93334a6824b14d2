"""Bad data fails before any training starts; a run reads its inputs and writes only in --out.

Bad datasets are registered as temporary dataset plug-ins (``DATASETS.register``), the way a
user's own loader would hand poisonbench a CSV with NaNs or a class with one row.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

import bench.run.runner
from bench.data.datasets import DATASETS, DatasetError, DatasetSource, load_dataset, make_dataset
from bench.interfaces.cli import main
from bench.run.config import parse_config
from bench.run.orchestrate import run_config

ROOT = Path(__file__).resolve().parents[1]


def _config(dataset: str, split: dict | None = None) -> dict:
    return {
        "name": "bad",
        "datasets": [{"name": dataset, "split": split or {"train": 0.5, "test": 0.25}}],
        "models": ["logreg"],
        "attacks": [{"name": "label_flip", "mode": "random"}],
        "rates": [0, 0.2],
        "defenses": ["none"],
        "seeds": 2,
        "recovery": {"fractions": [0, 0.2]},
    }


def _blobs(n: int = 90, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % k
    return rng.normal(size=(n, 4)) + y[:, None], y


@pytest.fixture
def register():
    """Register a temporary dataset plug-in: ``register(name, X, y)``."""
    added: list[str] = []

    def add(name: str, X: np.ndarray, y: np.ndarray) -> str:
        k = int(y.max()) + 1

        @dataclass(frozen=True)
        class Arrays(DatasetSource):
            def load(self, data_dir=None):
                return make_dataset(name, X, y, list(range(k)))

        DATASETS.register(name)(Arrays)
        added.append(name)
        return name

    load_dataset.cache_clear()
    yield add
    for name in added:
        DATASETS.unregister(name)
    load_dataset.cache_clear()


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any cell starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("a cell ran although the data is bad")

    monkeypatch.setattr(bench.run.runner, "run_cell", refuse)


def _with_nan() -> tuple[np.ndarray, np.ndarray]:
    X, y = _blobs()
    X[[3, 40], 1] = np.nan
    return X, y


def _with_inf() -> tuple[np.ndarray, np.ndarray]:
    X, y = _blobs()
    X[7, 0] = -np.inf
    return X, y


def _one_row_class() -> tuple[np.ndarray, np.ndarray]:
    X, y = _blobs()
    y = np.where(y == 2, 1, y)
    y[5] = 2  # class 2 has a single row
    return X, y


@pytest.mark.parametrize(
    ("make", "split", "message"),
    [
        (_with_nan, None, r"datasets\[0\] \(bad-data\): .*2 rows have NaN or infinite features"),
        (_with_inf, None, r"datasets\[0\] \(bad-data\): .*1 rows have NaN or infinite features"),
        (_one_row_class, None, r"class '2' has 1 row; a stratified split needs at least 2"),
        (_blobs, {"train": 60, "test": 40}, r"datasets\[0\]\.split: train 60 \+ test 40"),
        (_blobs, {"train": 2, "test": 0.25}, r"datasets\[0\]\.split\.train: 2 rows hold 2 of"),
    ],
    ids=["nan", "inf", "one-row-class", "split-too-big", "train-misses-a-class"],
)
def test_bad_data_fails_before_any_training(make, split, message, register, no_training, tmp_path):
    register("bad-data", *make())
    out = tmp_path / "run"
    with pytest.raises(DatasetError, match=message):
        run_config(parse_config(_config("bad-data", split)), out, progress=False)
    assert not (out / "cells").exists()


def test_bad_data_through_the_cli_exits_2(register, no_training, tmp_path, capsys):
    register("bad-data", *_with_nan())
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_config("bad-data")))
    assert main(["run", str(config), "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: datasets[0] (bad-data): ")
    assert "Traceback" not in err


def test_a_builtin_dataset_smaller_than_the_split(no_training, tmp_path):
    with pytest.raises(DatasetError, match=r"exceed the 150 rows of iris"):
        run_config(
            parse_config(_config("iris", {"train": 100, "test": 60})), tmp_path, progress=False
        )


# ---------------------------------------------------------------------------------------------
# Security: where a run reads and writes, and what it will load
# ---------------------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_run_writes_only_inside_its_output_directory(tmp_path):
    cwd = tmp_path / "cwd"
    data = tmp_path / "data"
    out = tmp_path / "out"
    for d in (cwd, data):
        d.mkdir()
    (data / "keep.bin").write_bytes(b"user data")
    raw = {**_config("iris"), "data_dir": str(data)}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    before = _tree(data), config.read_bytes()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.interfaces.cli", "run", str(config), "--out", str(out), "-q"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert list(cwd.iterdir()) == []  # nothing in the working directory
    assert (_tree(data), config.read_bytes()) == before  # data_dir and the config only read
    written = set(_tree(out))
    assert {"results.parquet", "results.csv", "config.yaml", "run.json"} <= written
    assert any(name.startswith("cells/") and name.endswith(".json") for name in written)
    # results are data formats, never pickles
    assert not [n for n in written if re.search(r"\.(pkl|pickle|pt|pth|joblib|npy)$", n)]


SOURCES = sorted(
    p for d in ("bench", "attacks", "defenses") for p in (ROOT / d).rglob("*.py") if p.is_file()
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_sources_load_only_data_formats(path):
    """Configs with yaml.safe_load, no pickle, torch.load(weights_only=True) only."""
    text = path.read_text()
    assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(", text), "use yaml.safe_load"
    assert not re.search(r"^\s*(import pickle|from pickle|import dill)", text, re.M)
    assert not re.search(r"\b(pickle|joblib)\.loads?\(", text)
    for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
        assert "weights_only=True" in call.group(1), call.group(0)
