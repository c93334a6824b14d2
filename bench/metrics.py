"""Metrics as pure functions of arrays: model quality, targeted-attack effect, filter quality."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)


def classification_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    n_classes: int,
    target_pair: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, log-loss, per-class P/R/F1, confusion matrix, prediction counts; for a
    targeted attack (source, target) also source-class accuracy and attack success rate (the
    share of clean source-class test rows predicted as the target)."""
    labels = np.arange(n_classes)
    pred = proba.argmax(axis=1)
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    p, r, f, support = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, pred)),
        "macro_f1": float(f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
        "log_loss": float(log_loss(y_true, clipped, labels=labels)),
        "per_class": {
            "precision": p.round(6).tolist(),
            "recall": r.round(6).tolist(),
            "f1": f.round(6).tolist(),
            "support": support.tolist(),
        },
        "confusion": confusion_matrix(y_true, pred, labels=labels).tolist(),
        "pred_distribution": np.bincount(pred, minlength=n_classes).tolist(),
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
