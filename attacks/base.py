"""The attack protocol and its registry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.types import DatasetInfo, Plugin, Poisoned, Registry, check_fraction, exact_count

ATTACKS: Registry[Attack] = Registry("attack")


class Attack(Plugin):
    """Base of all attacks.

    Subclasses implement ``_poison`` on the rows chosen by ``choose``; the base checks the rate,
    copies the inputs (callers' arrays are never changed) and makes ``rate=0`` the identity.
    """

    def eligible(self, y: np.ndarray) -> np.ndarray:
        """Boolean mask of the rows the rate counts from (all rows by default)."""
        return np.ones(len(y), dtype=bool)

    def target_pair(self) -> tuple[int, int] | None:
        """(source, target) class indices for targeted attacks, else None."""
        return None

    def label(self) -> str:
        """A short readable name for tables, e.g. ``label_flip(random)``."""
        mode = getattr(self, "mode", None)
        return f"{self.name}({mode})" if mode else self.name

    def theory_line(self) -> str | None:
        """The theory line the report may draw for this attack, or None.

        ``"symmetric_label_noise"``: each poisoned row's label moves uniformly to another
        class, the noise model of the label-noise sample-complexity bound (Angluin & Laird
        1988 and its K-class form); the report then shows that line beside the measurement.
        """
        return None

    def choose(self, y: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
        """Indices of the rows to poison: an exact count drawn without replacement."""
        candidates = np.flatnonzero(self.eligible(y))
        count = exact_count(rate, len(candidates))
        return np.sort(rng.choice(candidates, size=count, replace=False))

    def poison(
        self, X: np.ndarray, y: np.ndarray, rate: float, rng: np.random.Generator
    ) -> Poisoned:
        """Poison ``rate`` of the eligible rows; returns new arrays and the changed-row mask."""
        check_fraction(rate, "rate")
        X_out, y_out = X.copy(), y.copy()
        rows = self.choose(y, rate, rng) if rate > 0 else np.empty(0, dtype=np.int64)
        mask = np.zeros(len(y), dtype=bool)
        if len(rows):
            self._poison(X_out, y_out, rows, rng)
            # The mask is the ground truth of what changed, not of what was chosen: a chosen row
            # can stay as it was (constant features, a clipped or float32-rounded noise draw).
            changed = (y_out[rows] != y[rows]) | np.any(
                X_out[rows].reshape(len(rows), -1) != X[rows].reshape(len(rows), -1), axis=1
            )
            mask[rows[changed]] = True
        return Poisoned(X_out, y_out, mask)

    def _poison(
        self, X: np.ndarray, y: np.ndarray, rows: np.ndarray, rng: np.random.Generator
    ) -> None:
        """Change ``rows`` of the copies ``X`` and ``y`` in place; every row must change."""
        raise NotImplementedError


@ATTACKS.register("none")
@dataclass(frozen=True)
class NoAttack(Attack):
    """No attack: the clean reference. Any rate poisons nothing."""

    def choose(self, y: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
        return np.empty(0, dtype=np.int64)

    def bind(self, info: DatasetInfo, path: str = "") -> NoAttack:
        return self
