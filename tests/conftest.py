"""Shared fixtures. Optional dependencies skip locally but fail under CI=true (as PyOD does)."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str):
    """Import ``module`` or skip the test; under CI=true a missing module fails instead."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if IN_CI:
            pytest.fail(f"{module} is required in CI but is not installed")
        pytest.skip(f"{module} is not installed")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def blobs():
    """Three well-separated Gaussian blobs in 4-d: 300 rows, labels 0..2 (float32, int64)."""
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=300, centers=3, n_features=4, cluster_std=1.0, random_state=0)
    return X.astype(np.float32), y.astype(np.int64)
