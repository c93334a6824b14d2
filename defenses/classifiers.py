"""Small scikit-learn classifiers that defenses fit inside a step, and how they score rows.

Shared by the defenses that need a model of their own (``confident_learning``,
``trusted_filter``, ``glc``, ``roni``, ``provenance``): the choice of model is a parameter
(``logreg``, ``random_forest``, ``knn``), built here the same way for all of them.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

#: the models a defense may fit for itself
ClassifierName = Literal["logreg", "random_forest", "knn"]
#: what a quiz set measures: ``accuracy`` or ``log_loss`` (reported as its negative, so higher
#: is better for both)
QuizMetric = Literal["log_loss", "accuracy"]


def make_classifier(model: str, seed: int, n_fit: int) -> Any:
    """A fresh scikit-learn classifier; ``n_fit``: rows it will be fit on (caps knn's k).

    ``logreg``: standardized features + logistic regression; ``random_forest``: 100 trees;
    ``knn``: standardized, 10 neighbours (fewer when ``n_fit`` is smaller).
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if model == "logreg":
        from sklearn.linear_model import LogisticRegression

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    if model == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)
    from sklearn.neighbors import KNeighborsClassifier

    return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=max(1, min(10, n_fit))))


def flat(X: np.ndarray) -> np.ndarray:
    """Rows flattened to n×d float64 (images become pixel vectors)."""
    return np.asarray(X, dtype=np.float64).reshape(len(X), -1)


def fit_proba(
    model: str,
    X: np.ndarray,
    y: np.ndarray,
    X_eval: np.ndarray,
    n_classes: int,
    seed: int,
) -> np.ndarray:
    """Class probabilities (n_eval × n_classes) of ``model`` fit on (X, y), predicted on X_eval.

    Classes absent from ``y`` get probability 0; with a single class present every row gets
    probability 1 for it (there is nothing to discriminate). Convergence warnings of tiny fits
    are silenced: the defenses fit many small models on purpose.
    """
    out = np.zeros((len(X_eval), n_classes))
    present = np.unique(y)
    if len(present) == 1:
        out[:, present[0]] = 1.0
        return out
    from sklearn.exceptions import ConvergenceWarning

    estimator = make_classifier(model, seed, len(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(flat(X), y)
    out[:, estimator.classes_] = estimator.predict_proba(flat(X_eval))
    return out


def quiz_utility(proba: np.ndarray, y: np.ndarray, metric: str) -> float:
    """How well ``proba`` predicts the quiz labels ``y``; higher is better.

    ``accuracy``: fraction of rows whose most likely class is the label. ``log_loss``: minus
    the mean ``−log p(label)``, with p clipped at 1e-6 so a class the model never saw costs a
    bounded ~13.8 instead of infinity.
    """
    if len(y) == 0:
        return 0.0
    if metric == "accuracy":
        return float(np.mean(proba.argmax(axis=1) == y))
    p = np.clip(proba[np.arange(len(y)), y], 1e-6, 1.0)
    return float(np.mean(np.log(p)))


def negative_impact(effects: np.ndarray, k: float) -> tuple[np.ndarray, dict[str, float]]:
    """Which effects are negative outliers, and the calibration that decided it.

    An effect (a change of quiz utility, higher = the data helped) is rejected when it is below
    zero *and* below ``median − k·spread``, where spread is the MAD scaled to a normal's
    standard deviation (1.4826·MAD). Median and MAD are computed over all the effects, so the
    calibration holds while fewer than half of the units (chunks, sources) are harmful; the
    "below zero" rule keeps a unit that helps from being rejected only for helping least.
    Returns the boolean mask and ``{"threshold", "effect_median", "effect_spread"}``.
    """
    effects = np.asarray(effects, dtype=np.float64)
    if len(effects) == 0:
        return np.zeros(0, dtype=bool), {
            "threshold": 0.0,
            "effect_median": 0.0,
            "effect_spread": 0.0,
        }
    median = float(np.median(effects))
    spread = 1.4826 * float(np.median(np.abs(effects - median)))
    threshold = min(0.0, median - k * spread)
    return effects < threshold, {
        "threshold": threshold,
        "effect_median": median,
        "effect_spread": spread,
    }
