"""Provenance: drop the data sources whose rows make a model worse on trusted data.

Real training data comes from sources (vendors, annotators, scrapes) and poison usually from a
few of them. When the attack was run with ``sources: K`` each training row carries its source id
(``TrainingSet.source``); this defense measures each source's effect by leave-one-source-out:
the quiz utility (on a budget of trusted pool rows) of a small scikit-learn model fit on all
untrusted rows, minus that of one fit without the source. A source whose removal *improves* the
quiz utility beyond what the other sources' effects make plausible is dropped whole.

Calibration is the one RONI uses: the sources' effects' median and spread (1.4826·MAD) stand
for what a clean source does; a source is dropped when its effect is below
``min(0, median − k·spread)``. It needs at least three sources to mean anything and holds while
fewer than half of them are poisoned. Leave-one-out also has a blind spot: with two equally
poisoned sources, removing either leaves the other, so each looks less harmful than it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from threadpoolctl import threadpool_limits

from bench.core.types import DefenseContext, StepResult, TrainingSet, check_range
from defenses.base import DEFENSES, POOL_COLUMNS, Filter, take_pool
from defenses.classifiers import (
    ClassifierName,
    QuizMetric,
    fit_proba,
    negative_impact,
    quiz_utility,
)
from defenses.trusted_filter import check_budget


@DEFENSES.register("provenance")
@dataclass(frozen=True)
class Provenance(Filter):
    """Drop whole data sources whose leave-one-source-out effect on trusted rows is harmful.

    budget: trusted pool rows read as the quiz set, as a fraction of n_train (rows =
        round(budget × n_train)), > 0; fewer when the pool runs out (``pool_short``). They are
        read, not appended.
    k: drop threshold in spreads below the median source effect, >= 0.
    metric: quiz utility: ``log_loss`` (negative mean log-loss, the default: it sees a source
        that makes the model confidently wrong before accuracy moves) or ``accuracy``.
    model: the model fit per leave-one-out: ``logreg`` (standardized logistic regression),
        ``random_forest`` or ``knn``. Cost: 1 + (number of sources) fits.
    Without provenance (one source) nothing is dropped. Score of a row: minus its source's
    effect. ``details["sources"]`` lists per source its rows, poisoned rows (ground truth, for
    detection metrics), effect and whether it was dropped; the summary counts are
    ``n_sources``, ``n_sources_dropped``, ``n_poisoned_sources`` (sources with a poisoned row)
    and ``n_poisoned_sources_dropped``, and detection per source: ``source_det_precision``
    (share of the dropped sources holding poison; NaN when none was dropped) and
    ``source_det_recall`` (share of the poisoned sources dropped; NaN when none is poisoned).
    The table records them (``per_source`` holds the list as JSON).
    """

    recorded: ClassVar[Mapping[str, str]] = {
        **POOL_COLUMNS,
        "n_sources_dropped": "n_sources_dropped",
        "n_poisoned_sources": "n_poisoned_sources",
        "n_poisoned_sources_dropped": "poisoned_sources_dropped",
        "source_det_precision": "source_det_precision",
        "source_det_recall": "source_det_recall",
        "sources": "per_source",
    }

    budget: float = 0.1
    k: float = 2.0
    metric: QuizMetric = "log_loss"
    model: ClassifierName = "logreg"

    def __post_init__(self) -> None:
        check_budget(self.budget)
        check_range(self.k, "k", 0, 100)

    def label(self) -> str:
        return f"provenance(b={self.budget:g})"

    def source_effects(
        self,
        train: TrainingSet,
        ids: np.ndarray,
        X_quiz: np.ndarray,
        y_quiz: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Each source's leave-one-out effect on the quiz utility (higher = the source helped).

        Trusted rows of ``train`` join every fit; every fit shares one seed (paired).
        """
        seed = int(rng.integers(2**31 - 1))

        def utility(rows: np.ndarray) -> float:
            proba = fit_proba(
                self.model, train.X[rows], train.y[rows], X_quiz, train.n_classes, seed
            )
            return quiz_utility(proba, y_quiz, self.metric)

        everything = utility(np.arange(len(train)))
        untrusted = ~train.trusted
        return np.array(
            [everything - utility(np.flatnonzero(~(untrusted & (train.source == s)))) for s in ids]
        )

    def score(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and removed rows as :meth:`apply` computes them (the Filter protocol)."""
        result = self.apply(train, ctx, rng)
        return result.scores, result.removed

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        X_quiz, y_quiz, details = take_pool(ctx, self.budget)
        untrusted = ~train.trusted
        ids = np.unique(train.source[untrusted])
        scores = np.where(untrusted, 0.0, np.nan)
        removed = np.zeros(len(train), dtype=bool)
        per_source: list[dict[str, Any]] = []
        if len(ids) >= 2 and len(y_quiz):
            # Many tiny fits: BLAS threads only add overhead (~6× slower on 2 cores, measured).
            with threadpool_limits(limits=1):
                effects = self.source_effects(train, ids, X_quiz, y_quiz, rng)
            dropped, calibration = negative_impact(effects, self.k)
            details.update(calibration)
        else:  # one source or no quiz rows: nothing to compare, nothing dropped
            effects = np.zeros(len(ids))
            dropped = np.zeros(len(ids), dtype=bool)
        for s, effect, drop in zip(ids, effects, dropped, strict=True):
            rows = untrusted & (train.source == s)
            scores[rows] = -effect
            removed[rows] = drop
            per_source.append(
                {
                    "id": int(s),
                    "n_rows": int(rows.sum()),
                    "n_poisoned": int((rows & train.mask).sum()),
                    "effect": float(effect),
                    "dropped": bool(drop),
                }
            )
        poisoned = [p["n_poisoned"] > 0 for p in per_source]
        n_dropped = int(dropped.sum())
        hits = int(sum(p and d for p, d in zip(poisoned, dropped, strict=True)))
        details.update(
            sources=per_source,
            n_sources=len(ids),
            n_sources_dropped=n_dropped,
            n_poisoned_sources=int(sum(poisoned)),
            n_poisoned_sources_dropped=hits,
            source_det_precision=hits / n_dropped if n_dropped else math.nan,
            source_det_recall=hits / sum(poisoned) if any(poisoned) else math.nan,
        )
        return StepResult(
            train=train.subset(~removed),
            scores=scores,
            removed=removed,
            details=details,
            pool_used=len(y_quiz),
        )
