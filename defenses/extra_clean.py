"""Extra clean data: append trusted rows from the clean pool."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench.core.types import DefenseContext, StepResult, TrainingSet, check_range
from defenses.base import DEFENSES, Defense


@DEFENSES.register("extra_clean")
@dataclass(frozen=True)
class ExtraClean(Defense):
    """Append ``fraction × n_train`` rows from the clean pool (the defender trusts them).

    fraction: extra rows as a multiple of the train set, in [0, 1000]. Rows are taken in the pool's
    seeded order, so the recovery grid's extra rows continue after these.
    """

    recorded: ClassVar[Mapping[str, str]] = {"pool_short": "pool_short"}
    append_only: ClassVar[bool] = True

    fraction: float = 0.5

    def __post_init__(self) -> None:
        # The same range as the recovery grid's fractions (multiples of n_train).
        check_range(self.fraction, "fraction", 0, 1000)

    def label(self) -> str:
        return f"extra_clean({self.fraction:g}×)"

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        wanted = int(round(self.fraction * ctx.n_train))
        X, y = ctx.pool_rows(wanted)
        out = train.append(X, y)
        return StepResult(
            train=out,
            details={"pool_rows": len(y), "pool_short": wanted - len(y)},
            pool_used=len(y),
        )
