"""Models: a registry of model specs that build estimators with ``fit`` / ``predict_proba``.

Targets may be hard labels (n) or a soft-label matrix (n×k). scikit-learn models take soft
targets by weighted duplication: row i appears once per class c with weight p_ic·w_i. Torch
models (``bench/torch_models.py``) use soft-target cross-entropy and import torch lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from bench.types import DatasetInfo, ParamError, Plugin, PoisonBenchError, Registry, check_range

MODELS: Registry[ModelSpec] = Registry("model")


class Estimator(Protocol):
    def fit(
        self, X: np.ndarray, targets: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> Estimator: ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


class ModelSpec(Plugin):
    """Parameters of a model; ``build`` makes a fresh, seeded estimator for one fit.

    ``supports_loss``: the estimator's ``fit`` takes ``loss=`` (a ``TrainingSet.loss`` set by a
    robust-loss defense, see ``defenses/robust_loss.py``) and trains with it.
    """

    supports_loss: ClassVar[bool] = False

    def build(self, info: DatasetInfo, seed: int) -> Estimator:
        raise NotImplementedError


def check_loss_support(spec: ModelSpec, loss: dict[str, Any] | None) -> None:
    """Raise PoisonBenchError when a defense set a training loss that ``spec`` cannot train with.

    A model that ignored the loss would report a robust-loss defense as if it had run.
    """
    if loss is None or spec.supports_loss:
        return
    able = [name for name, cls in MODELS.items() if getattr(cls, "supports_loss", False)]
    detail = ", ".join(f"{k}={v}" for k, v in loss.items() if k != "name")
    raise PoisonBenchError(
        f"model {spec.name!r} cannot train with the robust loss set by defense "
        f"{loss.get('name')!r}{f' ({detail})' if detail else ''}: scikit-learn models have a "
        f"fixed loss. Models that support it: {', '.join(able) or 'none registered'}; "
        "for a robust scikit-learn baseline use the robust_linear model instead"
    )


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
        # Weights can be left out only when they are all 1: a uniform weight c != 1 changes the
        # fit of regularised models (sklearn's logistic loss is weighted against 1/(C·sum w)).
        unweighted = len(rows) == len(X) and bool(np.all(weight == 1.0))
        kwargs = {} if unweighted else {self.weight_param: weight}
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


#: the largest iteration / epoch count and regularization constant a config may ask for
MAX_ITER = 100_000
MAX_C = 1e6


def _positive(value: float, field: str, high: float) -> None:
    """``value`` in (0, high] (integers: [1, high])."""
    if isinstance(value, int):
        check_range(value, field, 1, high)
    else:
        check_range(value, field, 0, high, low_open=True)


def _layer_sizes(hidden: tuple[int, ...]) -> None:
    if not hidden or len(hidden) > 100 or any(not 1 <= h <= 100_000 for h in hidden):
        raise ParamError(
            "hidden",
            f"must be a list of 1 to 100 layer sizes in [1, 100000], got {list(hidden)}",
        )


@MODELS.register("logreg")
@dataclass(frozen=True)
class LogReg(ModelSpec):
    """Standardized features + multinomial logistic regression (lbfgs).

    C: inverse regularization strength, in (0, 1e6]. max_iter: solver iterations, 1..100000.
    """

    C: float = 1.0
    max_iter: int = 1000

    def __post_init__(self) -> None:
        _positive(self.C, "C", MAX_C)
        _positive(self.max_iter, "max_iter", MAX_ITER)

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
    """Random forest. n_estimators: trees, 1..10000. max_depth: 1..1000 (null: unlimited)."""

    n_estimators: int = 100
    max_depth: int | None = None

    def __post_init__(self) -> None:
        _positive(self.n_estimators, "n_estimators", 10_000)
        if self.max_depth is not None:
            _positive(self.max_depth, "max_depth", 1000)

    def build(self, info: DatasetInfo, seed: int) -> Estimator:
        from sklearn.ensemble import RandomForestClassifier

        forest = RandomForestClassifier(
            n_estimators=self.n_estimators, max_depth=self.max_depth, random_state=seed, n_jobs=1
        )
        return SklearnClassifier(forest, info.n_classes)


@MODELS.register("svm")
@dataclass(frozen=True)
class SVM(ModelSpec):
    """Standardized features + RBF-kernel SVC with (weighted) Platt-scaled probabilities. C in (0, 1e6]."""

    C: float = 1.0

    def __post_init__(self) -> None:
        _positive(self.C, "C", MAX_C)

    def build(self, info: DatasetInfo, seed: int) -> Estimator:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        pipe = make_pipeline(StandardScaler(), WeightedPlattSVC(C=self.C))
        return SklearnClassifier(pipe, info.n_classes, "weightedplattsvc__sample_weight")


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
        _layer_sizes(self.hidden)
        _positive(self.max_iter, "max_iter", MAX_ITER)
        check_range(self.alpha, "alpha", 0, 1000)

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


@MODELS.register("robust_linear")
@dataclass(frozen=True)
class RobustLinear(ModelSpec):
    """Standardized features + a linear model trained by SGD on the modified Huber loss.

    The modified Huber loss grows linearly, not quadratically, for badly misclassified rows, so
    a flipped label pulls the boundary less than under squared losses; it still gives
    probabilities (one-vs-rest, normalized). Averaged SGD with a small constant step and
    stopping on a loss plateau (``tol=1e-4``) keeps it from chasing the flipped rows; on digits
    (300 train rows) it loses ~2 points of clean accuracy to ``logreg`` but ~8 fewer points at
    20% random flips. alpha: L2 penalty, in (0, 1000]. eta0: step size, in (0, 100].
    max_iter: epochs, 1..100000.
    """

    alpha: float = 0.01
    eta0: float = 0.001
    max_iter: int = 1000

    def __post_init__(self) -> None:
        _positive(self.alpha, "alpha", 1000)
        _positive(self.eta0, "eta0", 100)
        _positive(self.max_iter, "max_iter", MAX_ITER)

    def build(self, info: DatasetInfo, seed: int) -> Estimator:
        from sklearn.linear_model import SGDClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        sgd = SGDClassifier(
            loss="modified_huber",
            alpha=self.alpha,
            learning_rate="constant",
            eta0=self.eta0,
            average=True,
            max_iter=self.max_iter,
            tol=1e-4,
            random_state=seed,
        )
        return SklearnClassifier(
            make_pipeline(StandardScaler(), sgd), info.n_classes, "sgdclassifier__sample_weight"
        )


# Registers cnn, cnn-large and torch-mlp; torch itself is imported only when one is built.
import bench.torch_models  # noqa: E402, F401
