"""Range (schema) validation: drop rows with a value outside the clean data's feature ranges.

The cheapest data-validation check a pipeline can run, and the one production schemas encode
(min/max per column). The ranges come from the defender's trusted data, the clean pool
(``DefenseContext.pool_X``), never from the rows being filtered: a poisoned train set would
widen its own ranges. Additive Gaussian noise pushes values past the ranges and is caught;
noise drawn uniformly *within* the ranges passes by construction, which is the point of
reporting both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.core.types import DefenseContext, PoisonBenchError, TrainingSet, check_range
from defenses.base import DEFENSES, Filter


@DEFENSES.register("range_filter")
@dataclass(frozen=True)
class RangeFilter(Filter):
    """Remove rows with any feature outside the clean pool's ``[min − m·w, max + m·w]``.

    margin: m in [0, 1000], slack as a fraction of each feature's pool range w = max − min (0: exact
        min–max). A feature constant in the pool gets no slack: any other value is out of range.
    Score of a row: its largest out-of-range distance in units of the feature's range (0 when
    all values are within range; features with w = 0 use units of 1; rows with NaN or inf score above all others).
    """

    margin: float = 0.0

    def __post_init__(self) -> None:
        check_range(self.margin, "margin", 0, 1000)

    def label(self) -> str:
        return f"range_filter(margin={self.margin:g})" if self.margin else "range_filter"

    def score(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if len(ctx.pool_X) == 0:
            raise PoisonBenchError(
                "range_filter needs clean pool rows to learn the feature ranges, "
                "but the pool is empty (give the dataset split a pool)"
            )
        pool = np.asarray(ctx.pool_X, dtype=np.float64).reshape(len(ctx.pool_X), -1)
        X = np.asarray(train.X, dtype=np.float64).reshape(len(train.X), -1)
        low, high = pool.min(axis=0), pool.max(axis=0)
        width = high - low
        low, high = low - self.margin * width, high + self.margin * width
        unit = np.where(width > 0, width, 1.0)
        excess = np.maximum(low - X, X - high) / unit  # > 0 exactly where out of range
        broken = ~np.isfinite(X).all(axis=1)  # NaN or inf fails any schema
        excess[~np.isfinite(excess)] = 0.0
        scores = np.maximum(excess.max(axis=1), 0.0) if X.shape[1] else np.zeros(len(X))
        # Rank broken rows above every other (a finite score keeps them in the ROC-AUC).
        scores[broken] = scores[~broken].max(initial=0.0) + 1.0
        return scores, scores > 0
