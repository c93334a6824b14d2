"""The check every ``predict_proba`` output passes before a metric is computed from it.

A model that returns NaN, negative values, values above 1 or rows that do not sum to 1 would
otherwise be scored (accuracy from an argmax over NaN, a log-loss of garbage) and recorded as
``ok``. The runner calls :func:`checked_proba` on every prediction; a violation raises
:class:`ModelOutputError` naming the model, which makes the cell a ``failed`` row saying why.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.core.types import PoisonBenchError

#: how far a probability may fall outside [0, 1] (rounding of a float32 softmax)
VALUE_TOLERANCE = 1e-6
#: how far a row's sum may be from 1 (float32 softmax over many classes rounds to ~1e-6)
SUM_TOLERANCE = 1e-4


class ModelOutputError(PoisonBenchError):
    """A model's ``predict_proba`` returned something that is not a probability matrix."""


def _example(proba: np.ndarray, rows: np.ndarray) -> str:
    row = int(rows[0])
    values = ", ".join(f"{v:.4g}" for v in proba[row, :6])
    more = ", ..." if proba.shape[1] > 6 else ""
    return f"{len(rows)} row{'s' if len(rows) != 1 else ''}, e.g. row {row}: [{values}{more}]"


def checked_proba(proba: Any, n_rows: int, n_classes: int, model: str) -> np.ndarray:
    """``proba`` as an array, checked to be an ``n_rows × n_classes`` probability matrix (its
    dtype unchanged, so the metrics are those of the model's own output).

    Parameters
    ----------
    proba : array-like
        What the model's ``predict_proba`` returned.
    n_rows, n_classes : int
        The expected shape: one row per test row, one column per class of the dataset.
    model : str
        The model's label, named in the error.

    Raises
    ------
    ModelOutputError
        Unless every value is finite and in [0, 1] (within 1e-6) and every row sums to 1
        (within 1e-4).
    """
    where = f"model {model}: predict_proba"
    try:
        original = np.asarray(proba)
        array = original.astype(np.float64, copy=False)
    except (TypeError, ValueError) as exc:
        raise ModelOutputError(f"{where} returned no numeric array ({exc})") from None
    if array.shape != (n_rows, n_classes):
        raise ModelOutputError(
            f"{where} returned shape {array.shape}, expected ({n_rows}, {n_classes}) "
            "(test rows × classes)"
        )
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if len(bad):
        raise ModelOutputError(f"{where} returned NaN or infinite values ({_example(array, bad)})")
    bad = np.flatnonzero(((array < -VALUE_TOLERANCE) | (array > 1 + VALUE_TOLERANCE)).any(axis=1))
    if len(bad):
        raise ModelOutputError(f"{where} returned values outside [0, 1] ({_example(array, bad)})")
    sums = array.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > SUM_TOLERANCE)
    if len(bad):
        raise ModelOutputError(
            f"{where} returned rows that do not sum to 1 within {SUM_TOLERANCE:g} "
            f"({_example(array, bad)}, sum {sums[bad[0]]:.6g})"
        )
    return original
