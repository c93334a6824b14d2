"""Gold Loss Correction: learn how labels were corrupted from trusted rows, then undo it in the loss.

Hendrycks, Mazeika, Wilson & Gimpel (2018), "Using Trusted Data to Train Deep Networks on
Labels Corrupted by Severe Noise". A model trained on the untrusted (possibly corrupted) rows
estimates p(noisy label | x); averaged over the trusted rows of true class i it estimates row i
of the corruption matrix ``C[i, j] = p(noisy label j | true class i)``. The final network is then
trained with the forward-corrected loss ``−log (softmax(logits) @ C)[noisy label]`` on the
untrusted rows, so its softmax estimates the *clean* posterior, and with plain cross-entropy on
the trusted rows, which the step appends to the training set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench.core.types import DefenseContext, PoisonBenchError, StepResult, TrainingSet
from defenses.base import DEFENSES, POOL_COLUMNS, Defense, take_pool
from defenses.classifiers import ClassifierName, fit_proba
from defenses.trusted_filter import check_budget


def estimate_corruption(
    proba_trusted: np.ndarray, y_trusted: np.ndarray, n_classes: int
) -> tuple[np.ndarray, list[int]]:
    """GLC's corruption matrix C (k×k, rows sum to 1) and the classes it could not estimate.

    proba_trusted: p(noisy label | x) of an untrusted-trained model on the trusted rows (n×k);
    y_trusted: their true labels. Row i is the mean of proba over the trusted rows of class i;
    a class with no trusted rows gets the identity row (no corruption assumed) and is listed.
    """
    C = np.eye(n_classes)
    missing = []
    for i in range(n_classes):
        rows = y_trusted == i
        if rows.any():
            C[i] = proba_trusted[rows].mean(axis=0)
        else:
            missing.append(i)
    return C / C.sum(axis=1, keepdims=True), missing


@DEFENSES.register("glc")
@dataclass(frozen=True)
class GoldLossCorrection(Defense):
    """Gold Loss Correction (torch models): trusted rows estimate label corruption; the loss undoes it.

    The step reads the trusted rows, estimates the corruption matrix C from them, appends them,
    and sets the loss: forward-corrected on the untrusted rows, plain on the trusted ones.

    budget: trusted pool rows read and appended, as a fraction of n_train (rows =
        round(budget × n_train)), > 0; fewer when the pool runs out (``pool_short``). Trusted
        rows earlier steps appended also serve as gold rows.
    model: the untrusted-trained model that estimates p(noisy label | x), fit inside the step on
        the flattened untrusted rows: ``logreg`` (standardized logistic regression, the
        default; cheap and reasonably calibrated, which C needs), ``random_forest`` or ``knn``.
        The paper uses the final network itself; a small model keeps the step cheap and
        independent of the model under test.
    The estimated C goes into ``details["C"]`` and into the training loss
    (``{"name": "glc", "C": ...}``). Only models that take a training loss (the torch models)
    can fit the result; the others refuse it with an error naming those that can.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"loss"})
    recorded: ClassVar[Mapping[str, str]] = {**POOL_COLUMNS, "C": "glc_corruption"}

    budget: float = 0.1
    model: ClassifierName = "logreg"

    def __post_init__(self) -> None:
        check_budget(self.budget)

    def label(self) -> str:
        extra = "" if self.model == "logreg" else f", {self.model}"
        return f"glc(b={self.budget:g}{extra})"

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        if train.loss is not None:
            raise PoisonBenchError(
                f"glc sets the training loss, but an earlier step already set "
                f"{train.loss.get('name')!r}: use one loss step per pipeline"
            )
        X_pool, y_pool, details = take_pool(ctx, self.budget)
        untrusted = ~train.trusted
        out = train.append(X_pool, y_pool)
        gold = out.trusted
        k = train.n_classes
        if untrusted.any() and gold.any():
            seed = int(rng.integers(2**31 - 1))
            proba = fit_proba(
                self.model, train.X[untrusted], train.y[untrusted], out.X[gold], k, seed
            )
            C, missing = estimate_corruption(proba, out.y[gold], k)
        else:  # nothing to estimate from: no correction
            C, missing = np.eye(k), list(range(k))
        spec = {"name": "glc", "C": C.tolist()}
        details.update(C=C.tolist(), classes_without_gold_rows=missing, n_gold=int(gold.sum()))
        return StepResult(
            train=dataclasses.replace(out, loss=spec), details=details, pool_used=len(y_pool)
        )
