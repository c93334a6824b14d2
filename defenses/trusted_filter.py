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


#: folds of the cross-fit that gives held-out trusted rows their (null) scores
AUTO_FOLDS = 5
#: Storey's lambda: untrusted rows whose conformal p-value exceeds it count as null-like
STOREY_LAMBDA = 0.5
AUTO_RULE = f"auto: conformal p-values vs held-out trusted rows, Storey lambda={STOREY_LAMBDA}"


def estimate_share(
    model: ClassifierName,
    X_trusted: np.ndarray,
    y_trusted: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    rng: np.random.Generator,
) -> float:
    """The estimated share of rows ``(X, y)`` whose label is wrong, in [0, 1].

    The trusted rows' labels are correct, so a judge's score (1 − p(given label)) of a trusted
    row it was not fit on is a draw from the null: the score of a correctly labelled row. The
    trusted rows are cross-fit in ``AUTO_FOLDS`` stratified folds; each fold's judge (fit on the other
    folds) scores its held-out rows (the null) and every untrusted row, which is therefore
    exchangeable with the held-out rows when its label is correct. Each untrusted row gets a
    conformal p-value against that fold's null, ``(1 + #{null >= s}) / (n_null + 1)``, and the
    null share is Storey's estimate ``pi0 = #{p > lambda} / (m P0(p > lambda))``, with ``P0``
    exact for the discrete p-values (about ``1 - lambda``; mislabelled rows
    have small p-values, so the rows above lambda are nearly all correct ones), averaged over
    folds. Returns ``1 − pi0`` clipped to [0, 1]; 0 when the trusted rows are too few to cross-fit
    (a class with a single trusted row, or one class).

    The judge that flags is fit on all trusted rows and is a little stronger than the fold
    judges, so the estimate is, if anything, conservative (it errs towards removing less).
    """
    from sklearn.model_selection import StratifiedKFold

    m = len(y)
    counts = np.bincount(y_trusted, minlength=n_classes)
    usable = counts[counts > 0]
    if m == 0 or len(usable) < 2 or usable.min() < 2:
        return 0.0
    # Stratified, so a held-out row's class is as represented in its judge's fit rows as an
    # untrusted row's is (plain K-fold depletes the held-out rows' classes: a biased null).
    folds = int(min(AUTO_FOLDS, usable.min()))
    seed = int(rng.integers(2**31 - 1))
    estimates = []
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fit_rows, null_rows in cv.split(X_trusted.reshape(len(y_trusted), -1), y_trusted):
        held = np.isin(y_trusted[null_rows], y_trusted[fit_rows])  # a class the fold lacks
        judgeable = np.isin(y, y_trusted[fit_rows])
        if held.sum() < 2 or not judgeable.any():
            continue
        X_eval = np.concatenate([X_trusted[null_rows][held], X[judgeable]])
        proba = fit_proba(model, X_trusted[fit_rows], y_trusted[fit_rows], X_eval, n_classes, seed)
        labels = np.concatenate([y_trusted[null_rows][held], y[judgeable]])
        scores = 1.0 - proba[np.arange(len(labels)), labels]
        null, s = np.sort(scores[: int(held.sum())]), scores[int(held.sum()) :]
        at_least = len(null) - np.searchsorted(null, s, side="left")  # #{null >= s}
        n_null = len(null)
        p_values = (1 + at_least) / (n_null + 1)
        # P(p > lambda) for a correctly labelled row: its rank among the n_null + 1 values is
        # uniform, so exactly this share of the possible p-values (about 1 - lambda)
        null_above = float(np.mean((1 + np.arange(n_null + 1)) / (n_null + 1) > STOREY_LAMBDA))
        # rows the fold cannot judge (their class is absent from it) count as null-like
        above = int((p_values > STOREY_LAMBDA).sum()) + (m - int(judgeable.sum())) * null_above
        estimates.append(above / (m * null_above))
    if not estimates:
        return 0.0
    return float(np.clip(1.0 - np.mean(estimates), 0.0, 1.0))


@DEFENSES.register("trusted_filter")
@dataclass(frozen=True)
class TrustedFilter(Filter):
    """Remove (or relabel) the rows whose label a model fit on trusted pool rows finds unlikely.

    budget: trusted pool rows read, as a fraction of n_train (rows = round(budget × n_train)),
        > 0. When the pool holds fewer, the step uses what is left (``pool_short`` in details).
        They count against the clean-data budget (``pool_used``) whether or not appended.
    model: the judge fit on the trusted rows (plus any trusted rows earlier steps appended):
        ``logreg`` (standardized logistic regression), ``random_forest`` or ``knn``.
    contamination: fraction of the untrusted rows to flag (the highest scores), in [0, 1], or
        ``auto`` (the default): the share estimated from the data (see :func:`estimate_share`):
        the trusted rows' labels are correct, so the judge's scores of held-out trusted rows are
        the null distribution; the share of untrusted rows that do not look like it is flagged.
    threshold: flag the rows scoring above it, in [0, 1]. Give contamination or threshold, not
        both; with neither, contamination is ``auto``.
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
        **{k: k for k in ("contamination_used", "threshold_used", "threshold_rule")},
    }

    tune_space: ClassVar[Mapping[str, tuple]] = {
        "contamination": ("auto", 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
    }

    budget: float = 0.1
    model: ClassifierName = "logreg"
    contamination: float | Literal["auto"] | None = None
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
            object.__setattr__(self, "contamination", "auto")
        if isinstance(self.contamination, str) and self.contamination != "auto":
            raise ParamError(
                "contamination",
                f"must be 'auto' or a fraction in [0, 1], got {self.contamination!r}",
            )
        for name in ("contamination", "threshold"):
            value = getattr(self, name)
            if value is not None and value != "auto":
                check_range(value, name, 0, 1)

    def label(self) -> str:
        if self.threshold is not None:
            rule = f"t={self.threshold:g}"
        elif self.contamination == "auto":
            rule = "auto"
        else:
            rule = f"c={self.contamination:g}"
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

    def flag(
        self,
        scores: np.ndarray,
        judged: np.ndarray,
        rng: np.random.Generator,
        share: float | None = None,
    ) -> np.ndarray:
        """The rows to act on: the top ``contamination`` (or ``share``, the estimate ``auto``
        made) of all rows among the judged ones (ties broken at random), or the judged rows
        scoring above ``threshold``."""
        flagged = np.zeros(len(scores), dtype=bool)
        if self.threshold is not None:
            return judged & (scores > self.threshold)
        fraction = float(share if share is not None else self.contamination)  # type: ignore[arg-type]
        count = min(exact_count(fraction, len(scores)), int(judged.sum()))
        rows = np.flatnonzero(judged)
        order = np.lexsort((rng.random(len(rows)), -scores[rows]))
        flagged[rows[order[:count]]] = True
        return flagged

    def rule(
        self,
        part: TrainingSet,
        X_trusted: np.ndarray,
        y_trusted: np.ndarray,
        judged: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[float | None, str]:
        """The share to flag (None: ``threshold`` decides) and the rule's name for the table."""
        if self.threshold is not None:
            return None, f"threshold {self.threshold:g}"
        if self.contamination != "auto":
            return float(self.contamination), f"fixed share {self.contamination:g}"  # type: ignore[arg-type]
        share = estimate_share(
            self.model, X_trusted, y_trusted, part.X[judged], part.y[judged], part.n_classes, rng
        )
        # estimate_share is the share among the judged rows; flag() counts among all rows
        return share * float(judged.mean()) if len(judged) else 0.0, AUTO_RULE

    def score(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and flagged rows of ``train`` (all treated as untrusted) for the pool rows
        this step reads; ``apply`` is the step, this is the Filter protocol's view of it."""
        X_t, y_t, _ = take_pool(ctx, self.budget)
        scores, _, judged = self.judge(train, X_t, y_t, rng)
        share, _ = self.rule(train, X_t, y_t, judged, rng)
        return scores, self.flag(scores, judged, rng, share)

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        X_pool, y_pool, details = take_pool(ctx, self.budget)
        X_fit = np.concatenate([X_pool, train.X[train.trusted]])
        y_fit = np.concatenate([y_pool, train.y[train.trusted]])
        candidates = np.flatnonzero(~train.trusted)
        part = train.subset(candidates)
        part_scores, predicted, judged = self.judge(part, X_fit, y_fit, rng)
        share, rule = self.rule(part, X_fit, y_fit, judged, rng)
        part_flagged = self.flag(part_scores, judged, rng, share)
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
            contamination_used=float(part_flagged.mean()) if len(part_flagged) else 0.0,
            # the lowest score flagged (a fixed threshold: itself; nothing flagged: null)
            threshold_used=(
                float(self.threshold)
                if self.threshold is not None
                else float(part_scores[part_flagged].min())
                if part_flagged.any()
                else None
            ),
            threshold_rule=rule,
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
