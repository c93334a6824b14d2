"""Confident learning (cleanlab): remove the rows whose given label the data itself disputes.

A classifier is cross-validated on the training set; each row's out-of-fold predicted
probabilities are compared with its given label, and cleanlab's ``find_label_issues`` estimates
the joint distribution of given and true labels (the confident joint) and flags the rows most
likely mislabelled (Northcutt, Jiang & Chuang, 2021). Unlike a feature-space outlier detector it
sees *labels*, so it is the strong baseline against label flips; against feature noise with
intact labels it has little to go on.

Out-of-fold probabilities matter: a model scored on the rows it was fit on has memorised their
(flipped) labels and reports them as confident.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from bench.core.types import DefenseContext, TrainingSet, check_range
from defenses.base import DEFENSES, Filter
from defenses.classifiers import ClassifierName, make_classifier

FilterBy = Literal[
    "prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given"
]


@DEFENSES.register("confident_learning")
@dataclass(frozen=True)
class ConfidentLearning(Filter):
    """Remove the rows cleanlab's ``find_label_issues`` flags on out-of-fold probabilities.

    folds: K of the stratified K-fold cross-validation, 2..100. When the smallest class has fewer
        than K rows, K drops to that class's size; classes with a single row (or none) cannot be
        cross-validated: their rows are kept and scored 0.
    model: the classifier cross-validated: ``logreg`` (standardized features + logistic
        regression, the default), ``random_forest`` (100 trees) or ``knn`` (standardized,
        10 neighbours or fewer on tiny folds).
    filter_by: cleanlab's rule for how many and which rows to flag (its default
        ``prune_by_noise_rate``; see ``cleanlab.filter.find_label_issues``).
    Score of a row: 1 − its self-confidence, the out-of-fold probability of its given label,
    in [0, 1] (higher = more likely mislabelled).
    """

    tune_space: ClassVar[Mapping[str, tuple]] = {
        "filter_by": ("prune_by_noise_rate", "prune_by_class", "both")
    }

    folds: int = 5
    model: ClassifierName = "logreg"
    filter_by: FilterBy = "prune_by_noise_rate"

    def __post_init__(self) -> None:
        check_range(self.folds, "folds", 2, 100)

    def label(self) -> str:
        return (
            "confident_learning" if self.model == "logreg" else f"confident_learning({self.model})"
        )

    def make_model(self, seed: int, n_fit: int) -> Any:
        """A fresh scikit-learn classifier for one cross-validation; ``n_fit``: rows per fit."""
        return make_classifier(self.model, seed, n_fit)

    def score(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        from cleanlab.filter import find_label_issues
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        seed = int(rng.integers(2**31 - 1))
        y = np.asarray(train.y)
        scores = np.zeros(len(y))
        removed = np.zeros(len(y), dtype=bool)
        counts = np.bincount(y, minlength=train.n_classes)
        usable = np.flatnonzero(counts >= 2)
        if len(usable) < 2:  # nothing to cross-validate against
            return scores, removed
        rows = np.flatnonzero(np.isin(y, usable))
        # cleanlab wants labels 0..m-1 with a probability column for each: drop absent classes.
        labels = np.searchsorted(usable, y[rows])
        k = int(min(self.folds, counts[usable].min()))
        X = np.asarray(train.X, dtype=np.float64).reshape(len(y), -1)[rows]
        n_fit = len(rows) - int(np.ceil(len(rows) / k))
        pred_probs = cross_val_predict(
            self.make_model(seed, n_fit),
            X,
            labels,
            cv=StratifiedKFold(n_splits=k, shuffle=True, random_state=seed),
            method="predict_proba",
        )
        issues = find_label_issues(labels, pred_probs, filter_by=self.filter_by, n_jobs=1)
        scores[rows] = 1.0 - pred_probs[np.arange(len(rows)), labels]
        removed[rows] = issues
        return scores, removed
