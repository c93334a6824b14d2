"""Models: one module per family, registered by name in ``MODELS``.

A model spec is a frozen dataclass of parameters; ``build(info, seed)`` makes a fresh estimator
with ``fit(X, targets, sample_weight=None)`` and ``predict_proba(X)``. scikit-learn models live in
``sklearn_models``, the torch ones in ``torch_models`` (torch itself is imported only when a torch
model is built), and ``by_path`` takes any scikit-learn estimator or torch network by import
path (``sklearn``, ``torch``).
"""

# registers the plug-ins; by_path (sklearn / torch by import path) imports nothing until a
# config names a path
from bench.models import by_path, sklearn_models, torch_models  # noqa: F401
from bench.models.base import (
    MODELS,
    Estimator,
    ModelSpec,
    SklearnClassifier,
    check_loss_support,
    check_privacy_support,
    check_representation_support,
    expand_soft_targets,
    fit_options,
)

__all__ = [
    "MODELS",
    "Estimator",
    "ModelSpec",
    "SklearnClassifier",
    "check_loss_support",
    "check_privacy_support",
    "check_representation_support",
    "expand_soft_targets",
    "fit_options",
]
