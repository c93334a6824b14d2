"""The weighted-Platt SVC of the ``svm`` model (a scikit-learn estimator; imported only when an
``svm`` model is built, so that importing the model registry imports no scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class WeightedPlattSVC(ClassifierMixin, BaseEstimator):
    """RBF-kernel SVC whose Platt (sigmoid) probabilities respect ``sample_weight``.

    ``SVC(probability=True)`` fits its sigmoids ignoring the weights (and is deprecated since
    scikit-learn 1.9). Soft targets arrive as weighted duplicates of each row with every label,
    so unweighted, every class pair looks equally likely: its probabilities came out near
    uniform and ranked backwards (0% accuracy on easy blobs with label smoothing). Here the
    sigmoids are fit with the weights on out-of-fold decision values (``CalibratedClassifierCV``,
    ``ensemble=False``, up to 5 stratified folds; in-sample when a class has a single row).
    """

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(
        self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> WeightedPlattSVC:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        svc = SVC(C=self.C, kernel="rbf")
        folds = int(min(5, np.unique(y, return_counts=True)[1].min()))
        if folds >= 2:
            model = CalibratedClassifierCV(svc, method="sigmoid", ensemble=False, cv=folds)
        else:
            from sklearn.frozen import FrozenEstimator

            svc.fit(X, y, sample_weight=sample_weight)
            model = CalibratedClassifierCV(FrozenEstimator(svc), method="sigmoid")
        self.model_ = model.fit(X, y, sample_weight=sample_weight)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)
