"""Models: a registry of model specs that build estimators with ``fit`` / ``predict_proba``.

Targets may be hard labels (n) or a soft-label matrix (n×k). scikit-learn models take soft
targets by weighted duplication: row i appears once per class c with weight p_ic·w_i. Torch
models (``bench/torch_models.py``) use soft-target cross-entropy and import torch lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bench.types import DatasetInfo, ParamError, Plugin, Registry

MODELS: Registry[ModelSpec] = Registry("model")


class Estimator(Protocol):
    def fit(
        self, X: np.ndarray, targets: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> Estimator: ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


class ModelSpec(Plugin):
    """Parameters of a model; ``build`` makes a fresh, seeded estimator for one fit."""

    def build(self, info: DatasetInfo, seed: int) -> Estimator:
        raise NotImplementedError


def expand_soft_targets(
    targets: np.ndarray, sample_weight: np.ndarray | None, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, labels and weights that turn soft targets into weighted hard examples.

    Returns (row index, label, weight) with one entry per (row, class) of positive mass, so a
    classifier trained with ``sample_weight`` minimises the soft-target cross-entropy.
    """
    targets = np.asarray(targets)
    weight = np.ones(len(targets)) if sample_weight is None else np.asarray(sample_weight, float)
    if targets.ndim == 1:
        return np.arange(len(targets)), targets.astype(np.int64), weight
    rows, labels = np.nonzero(targets > 0)
    return rows, labels.astype(np.int64), targets[rows, labels] * weight[rows]


class SklearnClassifier:
    """Adapts a scikit-learn classifier: flattens images, takes soft targets, and always returns
    probabilities over all ``n_classes`` (a class absent from training gets probability 0)."""

    def __init__(self, estimator: Any, n_classes: int, weight_param: str = "sample_weight") -> None:
        self.estimator = estimator
        self.n_classes = n_classes
        self.weight_param = weight_param

    def fit(
        self, X: np.ndarray, targets: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> SklearnClassifier:
        X = X.reshape(len(X), -1)
        rows, labels, weight = expand_soft_targets(targets, sample_weight, self.n_classes)
        self.classes_ = np.unique(labels)
        if len(self.classes_) == 1:  # nothing to discriminate: predict the one class seen
            self.constant_ = int(self.classes_[0])
            return self
        self.constant_ = None
        uniform = np.allclose(weight, weight[0]) and len(rows) == len(X)
        kwargs = {} if uniform else {self.weight_param: weight}
        self.estimator.fit(X[rows], labels, **kwargs)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = X.reshape(len(X), -1)
        out = np.zeros((len(X), self.n_classes))
        if self.constant_ is not None:
            out[:, self.constant_] = 1.0
            return out
        out[:, self.estimator.classes_] = self.estimator.predict_proba(X)
        return out


def _positive(value: float, field: str) -> None:
    if not value > 0:
        raise ParamError(field, f"must be > 0, got {value}")


@MODELS.register("logreg")
@dataclass(frozen=True)
class LogReg(ModelSpec):
    """Standardized features + multinomial logistic regression (lbfgs).

    C: inverse regularization strength, > 0. max_iter: solver iterations.
    """

    C: float = 1.0
    max_iter: int = 1000

    def __post_init__(self) -> None:
        _positive(self.C, "C")
        _positive(self.max_iter, "max_iter")

    def build(self, info: DatasetInfo, seed: int) -> Estimator:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        pipe = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=seed),
        )
        return SklearnClassifier(pipe, info.n_classes, "logisticregression__sample_weight")


@MODELS.register("random_forest")
@dataclass(frozen=True)
class RandomForest(ModelSpec):
    """Random forest. n_estimators: trees, > 0. max_depth: depth limit (null: unlimited)."""

    n_estimators: int = 100
    max_depth: int | None = None

    def __post_init__(self) -> None:
        _positive(self.n_estimators, "n_estimators")
        if self.max_depth is not None:
            _positive(self.max_depth, "max_depth")

    def build(self, info: DatasetInfo, seed: int) -> Estimator:
        from sklearn.ensemble import RandomForestClassifier

        forest = RandomForestClassifier(
            n_estimators=self.n_estimators, max_depth=self.max_depth, random_state=seed, n_jobs=1
        )
        return SklearnClassifier(forest, info.n_classes)


@MODELS.register("svm")
@dataclass(frozen=True)
class SVM(ModelSpec):
    """Standardized features + RBF-kernel SVC with Platt-scaled probabilities. C > 0."""

    C: float = 1.0

    def __post_init__(self) -> None:
        _positive(self.C, "C")

    def build(self, info: DatasetInfo, seed: int) -> Estimator:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        pipe = make_pipeline(
            StandardScaler(), SVC(C=self.C, kernel="rbf", probability=True, random_state=seed)
        )
        return SklearnClassifier(pipe, info.n_classes, "svc__sample_weight")


@MODELS.register("mlp")
@dataclass(frozen=True)
class MLP(ModelSpec):
    """Standardized features + a scikit-learn MLP (adam, early stopping off).

    hidden: sizes of the hidden layers. max_iter: epochs. alpha: L2 penalty.
    """

    hidden: tuple[int, ...] = (100,)
    max_iter: int = 300
    alpha: float = 1e-4

    def __post_init__(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ParamError(
                "hidden", f"must be a non-empty list of positive sizes, got {self.hidden}"
            )
        _positive(self.max_iter, "max_iter")

    def build(self, info: DatasetInfo, seed: int) -> Estimator:
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        mlp = MLPClassifier(
            hidden_layer_sizes=self.hidden,
            max_iter=self.max_iter,
            alpha=self.alpha,
            random_state=seed,
        )
        return SklearnClassifier(
            make_pipeline(StandardScaler(), mlp), info.n_classes, "mlpclassifier__sample_weight"
        )
