"""What the label-flip lab shows, as pure functions over the harness's own pieces.

The lab trains two models that differ only in their training labels: a clean one, and one whose
training rows of class ``source`` were relabelled ``target`` at a chosen ratio. Everything here
is the harness itself, not a copy: ``bench.datasets.split`` draws the train / pool / test rows,
the registered ``label_flip`` attack flips the labels, ``bench.models`` builds the model and
``bench.metrics.classification_metrics`` scores it. Both models get the same seed, so the flip
is the only difference between them (the comparison is paired, as in a grid run).

Nothing here imports Streamlit: the pages cache and draw what these functions return, and the
tests call them directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from attacks import ATTACKS
from bench.datasets import Dataset, load_dataset, split
from bench.grid import stage_rng, stage_seed
from bench.metrics import classification_metrics
from bench.models import MODELS
from bench.types import ParamError, Poisoned, TrainingSet

#: extra clean data the recovery curve tries, as multiples of the train set (those the pool
#: can supply are used)
RECOVERY_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 1.0)
#: the recovery target is the clean accuracy minus this (the configs' default tolerance)
RECOVERY_TOLERANCE = 0.005


def default_sizes(n_rows: int) -> tuple[int, int]:
    """(train rows, test rows) the lab uses for a dataset of ``n_rows``: half (at most 2,000) for
    training and a quarter (at most 1,000) for testing; the rest is the clean pool."""
    return min(2000, n_rows // 2), min(1000, n_rows // 4)


@dataclass(frozen=True)
class LabData:
    """One seeded split of a dataset: train rows (what the attacker flips), clean pool, test."""

    dataset: Dataset
    train: np.ndarray  # row indices into dataset.X / dataset.y
    pool: np.ndarray
    test: np.ndarray

    @property
    def info(self) -> Any:
        return self.dataset.info

    @property
    def y_train(self) -> np.ndarray:
        return self.dataset.y[self.train]

    @property
    def y_test(self) -> np.ndarray:
        return self.dataset.y[self.test]


def load_lab_data(
    dataset: str, seed: int = 0, n_train: int | None = None, data_dir: str | None = None
) -> LabData:
    """The lab's split of ``dataset`` for ``seed`` (stratified, via ``bench.datasets.split``).

    n_train: training rows (default: see :func:`default_sizes`); the test set keeps its default
    size so accuracies stay comparable when the training size changes.
    """
    data = load_dataset(dataset, data_dir)
    default_train, n_test = default_sizes(len(data.y))
    n_train = default_train if n_train is None else int(n_train)
    parts = split(data, n_train, n_test, "rest", rng=stage_rng("lab-split", dataset, seed))
    return LabData(dataset=data, train=parts.train, pool=parts.pool, test=parts.test)


def flip_labels(data: LabData, source: int, target: int, ratio: float, seed: int = 0) -> Poisoned:
    """The registered ``label_flip`` attack (targeted) applied to the train rows.

    ratio: fraction of the training rows of class ``source`` relabelled ``target``, in [0, 1].
    Raises ParamError naming ``source`` / ``target`` / ``rate`` for invalid choices.
    """
    attack = (
        ATTACKS.get("label_flip")
        .from_params({"mode": "targeted", "source": int(source), "target": int(target)})
        .bind(data.info)
    )
    rng = stage_rng("lab-attack", data.info.name, int(source), int(target), float(ratio), seed)
    return attack.poison(data.dataset.X[data.train], data.y_train, float(ratio), rng)


def model_seed(data: LabData, model: str, seed: int) -> int:
    """The model's seed: the same for the clean and the poisoned fit, so they are paired."""
    return stage_seed("lab-model", data.info.name, model, seed)


def fit_predict(
    data: LabData,
    model: str,
    y_train: np.ndarray,
    seed: int = 0,
    extra_rows: int = 0,
) -> np.ndarray:
    """Test-set probabilities (n_test × k) of ``model`` trained on the train rows with labels
    ``y_train``, plus the first ``extra_rows`` rows of the clean pool (trusted, correct labels)."""
    info = data.info
    spec = MODELS.get(model, "model").from_params({}, "model").bind(info, "model")
    if extra_rows > len(data.pool):
        raise ParamError(
            "extra_rows", f"{extra_rows} rows asked for, the clean pool has {len(data.pool)}"
        )
    X = data.dataset.X
    train = TrainingSet(
        X=X[data.train], y=y_train, mask=y_train != data.y_train, n_classes=info.n_classes
    )
    pool = data.pool[:extra_rows]
    train = train.append(X[pool], data.dataset.y[pool])
    estimator = spec.build(info, model_seed(data, model, seed))
    estimator.fit(train.X, train.targets, train.sample_weight)
    return estimator.predict_proba(X[data.test])


@dataclass(frozen=True)
class LabOutcome:
    """The clean and the poisoned model's test predictions and metrics, and what was flipped."""

    class_names: tuple[str, ...]
    source: int
    target: int
    ratio: float
    y_test: np.ndarray
    clean_proba: np.ndarray
    poisoned_proba: np.ndarray
    flipped: np.ndarray  # indices into the train rows whose label was flipped
    n_source_train: int  # training rows of the source class (the rows the ratio counts from)
    n_train: int
    clean: dict[str, Any]  # classification_metrics of the clean model
    poisoned: dict[str, Any]

    @property
    def clean_pred(self) -> np.ndarray:
        return self.clean_proba.argmax(axis=1)

    @property
    def poisoned_pred(self) -> np.ndarray:
        return self.poisoned_proba.argmax(axis=1)


def compare(
    data: LabData,
    source: int,
    target: int,
    ratio: float,
    clean_proba: np.ndarray,
    poisoned_proba: np.ndarray,
    flipped: np.ndarray,
) -> LabOutcome:
    """Score both models' test probabilities with ``bench.metrics.classification_metrics``."""
    k = data.info.n_classes
    pair = (int(source), int(target))
    y_test = data.y_test
    return LabOutcome(
        class_names=data.info.class_names,
        source=int(source),
        target=int(target),
        ratio=float(ratio),
        y_test=y_test,
        clean_proba=clean_proba,
        poisoned_proba=poisoned_proba,
        flipped=np.asarray(flipped, dtype=np.int64),
        n_source_train=int((data.y_train == source).sum()),
        n_train=len(data.train),
        clean=classification_metrics(y_test, clean_proba, k, pair),
        poisoned=classification_metrics(y_test, poisoned_proba, k, pair),
    )


def run_lab(
    dataset: str,
    model: str,
    source: int,
    target: int,
    ratio: float,
    seed: int = 0,
    n_train: int | None = None,
    data_dir: str | None = None,
) -> LabOutcome:
    """Train the clean and the poisoned model and compare them (the pages do the same, with each
    fit cached separately so that moving the ratio refits only the poisoned model)."""
    data = load_lab_data(dataset, seed, n_train, data_dir)
    poisoned = flip_labels(data, source, target, ratio, seed)
    clean_proba = fit_predict(data, model, data.y_train, seed)
    poisoned_proba = fit_predict(data, model, poisoned.y, seed)
    return compare(
        data, source, target, ratio, clean_proba, poisoned_proba, np.flatnonzero(poisoned.mask)
    )


# ---------------------------------------------------------------------------------------------
# What the page shows
# ---------------------------------------------------------------------------------------------


def summarize(outcome: LabOutcome) -> dict[str, float | int]:
    """The headline numbers: flipped labels, accuracy and log-loss of both models, accuracy lost
    (clean − poisoned, in [−1, 1]), attack success rate of both (share of source-class test rows
    predicted as the target, in [0, 1]) and source-class accuracy of both."""
    c, p = outcome.clean, outcome.poisoned
    return {
        "n_flipped": len(outcome.flipped),
        "n_source_train": outcome.n_source_train,
        "flipped_share_of_train": len(outcome.flipped) / outcome.n_train,
        "clean_accuracy": c["accuracy"],
        "poisoned_accuracy": p["accuracy"],
        "accuracy_lost": c["accuracy"] - p["accuracy"],
        "clean_log_loss": c["log_loss"],
        "poisoned_log_loss": p["log_loss"],
        "clean_asr": c["attack_success_rate"],
        "poisoned_asr": p["attack_success_rate"],
        "clean_source_accuracy": c["source_accuracy"],
        "poisoned_source_accuracy": p["source_accuracy"],
    }


def role(outcome: LabOutcome, label: int) -> str:
    """``source``, ``target`` or an empty string: how a label takes part in the flip."""
    return {outcome.source: "source", outcome.target: "target"}.get(int(label), "")


def per_label_table(outcome: LabOutcome) -> pd.DataFrame:
    """Per-label precision, recall and F1 of both models (one row per label, ``role`` marks the
    source and the target) and the change in F1 (poisoned − clean)."""
    rows = []
    for i, name in enumerate(outcome.class_names):
        row: dict[str, Any] = {"label": name, "role": role(outcome, i)}
        for which, metrics in (("clean", outcome.clean), ("poisoned", outcome.poisoned)):
            for m in ("precision", "recall", "f1"):
                row[f"{which} {m}"] = metrics["per_class"][m][i]
        row["Δ f1"] = row["poisoned f1"] - row["clean f1"]
        row["support"] = outcome.clean["per_class"]["support"][i]
        rows.append(row)
    return pd.DataFrame(rows)


def confusion_matrices(outcome: LabOutcome) -> dict[str, pd.DataFrame]:
    """Confusion matrices (rows: true label, columns: predicted) of the clean and the poisoned
    model and their difference (poisoned − clean), as labelled frames of counts."""
    names = list(outcome.class_names)
    clean = pd.DataFrame(outcome.clean["confusion"], index=names, columns=names)
    poisoned = pd.DataFrame(outcome.poisoned["confusion"], index=names, columns=names)
    return {"clean": clean, "poisoned": poisoned, "difference": poisoned - clean}


def confusion_long(matrix: pd.DataFrame) -> pd.DataFrame:
    """A confusion matrix as a long frame (``true``, ``predicted``, ``count``) for heatmaps."""
    long = matrix.rename_axis(index="true", columns="predicted").stack().rename("count")
    return long.reset_index()


def prediction_distribution(outcome: LabOutcome) -> pd.DataFrame:
    """How many test rows each model assigns to each label, next to the true label counts:
    a long frame (``label``, ``series`` in {true labels, clean model, poisoned model}, ``count``)."""
    k = len(outcome.class_names)
    series = {
        "true labels": np.bincount(outcome.y_test, minlength=k),
        "clean model": np.asarray(outcome.clean["pred_distribution"]),
        "poisoned model": np.asarray(outcome.poisoned["pred_distribution"]),
    }
    rows = [
        {"label": outcome.class_names[i], "series": name, "count": int(counts[i])}
        for name, counts in series.items()
        for i in range(k)
    ]
    return pd.DataFrame(rows)


def pick_examples(
    outcome: LabOutcome, count: int, seed: int = 0, source_only: bool = False
) -> np.ndarray:
    """``count`` test-row positions drawn at random (from ``seed``), sorted; with
    ``source_only`` only rows of the source class (the ones the attack aims at)."""
    candidates = np.arange(len(outcome.y_test))
    if source_only:
        candidates = candidates[outcome.y_test == outcome.source]
    count = min(int(count), len(candidates))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=count, replace=False))


def prediction_rows(outcome: LabOutcome, positions: np.ndarray) -> pd.DataFrame:
    """Both models' predictions on chosen test rows: true label, predictions, confidences,
    whether the row is of the source class, and whether the poisoned model changed its mind."""
    names = outcome.class_names
    rows = []
    for i in positions:
        c, p = int(outcome.clean_pred[i]), int(outcome.poisoned_pred[i])
        rows.append(
            {
                "test row": int(i),
                "true": names[outcome.y_test[i]],
                "source class": bool(outcome.y_test[i] == outcome.source),
                "clean prediction": names[c],
                "clean confidence": float(outcome.clean_proba[i, c]),
                "poisoned prediction": names[p],
                "poisoned confidence": float(outcome.poisoned_proba[i, p]),
                "changed": c != p,
            }
        )
    return pd.DataFrame(rows)


def as_image(x: np.ndarray, image_shape: tuple[int, ...] | None) -> np.ndarray | None:
    """A row of an image dataset as an h×w (grey) or h×w×3 array in [0, 1] for display; None
    for tabular rows."""
    if image_shape is None:
        return None
    c, h, w = image_shape
    img = np.asarray(x, dtype=np.float32).reshape(c, h, w)
    img = img[0] if c == 1 else np.moveaxis(img[:3], 0, -1)
    lo, hi = float(img.min()), float(img.max())
    if lo < 0 or hi > 1:  # standardized images: rescale for display only
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img


# ---------------------------------------------------------------------------------------------
# Recovery: how much extra clean data brings the clean accuracy back
# ---------------------------------------------------------------------------------------------


def recovery_fractions(data: LabData, fractions: tuple[float, ...] = RECOVERY_FRACTIONS) -> list:
    """The extra-clean fractions (multiples of the train set) the clean pool can supply."""
    n = len(data.train)
    return [float(f) for f in fractions if int(round(f * n)) <= len(data.pool)]


def crossing(fractions: list[float], values: list[float], target: float) -> float | None:
    """The smallest extra-clean fraction at which ``values`` reach ``target`` (linear
    interpolation between grid points); None when it never does on this grid.

    Uses ``bench.recovery.crossing_point`` when that module provides it (the harness's own
    estimate); otherwise the same rule computed here with numpy.
    """
    try:
        from bench.recovery import crossing_point
    except ImportError:
        crossing_point = None
    if crossing_point is not None:
        found = crossing_point(np.asarray(fractions, float), np.asarray(values, float), target)
        if found is None:
            return None
        found = float(found)
        return found if np.isfinite(found) else None
    f = np.asarray(fractions, dtype=float)
    v = np.asarray(values, dtype=float)
    reached = np.flatnonzero(v >= target)
    if len(reached) == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(f[0])
    # between the last grid point below the target and the first one at or above it
    return float(np.interp(target, [v[i - 1], v[i]], [f[i - 1], f[i]]))
