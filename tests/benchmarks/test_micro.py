"""Micro benchmarks: attacks on 60,000 rows, record write/read, results-table building.

Filters on 60k × 50 and the CNN trainer have their own files (``test_filters_60k.py``,
``test_trainer.py``). Run with ``make benchmark``; compare commits with ``--benchmark-compare``.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from attacks import ATTACKS
from bench.core.store import Store, read_table, records_to_table, write_table
from bench.core.types import DatasetInfo
from bench.run.config import parse_config
from bench.run.grid import expand
from bench.run.runner import run_cell

N, D, K = 60_000, 784, 10  # full MNIST train size, flattened 28×28
INFO = DatasetInfo(name="uniform-60k", class_names=tuple(str(i) for i in range(K)), n_features=D)

ATTACK_CASES = [
    ("label_flip", {"mode": "random"}),
    ("label_flip", {"mode": "targeted", "source": 7, "target": 1}),
    ("feature_noise", {"mode": "uniform"}),
    ("feature_noise", {"mode": "gaussian", "sigma": 1.0, "clip": True}),
]


@pytest.fixture(scope="module")
def data60k() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.random((N, D), dtype=np.float32)
    y = np.repeat(np.arange(K, dtype=np.int64), N // K)
    return X, y


@pytest.mark.parametrize(
    ("name", "params"), ATTACK_CASES, ids=[f"{n}-{p['mode']}" for n, p in ATTACK_CASES]
)
def test_attack_60k(benchmark, data60k, name, params):
    """One poisoning of 10% of 60,000 × 784 rows (inputs copied, mask built)."""
    X, y = data60k
    attack = ATTACKS.get(name).from_params(params).bind(INFO)
    rng = np.random.default_rng(0)
    poisoned = benchmark(attack.poison, X, y, 0.1, rng)
    assert poisoned.mask.sum() == round(0.1 * attack.eligible(y).sum())


@pytest.fixture(scope="module")
def record() -> dict:
    """A real record: digits, logreg, a random flip, Isolation Forest, 8 extra-clean fractions."""
    config = parse_config(
        {
            "datasets": [{"name": "digits", "split": {"train": 300, "test": 0.25}}],
            "models": ["logreg"],
            "attacks": [{"name": "label_flip", "mode": "random"}],
            "rates": [0.2],
            "defenses": ["iforest"],
            "seeds": 1,
            "recovery": {"fractions": [0, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2]},
        }
    )
    (cell,) = [c for c in expand(config) if c.spec["rate"] > 0]
    out = run_cell(cell, [0, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2])
    assert out["status"] == "ok"
    return out


def test_record_write(benchmark, record, tmp_path):
    store = Store(tmp_path)
    benchmark(store.write, record)
    assert store.read(record["cell_id"]) is not None


def test_record_read(benchmark, record, tmp_path):
    store = Store(tmp_path)
    store.write(record)
    back = benchmark(store.read, record["cell_id"])
    assert back is not None and len(back["rows"]) == len(record["rows"])


@pytest.fixture(scope="module")
def records(record) -> list[dict]:
    """1,000 records (8,000 rows): the record above under 1,000 seeds."""
    out = []
    for seed in range(1000):
        r = copy.deepcopy(record)
        for row in r["rows"]:
            row["seed"] = seed
        out.append(r)
    return out


def test_table_build(benchmark, records):
    table = benchmark(records_to_table, records)
    assert len(table) == 8 * len(records)


def test_table_write_read(benchmark, records, tmp_path):
    table = records_to_table(records)

    def roundtrip() -> pd.DataFrame:
        write_table(table, tmp_path)
        return read_table(tmp_path)

    back = benchmark(roundtrip)
    assert len(back) == len(table)
