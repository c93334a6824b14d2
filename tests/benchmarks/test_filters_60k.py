"""Outlier filters on 60,000 × 50 rows (full MNIST/Fashion-MNIST train size in the default
``pca:50`` space): fit + score time per detector, per class (the default) and global.

Run: ``.venv/bin/pytest tests/benchmarks/test_filters_60k.py -p no:xdist --benchmark-enable -s``.
The rows are ten Gaussian classes with 5% of each class's rows shifted (the "poison"), so the
detection ROC-AUC is printed alongside the time. Exact One-Class SVM is O(n²) or worse: the
global exact fit is the slow case (~60 s here) that ``approx: nystroem`` exists for.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bench.core.types import DatasetInfo, DefenseContext, TrainingSet
from defenses import DEFENSES

N, D, K = 60_000, 50, 10
INFO = DatasetInfo(name="gauss-60k", class_names=tuple(str(i) for i in range(K)), n_features=D)


@pytest.fixture(scope="module")
def train() -> TrainingSet:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(K), N // K)
    centers = rng.normal(scale=4.0, size=(K, D))
    X = (centers[y] + rng.normal(size=(N, D))).astype(np.float32)
    mask = rng.random(N) < 0.05
    X[mask] += rng.normal(scale=2.5, size=(int(mask.sum()), D)).astype(np.float32)
    return TrainingSet(X=X, y=y, mask=mask, n_classes=K)


DETECTORS = [
    ("iforest", {}),
    ("lof", {}),
    ("ocsvm", {}),
    ("ocsvm", {"approx": "nystroem"}),
    ("ocsvm", {"max_fit_rows": 10_000}),
]


@pytest.mark.parametrize("per_class", [True, False], ids=["per-class", "global"])
@pytest.mark.parametrize(("name", "params"), DETECTORS, ids=lambda v: str(v))
def test_filter_fit_and_score_60k(benchmark, train, name, params, per_class):
    detector = DEFENSES.get(name).from_params({**params, "per_class": per_class, "space": "raw"})
    ctx = DefenseContext(info=INFO, n_train=N, pool_X=train.X[:0], pool_y=train.y[:0])
    started = time.perf_counter()
    result = benchmark.pedantic(
        detector.apply, args=(train, ctx, np.random.default_rng(0)), rounds=1, iterations=1
    )
    seconds = time.perf_counter() - started
    auc = roc_auc_score(train.mask, result.scores)
    benchmark.extra_info.update(seconds=round(seconds, 2), roc_auc=round(auc, 4))
    print(
        f"\n{detector.label():<28} {'per-class' if per_class else 'global':<9} "
        f"{seconds:7.2f} s  ROC-AUC {auc:.3f}"
    )
    assert result.removed.sum() > 0
    assert auc > 0.7
