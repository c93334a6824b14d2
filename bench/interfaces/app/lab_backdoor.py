"""What the lab's backdoor mode shows, as pure functions over the harness's own pieces.

The backdoor lab trains two models on one seeded split: a clean one, and one trained on the
train rows the registered ``backdoor`` attack stamped with its trigger (dirty label: a share of
the non-target rows, relabelled as the target; clean label: a share of the target rows, labels
kept). Both are then shown the test rows whose true class is not the target, with the trigger
stamped on them: the share predicted as the target is each model's attack success rate
(``backdoor_asr``, as the grid runner measures it, ``bench.run.backdoor``), and clean accuracy
on the untouched test rows says what the backdoor costs the defender to notice.

The split, the model seed and the fit progress are the label-flip lab's
(:mod:`bench.interfaces.app.lab`); nothing here imports Streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from attacks import ATTACKS
from bench.core.metrics import classification_metrics
from bench.core.types import ParamError, Poisoned
from bench.interfaces.app.lab import LabData, Progress, load_lab_data, model_seed, watch_training
from bench.models import MODELS
from bench.run.grid import stage_rng

#: the triggers the lab offers for image datasets and for tabular ones
IMAGE_TRIGGERS = ("patch", "blend")
TABULAR_TRIGGERS = ("features",)
#: tabular trigger: this many columns (those that vary least in the train set) set to the
#: train set's maximum, a value those columns almost never hold
TRIGGER_COLUMNS = 4


def triggers_for(data: LabData) -> tuple[str, ...]:
    """The triggers that fit ``data``: patch and blend for images, features for tables."""
    return IMAGE_TRIGGERS if data.info.image_shape is not None else TABULAR_TRIGGERS


def attack_params(data: LabData, trigger: str, target: int, clean_label: bool) -> dict[str, Any]:
    """The ``backdoor`` attack's parameters for the lab's choice (the configs' defaults: a 3×3
    patch at the train maximum, a blend at alpha 0.2, or :data:`TRIGGER_COLUMNS` features)."""
    params: dict[str, Any] = {
        "trigger": trigger,
        "target": int(target),
        "clean_label": bool(clean_label),
    }
    if trigger == "features":
        X = data.dataset.X[data.train].reshape(len(data.train), -1)
        quiet = np.argsort(X.std(axis=0), kind="stable")[: min(TRIGGER_COLUMNS, X.shape[1])]
        params.update(features=sorted(int(c) for c in quiet), value=float(X.max()))
    return params


def backdoor_attack(data: LabData, trigger: str, target: int, clean_label: bool = False) -> Any:
    """The registered ``backdoor`` attack bound to ``data`` (ParamError names a bad field)."""
    if trigger not in triggers_for(data):
        raise ParamError(
            "trigger",
            f"{trigger!r} does not fit {data.info.name}: one of {', '.join(triggers_for(data))}",
        )
    params = attack_params(data, trigger, target, clean_label)
    return ATTACKS.get("backdoor").from_params(params).bind(data.info)


def poison(data: LabData, attack: Any, rate: float, seed: int = 0) -> Poisoned:
    """The attack applied to the train rows at ``rate`` (a share of the eligible rows), its
    generator keyed by the dataset, the attack's parameters, the rate and the seed."""
    rng = stage_rng("lab-backdoor", data.info.name, repr(attack), float(rate), seed)
    return attack.poison(data.dataset.X[data.train], data.y_train, float(rate), rng)


def triggered_test(data: LabData, attack: Any) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in the test set) of the rows the ASR is measured on, and those rows with the
    trigger stamped (the trigger's data-dependent values come from the clean train rows)."""
    X_test = data.dataset.X[data.test]
    rows = np.flatnonzero(attack.trigger_rows(data.y_test))
    return rows, attack.apply_trigger(X_test[rows], data.dataset.X[data.train])


def fit_two(
    data: LabData,
    model: str,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_triggered: np.ndarray,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Test-set probabilities of ``model`` fit on (``X_train``, ``y_train``): on the clean test
    rows and on ``X_triggered``. The model's seed is the lab's (the same for both fits)."""
    info = data.info
    spec = MODELS.get(model, "model").from_params({}, "model").bind(info, "model")
    estimator = spec.build(info, model_seed(data, model, seed))
    if progress is not None:
        watch_training(estimator, spec, len(y_train), progress)
    estimator.fit(X_train, y_train)
    if progress is not None:
        progress(1.0, "done")
    clean = estimator.predict_proba(data.dataset.X[data.test])
    triggered = (
        estimator.predict_proba(X_triggered) if len(X_triggered) else np.zeros((0, info.n_classes))
    )
    return clean, triggered


@dataclass(frozen=True)
class BackdoorOutcome:
    """Both models on the clean test rows and on the triggered ones, and what was poisoned."""

    class_names: tuple[str, ...]
    trigger: str
    target: int
    clean_label: bool
    rate: float
    y_test: np.ndarray
    triggered_rows: np.ndarray  # test positions the trigger was stamped on
    X_triggered: np.ndarray
    image_shape: tuple[int, ...] | None
    clean_proba: np.ndarray  # clean test rows
    poisoned_proba: np.ndarray
    clean_triggered: np.ndarray  # triggered test rows
    poisoned_triggered: np.ndarray
    n_poisoned: int
    n_eligible: int
    n_train: int

    @property
    def y_triggered(self) -> np.ndarray:
        return self.y_test[self.triggered_rows]


def run_backdoor_lab(
    dataset: str,
    model: str,
    trigger: str,
    target: int,
    rate: float,
    clean_label: bool = False,
    seed: int = 0,
    n_train: int | None = None,
    data_dir: str | None = None,
) -> BackdoorOutcome:
    """Train the clean and the backdoored model and compare them (the page does the same, with
    each fit cached)."""
    data = load_lab_data(dataset, seed, n_train, data_dir)
    attack = backdoor_attack(data, trigger, target, clean_label)
    poisoned = poison(data, attack, rate, seed)
    rows, X_trig = triggered_test(data, attack)
    clean = fit_two(data, model, data.dataset.X[data.train], data.y_train, X_trig, seed)
    dirty = fit_two(data, model, poisoned.X, poisoned.y, X_trig, seed)
    return outcome_of(data, attack, rate, poisoned, rows, X_trig, clean, dirty)


def outcome_of(
    data: LabData,
    attack: Any,
    rate: float,
    poisoned: Poisoned,
    rows: np.ndarray,
    X_triggered: np.ndarray,
    clean: tuple[np.ndarray, np.ndarray],
    dirty: tuple[np.ndarray, np.ndarray],
) -> BackdoorOutcome:
    """A :class:`BackdoorOutcome` from the two fits' (clean test, triggered test) proba."""
    return BackdoorOutcome(
        class_names=data.info.class_names,
        trigger=attack.trigger,
        target=int(attack.target),
        clean_label=bool(attack.clean_label),
        rate=float(rate),
        y_test=data.y_test,
        triggered_rows=rows,
        X_triggered=X_triggered,
        image_shape=data.info.image_shape,
        clean_proba=clean[0],
        poisoned_proba=dirty[0],
        clean_triggered=clean[1],
        poisoned_triggered=dirty[1],
        n_poisoned=int(poisoned.mask.sum()),
        n_eligible=int(attack.eligible(data.y_train).sum()),
        n_train=len(data.train),
    )


def asr(y_true: np.ndarray, proba: np.ndarray, target: int) -> float:
    """Share of the triggered rows predicted as ``target`` (NaN without rows)."""
    return float((proba.argmax(axis=1) == target).mean()) if len(y_true) else float("nan")


def robust_accuracy(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Share of the triggered rows still predicted as their true class (NaN without rows)."""
    return float((proba.argmax(axis=1) == y_true).mean()) if len(y_true) else float("nan")


def backdoor_summary(outcome: BackdoorOutcome) -> dict[str, float | int]:
    """The headline numbers: rows poisoned (of the eligible), clean accuracy of both models,
    the two ASRs and the two robust accuracies on the triggered test rows (all in [0, 1])."""
    k = len(outcome.class_names)
    y, yt = outcome.y_test, outcome.y_triggered
    return {
        "n_poisoned": outcome.n_poisoned,
        "n_eligible": outcome.n_eligible,
        "n_triggered_test": len(yt),
        "clean_accuracy": classification_metrics(y, outcome.clean_proba, k)["accuracy"],
        "poisoned_accuracy": classification_metrics(y, outcome.poisoned_proba, k)["accuracy"],
        "clean_asr": asr(yt, outcome.clean_triggered, outcome.target),
        "poisoned_asr": asr(yt, outcome.poisoned_triggered, outcome.target),
        "clean_robust_acc": robust_accuracy(yt, outcome.clean_triggered),
        "poisoned_robust_acc": robust_accuracy(yt, outcome.poisoned_triggered),
    }


def pick_triggered(outcome: BackdoorOutcome, count: int, seed: int = 0) -> np.ndarray:
    """``count`` positions into the triggered rows, drawn at random from ``seed``, sorted."""
    n = len(outcome.triggered_rows)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(int(count), n), replace=False))


def triggered_prediction_rows(outcome: BackdoorOutcome, picks: np.ndarray) -> pd.DataFrame:
    """Both models' predictions on chosen triggered test rows: the true label, each model's
    prediction and confidence, and whether the backdoored model obeyed the trigger."""
    names = outcome.class_names
    rows = []
    for j in picks:
        c = int(outcome.clean_triggered[j].argmax())
        p = int(outcome.poisoned_triggered[j].argmax())
        rows.append(
            {
                "test row": int(outcome.triggered_rows[j]),
                "true": names[int(outcome.y_triggered[j])],
                "clean prediction": names[c],
                "clean confidence": float(outcome.clean_triggered[j, c]),
                "backdoored prediction": names[p],
                "backdoored confidence": float(outcome.poisoned_triggered[j, p]),
                "obeys trigger": p == outcome.target,
            }
        )
    return pd.DataFrame(rows)
