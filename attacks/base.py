"""The attack protocol and its registry.

Every attack takes two provenance options from the base (``sources``, ``poisoned_sources``):
real training data comes from several sources (vendors, annotators, scrapes) and poison usually
from a few of them. With ``sources: K`` the train rows are split into K seeded, equal-sized
sources (ids 0..K-1, in ``Poisoned.source``) and the attack's rows are drawn only from the
first ``poisoned_sources`` of them; the defenses see each row's source id (``TrainingSet.source``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.core.types import (
    DatasetInfo,
    ParamError,
    Plugin,
    Poisoned,
    Registry,
    check_fraction,
    check_range,
    exact_count,
)

ATTACKS: Registry[Attack] = Registry("attack", group="poisonbench.attacks")


@dataclass(frozen=True, kw_only=True)
class Attack(Plugin):
    """Base of all attacks.

    Subclasses implement ``_poison`` on the rows chosen by ``choose``; the base checks the rate,
    copies the inputs (callers' arrays are never changed) and makes ``rate=0`` the identity.

    sources: K, the number of data sources the train rows are split into (seeded, sizes equal
        to within one row), >= 1. 1 (the default) means no provenance.
    poisoned_sources: J, the sources the attack may draw its rows from (ids 0..J-1; the split
        is random, so which ids are poisoned carries no information), 1 <= J <= K. The rate
        still counts from all eligible rows, so a rate beyond what J sources hold is an error.
    """

    sources: int = 1
    poisoned_sources: int = 1

    def __post_init__(self) -> None:
        self.check_provenance()

    def check_provenance(self) -> None:
        """Raise ParamError naming the field unless ``1 <= poisoned_sources <= sources``."""
        check_range(self.sources, "sources", 1, 10_000)
        if not 1 <= self.poisoned_sources <= self.sources:
            raise ParamError(
                "poisoned_sources",
                f"must be in 1..sources ({self.sources}), got {self.poisoned_sources}",
            )

    def params(self) -> dict[str, Any]:
        # Without provenance the two options are left out, so the cell ids of attacks from
        # before provenance existed do not change.
        out = super().params()
        if self.sources == 1:
            del out["sources"], out["poisoned_sources"]
        return out

    def eligible(self, y: np.ndarray) -> np.ndarray:
        """Boolean mask of the rows the rate counts from (all rows by default)."""
        return np.ones(len(y), dtype=bool)

    def target_pair(self) -> tuple[int, int] | None:
        """(source, target) class indices for targeted attacks, else None."""
        return None

    def backdoor_target(self) -> int | None:
        """The target class of a backdoor attack, else None.

        A backdoor also declares its test-time trigger: ``apply_trigger(X, reference)`` (the
        rows with the trigger stamped, ``reference`` the clean train set) and
        ``trigger_rows(y_test)`` (the test rows it is measured on); see ``attacks/backdoor.py``.
        """
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

    def split_sources(self, n: int, rng: np.random.Generator) -> np.ndarray | None:
        """Each of ``n`` rows' source id in 0..K-1 (a seeded, balanced split), or None if K = 1.

        With K = 1 the generator is not touched, so attacks without provenance draw the same
        rows as before the option existed.
        """
        if self.sources == 1:
            return None
        source = np.empty(n, dtype=np.int64)
        source[rng.permutation(n)] = np.arange(n, dtype=np.int64) % self.sources
        return source

    def candidates(
        self, y: np.ndarray, rate: float, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, int]:
        """The rows an attack may change and how many it must change.

        The count is ``rate`` of *all* eligible rows; the candidates are the eligible rows
        within ``allowed`` (the poisoned sources; None = every row). Raises ParamError naming
        ``rate`` when the allowed sources hold fewer eligible rows than the count.
        """
        eligible = self.eligible(y)
        count = exact_count(rate, int(eligible.sum())) if rate > 0 else 0
        if allowed is not None:
            eligible = eligible & allowed
        rows = np.flatnonzero(eligible)
        if count > len(rows):
            raise ParamError(
                "rate",
                f"{rate:g} of the eligible rows is {count} rows, but the {self.poisoned_sources} "
                f"poisoned source(s) of {self.sources} hold only {len(rows)} eligible rows; "
                "lower the rate or raise poisoned_sources",
            )
        return rows, count

    def choose(
        self,
        y: np.ndarray,
        rate: float,
        rng: np.random.Generator,
        allowed: np.ndarray | None = None,
    ) -> np.ndarray:
        """Indices of the rows to poison: an exact count drawn without replacement."""
        rows, count = self.candidates(y, rate, allowed)
        return np.sort(rng.choice(rows, size=count, replace=False))

    def poison(
        self, X: np.ndarray, y: np.ndarray, rate: float, rng: np.random.Generator
    ) -> Poisoned:
        """Poison ``rate`` of the eligible rows; returns new arrays and the changed-row mask.

        With provenance (``sources`` > 1) the rows are first split into sources, the attack
        draws only from the poisoned ones, and the result carries each row's source id.
        """
        check_fraction(rate, "rate")
        self.check_provenance()  # again, for subclasses whose __post_init__ skips the base's
        source = self.split_sources(len(y), rng)
        allowed = None if source is None else source < self.poisoned_sources
        out = self.poison_rows(X, y, rate, rng, allowed)
        return out if source is None else dataclasses.replace(out, source=source)

    def poison_rows(
        self,
        X: np.ndarray,
        y: np.ndarray,
        rate: float,
        rng: np.random.Generator,
        allowed: np.ndarray | None,
    ) -> Poisoned:
        """Poison ``rate`` of the eligible rows, drawn within ``allowed`` (None = all rows)."""
        X_out, y_out = X.copy(), y.copy()
        rows = self.choose(y, rate, rng, allowed) if rate > 0 else np.empty(0, dtype=np.int64)
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

    def choose(
        self,
        y: np.ndarray,
        rate: float,
        rng: np.random.Generator,
        allowed: np.ndarray | None = None,
    ) -> np.ndarray:
        return np.empty(0, dtype=np.int64)

    def bind(self, info: DatasetInfo, path: str = "") -> NoAttack:
        return self
