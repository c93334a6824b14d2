"""Filters in a model's representation space: spectral signatures and activation clustering.

Both read the penultimate-layer representation of the training rows under the cell's
*first-pass* model: the cell's own model fit on the poisoned set (the same fit as the
undefended cell at f = 0, shared through the runner's stage cache, never trained twice). The
runner passes it as ``DefenseContext.features``; a model without a representation
(``ModelSpec.supports_representation``) is refused at config load, naming the models that have
one. Rows are grouped by their (possibly poisoned) label: a backdoor's relabelled rows all sit
in the target class, where they form a second population in representation space.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from bench.core.types import (
    DefenseContext,
    PoisonBenchError,
    StepResult,
    TrainingSet,
    check_range,
)
from defenses.base import DEFENSES, Filter

#: the details both filters write, as results-table columns (``bench/core/schema.py``)
RECORDED: Mapping[str, str] = {
    k: k for k in ("contamination_used", "threshold_rule", "classes_flagged")
}


def _representation(train: TrainingSet, ctx: DefenseContext, name: str) -> np.ndarray:
    if ctx.features is None:
        raise PoisonBenchError(
            f"{name} needs the first-pass model's representation of the rows "
            "(DefenseContext.features), which only the runner provides"
        )
    reps = np.asarray(ctx.features(train.X), dtype=np.float64)
    if reps.shape[0] != len(train):
        raise PoisonBenchError(f"{name}: features gave {reps.shape[0]} rows for {len(train)}")
    return reps.reshape(len(train), -1)


def ashman_d(mean: np.ndarray, var: np.ndarray) -> float:
    """Ashman's D of a two-component 1-D mixture: ``√2·|μ1 − μ2| / √(σ1² + σ2²)``; D > 2 is
    the usual criterion for two cleanly separated modes (Ashman, Bird & Zepf, 1994)."""
    spread = math.sqrt(float(var[0] + var[1]))
    return math.sqrt(2.0) * abs(float(mean[0] - mean[1])) / spread if spread > 0 else math.inf


def robust_z(values: np.ndarray) -> np.ndarray:
    """Each value's modified z-score against the *other* values: ``0.6745·(x − m)/MAD`` with
    the median ``m`` and the median absolute deviation ``MAD`` of the rest (Iglewicz & Hoaglin,
    1993, whose outlier cutoff is 3.5). Leaving the value out keeps a poisoned class from
    widening its own reference. ``inf`` where fewer than 3 other finite values exist (no
    reference: the caller's per-class rule decides alone) or where the others do not vary and
    the value exceeds them; NaN stays NaN."""
    values = np.asarray(values, dtype=np.float64)
    z = np.full(len(values), np.nan)
    for i, x in enumerate(values):
        if not np.isfinite(x):
            continue
        others = np.delete(values, i)
        others = others[np.isfinite(others)]
        if len(others) < 3:
            z[i] = np.inf
            continue
        med = float(np.median(others))
        mad = float(np.median(np.abs(others - med)))
        if mad > 0:
            z[i] = 0.6745 * (x - med) / mad
        else:
            z[i] = np.inf if x > med else 0.0
    return z


def apply_flagging(
    step: SpectralSignature | ActivationClustering,
    train: TrainingSet,
    ctx: DefenseContext,
    rng: np.random.Generator,
) -> StepResult:
    """``Filter.apply`` for the two filters, with what they chose in the details: the share of
    the judged (untrusted) rows removed, the rule, and the flagged classes (class → ε or the
    removed cluster's share of the class). Trusted pool rows are neither judged nor removed."""
    candidates = ~train.trusted
    scores = np.full(len(train), np.nan)
    removed = np.zeros(len(train), dtype=bool)
    flagged: dict[int, float] = {}
    if candidates.any():
        part_scores, part_removed, flagged = step.flag(train.subset(candidates), ctx, rng)
        scores[candidates] = part_scores
        removed[candidates] = part_removed
    result = StepResult(train=train.subset(~removed), scores=scores, removed=removed)
    result.details.update(
        contamination_used=float(removed[candidates].mean()) if candidates.any() else 0.0,
        threshold_rule=step.threshold_rule(),
        classes_flagged={str(c): round(float(v), 4) for c, v in sorted(flagged.items())},
    )
    return result


class RepresentationFilter(Filter):
    """A filter that flags rows by class in the first-pass model's representation space: its
    :meth:`flag` gives the scores, the rows to remove and the flagged classes, and ``apply``
    records what it chose (:func:`apply_flagging`)."""

    needs: ClassVar[frozenset[str]] = frozenset({"representation"})
    recorded: ClassVar[Mapping[str, str]] = RECORDED

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        return apply_flagging(self, train, ctx, rng)

    def score(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        scores, removed, _flagged = self.flag(train, ctx, rng)
        return scores, removed

    def flag(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
        """Scores (higher = more suspicious), the rows to remove, and the flagged classes with
        what was chosen for each (ε, or the removed cluster's share of the class)."""
        raise NotImplementedError


@DEFENSES.register("spectral_signature")
@dataclass(frozen=True)
class SpectralSignature(RepresentationFilter):
    """Spectral signatures (Tran, Li & Madry, 2018): per labelled class, centre the rows'
    representations, project them on the top singular vector, and remove the
    ``removal_factor × ε`` share of the class with the largest scores.

    epsilon: the assumed poisoned share of a class, in (0, 0.5], or ``auto``. With a number
        the score is the squared projection (the paper's outlier score) and every class loses
        its share. ``auto`` estimates ε per class from the data: a two-component Gaussian
        mixture on the projections, whose separation is Ashman's D. A class is flagged when
        its D exceeds ``separation`` *and* is a robust outlier among the other classes' D
        (:func:`robust_z` > ``outlier_z``). In a flagged class the suspect mode is the one less
        like its label (:func:`less_like_label`: with equal-sized modes "the smaller one" is a
        coin toss), ε is its weight and a row's score its log posterior odds of that mode;
        any other class has ε = 0 (nothing removed). So ``auto`` can say "no poison here".
    removal_factor: the multiple of ε removed, in (0, 10] (the paper's 1.5).
    separation: ``auto`` only: the Ashman's D above which the projections are two
        populations, in (0, 100].
    outlier_z: ``auto`` only: the robust z-score (against the other classes' D) above which a
        class's split is unusual, in [0, 100] (Iglewicz & Hoaglin's 3.5), or None for the
        per-class ``separation`` test alone. Measured on mnist-5k's CNN: that test alone
        flags 9 of the 10 clean classes (992 of 2,000 clean rows removed), since a mixture
        fit to a skewed single mode has D > 2.
    """

    epsilon: float | Literal["auto"] = "auto"
    removal_factor: float = 1.5
    separation: float = 2.0
    outlier_z: float | None = 3.5

    def __post_init__(self) -> None:
        if self.epsilon != "auto":
            check_range(self.epsilon, "epsilon", 0, 0.5, low_open=True)  # type: ignore[arg-type]
        check_range(self.removal_factor, "removal_factor", 0, 10, low_open=True)
        check_range(self.separation, "separation", 0, 100, low_open=True)
        if self.outlier_z is not None:
            check_range(self.outlier_z, "outlier_z", 0, 100)

    def label(self) -> str:
        return "spectral_signature" if self.epsilon == "auto" else f"spectral(ε={self.epsilon:g})"

    def threshold_rule(self) -> str:
        """How the share removed is set, for the table (``threshold_rule``)."""
        if self.epsilon != "auto":
            return f"fixed ε {self.epsilon:g} × {self.removal_factor:g}"
        cross = "" if self.outlier_z is None else f", robust z > {self.outlier_z:g} across classes"
        return f"auto: ε per class, Ashman's D > {self.separation:g}{cross}"

    def flag(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
        """Scores (higher = more suspicious), the rows to remove, and the flagged classes with
        what was chosen for each (ε, or the removed cluster's share of the class)."""
        reps = _representation(train, ctx, self.name)
        scores = np.zeros(len(train))
        removed = np.zeros(len(train), dtype=bool)
        seed = int(rng.integers(2**31 - 1))
        classes = [c for c in np.unique(train.y) if (train.y == c).sum() >= 3]
        fits = []  # per class: rows, projection, (ε, oriented score, D) under auto
        for c in classes:
            rows = np.flatnonzero(train.y == c)
            centred = reps[rows] - reps[rows].mean(axis=0)
            _u, _s, vt = np.linalg.svd(centred, full_matrices=False)
            proj = centred @ vt[0]
            fits.append((rows, proj, self._mixture(proj, seed) if self.epsilon == "auto" else None))
        if self.epsilon == "auto":
            d = np.array([fit[2][3] for fit in fits])
            z = robust_z(d) if self.outlier_z is not None else np.full(len(d), np.inf)
            cutoff = self.outlier_z if self.outlier_z is not None else 0.0
            flag = (d > self.separation) & (z > cutoff)
        flagged: dict[int, float] = {}
        for i, (c, (rows, proj, mixture)) in enumerate(zip(classes, fits, strict=True)):
            if mixture is not None:
                eps, class_scores = 0.0, np.abs(proj)
                if flag[i]:
                    # the suspect mode: the one less like its label (equal-sized modes make
                    # "the smaller one" a coin toss); ε is its weight
                    suspect = less_like_label(reps, train.y, int(c), rows, mixture[1])
                    eps = float(mixture[0][suspect])
                    class_scores = mixture[2][:, suspect] - mixture[2][:, 1 - suspect]
            else:
                eps, class_scores = float(self.epsilon), proj**2
            count = min(len(rows), int(math.floor(self.removal_factor * eps * len(rows) + 0.5)))
            scores[rows] = class_scores
            if count:
                top = np.argsort(-class_scores, kind="stable")[:count]
                removed[rows[top]] = True
                flagged[int(c)] = eps
        return scores, removed, flagged

    @staticmethod
    def _mixture(proj: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """One class's two-component mixture on its projections: the two modes' weights,
        each row's mode (0/1), each row's log-likelihood under each mode (n×2, for scores),
        and Ashman's D (0 for a constant projection: one mode)."""
        from sklearn.mixture import GaussianMixture

        if np.ptp(proj) == 0:
            return np.array([1.0, 0.0]), np.zeros(len(proj), int), np.zeros((len(proj), 2)), 0.0
        gmm = GaussianMixture(2, random_state=seed).fit(proj[:, None])
        mean, var = gmm.means_[:, 0], gmm.covariances_.reshape(2)
        resp = gmm.predict_proba(proj[:, None])
        logp = np.log(np.clip(resp, 1e-300, None))
        return gmm.weights_, resp.argmax(axis=1), logp, ashman_d(mean, var)


@DEFENSES.register("activation_clustering")
@dataclass(frozen=True)
class ActivationClustering(RepresentationFilter):
    """Activation clustering (Chen et al., 2018): per labelled class, reduce the rows'
    representations to ``n_components`` dimensions (PCA or ICA), split them into two clusters
    by k-means, and remove one cluster of the classes whose split says "a separate
    population".

    The default decision is data-driven: a class's split is scored by its separation (Ashman's
    D of the rows' positions on the line through the two centres) and the class is flagged
    when that separation exceeds ``separation`` and is a robust outlier among the other
    classes' (:func:`robust_z` > ``outlier_z``; with fewer than 4 classes there is no such
    reference and ``separation`` decides alone). In a flagged class the removed cluster is the one less like its label by
    exclusionary reclassification (the paper's third rule, here without retraining): each
    cluster's rows are classified, in the full representation, by the nearest centre among
    the other classes' centres and the class's other cluster's, and the cluster with the
    smaller share classified as its label is removed (ties: the smaller cluster). Triggered
    rows are other classes' inputs, so with their own cluster left out they are less often
    nearest the target class (measured at 10 % BadNets on mnist-5k's CNN: the triggered
    cluster is removed, recall 0.98, with the split's two clusters equal in size); the size
    rule alone cannot tell them apart once they are about half the class (10 % of the
    non-target rows of a 10-class set are ~47 % of the target class).

    The paper's fixed rules stay available: with ``size_threshold`` or
    ``silhouette_threshold`` set, the smaller cluster is removed when its relative size is at
    most ``size_threshold`` or the split's silhouette is at least ``silhouette_threshold``
    (the cross-class test is then off).

    reduce: ``pca`` (default: measured on mnist-5k's CNN, its 2-means split holds 92 % of the
        triggered rows in one cluster at 10 % BadNets where ICA's holds 57 of 180 apart) or
        ``ica`` (FastICA, the paper's).
    n_components: dimensions kept, 1..1000 (the paper's 10; capped at the class's rows − 1 and
        the representation's width).
    outlier_z: the robust z-score above which a class's separation is unusual, in [0, 100]
        (Iglewicz & Hoaglin's 3.5).
    separation: the Ashman's D a flagged split must exceed, in (0, 100]: 2-means always
        splits, and cutting one Gaussian mode in two gives D ≈ 2.65, so 3 asks for more than
        a cut of a single mode (measured on mnist-5k's CNN: clean classes 2.6-3.2, the
        bimodal digit 1 4.6, the target class under 10 % BadNets 4.3).
    size_threshold: fixed rule: relative size of the smaller cluster at or below which it is
        flagged, in [0, 0.5] (0 turns the size test off), or None (the data-driven rule).
    silhouette_threshold: fixed rule: silhouette score (in [-1, 1]) at or above which the
        smaller cluster is flagged (above 1 turns the test off), or None.
    """

    reduce: Literal["ica", "pca"] = "pca"
    n_components: int = 10
    outlier_z: float = 3.5
    separation: float = 3.0
    size_threshold: float | None = None
    silhouette_threshold: float | None = None

    def __post_init__(self) -> None:
        check_range(self.n_components, "n_components", 1, 1000)
        check_range(self.outlier_z, "outlier_z", 0, 100)
        check_range(self.separation, "separation", 0, 100, low_open=True)
        if self.size_threshold is not None:
            check_range(self.size_threshold, "size_threshold", 0, 0.5)
        if self.silhouette_threshold is not None:
            check_range(self.silhouette_threshold, "silhouette_threshold", -1, 2)

    @property
    def fixed(self) -> bool:
        """Whether the paper's fixed size/silhouette rule decides (not the cross-class one)."""
        return self.size_threshold is not None or self.silhouette_threshold is not None

    def threshold_rule(self) -> str:
        """How the flagged classes are chosen, for the table (``threshold_rule``)."""
        if self.fixed:
            size = 0.0 if self.size_threshold is None else self.size_threshold
            sil = 2.0 if self.silhouette_threshold is None else self.silhouette_threshold
            return f"fixed: relative size <= {size:g} or silhouette >= {sil:g}"
        return (
            f"auto: separation D > {self.separation:g}, robust z > {self.outlier_z:g} across "
            "classes, exclusionary reclassification"
        )

    def flag(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
        """Scores (higher = more suspicious), the rows to remove, and the flagged classes with
        what was chosen for each (ε, or the removed cluster's share of the class)."""
        from sklearn.cluster import KMeans

        reps = _representation(train, ctx, self.name)
        scores = np.zeros(len(train))
        removed = np.zeros(len(train), dtype=bool)
        seed = int(rng.integers(2**31 - 1))
        splits = []  # (class, rows, Z, labels, centres)
        for c in np.unique(train.y):
            rows = np.flatnonzero(train.y == c)
            Z = self._reduce(reps[rows], seed)
            if Z is None:
                continue
            km = KMeans(2, n_init=10, random_state=seed).fit(Z)
            if np.bincount(km.labels_, minlength=2).min() == 0:
                continue
            splits.append((int(c), rows, Z, km.labels_, km.cluster_centers_))
        if self.fixed:
            chosen = [self._fixed_choice(Z, labels, seed) for _c, _r, Z, labels, _k in splits]
        else:
            sep = np.array([separation(Z, labels, k) for _c, _r, Z, labels, k in splits])
            flag = (sep > self.separation) & (robust_z(sep) > self.outlier_z)
            chosen = [
                less_like_label(reps, train.y, c, rows, labels) if flag[i] else None
                for i, (c, rows, _Z, labels, _k) in enumerate(splits)
            ]
        flagged: dict[int, float] = {}
        for (c, rows, Z, labels, centres), suspect in zip(splits, chosen, strict=True):
            small = int(np.argmin(np.bincount(labels, minlength=2)))
            target = small if suspect is None else suspect
            dist = np.linalg.norm(Z[:, None, :] - centres[None], axis=2)
            # > 0: nearer the suspect (or smaller) cluster's centre than the other one's
            scores[rows] = dist[:, 1 - target] - dist[:, target]
            if suspect is not None:
                removed[rows[labels == suspect]] = True
                flagged[c] = float((labels == suspect).mean())
        return scores, removed, flagged

    def _fixed_choice(self, Z: np.ndarray, labels: np.ndarray, seed: int) -> int | None:
        """The paper's fixed rule: the smaller cluster, if small or well separated enough."""
        from sklearn.metrics import silhouette_score

        sizes = np.bincount(labels, minlength=2)
        small = int(np.argmin(sizes))
        sample = min(len(labels), 2000)
        silhouette = float(silhouette_score(Z, labels, sample_size=sample, random_state=seed))
        size = self.size_threshold if self.size_threshold is not None else 0.0
        sil = self.silhouette_threshold if self.silhouette_threshold is not None else 2.0
        return small if sizes[small] / len(labels) <= size or silhouette >= sil else None

    def _reduce(self, R: np.ndarray, seed: int) -> np.ndarray | None:
        """The class's representations in ``n_components`` dimensions (None: too few rows)."""
        R = R[:, R.std(axis=0) > 1e-12]  # dead units carry nothing (and break ICA whitening)
        k = min(self.n_components, len(R) - 1, R.shape[1])
        if len(R) < 4 or k < 1:
            return None
        if self.reduce == "pca":
            from sklearn.decomposition import PCA

            return PCA(n_components=k, random_state=seed).fit_transform(R)
        from sklearn.decomposition import FastICA
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return FastICA(
                n_components=k, whiten="unit-variance", max_iter=400, random_state=seed
            ).fit_transform(R)


def less_like_label(
    reps: np.ndarray, y: np.ndarray, c: int, rows: np.ndarray, labels: np.ndarray
) -> int:
    """Exclusionary reclassification without retraining: which of class ``c``'s two groups
    (``labels`` 0/1 of its ``rows``) is less like its label. Each group's rows are classified
    by the nearest centre among the other classes' centres and the class's other group's;
    the group less often classified as ``c`` is returned (ties: the smaller group)."""
    others = [k for k in np.unique(y) if k != c]
    centres = np.stack([reps[y == k].mean(axis=0) for k in others]) if others else reps[:0]
    own = []
    for j in (0, 1):
        inside = reps[rows[labels == j]]
        if not len(inside) or not (labels != j).any():
            own.append(1.0)
            continue
        dist_rest = np.linalg.norm(inside - reps[rows[labels != j]].mean(axis=0), axis=1)
        if len(centres):
            nearest = np.linalg.norm(inside[:, None, :] - centres[None], axis=2).min(axis=1)
        else:
            nearest = np.full(len(inside), np.inf)
        own.append(float((dist_rest < nearest).mean()))
    if own[0] == own[1]:
        return int(np.argmin(np.bincount(labels, minlength=2)))
    return int(np.argmin(own))


def separation(Z: np.ndarray, labels: np.ndarray, centres: np.ndarray) -> float:
    """Ashman's D of a two-cluster split, on the rows' positions along the line through the
    two centres (0 when the centres coincide)."""
    axis = centres[1] - centres[0]
    norm = float(np.linalg.norm(axis))
    if norm == 0:
        return 0.0
    t = Z @ (axis / norm)
    a, b = t[labels == 0], t[labels == 1]
    return ashman_d(np.array([a.mean(), b.mean()]), np.array([a.var(), b.var()]))
