"""Reference filters: the oracle (ceiling) and a random filter (floor)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench.core.types import DefenseContext, TrainingSet, check_fraction, exact_count
from defenses.base import DEFENSES, Filter


@DEFENSES.register("oracle_filter")
@dataclass(frozen=True)
class OracleFilter(Filter):
    """Removes exactly the poisoned rows: the best any filter can do."""

    reference: ClassVar[bool] = True

    def score(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        return train.mask.astype(np.float64), train.mask.copy()


@DEFENSES.register("random_filter")
@dataclass(frozen=True)
class RandomFilter(Filter):
    """Removes ``contamination`` of the rows at random: what a filter that knows nothing does.

    contamination: fraction of the rows removed, in [0, 1].
    """

    reference: ClassVar[bool] = True

    contamination: float = 0.1

    def __post_init__(self) -> None:
        check_fraction(self.contamination, "contamination")

    def score(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = rng.random(len(train))
        removed = np.zeros(len(train), dtype=bool)
        count = exact_count(self.contamination, len(train))
        removed[np.argsort(-scores, kind="stable")[:count]] = True
        return scores, removed
