"""A plug-in module that configs list under ``plugins: [tests.plugin_defense]``: importing it
registers the defense ``centroid_filter`` with the ordinary decorator (a worker process must
import it too before it can run a cell that names it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.core.types import DefenseContext, TrainingSet, check_fraction
from defenses.base import DEFENSES, Filter


@DEFENSES.register("centroid_filter")
@dataclass(frozen=True)
class CentroidFilter(Filter):
    """Remove the ``fraction`` of rows farthest from their label's class mean (standardized)."""

    fraction: float = 0.1

    def __post_init__(self) -> None:
        check_fraction(self.fraction, "fraction")

    def score(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(train)
        X = np.asarray(train.X, dtype=np.float64).reshape(n, -1)
        std = X.std(axis=0)
        X = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
        scores = np.zeros(n)
        for label in np.unique(train.y):
            rows = train.y == label
            scores[rows] = np.linalg.norm(X[rows] - X[rows].mean(axis=0), axis=1)
        cut = int(round(self.fraction * n))
        removed = np.zeros(n, dtype=bool)
        if cut:
            removed[np.argsort(-scores, kind="stable")[:cut]] = True
        return scores, removed
