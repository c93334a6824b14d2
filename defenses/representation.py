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
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from bench.core.types import DefenseContext, PoisonBenchError, TrainingSet, check_range
from defenses.base import DEFENSES, Filter


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


@DEFENSES.register("spectral_signature")
@dataclass(frozen=True)
class SpectralSignature(Filter):
    """Spectral signatures (Tran, Li & Madry, 2018): per labelled class, centre the rows'
    representations, project them on the top singular vector, and remove the
    ``removal_factor × ε`` share of the class with the largest scores.

    epsilon: the assumed poisoned share of a class, in (0, 0.5], or ``auto``. With a number
        the score is the squared projection (the paper's outlier score). ``auto`` estimates ε
        per class from the data: a two-component Gaussian mixture on the projections; when
        its modes are separated (Ashman's D > ``separation``) ε is the smaller mode's weight
        and the score is the projection oriented towards that mode, else ε = 0 (nothing of
        that class is removed).
    removal_factor: the multiple of ε removed, in (0, 10] (the paper's 1.5).
    separation: ``auto`` only: the Ashman's D above which the projections are two
        populations, in (0, 100].
    """

    epsilon: float | Literal["auto"] = "auto"
    removal_factor: float = 1.5
    separation: float = 2.0

    needs: ClassVar[frozenset[str]] = frozenset({"representation"})

    def __post_init__(self) -> None:
        if self.epsilon != "auto":
            check_range(self.epsilon, "epsilon", 0, 0.5, low_open=True)  # type: ignore[arg-type]
        check_range(self.removal_factor, "removal_factor", 0, 10, low_open=True)
        check_range(self.separation, "separation", 0, 100, low_open=True)

    def label(self) -> str:
        return "spectral_signature" if self.epsilon == "auto" else f"spectral(ε={self.epsilon:g})"

    def score(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        reps = _representation(train, ctx, self.name)
        scores = np.zeros(len(train))
        removed = np.zeros(len(train), dtype=bool)
        seed = int(rng.integers(2**31 - 1))
        for c in np.unique(train.y):
            rows = np.flatnonzero(train.y == c)
            if len(rows) < 3:
                continue
            centred = reps[rows] - reps[rows].mean(axis=0)
            _u, _s, vt = np.linalg.svd(centred, full_matrices=False)
            proj = centred @ vt[0]
            if self.epsilon == "auto":
                eps, oriented = self._auto_epsilon(proj, seed)
                class_scores = oriented
            else:
                eps, class_scores = float(self.epsilon), proj**2
            count = min(len(rows), int(math.floor(self.removal_factor * eps * len(rows) + 0.5)))
            scores[rows] = class_scores
            if count:
                top = np.argsort(-class_scores, kind="stable")[:count]
                removed[rows[top]] = True
        return scores, removed

    def _auto_epsilon(self, proj: np.ndarray, seed: int) -> tuple[float, np.ndarray]:
        """(ε, scores) of one class: the smaller mode's weight and the projection oriented
        towards it, or (0, |projection|) when the projections are one population."""
        from sklearn.mixture import GaussianMixture

        if np.ptp(proj) == 0:
            return 0.0, np.abs(proj)
        gmm = GaussianMixture(2, random_state=seed).fit(proj[:, None])
        mean, var = gmm.means_[:, 0], gmm.covariances_.reshape(2)
        small = int(np.argmin(gmm.weights_))
        if ashman_d(mean, var) <= self.separation:
            return 0.0, np.abs(proj)
        direction = 1.0 if mean[small] > mean[1 - small] else -1.0
        return float(gmm.weights_[small]), direction * proj


@DEFENSES.register("activation_clustering")
@dataclass(frozen=True)
class ActivationClustering(Filter):
    """Activation clustering (Chen et al., 2018): per labelled class, reduce the rows'
    representations to ``n_components`` dimensions (ICA, as in the paper, or PCA), split them
    into two clusters by k-means, and remove the smaller cluster when it is a separate
    population: its relative size is at most ``size_threshold`` *or* the split's silhouette
    score is at least ``silhouette_threshold``.

    reduce: ``ica`` (FastICA) or ``pca``.
    n_components: dimensions kept, 1..1000 (the paper's 10; capped at the class's rows − 1 and
        the representation's width).
    size_threshold: relative size of the smaller cluster at or below which it is flagged, in
        [0, 0.5] (0 turns the size test off).
    silhouette_threshold: silhouette score (in [-1, 1]) at or above which the smaller cluster
        is flagged; above 1 turns the test off.
    """

    reduce: Literal["ica", "pca"] = "ica"
    n_components: int = 10
    size_threshold: float = 0.35
    silhouette_threshold: float = 0.15

    needs: ClassVar[frozenset[str]] = frozenset({"representation"})

    def __post_init__(self) -> None:
        check_range(self.n_components, "n_components", 1, 1000)
        check_range(self.size_threshold, "size_threshold", 0, 0.5)
        check_range(self.silhouette_threshold, "silhouette_threshold", -1, 2)

    def score(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        reps = _representation(train, ctx, self.name)
        scores = np.zeros(len(train))
        removed = np.zeros(len(train), dtype=bool)
        seed = int(rng.integers(2**31 - 1))
        for c in np.unique(train.y):
            rows = np.flatnonzero(train.y == c)
            Z = self._reduce(reps[rows], seed)
            if Z is None:
                continue
            km = KMeans(2, n_init=10, random_state=seed).fit(Z)
            sizes = np.bincount(km.labels_, minlength=2)
            if sizes.min() == 0:
                continue
            small = int(np.argmin(sizes))
            dist = np.linalg.norm(Z[:, None, :] - km.cluster_centers_[None], axis=2)
            # > 0: nearer the smaller cluster's centre than the larger one's
            scores[rows] = dist[:, 1 - small] - dist[:, small]
            sample = min(len(rows), 2000)
            silhouette = float(
                silhouette_score(Z, km.labels_, sample_size=sample, random_state=seed)
            )
            relative = sizes[small] / len(rows)
            if relative <= self.size_threshold or silhouette >= self.silhouette_threshold:
                removed[rows[km.labels_ == small]] = True
        return scores, removed

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
