"""Certified defenses: Deep Partition Aggregation and bagging (ensembles with a proof).

Both are training-time steps that change no rows: like ``dp_sgd`` they attach a plan to the
training set (``TrainingSet.ensemble``, an :class:`~bench.core.types.EnsemblePlan`) and the
cell's model becomes an ensemble of base models of that model (any model the harness trains),
fit in the cell's own task. Prediction is a plurality vote, ties to the smaller class index.
For every test row the plan gives a **certified radius**: the number of training-row changes the
prediction provably withstands.

- ``dpa`` (Levine & Feizi, ICLR 2021): a hash of each row's *features* assigns it to one of ``k``
  partitions, one base model per partition. One inserted, deleted or relabelled row changes at
  most one partition, so at most one vote; a prediction ``c`` with vote counts ``n`` is certified
  against ``⌊min_{c'≠c} (n_c − n_c' − [c' < c]) / 2⌋`` such changes (the ``[c' < c]`` term is
  the tie-break rule). The hash reads the features only, so a relabelled row stays in its
  partition and counts once; a row whose *features* change moves partition and counts twice (a
  deletion plus an insertion), as does a label flip in the paper's general threat model.
- ``bagging`` (Jia, Cao & Gong, AAAI 2021): ``N`` base models, each on ``s`` rows drawn with
  replacement from the ``n`` training rows. With ``p̲_A`` the one-sided Clopper–Pearson lower
  bound (level ``1 − α``) on the top class's vote share and ``p̄_B = 1 − p̲_A``, the prediction
  is certified against ``r`` modified rows (features, label or both) when
  ``p̲_A − p̄_B > 2·(1 − ((n − r)/n)^s)``, with probability at least ``1 − α`` over the
  subsamples. A row whose bound fails even at ``r = 0`` has radius −1 (not certified).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from bench.core.types import (
    DefenseContext,
    EnsemblePlan,
    ParamError,
    PoisonBenchError,
    StepResult,
    TrainingSet,
    check_range,
)
from defenses.base import DEFENSES, Defense

# --------------------------------------------------------------------------------------------
# Deep Partition Aggregation
# --------------------------------------------------------------------------------------------


def row_hashes(X: np.ndarray) -> np.ndarray:
    """A 64-bit hash (uint64) of each row's features: BLAKE2b of its float32 little-endian bytes.

    Depends on the row's content only (not its position, label, the seed or the process), so a
    row always lands in the same DPA partition; pinned by ``tests/test_certified.py``.
    """
    flat = np.ascontiguousarray(np.asarray(X).reshape(len(X), -1), dtype="<f4")
    out = np.empty(len(flat), dtype=np.uint64)
    for i, row in enumerate(flat):
        digest = hashlib.blake2b(row.tobytes(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


def partition_of(X: np.ndarray, k: int) -> np.ndarray:
    """Each row's DPA partition (int64 in ``0..k-1``): its feature hash modulo ``k``."""
    return (row_hashes(X) % np.uint64(k)).astype(np.int64)


def dpa_radius(votes: np.ndarray) -> np.ndarray:
    """DPA's certified radius of the plurality class (ties to the smaller index), per row.

    votes: n×k vote counts. Returns ``⌊min_{c'≠c} (n_c − n_c' − [c' < c]) / 2⌋`` (int64, >= 0):
    the rows an attacker may insert, delete or relabel without changing the prediction.
    """
    votes = np.asarray(votes, dtype=np.int64)
    n, k = votes.shape
    pred = votes.argmax(axis=1)
    top = votes[np.arange(n), pred]
    classes = np.arange(k)
    # the runner-up's effective count: a class below the prediction wins ties, so it needs one less
    rival = votes + (classes[None, :] < pred[:, None])
    rival[np.arange(n), pred] = np.iinfo(np.int64).min
    gap = top - rival.max(axis=1) if k > 1 else top
    return np.maximum(gap, 0) // 2


@dataclass(frozen=True)
class DPAPlan(EnsemblePlan):
    """DPA's ensemble: one member per hash partition."""

    partitions: int

    @property
    def n_members(self) -> int:
        return self.partitions

    def members(self, X: np.ndarray) -> list[np.ndarray]:
        part = partition_of(X, self.partitions)
        return [np.flatnonzero(part == j) for j in range(self.partitions)]

    def radius(self, votes: np.ndarray, n_rows: int) -> np.ndarray:
        return dpa_radius(votes)


@DEFENSES.register("dpa")
@dataclass(frozen=True)
class DPA(Defense):
    """Deep Partition Aggregation: ``partitions`` base models on hash partitions of the rows.

    partitions: k in [2, 100000]; the largest radius any prediction can reach is ⌊k/2⌋, and
        each member sees about n/k rows, so larger k buys radius with clean accuracy.
    """

    partitions: int = 50

    def __post_init__(self) -> None:
        check_range(self.partitions, "partitions", 2, 100_000)

    def label(self) -> str:
        return f"dpa(k={self.partitions})"

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        _check_once(train, self.name)
        return StepResult(train=dataclasses.replace(train, ensemble=DPAPlan(self.partitions)))


# --------------------------------------------------------------------------------------------
# Bagging
# --------------------------------------------------------------------------------------------


def clopper_pearson_lower(successes: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """One-sided Clopper–Pearson lower bound (level ``1 − alpha``) on a binomial proportion.

    successes: counts in ``0..trials``. Returns bounds in [0, 1] (0 where successes is 0).
    """
    from scipy.stats import beta

    successes = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        low = beta.ppf(alpha, successes, trials - successes + 1)
    return np.where(successes > 0, np.nan_to_num(low, nan=0.0), 0.0)


def bagging_radius(votes: np.ndarray, n_rows: int, sample_rows: int, alpha: float) -> np.ndarray:
    """Jia et al.'s certified radius (modified rows) of the plurality class, per row.

    votes: n×k counts of N members' votes; n_rows: training rows the subsamples were drawn from;
    sample_rows: rows per subsample (with replacement); alpha: failure probability in (0, 1).
    Returns the largest ``r`` in ``0..n_rows`` with ``2·p̲_A − 1 > 2·(1 − ((n − r)/n)^s)``
    (int64), −1 where it fails at ``r = 0``.
    """
    votes = np.asarray(votes, dtype=np.int64)
    trials = int(votes.sum(axis=1).max()) if len(votes) else 0
    top = votes.max(axis=1)
    p_low = clopper_pearson_lower(top, max(trials, 1), alpha)
    margin = 2.0 * p_low - 1.0  # p̲_A − p̄_B with p̄_B = 1 − p̲_A
    r = np.arange(n_rows + 1, dtype=np.float64)
    # 2δ(r): twice the chance that a subsample holds at least one of r modified rows (increasing)
    with np.errstate(divide="ignore"):  # r = n: log(0) = −inf, δ = 1
        needed = 2.0 * -np.expm1(sample_rows * np.log1p(-r / max(n_rows, 1)))
    return np.searchsorted(needed, margin, side="left").astype(np.int64) - 1


def sample_size(sample: float, n_rows: int) -> int:
    """Rows per bagging subsample: ``sample`` rows when >= 1, else that fraction of n (>= 1)."""
    if sample >= 1:
        return int(sample)
    return max(1, int(round(sample * n_rows)))


@dataclass(frozen=True)
class BaggingPlan(EnsemblePlan):
    """Bagging's ensemble: ``models`` members on subsamples drawn with replacement."""

    unit = "rows modified (features or label)"
    feature_change_cost = 1

    models: int
    sample: float
    alpha: float
    seed: int

    @property
    def n_members(self) -> int:
        return self.models

    def members(self, X: np.ndarray) -> list[np.ndarray]:
        n = len(X)
        if n == 0:
            return [np.zeros(0, dtype=np.int64) for _ in range(self.models)]
        s = sample_size(self.sample, n)
        rng = np.random.default_rng(self.seed)
        return [rng.integers(0, n, size=s) for _ in range(self.models)]

    def radius(self, votes: np.ndarray, n_rows: int) -> np.ndarray:
        return bagging_radius(votes, n_rows, sample_size(self.sample, n_rows), self.alpha)


@DEFENSES.register("bagging")
@dataclass(frozen=True)
class Bagging(Defense):
    """Bagging with a certificate: ``models`` base models on subsamples of ``sample`` rows.

    models: N in [1, 100000] base models.
    sample: rows per subsample (with replacement): a count >= 1, or a fraction of the training
        set in (0, 1).
    alpha: the certificate's failure probability in (0, 1) (per test row).
    """

    models: int = 100
    sample: float = 0.1
    alpha: float = 0.001

    def __post_init__(self) -> None:
        check_range(self.models, "models", 1, 100_000)
        check_range(self.sample, "sample", 0, 1e9, low_open=True)
        if self.sample > 1 and not float(self.sample).is_integer():
            raise ParamError(
                "sample", f"{self.sample} is neither a fraction in (0, 1) nor a row count"
            )
        check_range(self.alpha, "alpha", 0, 1, low_open=True, high_open=True)

    def label(self) -> str:
        return f"bagging(N={self.models}, s={self.sample:g})"

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        _check_once(train, self.name)
        seed = int(rng.integers(0, 2**63 - 1))
        plan = BaggingPlan(self.models, float(self.sample), float(self.alpha), seed)
        return StepResult(train=dataclasses.replace(train, ensemble=plan))


def _check_once(train: TrainingSet, name: str) -> None:
    if train.ensemble is not None:
        raise PoisonBenchError(
            f"{name}: an earlier step already made the model an ensemble "
            f"({type(train.ensemble).__name__}); use one certified defense per pipeline"
        )
