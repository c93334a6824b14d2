"""Differentially private training (DP-SGD via Opacus) for the torch models.

Differential privacy bounds how much any one training row can change the model: each row's
gradient is clipped to ``max_grad_norm`` and Gaussian noise is added to every step. Against
poisoning that is a bound on the influence of each poisoned row (group privacy makes it weak for
many rows), bought with accuracy on clean data. The step changes no rows: like ``gce`` it
attaches options to the training set (``TrainingSet.privacy``) and the torch trainer honours
them (see ``TorchClassifier._fit_private``: Poisson sampling, the RDP accountant); the fitted
model reports the ε it achieved in ``fit_info_["dp_epsilon"]``, which the runner copies into the
row. scikit-learn models cannot train this way and refuse such a set with an error naming the
models that can. Needs the ``dp`` extra (``pip install 'poisonbench[dp]'``, i.e. opacus).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench.core.types import (
    DefenseContext,
    ParamError,
    PoisonBenchError,
    StepResult,
    TrainingSet,
    check_range,
)
from defenses.base import DEFENSES, Defense


@DEFENSES.register("dp_sgd")
@dataclass(frozen=True)
class DPSGD(Defense):
    """Train a torch model with DP-SGD (Opacus); the achieved ε is recorded (``dp_epsilon``).

    noise_multiplier: noise std relative to max_grad_norm, > 0 (more noise, smaller ε).
    epsilon: a target ε > 0 instead: the noise multiplier that reaches it at ``delta`` after
        the model's epochs is computed (Opacus ``get_noise_multiplier``, RDP accountant).
        Give noise_multiplier or epsilon, not both; with neither, noise_multiplier is 1.0.
    max_grad_norm: per-row gradient clipping norm, > 0.
    delta: the δ of (ε, δ)-DP, in (0, 1); it should be well below 1/n_train.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"privacy"})
    recorded: ClassVar[Mapping[str, str]] = {
        "max_grad_norm": "dp_max_grad_norm",
        "epsilon": "dp_target_epsilon",
    }

    noise_multiplier: float | None = None
    epsilon: float | None = None
    max_grad_norm: float = 1.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.noise_multiplier is not None and self.epsilon is not None:
            raise ParamError(
                "epsilon",
                f"give noise_multiplier or epsilon, not both "
                f"(noise_multiplier={self.noise_multiplier})",
            )
        if self.noise_multiplier is None and self.epsilon is None:
            # One spelling per behaviour, so one cell id: the default is written out.
            object.__setattr__(self, "noise_multiplier", 1.0)
        for name, high in (("noise_multiplier", 1000), ("epsilon", 1e6), ("max_grad_norm", 1e6)):
            value = getattr(self, name)
            if value is not None:
                check_range(value, name, 0, high, low_open=True)
        if not 0 < self.delta < 1:
            raise ParamError("delta", f"{self.delta} is outside (0, 1)")

    def label(self) -> str:
        if self.epsilon is not None:
            return f"dp_sgd(ε={self.epsilon:g})"
        return f"dp_sgd(σ={self.noise_multiplier:g})"

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        if train.privacy is not None:
            raise PoisonBenchError("dp_sgd is already set by an earlier step: use it once")
        privacy = self.params()
        return StepResult(train=dataclasses.replace(train, privacy=privacy), details=privacy)
