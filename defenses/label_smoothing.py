"""Label smoothing: hard labels become soft targets."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench.core.types import DefenseContext, ParamError, StepResult, TrainingSet
from defenses.base import DEFENSES, Defense


@DEFENSES.register("label_smoothing")
@dataclass(frozen=True)
class LabelSmoothing(Defense):
    """Replace each one-hot target by ``(1 − epsilon)·onehot + epsilon/k``.

    epsilon: smoothing mass in [0, 1); 0 leaves the targets one-hot.
    """

    tune_space: ClassVar[Mapping[str, tuple]] = {"epsilon": (0.0, 0.05, 0.1, 0.2, 0.3)}

    epsilon: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.epsilon < 1:
            raise ParamError("epsilon", f"{self.epsilon} is outside [0, 1)")

    def label(self) -> str:
        return f"label_smoothing({self.epsilon:g})"

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        k = train.n_classes
        targets = (1.0 - self.epsilon) * train.hard_targets() + self.epsilon / k
        # replace keeps what earlier steps attached (a robust loss, sources, privacy options)
        out = dataclasses.replace(train, targets=targets)
        return StepResult(train=out)
