"""The model protocol: a registry of model specs that build estimators with ``fit`` /
``predict_proba``, and the adapter that lets any scikit-learn classifier take soft targets.

Targets may be hard labels (n) or a soft-label matrix (n×k). scikit-learn models take soft
targets by weighted duplication: row i appears once per class c with weight p_ic·w_i. Torch
models (``bench/models/torch_models.py``) use soft-target cross-entropy and import torch lazily.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import numpy as np

from bench.core.types import DatasetInfo, Plugin, PoisonBenchError, Registry

MODELS: Registry[ModelSpec] = Registry("model", group="poisonbench.models")


class Estimator(Protocol):
    def fit(
        self, X: np.ndarray, targets: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> Estimator: ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


class ModelSpec(Plugin):
    """Parameters of a model; ``build`` makes a fresh, seeded estimator for one fit.

    ``supports_loss``: the estimator's ``fit`` takes ``loss=`` (a ``TrainingSet.loss`` set by a
    robust-loss defense, see ``defenses/robust_loss.py``) and ``trusted=`` (the rows such a loss
    may treat differently, e.g. ``glc``) and trains with them.
    ``supports_privacy``: the estimator's ``fit`` takes ``privacy=`` (a ``TrainingSet.privacy``
    set by ``dp_sgd``) and trains with differential privacy. An estimator may set
    ``fit_info_`` (``dict[str, float]``, e.g. ``{"dp_epsilon": 2.3}``) in ``fit``: what the fit
    measured, copied into the result row.
    ``supports_representation``: the fitted estimator has ``features(X) -> n×h`` (float64), its
    learned representation of rows (the penultimate layer of a network), which the
    representation-space defenses (``spectral_signature``, ``activation_clustering``) read.
    """

    supports_loss: ClassVar[bool] = False
    supports_privacy: ClassVar[bool] = False
    supports_representation: ClassVar[bool] = False

    def build(self, info: DatasetInfo, seed: int) -> Estimator:
        raise NotImplementedError


def check_loss_support(spec: ModelSpec, loss: dict[str, Any] | None) -> None:
    """Raise PoisonBenchError when a defense set a training loss that ``spec`` cannot train with.

    A model that ignored the loss would report a robust-loss defense as if it had run.
    """
    if loss is None or spec.supports_loss:
        return
    able = [name for name, cls in MODELS.items() if getattr(cls, "supports_loss", False)]
    # Scalars only: a loss may carry a matrix (glc's corruption matrix) that would drown the message.
    detail = ", ".join(
        f"{k}={v}" for k, v in loss.items() if k != "name" and isinstance(v, int | float | str)
    )
    raise PoisonBenchError(
        f"model {spec.name!r} cannot train with the robust loss set by defense "
        f"{loss.get('name')!r}{f' ({detail})' if detail else ''}: scikit-learn models have a "
        f"fixed loss. Models that support it: {', '.join(able) or 'none registered'}; "
        "for a robust scikit-learn baseline use the robust_linear model instead"
    )


def check_privacy_support(spec: ModelSpec, privacy: dict[str, Any] | None) -> None:
    """Raise PoisonBenchError when ``dp_sgd`` asked for private training ``spec`` cannot do.

    A model that ignored the request would report a non-private fit as differentially private.
    """
    if privacy is None or spec.supports_privacy:
        return
    able = [name for name, cls in MODELS.items() if getattr(cls, "supports_privacy", False)]
    raise PoisonBenchError(
        f"model {spec.name!r} cannot train with differential privacy (defense 'dp_sgd'): "
        "scikit-learn models have no per-example gradient step to clip and noise. Models that "
        f"support it: {', '.join(able) or 'none registered'}"
    )


def representation_models() -> list[str]:
    """The registered models whose fitted estimators expose ``features(X)``."""
    return [n for n, cls in MODELS.items() if getattr(cls, "supports_representation", False)]


def check_representation_support(spec: ModelSpec, defense: str) -> None:
    """Raise PoisonBenchError when ``defense`` needs a representation ``spec`` does not have.

    A defense that fell back to raw features would report a different method under its name.
    """
    if spec.supports_representation:
        return
    raise PoisonBenchError(
        f"model {spec.name!r} has no learned representation (features(X)) for defense "
        f"{defense!r}, which scores rows in a model's penultimate-layer space. Models that "
        f"have one: {', '.join(representation_models()) or 'none registered'}"
    )


def fit_options(train: Any) -> dict[str, Any]:
    """The keyword arguments beyond (X, targets, sample_weight) that fitting ``train`` needs.

    ``loss`` and ``trusted`` when a defense step set a training loss, ``privacy`` when one set
    differential-privacy options; empty otherwise, so models without those options still fit.
    Check the model first with :func:`check_loss_support` and :func:`check_privacy_support`.
    """
    out: dict[str, Any] = {}
    if train.loss is not None:
        out.update(loss=train.loss, trusted=train.trusted)
    if train.privacy is not None:
        out["privacy"] = train.privacy
    return out


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
