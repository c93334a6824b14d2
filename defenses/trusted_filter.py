"""Trusted filter: learn from a budget of trusted pool rows which training labels to distrust.

A defender who holds ``b`` trusted rows can do more than append them: a model fit on them says,
for each untrusted training row, how likely its given label is. Rows whose label the trusted
model finds unlikely are removed (or relabelled to the trusted model's prediction). Unlike
confident learning, the judge never saw the poisoned labels, so a flip cannot vouch for itself;
its weakness is the opposite one: a small trusted set makes a weak judge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from bench.core.types import (
    DefenseContext,
    ParamError,
    StepResult,
    TrainingSet,
    check_range,
    exact_count,
)
from defenses.base import DEFENSES, POOL_COLUMNS, Filter, take_pool
from defenses.classifiers import ClassifierName, fit_proba


def check_budget(value: float, field: str = "budget") -> None:
    """Raise ParamError naming ``field`` unless ``value`` (pool rows as a multiple of n_train)
    is in (0, 100]."""
    check_range(value, field, 0, 100, low_open=True)  # pool rows as a multiple of n_train


@DEFENSES.register("trusted_filter")
@dataclass(frozen=True)
class TrustedFilter(Filter):
    """Remove (or relabel) the rows whose label a model fit on trusted pool rows finds unlikely.

    budget: trusted pool rows read, as a fraction of n_train (rows = round(budget × n_train)),
        > 0. When the pool holds fewer, the step uses what is left (``pool_short`` in details).
        They count against the clean-data budget (``pool_used``) whether or not appended.
    model: the judge fit on the trusted rows (plus any trusted rows earlier steps appended):
        ``logreg`` (standardized logistic regression), ``random_forest`` or ``knn``.
    contamination: fraction of the untrusted rows to flag (the highest scores), in [0, 1].
    threshold: flag the rows scoring above it, in [0, 1]. Give contamination or threshold, not
        both; with neither, contamination is 0.1.
    action: ``remove`` the flagged rows, or ``relabel`` them to the judge's most likely class
        (their soft targets become one-hot; ``mask`` keeps marking the attacked rows).
    append: also append the trusted rows read (after the kept rows), so the budget is both
        learnt from and trained on; false leaves appending to a later ``extra_clean`` step.
    Score of a row: 1 − p(given label) under the judge, in [0, 1]. Rows whose label is a class
    absent from the trusted rows cannot be judged: score 0, never flagged (``n_unjudged``).
    """

    recorded: ClassVar[Mapping[str, str]] = {
        **POOL_COLUMNS,
        **{k: k for k in ("n_flagged", "flagged_poisoned", "n_relabelled", "n_unjudged")},
    }

    budget: float = 0.1
    model: ClassifierName = "logreg"
    contamination: float | None = None
    threshold: float | None = None
    action: Literal["remove", "relabel"] = "remove"
    append: bool = False

    def __post_init__(self) -> None:
        check_budget(self.budget)
        if self.contamination is not None and self.threshold is not None:
            raise ParamError(
                "threshold",
                f"give contamination or threshold, not both (contamination={self.contamination})",
            )
        if self.contamination is None and self.threshold is None:
            # One spelling per behaviour, so one cell id: the default is written out.
            object.__setattr__(self, "contamination", 0.1)
        for name in ("contamination", "threshold"):
            value = getattr(self, name)
            if value is not None:
                check_range(value, name, 0, 1)

    def label(self) -> str:
        rule = f"c={self.contamination:g}" if self.threshold is None else f"t={self.threshold:g}"
        extras = [f"b={self.budget:g}", rule]
        if self.model != "logreg":
            extras.append(self.model)
        if self.action == "relabel":
            extras.append("relabel")
        if self.append:
            extras.append("append")
        return f"trusted_filter({', '.join(extras)})"

    def judge(
        self,
        part: TrainingSet,
        X_trusted: np.ndarray,
        y_trusted: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores (1 − p(given label)), the judge's most likely classes, and which rows it can
        judge (their label is a class present among the trusted rows), for the rows of ``part``."""
        n = len(part)
        judged = np.isin(part.y, y_trusted)
        if not judged.any():
            return np.zeros(n), part.y.copy(), judged
        seed = int(rng.integers(2**31 - 1))
        proba = fit_proba(self.model, X_trusted, y_trusted, part.X, part.n_classes, seed)
        scores = np.where(judged, 1.0 - proba[np.arange(n), part.y], 0.0)
        return np.clip(scores, 0.0, 1.0), proba.argmax(axis=1).astype(np.int64), judged

    def flag(self, scores: np.ndarray, judged: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The rows to act on: the top ``contamination`` of all rows among the judged ones
        (ties broken at random), or the judged rows scoring above ``threshold``."""
        flagged = np.zeros(len(scores), dtype=bool)
        if self.threshold is not None:
            return judged & (scores > self.threshold)
        count = min(exact_count(float(self.contamination), len(scores)), int(judged.sum()))
        rows = np.flatnonzero(judged)
        order = np.lexsort((rng.random(len(rows)), -scores[rows]))
        flagged[rows[order[:count]]] = True
        return flagged

    def score(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and flagged rows of ``train`` (all treated as untrusted) for the pool rows
        this step reads; ``apply`` is the step, this is the Filter protocol's view of it."""
        X_t, y_t, _ = take_pool(ctx, self.budget)
        scores, _, judged = self.judge(train, X_t, y_t, rng)
        return scores, self.flag(scores, judged, rng)

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        X_pool, y_pool, details = take_pool(ctx, self.budget)
        X_fit = np.concatenate([X_pool, train.X[train.trusted]])
        y_fit = np.concatenate([y_pool, train.y[train.trusted]])
        candidates = np.flatnonzero(~train.trusted)
        part = train.subset(candidates)
        part_scores, predicted, judged = self.judge(part, X_fit, y_fit, rng)
        part_flagged = self.flag(part_scores, judged, rng)
        scores = np.full(len(train), np.nan)
        scores[candidates] = part_scores
        flagged = np.zeros(len(train), dtype=bool)
        flagged[candidates] = part_flagged
        details.update(
            n_trusted_fit=len(y_fit),
            n_unjudged=int((~judged).sum()),
            n_flagged=int(flagged.sum()),
            flagged_poisoned=int((flagged & train.mask).sum()),
            action=self.action,
        )
        removed = None
        if self.action == "remove":
            removed = flagged
            out = train.subset(~removed)
        else:
            rows = candidates[part_flagged]
            y = train.y.copy()
            y[rows] = predicted[part_flagged]
            if train.soft:
                targets = np.array(train.targets, dtype=np.float64, copy=True)
                targets[rows] = np.eye(train.n_classes)[y[rows]]
            else:
                targets = y
            details["n_relabelled"] = int((y[rows] != train.y[rows]).sum())
            out = dataclasses.replace(train, y=y, targets=targets)
        if self.append:
            out = out.append(X_pool, y_pool)
        return StepResult(
            train=out, scores=scores, removed=removed, details=details, pool_used=len(y_pool)
        )
