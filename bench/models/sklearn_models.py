"""scikit-learn models: logistic regression, random forest, RBF-SVM, MLP, robust linear."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench.core.types import DatasetInfo, ParamError, PoisonBenchError, check_range
from bench.models.base import MODELS, Estimator, ModelSpec, SklearnClassifier

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

        # function-level: bench.models.platt subclasses scikit-learn's bases at import, and
        # scikit-learn costs ~1.5 s that `poisonbench list` (which imports the registry) skips
        from bench.models.platt import WeightedPlattSVC

        pipe = make_pipeline(StandardScaler(), WeightedPlattSVC(C=self.C))
        return SklearnClassifier(pipe, info.n_classes, "weightedplattsvc__sample_weight")


@MODELS.register("mlp")
@dataclass(frozen=True)
class MLP(ModelSpec):
    """Standardized features + a scikit-learn MLP (adam, early stopping off).

    hidden: sizes of the hidden layers. max_iter: epochs. alpha: L2 penalty.
    """

    hidden: tuple[int, ...] = (100,)
    max_iter: int = 300
    alpha: float = 1e-4

    supports_representation: ClassVar[bool] = True  # features(X): the last hidden layer

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
        return MLPAdapter(
            make_pipeline(StandardScaler(), mlp), info.n_classes, "mlpclassifier__sample_weight"
        )


class MLPAdapter(SklearnClassifier):
    """The ``mlp`` model's estimator, with its last hidden layer as the representation."""

    def features(self, X: np.ndarray) -> np.ndarray:
        """The last hidden layer's activations (ReLU) of rows ``X``: n×h float64."""
        if self.constant_ is not None:
            raise PoisonBenchError(
                "the mlp saw one class and fit no network: it has no hidden layer to read"
            )
        scaler, mlp = self.estimator[0], self.estimator[-1]
        hidden = scaler.transform(np.asarray(X, dtype=np.float64).reshape(len(X), -1))
        for weights, bias in zip(mlp.coefs_[:-1], mlp.intercepts_[:-1], strict=True):
            hidden = np.maximum(hidden @ weights + bias, 0.0)  # MLPClassifier's default relu
        return hidden


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
