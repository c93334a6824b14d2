"""What the label-flip lab shows, as pure functions over the harness's own pieces.

The lab trains two models that differ only in their training labels: a clean one, and one whose
training rows of class ``source`` were relabelled ``target`` at a chosen ratio. Everything here
is the harness itself, not a copy: ``bench.data.datasets.split`` draws the train / pool / test rows,
the registered ``label_flip`` attack flips the labels, ``bench.models`` builds the model and
``bench.core.metrics.classification_metrics`` scores it. Both models get the same seed, so the flip
is the only difference between them (the comparison is paired, as in a grid run).

Nothing here imports Streamlit: the pages cache and draw what these functions return, and the
tests call them directly. ``fit_predict`` takes an optional ``progress`` callback so the page can
show how far a fit has come (epochs and batches for the torch models).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from attacks import ATTACKS
from bench.analysis.recovery import crossing_point
from bench.core.metrics import classification_metrics
from bench.core.types import ParamError, PoisonBenchError, Poisoned, TrainingSet
from bench.data.datasets import DATASETS, Dataset, load_dataset, split
from bench.models import MODELS
from bench.run.grid import stage_rng, stage_seed
from bench.run.resolve import bound

#: extra clean data the recovery curve tries, as multiples of the train set (those the pool
#: can supply are used)
RECOVERY_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 1.0)
#: the recovery target is the clean accuracy minus this (the configs' default tolerance)
RECOVERY_TOLERANCE = 0.005
#: the test images the page shows: a mix that always includes source-class images (the ones the
#: attack aims at, marked ★), a plain random draw, or source-class images only
PICK_MODES = ("mix", "random", "source")

#: ``progress(done, text)``: ``done`` in [0, 1], ``text`` a short status such as "epoch 2 of 5"
Progress = Callable[[float, str], None]


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
    """The lab's split of ``dataset`` for ``seed`` (stratified, via ``bench.data.datasets.split``).

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
    pair = {"mode": "targeted", "source": int(source), "target": int(target)}
    attack = bound(ATTACKS, "label_flip", pair, data.info)
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
    progress: Progress | None = None,
) -> np.ndarray:
    """Test-set probabilities (n_test × k) of ``model`` trained on the train rows with labels
    ``y_train``, plus the first ``extra_rows`` rows of the clean pool (trusted, correct labels).

    progress: called as training goes on (see :func:`watch_training`); for models trained in one
    call (scikit-learn) only when the fit ends.
    """
    info = data.info
    spec = bound(MODELS, model, {}, info, "model")
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
    if progress is not None:
        watch_training(estimator, spec, len(train.X), progress)
    estimator.fit(train.X, train.targets, train.sample_weight)
    if progress is not None:
        progress(1.0, "done")
    return estimator.predict_proba(X[data.test])


def watch_training(estimator: Any, spec: Any, n_rows: int, progress: Progress) -> bool:
    """Make a torch estimator report its epochs to ``progress`` while it trains; return whether
    it could (False for estimators trained in one call, e.g. scikit-learn's).

    The torch classifier calls ``prepare(net, X)`` with its fresh network just before its
    training loop; a forward hook on that network counts the training batches
    (``ceil(n_rows / batch_size)`` per epoch), so the lab needs no change to the model code.
    Reported about every 5 % of the batches and at each epoch's end: ``"epoch e of E"``.
    """
    prepare = getattr(estimator, "prepare", None)
    epochs = getattr(spec, "epochs", None)
    batch_size = getattr(spec, "batch_size", None)
    if prepare is None or not epochs or not batch_size or n_rows <= 0:
        return False
    per_epoch = math.ceil(n_rows / int(batch_size))
    total = int(epochs) * per_epoch
    every = max(1, total // 20)

    def watched_prepare(net: Any, X: Any) -> None:
        prepare(net, X)
        seen = [0]

        def count_batch(module: Any, args: Any, output: Any) -> None:
            if not module.training:  # predictions after training are not counted
                return
            seen[0] += 1
            done = seen[0]
            if done % every == 0 or done % per_epoch == 0 or done == total:
                epoch = min(int(epochs), done // per_epoch + (done % per_epoch > 0))
                progress(min(done / total, 1.0), f"epoch {epoch} of {epochs}")

        net.register_forward_hook(count_batch)

    estimator.prepare = watched_prepare
    return True


class FitCache:
    """An explicit, bounded least-recently-used cache of the lab's fits (their test
    probabilities), keyed by everything that determines them.

    The page keeps one per server (``st.cache_resource``) instead of ``st.cache_data``, because
    a fit reports its progress to a bar drawn outside it, and ``st.cache_data`` refuses to
    replay a cached function that drew into an outside block.
    """

    def __init__(self, max_entries: int = 64) -> None:
        if max_entries < 1:
            raise ParamError("max_entries", f"must be >= 1, got {max_entries}")
        self.max_entries = int(max_entries)
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The cached value for ``key``, or ``compute()`` stored under it (the least recently
        used entry is dropped when the cache is full). Two sessions asking for the same new
        key at once may both compute it; the results are identical."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return value


def builds_from_defaults(cls: type) -> bool:
    """Whether a plug-in builds from its defaults (not table, openml, sklearn or torch, which
    need a path or an import path from a config)."""
    try:
        cls.from_params({})  # type: ignore[attr-defined]
    except PoisonBenchError:
        return False
    return True


def lab_choices() -> tuple[list[str], list[str]]:
    """The datasets and the models the labs offer: those that build from their defaults."""
    datasets = [name for name, cls in DATASETS.items() if builds_from_defaults(cls)]
    models = [name for name, cls in MODELS.items() if builds_from_defaults(cls)]
    return datasets, models


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
    """Score both models' test probabilities with ``bench.core.metrics.classification_metrics``."""
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
    """Train the clean and the poisoned model and compare them (the page does the same, with
    each fit kept in a :class:`FitCache`, so new flip settings refit only the poisoned model)."""
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


def metric_delta(change: float, fmt: str, suffix: str = "") -> dict[str, str]:
    """Keyword arguments for ``st.metric``'s delta: ``change`` formatted with ``fmt`` (e.g.
    ``"+.1%"``) and ``suffix``; when it rounds to zero at that precision, ``"no change"`` with
    neither arrow nor colour (a zero shown as "↓ -0.0%" reads as a loss)."""
    text = format(change, fmt)
    digits = text.strip().lstrip("+-−").rstrip("%")
    try:
        zero = float(digits) == 0
    except ValueError:
        zero = False
    if zero or change == 0:
        return {"delta": f"no change{suffix}", "delta_arrow": "off", "delta_color": "off"}
    return {"delta": f"{text}{suffix}"}


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


def pick_examples(outcome: LabOutcome, count: int, seed: int = 0, mode: str = "mix") -> np.ndarray:
    """``count`` test-row positions drawn at random (from ``seed``), sorted.

    mode: ``mix`` (the default) draws half of them, rounded up, from the source class (the rows
    the attack aims at) and the rest from the other classes, so the attack's effect is visible
    in the first draw; ``random`` draws from all test rows; ``source`` from the source class
    only. Raises ParamError naming ``mode`` for another value.
    """
    if mode not in PICK_MODES:
        raise ParamError("mode", f"{mode!r} is not one of {', '.join(PICK_MODES)}")
    rng = np.random.default_rng(seed)
    rows = np.arange(len(outcome.y_test))
    is_source = outcome.y_test == outcome.source
    count = int(count)
    if mode == "random":
        return np.sort(rng.choice(rows, size=min(count, len(rows)), replace=False))
    source_rows = rows[is_source]
    if mode == "source":
        return np.sort(rng.choice(source_rows, size=min(count, len(source_rows)), replace=False))
    other_rows = rows[~is_source]
    n_source = min((count + 1) // 2, len(source_rows))
    n_other = min(count - n_source, len(other_rows))
    picked = np.concatenate(
        [
            rng.choice(source_rows, size=n_source, replace=False),
            rng.choice(other_rows, size=n_other, replace=False),
        ]
    )
    return np.sort(picked)


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


def score(y_test: np.ndarray, proba: np.ndarray, source: int, target: int) -> dict[str, float]:
    """A recovery point: ``accuracy`` and ``attack_success_rate`` (share of source-class test
    rows predicted as ``target``, NaN when the test set has none) of test probabilities."""
    pred = np.asarray(proba).argmax(axis=1)
    from_source = np.asarray(y_test) == source
    asr = float((pred[from_source] == target).mean()) if from_source.any() else math.nan
    return {"accuracy": float((pred == y_test).mean()), "attack_success_rate": asr}


def recovery_curve(
    outcome: LabOutcome,
    fractions: list[float],
    fit_extra: Callable[[float], np.ndarray],
    progress: Callable[[int, float], None] | None = None,
) -> pd.DataFrame:
    """Accuracy and attack success rate of the poisoned model retrained with ``f × n_train``
    extra clean rows, for each ``f`` in ``fractions``: columns ``extra_fraction``,
    ``accuracy``, ``attack_success_rate``.

    The f = 0 point is the poisoned model the lab already trained (``outcome``), not a refit;
    ``fit_extra(f)`` returns the test probabilities for f > 0. ``progress(i, f)`` is called
    after point ``i`` (0-based).
    """
    rows = []
    for i, f in enumerate(fractions):
        proba = outcome.poisoned_proba if f == 0 else fit_extra(f)
        rows.append(
            {
                "extra_fraction": float(f),
                **score(outcome.y_test, proba, outcome.source, outcome.target),
            }
        )
        if progress is not None:
            progress(i, f)
    return pd.DataFrame(rows, columns=["extra_fraction", "accuracy", "attack_success_rate"])


def crossing(fractions: list[float], values: list[float], target: float) -> float | None:
    """The smallest extra-clean fraction at which ``values`` reach ``target`` (linear
    interpolation between grid points: the harness's own rule,
    :func:`bench.analysis.recovery.crossing_point`); None when it never does on this grid."""
    found = crossing_point(np.asarray(fractions, float), np.asarray(values, float), target)
    return float(found) if np.isfinite(found) else None
