"""The metrics computed from one confusion matrix equal scikit-learn's validated functions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

from bench.core.metrics import classification_metrics


def _cases():
    rng = np.random.default_rng(0)
    for i in range(40):
        k = int(rng.integers(2, 11))
        n = int(rng.integers(1, 400))
        y = rng.integers(0, k, n)
        if i % 4 == 0:  # a class absent from the test set
            y = np.where(y == k - 1, 0, y)
        proba = rng.random((n, k)) ** 3
        if i % 5 == 0:  # confident, with exact zeros (log-loss clipping)
            proba = np.eye(k)[rng.integers(0, k, n)]
        proba = proba / proba.sum(axis=1, keepdims=True)
        yield pytest.param(y, proba, k, id=f"case{i}-k{k}-n{n}")


@pytest.mark.parametrize(("y", "proba", "k"), list(_cases()))
def test_metrics_equal_scikit_learn(y, proba, k):
    labels = np.arange(k)
    pred = proba.argmax(axis=1)
    got = classification_metrics(y, proba, k, (0, 1))
    assert got["accuracy"] == accuracy_score(y, pred)
    assert got["confusion"] == confusion_matrix(y, pred, labels=labels).tolist()
    p, r, f, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    assert got["per_class"]["precision"] == p.round(6).tolist()
    assert got["per_class"]["recall"] == r.round(6).tolist()
    assert got["per_class"]["f1"] == f.round(6).tolist()
    assert got["per_class"]["support"] == support.tolist()
    macro = f1_score(y, pred, labels=labels, average="macro", zero_division=0)
    assert got["macro_f1"] == pytest.approx(macro, rel=1e-12, abs=1e-15)
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = log_loss(y, clipped, labels=labels)
    assert got["log_loss"] == pytest.approx(expected, rel=1e-12)
    assert got["pred_distribution"] == np.bincount(pred, minlength=k).tolist()
    source = y == 0
    if source.any():
        assert got["attack_success_rate"] == pytest.approx((pred[source] == 1).mean())
