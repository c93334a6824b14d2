"""Certified accuracy as pure functions of per-row radii (the ``dpa`` / ``bagging`` columns).

A certified defense gives every test row a radius: the training-row changes its prediction
provably withstands. The row is *certified correct at r* when the prediction is right and its
radius is at least r; certified accuracy at r is the share of test rows certified correct at r,
a lower bound on the accuracy any attack of at most r changes can leave.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def radius_grid(max_radius: int) -> list[int]:
    """Radii 0, 1, 2, 5, 10, 20, 50, 100, ... (1-2-5 steps) up to the first one above
    ``max_radius`` (where certified accuracy is 0), included."""
    grid = [0]
    step = 1
    while grid[-1] <= max_radius:
        for m in (1, 2, 5):
            grid.append(m * step)
            if grid[-1] > max_radius:
                break
        step *= 10
    return grid


def correct_radii(y_true: np.ndarray, pred: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Each row's radius where the prediction is right, −1 where it is wrong (int64)."""
    right = np.asarray(pred) == np.asarray(y_true)
    return np.where(right, np.asarray(radius, dtype=np.int64), -1).astype(np.int64)


def certified_accuracy(radii: np.ndarray, radii_at: list[int]) -> dict[str, float]:
    """``{str(r): share of rows with radius >= r}`` for ``r`` in ``radii_at``.

    radii: :func:`correct_radii` (−1 for a wrong or uncertified row)."""
    radii = np.asarray(radii, dtype=np.int64)
    return {str(r): float(np.mean(radii >= r)) if len(radii) else float("nan") for r in radii_at}


def certified_metrics(
    y_true: np.ndarray, pred: np.ndarray, radius: np.ndarray, unit: str
) -> dict[str, Any]:
    """The certificate columns of a row (``bench/core/schema.py``, kind ``certified``).

    y_true, pred: test labels and the ensemble's predictions; radius: certified radius per row
    (−1: not certified). unit: what one change is (the plan's threat model).
    """
    radii = correct_radii(y_true, pred, radius)
    right = np.asarray(pred) == np.asarray(y_true)
    grid = radius_grid(int(radii.max()) if len(radii) else 0)
    return {
        "certified_radii": radii.tolist(),
        "certified_accuracy": certified_accuracy(radii, grid),
        "certified_radius_median": float(np.median(radii[right])) if right.any() else None,
        "certified_unit": unit,
    }


def certified_changes(
    X_clean: np.ndarray,
    X_poisoned: np.ndarray,
    mask: np.ndarray,
    feature_change_cost: int,
) -> int | None:
    """The size of a cell's poisoning in the certificate's unit: 1 per poisoned row whose
    features are unchanged (a relabelled row), ``feature_change_cost`` per row whose features
    changed. None when the attack changed the number of rows (no row-by-row comparison)."""
    if X_clean.shape != X_poisoned.shape:
        return None
    flat_clean = X_clean.reshape(len(X_clean), -1)
    flat_poisoned = X_poisoned.reshape(len(X_poisoned), -1)
    moved = np.any(flat_clean != flat_poisoned, axis=1) & np.asarray(mask, dtype=bool)
    relabelled = np.asarray(mask, dtype=bool) & ~moved
    return int(relabelled.sum() + feature_change_cost * moved.sum())
