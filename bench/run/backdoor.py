"""Backdoors and representations in the runner: the first-pass model and the trigger metrics.

The *first-pass model* of a cell is its model fit on the poisoned training set as the attack
left it: exactly the undefended cell's fit at f = 0 (same rows, same model seed). The
representation-space defenses read its ``features(X)``; the stage cache keys it by the poisoned
set and the model, so the undefended cell and every representation defense of a task share one
fit, whichever of them runs first.

A backdoor attack declares a test-time trigger (``Attack.backdoor_target``,
``apply_trigger``, ``trigger_rows``). :func:`backdoor_metrics` stamps it on the clean test rows
whose true class is not the target and measures ``backdoor_asr`` (share predicted as the
target) and ``backdoor_robust_acc`` (share still predicted as their true class);
``backdoor_asr_clean`` is the same ASR of the clean model (no attack, no defense, f = 0: the
clean reference cell's fit), the reference "extra clean data needed" is measured against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench.core.types import DatasetInfo, Poisoned
from defenses import DEFENSES

#: the undefended pipeline (its f = 0 fit is the first-pass model)
NO_DEFENSE = [{"name": "none", "params": {}}]


def needs_representation(steps: Sequence[dict[str, Any]]) -> bool:
    """Whether any of the defense steps (specs) reads the first-pass model's representation."""
    return any("representation" in DEFENSES.get(st["name"]).needs for st in steps)


def is_first_pass(spec: dict[str, Any], n_extra: int) -> bool:
    """Whether a fit of cell ``spec`` with ``n_extra`` clean rows is its first-pass model."""
    return n_extra == 0 and list(spec["defense"]) == NO_DEFENSE


def first_pass_key(spec: dict[str, Any]) -> list[Any]:
    """The stage-cache key of a cell's first-pass model: its poisoned set and its model."""
    s = spec
    return ["first-pass", s["dataset"], s["attack"], s["rate"], int(s["seed"]), s["model"]]


def first_pass_model(
    spec: dict[str, Any],
    model_spec: Any,
    info: DatasetInfo,
    poisoned: Poisoned,
    seed: int,
    cache: Any,
) -> tuple[Any, bool]:
    """``(model, reused)``: the cell's model fit on the poisoned set (hard labels, no weights),
    from ``cache`` when the task already fit it. ``seed`` is the model's stage seed."""

    def fit() -> Any:
        model = model_spec.build(info, seed)
        model.fit(poisoned.X, poisoned.y, None)
        return model

    return cache.get(first_pass_key(spec), fit)


def lazy_features(get_model: Callable[[], Any]) -> Callable[[np.ndarray], np.ndarray]:
    """``X -> features`` under the model ``get_model()`` returns, fit on the first call only."""

    def features(X: np.ndarray) -> np.ndarray:
        return np.asarray(get_model().features(X), dtype=np.float64)

    return features


def triggered_test(
    attack: Any, X_test: np.ndarray, y_test: np.ndarray, X_train: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The triggered test rows and their true labels, or None for an attack without trigger.

    X_train: the clean train set (it fixes the trigger's data-dependent values).
    """
    if attack.backdoor_target() is None:
        return None
    rows = attack.trigger_rows(y_test)
    return attack.apply_trigger(X_test[rows], X_train), y_test[rows]


def backdoor_metrics(
    model: Any, attack: Any, triggered: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, float]:
    """``backdoor_asr`` and ``backdoor_robust_acc`` of ``model`` on the triggered test rows
    (both in [0, 1]; NaN when there are no such rows); empty for an attack without trigger."""
    if triggered is None:
        return {}
    X, y = triggered
    if len(y) == 0:
        return {"backdoor_asr": float("nan"), "backdoor_robust_acc": float("nan")}
    pred = model.predict_proba(X).argmax(axis=1)
    return {
        "backdoor_asr": float((pred == attack.backdoor_target()).mean()),
        "backdoor_robust_acc": float((pred == y).mean()),
    }
