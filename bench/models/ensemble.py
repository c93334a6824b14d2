"""The certified ensemble: what the cell's model becomes under ``dpa`` or ``bagging``.

A certified defense step sets :attr:`bench.core.types.TrainingSet.ensemble` (an
:class:`~bench.core.types.EnsemblePlan`); :func:`bench.run.runner.fit_model` then builds an
:class:`EnsembleClassifier` of the cell's model spec instead of one model. All members are fit
in the cell's own task, one after another (the worker already runs one cell per core), from
seeds drawn from the cell's model seed, so the ensemble obeys the same common-random-numbers
rule as a single model: member ``j`` of every cell of a seed starts from the same seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.core.types import DatasetInfo, EnsemblePlan


class EnsembleClassifier:
    """``plan.n_members`` base models of ``spec``, each fit on the rows the plan assigns it.

    ``predict_proba`` is the vote share of each class (members that had no rows abstain), so the
    argmax is the plurality vote with ties to the smaller class index (Levine & Feizi's rule);
    :meth:`certify` gives each row's prediction and certified radius.
    """

    def __init__(self, spec: Any, info: DatasetInfo, seed: int, plan: EnsemblePlan) -> None:
        self.spec = spec
        self.info = info
        self.seed = seed
        self.plan = plan

    def fit(
        self,
        X: np.ndarray,
        targets: np.ndarray,
        sample_weight: np.ndarray | None = None,
        **options: Any,
    ) -> EnsembleClassifier:
        """Fit every member on its rows (options such as ``loss`` pass through; ``trusted`` is
        cut to the member's rows)."""
        self.n_rows_ = len(X)
        members = self.plan.members(X)
        seeds = np.random.default_rng(self.seed).integers(2**31 - 1, size=len(members))
        self.members_: list[Any | None] = []
        for rows, seed in zip(members, seeds, strict=True):
            if len(rows) == 0:
                self.members_.append(None)  # an empty partition has no model and no vote
                continue
            opts = dict(options)
            if opts.get("trusted") is not None:
                opts["trusted"] = np.asarray(opts["trusted"])[rows]
            weight = None if sample_weight is None else np.asarray(sample_weight)[rows]
            model = self.spec.build(self.info, int(seed))
            model.fit(X[rows], np.asarray(targets)[rows], weight, **opts)
            self.members_.append(model)
        self.fit_info_ = {"ensemble_abstaining": sum(m is None for m in self.members_)}
        return self

    def votes(self, X: np.ndarray) -> np.ndarray:
        """n×k counts of the members' votes (each member votes its argmax class)."""
        k = self.info.n_classes
        counts = np.zeros((len(X), k), dtype=np.int64)
        for model in self.members_:
            if model is None:
                continue
            pred = np.asarray(model.predict_proba(X)).argmax(axis=1)
            counts[np.arange(len(X)), pred] += 1
        return counts

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        counts = self.votes(X).astype(np.float64)
        total = counts.sum(axis=1, keepdims=True)
        uniform = np.full_like(counts, 1.0 / counts.shape[1])
        return np.where(total > 0, counts / np.maximum(total, 1), uniform)

    def certify(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(prediction, radius)`` per row: the plurality class and its certified radius (−1:
        not certified even with no change)."""
        counts = self.votes(X)
        return counts.argmax(axis=1), self.plan.radius(counts, self.n_rows_)
