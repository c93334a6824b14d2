"""Feature noise: rows replaced by uniform values within the feature ranges, or additive Gaussian."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from attacks.base import ATTACKS, Attack
from bench.core.types import check_range


@ATTACKS.register("feature_noise")
@dataclass(frozen=True)
class FeatureNoise(Attack):
    """Corrupt the features of chosen train rows; labels stay.

    mode: ``uniform`` replaces each chosen row by values drawn uniformly within each feature's
        min–max on the clean train set; ``gaussian`` adds N(0, (sigma·std_j)²) to feature j.
    sigma: noise scale relative to each feature's standard deviation (gaussian mode), in
        (0, 1000].
    clip: clip gaussian-noised values to the clean per-feature range.
    """

    mode: Literal["uniform", "gaussian"] = "uniform"
    sigma: float = 1.0
    clip: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        # Noise far beyond the features' spread only overflows float32 (sigma 1e308 did).
        check_range(self.sigma, "sigma", 0, 1000, low_open=True)

    def label(self) -> str:
        if self.mode == "gaussian":
            return f"feature_noise(gaussian σ={self.sigma:g}{', clip' if self.clip else ''})"
        return "feature_noise(uniform)"

    def _poison(
        self, X: np.ndarray, y: np.ndarray, rows: np.ndarray, rng: np.random.Generator
    ) -> None:
        flat = X.reshape(len(X), -1)  # a view: images are noised pixel-wise
        # Ranges in float64: high - low can overflow float32 for features of huge magnitude.
        low = flat.min(axis=0).astype(np.float64)
        high = flat.max(axis=0).astype(np.float64)
        if self.mode == "uniform":
            noise = rng.uniform(size=(len(rows), flat.shape[1]))
            values = np.clip(low + noise * (high - low), low, high)
            # A constant feature cannot change; a row only counts as changed when something did.
            flat[rows] = values.astype(flat.dtype)
        else:
            std = flat.std(axis=0, dtype=np.float64)
            values = flat[rows] + rng.normal(size=(len(rows), flat.shape[1])) * (self.sigma * std)
            if self.clip:
                values = np.clip(values, low, high)
            flat[rows] = values.astype(flat.dtype)
