"""Outlier filters through PyOD: Isolation Forest, LOF, One-Class SVM, or any PyOD detector.

Per-class filtering (the default) fits one detector per *labelled* class: a row whose label was
flipped looks like an outlier among its new classmates, so a feature-space detector can catch
label flips that a single global detector cannot see.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Literal

import numpy as np

from bench.core.types import (
    DatasetInfo,
    DefenseContext,
    ParamError,
    StepResult,
    TrainingSet,
    check_fraction,
    check_range,
)
from defenses.base import DEFENSES, Filter

#: PyOD detectors offered by their own names; any other is reachable as ``pyod`` + ``detector``.
_PYOD_MODULES = {"iforest": "iforest", "lof": "lof", "ocsvm": "ocsvm"}


@cache
def pyod_detector_class(detector: str) -> type:
    """The PyOD detector class for a name like ``knn``, ``KNN`` or ``ecod`` (module name)."""
    module_name = detector.lower()
    try:
        module = importlib.import_module(f"pyod.models.{module_name}")
    except ImportError:
        raise ParamError(
            "detector", f"{detector!r} is not a PyOD detector module (e.g. knn, ecod, copod, hbos)"
        ) from None
    from pyod.models.base import BaseDetector

    found = [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, BaseDetector)
        and obj is not BaseDetector
        and obj.__module__ == module.__name__
    ]
    exact = [c for c in found if c.__name__.lower() == module_name]
    if not (exact or found):
        raise ParamError("detector", f"pyod.models.{module_name} defines no detector")
    return (exact or found)[0]


#: PyThresh methods ``contamination: auto:<method>`` may name (those that need no extra package)
PYTHRESH_METHODS = (
    "aucp", "boot", "chau", "decomp", "dsn", "eb", "filter", "fwfm", "gesd", "hist", "iqr",
    "karch", "mad", "moll", "mtt", "qmcd", "regr", "wind", "yj", "zscore",
)  # fmt: skip


def parse_contamination(value: Any, field: str = "contamination") -> str | None:
    """The PyThresh method of ``auto`` / ``auto:<method>`` (``""``: the detector's own), or None
    for a fixed share in (0, 0.5] (checked). Raises ParamError naming ``field`` otherwise."""
    if isinstance(value, str):
        kind, _, method = value.partition(":")
        if kind == "auto" and (method == "" or method in PYTHRESH_METHODS):
            return method
        raise ParamError(
            field,
            f"must be a share in (0, 0.5], 'auto' or 'auto:<method>' with a PyThresh method "
            f"({', '.join(PYTHRESH_METHODS)}), got {value!r}",
        )
    check_fraction(value, field, low_open=True)
    if value > 0.5:
        raise ParamError(field, f"{value} is outside (0, 0.5] (PyOD's range)")
    return None


def threshold_scores(raw: np.ndarray, method: str, seed: int) -> np.ndarray:
    """Which of the outlier scores ``raw`` (higher = more outlying) PyThresh's ``method`` flags.

    PyThresh seeds NumPy's global generator when a thresholder is built; the caller's global
    state is restored, so library code leaves it as it found it.
    """
    module = importlib.import_module(f"pythresh.thresholds.{method}")
    cls = getattr(module, method.upper())
    if len(np.unique(raw)) < 2:  # nothing stands out: a constant score flags no row
        return np.zeros(len(raw), dtype=bool)
    state = np.random.get_state()
    try:
        # the scikit-learn surface (fit, then labels_): the same flags as its eval method
        labels = cls(random_state=seed).fit(np.asarray(raw, dtype=np.float64)).labels_
    finally:
        np.random.set_state(state)
    return np.asarray(labels, dtype=bool)


SPACES = "raw, standardized, pca:K, std-pca:K, auto"


def parse_space(space: str, field: str = "space") -> tuple[str, int | None]:
    """Parse ``raw``, ``standardized``, ``pca:K``, ``std-pca:K`` or ``auto`` into (kind, K)."""
    if space in ("raw", "standardized", "auto"):
        return space, None
    for kind in ("pca", "std-pca"):
        if space.startswith(f"{kind}:"):
            try:
                k = int(space[len(kind) + 1 :])
            except ValueError:
                k = 0
            if k > 0:
                return kind, k
    raise ParamError(field, f"{space!r} is not a feature space ({SPACES})")


def project(X: np.ndarray, space: str, is_image: bool, seed: int) -> np.ndarray:
    """Features in the space a detector works in, fit on the rows being filtered.

    ``raw``: the features as they are (flattened). ``standardized``: each feature centred and
    scaled to unit variance. ``pca:K``: the first K principal components of the *raw* features
    (centred, not scaled: a feature's weight is its variance, which suits pixels, where
    scaling would blow up the near-constant border pixels). ``std-pca:K``: standardize, then
    the first K principal components (every feature weighs the same; suits tabular features
    in different units). ``auto``: ``pca:50`` for images, ``standardized`` otherwise.
    K is capped at the number of features and rows.
    """
    flat = X.reshape(len(X), -1).astype(np.float64)
    kind, k = parse_space(space)
    if kind == "auto":
        kind, k = ("pca", 50) if is_image else ("standardized", None)
    if kind == "raw":
        return flat
    if kind in ("standardized", "std-pca"):
        from sklearn.preprocessing import StandardScaler  # here: `poisonbench list` needs none

        flat = StandardScaler().fit_transform(flat)
        if kind == "standardized":
            return flat
    k = min(k, flat.shape[1], len(flat))  # type: ignore[type-var]
    from sklearn.decomposition import PCA

    return PCA(n_components=k, random_state=seed).fit_transform(flat)


def rbf_gamma(Z: np.ndarray, gamma: float | str) -> float:
    """The RBF kernel width ``gamma`` (kernel ``exp(−gamma·‖x − x'‖²)``) for the rows ``Z``.

    ``scale`` (scikit-learn's default for SVMs): ``1 / (n_features · Z.var())``, so the mean
    squared distance between two rows, ``2·n_features·Z.var()``, sits at ``gamma·d² ≈ 2``
    whatever the features' units (1.0 when ``Z`` is constant); ``auto``: ``1 / n_features``
    (PyOD's default: right only when features have unit-order variance; on PCA scores of raw
    digits pixels it gives kernel values ~1e-21 and a detector at chance); a positive number:
    itself.
    """
    if gamma == "scale":
        var = float(np.var(Z))
        return 1.0 / (Z.shape[1] * var) if var > 0 else 1.0
    if gamma == "auto":
        return 1.0 / Z.shape[1]
    return float(gamma)


@dataclass(frozen=True)
class OutlierFilter(Filter):
    """Remove the rows a PyOD detector scores as most outlying: a data-driven share by default.

    per_class: fit one detector per labelled class (default) or one for all rows.
    contamination: ``auto`` (the default): a PyThresh threshold on the detector's scores (per
        class when per_class), the method chosen per detector by measurement (``auto_method``:
        ``dsn`` for iforest, ocsvm and pyod, ``moll`` for lof; docs/defenses/honest-settings.md); or
        ``auto:<method>`` for another PyThresh method; or a fixed share of rows removed (per
        class when per_class), in (0, 0.5].
    space: ``raw``, ``standardized``, ``pca:K`` (PCA of the raw features), ``std-pca:K``
        (standardize, then PCA) or ``auto`` (standardized for tabular data, pca:50 for
        images), fit on the rows being filtered (see :func:`project`).
    """

    per_class: bool = True
    contamination: float | str = "auto"
    space: str = "auto"

    detector_name: ClassVar[str] = ""
    #: the PyThresh method ``contamination: auto`` uses (measured per detector: docs/defenses/honest-settings.md)
    auto_method: ClassVar[str] = "dsn"
    recorded: ClassVar[Mapping[str, str]] = {
        k: k for k in ("contamination_used", "threshold_used", "threshold_rule")
    }
    tune_space: ClassVar[Mapping[str, tuple]] = {
        "contamination": ("auto", 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    }

    def __post_init__(self) -> None:
        parse_contamination(self.contamination)
        parse_space(self.space)

    @property
    def method(self) -> str | None:
        """The PyThresh method that sets the threshold, or None for a fixed share."""
        method = parse_contamination(self.contamination)
        return method or self.auto_method if method is not None else None

    def threshold_rule(self) -> str:
        """How the threshold is set, for the table (``threshold_rule``)."""
        if self.method is None:
            return f"fixed share {self.contamination:g}"
        return f"auto: pythresh {self.method}"

    def cut(self, raw: np.ndarray, seed: int) -> np.ndarray:
        """The rows of ``raw`` (one detector's scores, higher = more outlying) to flag."""
        if self.method is not None:
            return threshold_scores(raw, self.method, seed)
        # PyOD's rule: flag the scores above the (1 − contamination) percentile.
        return raw > np.percentile(raw, 100 * (1 - float(self.contamination)))

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        result = super().apply(train, ctx, rng)
        judged = ~train.trusted
        removed = result.removed if result.removed is not None else np.zeros(len(train), bool)
        flagged_raw = result.scores[removed] if result.scores is not None else np.array([])
        result.details.update(
            contamination_used=float(removed[judged].mean()) if judged.any() else 0.0,
            # per class, scores are within-class ranks: no one threshold to report
            threshold_used=(
                float(flagged_raw.min()) if not self.per_class and len(flagged_raw) else None
            ),
            threshold_rule=self.threshold_rule(),
        )
        return result

    def detector_kwargs(self) -> dict[str, Any]:
        return {}

    def make_detector(self, n_rows: int, seed: int, **overrides: Any) -> Any:
        """A fresh PyOD detector for ``n_rows`` rows; ``overrides`` replace detector kwargs."""
        cls = pyod_detector_class(self.detector_name)
        kwargs = {**self.detector_kwargs(), **overrides}
        accepted = inspect.signature(cls.__init__).parameters
        if "random_state" in accepted:
            kwargs["random_state"] = seed
        if "n_neighbors" in accepted:
            kwargs["n_neighbors"] = max(1, min(kwargs.get("n_neighbors", 20), n_rows - 1))
        # With a data-driven threshold PyOD's own labels are not used (see ``cut``).
        share = 0.1 if self.method is not None else float(self.contamination)
        return cls(contamination=share, **kwargs)

    def score(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        seed = int(rng.integers(2**31 - 1))
        Z = project(train.X, self.space, ctx.info.image_shape is not None, seed)
        groups = (
            [np.flatnonzero(train.y == c) for c in np.unique(train.y)]
            if self.per_class
            else [np.arange(len(train))]
        )
        from scipy.stats import rankdata

        scores = np.zeros(len(train))
        removed = np.zeros(len(train), dtype=bool)
        for rows in groups:
            if len(rows) < 3:  # too few rows to call any of them an outlier
                continue
            raw, labels = self.fit_scores(Z[rows], seed)
            # Scores of different per-class detectors are not comparable: rank within the group.
            scores[rows] = rankdata(raw) / len(rows) if self.per_class else raw
            removed[rows] = labels
        return scores, removed

    def fit_scores(self, Z: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Outlier scores of the rows ``Z`` (higher = more outlying) and the boolean mask of the
        rows flagged (see ``cut``), from a detector fit on ``Z``."""
        detector = self.make_detector(len(Z), seed).fit(Z)
        raw = np.asarray(detector.decision_scores_, dtype=np.float64)
        if self.method is None:
            return raw, np.asarray(detector.labels_, dtype=bool)
        return raw, self.cut(raw, seed)


@DEFENSES.register("iforest")
@dataclass(frozen=True)
class IsolationForestFilter(OutlierFilter):
    """Isolation Forest (PyOD ``IForest``). n_estimators: trees, 1..10000."""

    n_estimators: int = 100
    detector_name: ClassVar[str] = "iforest"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self.n_estimators, "n_estimators", 1, 10_000)

    def detector_kwargs(self) -> dict[str, Any]:
        return {"n_estimators": self.n_estimators}


@DEFENSES.register("lof")
@dataclass(frozen=True)
class LOFFilter(OutlierFilter):
    """Local Outlier Factor (PyOD ``LOF``). n_neighbors: 1..10000."""

    n_neighbors: int = 20
    detector_name: ClassVar[str] = "lof"
    auto_method: ClassVar[str] = "moll"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self.n_neighbors, "n_neighbors", 1, 10_000)

    def detector_kwargs(self) -> dict[str, Any]:
        return {"n_neighbors": self.n_neighbors}


@DEFENSES.register("ocsvm")
@dataclass(frozen=True)
class OCSVMFilter(OutlierFilter):
    """One-Class SVM (PyOD ``OCSVM``, RBF kernel), exact or approximate.

    nu: bound on the share of training errors, in (0, 1].
    gamma: RBF kernel width: ``scale`` (default: ``1 / (n_features · var)`` of the rows each
        detector is fit on, so the kernel adapts to the space's units), ``auto``
        (``1 / n_features``, PyOD's default) or a positive number; the exact and Nystroem
        variants use the same value (see :func:`rbf_gamma`).
    approx: ``exact`` (libsvm, O(n²) and more: ~60 s on 60k × 50) or ``nystroem`` (an
        ``n_components``-term Nystroem map of the same RBF kernel + linear ``SGDOneClassSVM``,
        linear in n).
    n_components: Nystroem features (``approx: nystroem`` only), 1..100000.
    max_fit_rows: fit on at most this many rows (a seeded subsample per group), then score
        every row; null fits on all rows.
    The label says which was used, e.g. ``ocsvm(nystroem:300)`` or ``ocsvm(fit≤5000)``.
    """

    nu: float = 0.5
    gamma: float | Literal["scale", "auto"] = "scale"
    approx: Literal["exact", "nystroem"] = "exact"
    n_components: int = 300
    max_fit_rows: int | None = None
    detector_name: ClassVar[str] = "ocsvm"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction(self.nu, "nu", low_open=True)
        if isinstance(self.gamma, str):
            if self.gamma not in ("scale", "auto"):
                raise ParamError(
                    "gamma", f"must be 'scale', 'auto' or a number, got {self.gamma!r}"
                )
        else:
            check_range(self.gamma, "gamma", 0, 1e6, low_open=True)
        check_range(self.n_components, "n_components", 1, 100_000)
        if self.max_fit_rows is not None:
            check_range(self.max_fit_rows, "max_fit_rows", 2, 10**9)

    def detector_kwargs(self) -> dict[str, Any]:
        return {"nu": self.nu}

    def label(self) -> str:
        parts = []
        if self.gamma != "scale":
            parts.append(f"gamma={self.gamma}")
        if self.approx != "exact":
            parts.append(f"{self.approx}:{self.n_components}")
        if self.max_fit_rows is not None:
            parts.append(f"fit≤{self.max_fit_rows}")
        return f"ocsvm({','.join(parts)})" if parts else "ocsvm"

    def fit_scores(self, Z: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        subsample = self.max_fit_rows is not None and len(Z) > self.max_fit_rows
        fit_rows = Z
        if subsample:
            pick = np.random.default_rng(seed).choice(len(Z), self.max_fit_rows, replace=False)
            fit_rows = Z[np.sort(pick)]
        # One numeric width from the rows fit on, so exact and Nystroem use the same kernel.
        gamma = rbf_gamma(fit_rows, self.gamma)
        if self.approx == "exact" and not subsample:
            detector = self.make_detector(len(Z), seed, gamma=gamma).fit(Z)
            raw = np.asarray(detector.decision_scores_, dtype=np.float64)
            if self.method is not None:
                return raw, self.cut(raw, seed)
            return raw, np.asarray(detector.labels_, dtype=bool)
        if self.approx == "exact":
            detector = self.make_detector(len(fit_rows), seed, gamma=gamma).fit(fit_rows)
            raw = np.asarray(detector.decision_function(Z), dtype=np.float64)
        else:
            from sklearn.kernel_approximation import Nystroem
            from sklearn.linear_model import SGDOneClassSVM

            feature_map = Nystroem(
                gamma=gamma,
                n_components=min(self.n_components, len(fit_rows)),
                random_state=seed,
            )
            model = SGDOneClassSVM(nu=self.nu, random_state=seed)
            model.fit(feature_map.fit_transform(fit_rows))
            raw = -np.asarray(model.decision_function(feature_map.transform(Z)), dtype=np.float64)
        return raw, self.cut(raw, seed)


@DEFENSES.register("pyod")
@dataclass(frozen=True)
class PyODFilter(OutlierFilter):
    """Any PyOD detector by module name (``knn``, ``ecod``, ``copod``, ``hbos``, ...).

    detector: the PyOD module name under ``pyod.models``.
    """

    detector: str = "knn"

    def __post_init__(self) -> None:
        super().__post_init__()
        pyod_detector_class(self.detector)

    @property
    def detector_name(self) -> str:  # type: ignore[override]
        return self.detector

    def label(self) -> str:
        return f"pyod({self.detector})"

    def bind(self, info: DatasetInfo, path: str = "") -> PyODFilter:
        return self
