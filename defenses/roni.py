"""Reject On Negative Impact (RONI): drop the chunks of rows that make a model worse on trusted data.

Nelson et al. (2008, "Exploiting machine learning to subvert your spam filter"; 2009,
"Misleading learners") measure each candidate training point's effect on a trusted *quiz* set:
train on a base set with and without the point, and reject points whose effect is negative
beyond what clean points do. Per point that costs two fits per candidate; here the untrusted rows
are processed in random chunks of ``chunk`` rows (the calibrated variant in IBM's Adversarial
Robustness Toolbox, ``RONIDefense``, was read as a reference for the calibration idea).

How a chunk's effect is measured: for each of ``repeats`` rounds, a base set is drawn as a
random ``base`` fraction of the chunks; a chunk outside the base is scored by what adding it
changes (``u(B ∪ c) − u(B)``), a chunk inside by what removing it changes (``u(B) − u(B \\ c)``),
where ``u`` is the quiz utility of a small scikit-learn model fit on those rows. Effects are
averaged over rounds. Each round costs 1 + (number of chunks) fits.

Calibration: the chunk effects' median and spread (1.4826·MAD) stand for what clean chunks do,
so a chunk is rejected when its effect is below ``min(0, median − k·spread)``: below zero
(negative impact) and an outlier. This assumes most chunks are mostly clean, which is what makes
RONI weak against poison spread thinly over every chunk and strong against poison that arrives
together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from threadpoolctl import threadpool_limits

from bench.core.types import DefenseContext, ParamError, StepResult, TrainingSet, check_range
from defenses.base import DEFENSES, POOL_COLUMNS, Filter, take_pool
from defenses.classifiers import (
    ClassifierName,
    QuizMetric,
    fit_proba,
    negative_impact,
    quiz_utility,
)
from defenses.trusted_filter import check_budget


@DEFENSES.register("roni")
@dataclass(frozen=True)
class RejectOnNegativeImpact(Filter):
    """Reject On Negative Impact: remove the chunks of rows whose addition hurts a trusted quiz set.

    budget: trusted pool rows read as the quiz set, as a fraction of n_train (rows =
        round(budget × n_train)), > 0; fewer when the pool runs out (``pool_short``). They
        are read, not appended.
    chunk: untrusted rows per chunk (a random partition), >= 1. Cost: ``repeats × (1 + n/chunk)``
        fits of ``model``; digits (300 rows, chunk 10, 3 repeats) takes ~100 small fits.
    base: fraction of the chunks in each round's base set, in (0, 1).
    repeats: rounds with independent base sets, >= 1.
    k: rejection threshold in spreads below the median chunk effect, >= 0.
    metric: quiz utility: ``log_loss`` (negative mean log-loss, the default: on a quiz set of a
        few dozen rows accuracy moves in steps of 1/n_quiz and most chunks tie at 0) or
        ``accuracy``.
    model: the model fit on base sets: ``logreg`` (standardized logistic regression),
        ``random_forest`` or ``knn``.
    Score of a row: minus its chunk's effect (higher = more harmful).
    """

    recorded: ClassVar[Mapping[str, str]] = {
        **POOL_COLUMNS,
        "n_rejected_chunks": "n_rejected_chunks",
    }

    budget: float = 0.1
    chunk: int = 10
    base: float = 0.5
    repeats: int = 3
    k: float = 2.0
    metric: QuizMetric = "log_loss"
    model: ClassifierName = "logreg"

    def __post_init__(self) -> None:
        check_budget(self.budget)
        check_range(self.chunk, "chunk", 1, 10**7)
        if not 0 < self.base < 1:
            raise ParamError("base", f"{self.base} is outside (0, 1)")
        check_range(self.repeats, "repeats", 1, 1000)
        check_range(self.k, "k", 0, 100)

    def label(self) -> str:
        return f"roni(b={self.budget:g}, chunk={self.chunk})"

    def chunk_effects(
        self,
        train: TrainingSet,
        chunks: list[np.ndarray],
        X_quiz: np.ndarray,
        y_quiz: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Each chunk's mean effect on the quiz utility (higher = the chunk helped).

        ``chunks`` index untrusted rows of ``train``; its trusted rows join every fit.
        """
        fixed = np.flatnonzero(train.trusted)
        n_base = min(len(chunks) - 1, max(1, round(self.base * len(chunks))))
        effects = np.zeros(len(chunks))
        for _ in range(self.repeats):
            seed = int(rng.integers(2**31 - 1))
            in_base = np.zeros(len(chunks), dtype=bool)
            in_base[rng.choice(len(chunks), size=n_base, replace=False)] = True

            def utility(members: np.ndarray, seed: int = seed) -> float:
                rows = np.concatenate([fixed, *(chunks[i] for i in np.flatnonzero(members))])
                if len(rows) == 0:  # no rows: the uninformed (uniform) prediction
                    uniform = np.full((len(y_quiz), train.n_classes), 1.0 / train.n_classes)
                    return quiz_utility(uniform, y_quiz, self.metric)
                proba = fit_proba(
                    self.model, train.X[rows], train.y[rows], X_quiz, train.n_classes, seed
                )
                return quiz_utility(proba, y_quiz, self.metric)

            u_base = utility(in_base)
            for c in range(len(chunks)):
                members = in_base.copy()
                members[c] = not in_base[c]
                u_other = utility(members)
                effects[c] += (u_base - u_other) if in_base[c] else (u_other - u_base)
        return effects / self.repeats

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
        candidates = np.flatnonzero(~train.trusted)
        n_chunks = int(np.ceil(len(candidates) / self.chunk))
        scores = np.full(len(train), np.nan)
        removed = np.zeros(len(train), dtype=bool)
        details["n_chunks"] = n_chunks
        if n_chunks >= 2 and len(y_quiz):
            chunks = np.array_split(rng.permutation(candidates), n_chunks)
            # Many tiny fits: BLAS threads only add overhead (~6× slower on 2 cores, measured).
            with threadpool_limits(limits=1):
                effects = self.chunk_effects(train, chunks, X_quiz, y_quiz, rng)
            rejected, calibration = negative_impact(effects, self.k)
            for c, rows in enumerate(chunks):
                scores[rows] = -effects[c]
                removed[rows] = rejected[c]
            details.update(calibration, n_rejected_chunks=int(rejected.sum()))
        else:  # one chunk or no quiz rows: nothing to compare, nothing rejected
            scores[candidates] = 0.0
            details["n_rejected_chunks"] = 0
        details["removed_poisoned"] = int((removed & train.mask).sum())
        return StepResult(
            train=train.subset(~removed),
            scores=scores,
            removed=removed,
            details=details,
            pool_used=len(y_quiz),
        )
