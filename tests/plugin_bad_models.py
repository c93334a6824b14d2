"""Models that tests name by import path (``tests.plugin_bad_models:NaNProba``): estimators
written to scikit-learn's own template, some of whose ``predict_proba`` output is invalid, and
network factories that fail."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from bench.core.types import DatasetInfo


class Template(ClassifierMixin, BaseEstimator):
    """scikit-learn's estimator template: a ``BaseEstimator`` without ``_parameter_constraints``
    (predicts the training class frequencies; valid probabilities)."""

    def __init__(self, shift: float = 0.0) -> None:
        self.shift = shift

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: Any = None) -> Template:
        self.classes_ = np.unique(y)
        counts = np.asarray([(y == c).sum() for c in self.classes_], dtype=np.float64)
        self.prior_ = counts / counts.sum()
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.tile(self.prior_, (len(X), 1))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class NaNProba(Template):
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        out = super().predict_proba(X)
        out[1, :] = np.nan
        return out


class NegativeProba(Template):
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        out = super().predict_proba(X)
        out[:, 0] -= 0.5
        out[:, 1] += 0.5  # rows still sum to 1
        return out


class UnnormalizedProba(Template):
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return super().predict_proba(X) * 2.0


def failing_net(info: DatasetInfo) -> Any:
    """A network factory that raises (a bug in the user's code)."""
    raise KeyError("no layer for this dataset")
