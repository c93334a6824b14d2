"""Metrics as pure functions of arrays: model quality, targeted-attack effect, filter quality."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    n_classes: int,
    target_pair: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, log-loss, per-class P/R/F1, confusion matrix, prediction counts; for a
    targeted attack (source, target) also source-class accuracy and attack success rate (the
    share of clean source-class test rows predicted as the target).

    Computed from one confusion matrix with numpy: the same definitions (and, to the last bit,
    the same values) as scikit-learn's ``accuracy_score``, ``precision_recall_fscore_support``
    and ``f1_score(average="macro")`` with ``labels=range(k)`` and ``zero_division=0``, and
    ``log_loss`` (probabilities clipped to [1e-15, 1], renormalised, then to machine epsilon).
    scikit-learn's versions validate their inputs on every call (~20 ms for five of them), which
    was a third of a small cell's compute; ``tests/test_metrics.py`` checks the two agree.
    """
    k = int(n_classes)
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    pred = proba.argmax(axis=1)
    confusion = np.bincount(y_true * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = (support + predicted).astype(np.float64)
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    eps = np.finfo(np.float64).eps
    picked = np.clip(clipped[np.arange(len(y_true)), y_true], eps, 1 - eps)
    out: dict[str, Any] = {
        "accuracy": float(np.average(y_true == pred)),
        "macro_f1": float(np.average(f1)),
        "log_loss": float(np.average(-np.log(picked))),
        "per_class": {
            "precision": precision.round(6).tolist(),
            "recall": recall.round(6).tolist(),
            "f1": f1.round(6).tolist(),
            "support": support.tolist(),
        },
        "confusion": confusion.tolist(),
        "pred_distribution": np.bincount(pred, minlength=k).tolist(),
        "source_accuracy": float("nan"),
        "attack_success_rate": float("nan"),
    }
    if target_pair is not None:
        source, target = target_pair
        from_source = y_true == source
        if from_source.any():
            out["source_accuracy"] = float((pred[from_source] == source).mean())
            out["attack_success_rate"] = float((pred[from_source] == target).mean())
    return out


def detection_metrics(
    mask: np.ndarray, removed: np.ndarray, scores: np.ndarray | None, y: np.ndarray, n_classes: int
) -> dict[str, Any]:
    """How well a filter found the poison: precision, recall, F1 of the removed rows against the
    true mask, ROC-AUC of the outlier scores, clean rows removed and removals per class."""
    mask = np.asarray(mask, dtype=bool)
    removed = np.asarray(removed, dtype=bool)
    hits = int((mask & removed).sum())
    n_removed = int(removed.sum())
    n_poison = int(mask.sum())
    precision = hits / n_removed if n_removed else float("nan")
    recall = hits / n_poison if n_poison else float("nan")
    f1 = (
        2 * precision * recall / (precision + recall)
        if n_removed and n_poison and (precision + recall) > 0
        else (0.0 if n_removed and n_poison else float("nan"))
    )
    auc = float("nan")
    if scores is not None and 0 < n_poison < len(mask):
        finite = np.isfinite(scores)
        if finite.all() or (finite.any() and 0 < mask[finite].sum() < finite.sum()):
            from sklearn.metrics import roc_auc_score  # here: importing metrics stays light

            auc = float(roc_auc_score(mask[finite], scores[finite]))
    return {
        "det_precision": float(precision),
        "det_recall": float(recall),
        "det_f1": float(f1),
        "det_roc_auc": auc,
        "n_removed": n_removed,
        "clean_removed": n_removed - hits,
        "removed_per_class": np.bincount(y[removed], minlength=n_classes).tolist(),
    }
