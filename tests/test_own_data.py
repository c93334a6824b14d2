"""``examples/own-data``: a user's CSV (text labels, a text column) and its config, run end to end
through ``python -m bench.interfaces.cli run`` from the repository root, as docs/guide/own-data.md shows."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.datasets import load_dataset
from bench.run.config import load_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own-data"
CSV = EXAMPLE / "breast_cancer.csv"
HGB = "HistGradientBoostingClassifier(learning_rate=0.2, max_iter=30)"


def csv_column(name: str) -> list[str]:
    with CSV.open(newline="") as fh:
        return [row[name] for row in csv.DictReader(fh)]


def test_the_example_csv_is_small_and_has_text_labels_and_a_text_column():
    assert CSV.stat().st_size < 200_000
    labels = csv_column("diagnosis")
    assert len(labels) == 569
    assert {v: labels.count(v) for v in set(labels)} == {"benign": 357, "malignant": 212}
    assert sorted(set(csv_column("size_band"))) == ["large", "medium", "small"]


def test_the_example_loads_with_the_original_class_names(monkeypatch):
    monkeypatch.chdir(ROOT)  # the config's path is relative to the repository root
    config = load_config(EXAMPLE / "config.yaml")
    ds = config.datasets[0]
    dataset = load_dataset(ds.name, None, ds.params)
    assert dataset.info.class_names == ("benign", "malignant")
    names = np.asarray(dataset.info.class_names)[dataset.y]
    assert names.tolist() == csv_column("diagnosis")
    # 30 numeric columns + size_band one-hot (3 levels)
    assert dataset.X.shape == (569, 33)
    assert dataset.notes == ("one-hot encoded: size_band (3 levels)",)


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("own-data") / "run"
    command = ["run", "examples/own-data/config.yaml", "--out", str(out), "--quiet"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.interfaces.cli", *command],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_the_example_runs_end_to_end(example_run):
    out, proc = example_run
    assert "own-data: 8 cells (8 run, 0 cached, 0 failed)" in proc.stdout
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 16 and (table["status"] == "ok").all()
    assert set(table["dataset_label"]) == {"table(breast_cancer.csv)"}
    assert set(table["model_label"]) == {"logreg", HGB}
    clean = table[(table["rate"] == 0) & (table["extra_fraction"] == 0)]
    assert clean.groupby("model_id")["accuracy"].mean().min() > 0.9
    # Per-class results are indexed by class: index 1 is malignant, the minority class, so the
    # stratified 150-row test set holds round(150 · 212/569) = 56 of them.
    supports = {tuple(json.loads(p)["support"]) for p in table["per_class"]}
    assert supports == {(94, 56)}


def test_the_example_report_says_what_loading_did(example_run):
    out, _ = example_run
    report = (out / "report.md").read_text()
    assert "table(breast_cancer.csv)" in report
    assert "one-hot encoded: size_band (3 levels)" in report
