"""Intervals for numbers replicated over a few seeds: the extra-clean-data crossing ``f_needed``,
its paired difference (a defense's value), and paired per-seed differences of any metric.

Pure functions of numpy arrays (numpy and ``scipy.special`` only: analysis code stays light to
import). The seeds are the replicates: seed ``s`` has its own split, test set, poison draw and
model initialisation, so per-seed values are independent draws, and two quantities measured on
the same seed are *paired*.

**Why not the seed bootstrap.** With S seeds the bootstrap distribution of a mean has at most
``C(2S−1, S)`` distinct values (10 at S = 3), and even its full range covers the true mean only
``1 − 2·(1/2)^S`` of the time for a symmetric distribution (75 % at S = 3). The percentile
interval on ``f_needed`` therefore covers ~73 / 82 / 90 % at 3 / 5 / 10 seeds when it says 95 %
(:func:`bench.analysis.simulation.simulated_coverage`), and Hesterberg's expanded percentile
interval ~73 / 92 / 94 %: no bootstrap fixes S = 3, where resampling has almost nothing to
resample.

**The method used instead: inverting a t-test (a Fieller interval).** Write the per-seed margin
``D_s(f) = curve_s(f) − (reference_s − tolerance)`` (sign-flipped for lower-is-better metrics),
linearly interpolated between grid points exactly as ``f_needed`` is. The mean-over-seeds
curve is back within tolerance where ``mean_s D_s(f) ≥ 0``; the true ``f`` is where the
population mean ``E[D(f)]`` crosses 0. At that ``f`` the S values ``D_s(f)`` are independent
draws with mean 0, so a one-sample t-test of ``E[D(f)] = 0`` rejects with probability exactly
``1 − level`` when the seed-to-seed spread is normal, whatever the number of seeds, the
correlation between a seed's reference and its curve, or the correlation along the curve. The
interval is every ``f`` in the grid's range that the test does not reject (within a segment
between grid points ``t(f)² ≤ k²`` is a quadratic inequality in ``f``, solved exactly), plus
the two boundary hypotheses: "already recovered at the first grid point" (kept unless the mean
margin there is significantly below 0) and "not recovered within the grid" (kept, making the
upper bound ``inf``, unless the margin at the last grid point is significantly above 0). The
point estimate always lies inside, and a grid point whose margin is identical on every seed
(the clean rows at f = 0 *are* the reference) is taken as known. Simulated coverage
(:mod:`bench.analysis.simulation`, ``python -m bench.analysis.simulation``): 94.9–96.1 % at 3,
5 and 10 seeds for a true ``f`` inside the grid, under normal, heavy-tailed and skewed seed
effects; 99.5–100 % when the truth is at a boundary (already recovered, or never within the
grid), where a set-valued truth is easier to cover.

With fewer than :data:`MIN_SEEDS_FOR_INTERVAL` seeds a t-interval is valid but uselessly wide
(``t₁ = 12.7`` at 2 seeds), so :func:`crossing_bounds` gives the per-seed range instead
(:func:`interval_kind` says which a pair of bounds is).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import ndtr, stdtrit

from bench.core.types import ParamError

#: seeds needed for an interval; with fewer, bounds are the per-seed range
MIN_SEEDS_FOR_INTERVAL = 3

#: the interval method the headline uses
DEFAULT_METHOD = "t-inversion"

#: how many points per grid segment :func:`crossing_difference_interval` scans
DIFFERENCE_GRID = 64


# ---------------------------------------------------------------------------------------------
# Paired differences of per-seed values


@dataclass(frozen=True)
class PairedDifference:
    """Mean of per-seed differences ``a − b`` and its t-interval.

    mean: mean difference over the seeds with both values (NaN with none).
    low, high: the ``level`` t-interval (NaN with fewer than 2 pairs: one pair has no spread).
    n: number of seeds with both values.
    """

    mean: float
    low: float
    high: float
    n: int
    level: float

    @property
    def resolved(self) -> bool:
        """Whether the interval excludes 0 (False when there is no interval)."""
        return is_resolved(self)


def paired_difference(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> PairedDifference:
    """The mean of ``a − b`` over seeds with its ``level`` t-interval (paired by position).

    a, b: per-seed values of two arms measured on the same seeds, aligned by position
        (element i of both comes from seed i). A seed where either value is NaN is dropped.
    level: coverage of the interval, in (0, 1).

    With 1 seed the mean is that seed's difference and the interval is NaN (no spread to
    estimate); with none everything is NaN. Identical differences on every seed give a
    zero-width interval.
    """
    check_level(level)
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must hold one value per seed, got {a.shape} and {b.shape}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    n = len(d)
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0, level)
    mean = float(d.mean())
    if n == 1:
        return PairedDifference(mean, math.nan, math.nan, 1, level)
    half = t_quantile(n - 1, level) * float(d.std(ddof=1)) / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n, level)


def is_resolved(diff: PairedDifference) -> bool:
    """Whether a difference is resolved: its interval excludes 0 (not when it has none)."""
    return bool(diff.low > 0 or diff.high < 0)


def describe_difference(diff: PairedDifference, digits: int = 3) -> str:
    """The difference as a report writes it: ``+0.012 [+0.004, +0.020]`` when resolved,
    ``not distinguishable at 3 seeds (+0.004 [−0.010, +0.018])`` when not, and
    ``+0.004 (1 seed, no interval)`` / ``no paired seeds`` without an interval."""
    text = difference_text(diff, digits)
    if diff.n == 0 or not math.isfinite(diff.low) or diff.resolved:
        return text
    return f"not distinguishable at {diff.n} seeds ({text})"


def difference_text(diff: PairedDifference, digits: int = 3) -> str:
    """The difference and its interval, ``+0.004 [−0.010, +0.018]``, resolved or not;
    ``+0.004 (1 seed, no interval)`` / ``no paired seeds`` without an interval."""
    if diff.n == 0:
        return "no paired seeds"
    value = f"{diff.mean:+.{digits}f}"
    if not math.isfinite(diff.low):
        return f"{value} ({diff.n} seed{'s' if diff.n != 1 else ''}, no interval)"
    return f"{value} [{diff.low:+.{digits}f}, {diff.high:+.{digits}f}]"


# ---------------------------------------------------------------------------------------------
# The crossing point and its intervals


def t_quantile(df: int, level: float) -> float:
    """The two-sided critical value ``t_{df}`` of a ``level`` interval (e.g. 4.30 at df 2)."""
    return float(stdtrit(df, 1 - (1 - level) / 2))


def recovery_margins(
    curves: np.ndarray, references: np.ndarray, tolerance: float, higher: bool = True
) -> np.ndarray:
    """Per-seed margins ``D = curve − (reference − tolerance)`` (``≥ 0``: recovered).

    curves: ``…×S×F`` per-seed metric values at each extra fraction; references: ``…×S``
    per-seed clean values (paired by seed). For a lower-is-better metric the margin is
    ``reference + tolerance − curve``.
    """
    curves = np.asarray(curves, dtype=float)
    refs = np.asarray(references, dtype=float)[..., None]
    return curves - (refs - tolerance) if higher else (refs + tolerance) - curves


def first_crossing(fractions: np.ndarray, margins: np.ndarray) -> np.ndarray:
    """The first fraction where each row of ``margins`` (``…×F``) reaches 0, interpolated.

    ``fractions[0]`` when the first point is already ≥ 0, linear interpolation between the last
    point below 0 and the first point at or above it, ``inf`` when none is (NaN counts as below).
    The same rule as :func:`bench.analysis.recovery.crossing_point`.
    """
    f = np.asarray(fractions, dtype=float)
    m = np.asarray(margins, dtype=float)
    flat = m.reshape(-1, m.shape[-1])
    ok = np.isfinite(flat) & (np.nan_to_num(flat, nan=-1.0) >= 0)
    out = np.full(len(flat), np.inf)
    hit = ok.any(axis=1)
    first = ok.argmax(axis=1)
    out[hit & (first == 0)] = f[0]
    inner = np.flatnonzero(hit & (first > 0))
    if len(inner):
        j = first[inner]
        m0, m1 = flat[inner, j - 1], flat[inner, j]
        with np.errstate(invalid="ignore", divide="ignore"):
            share = -m0 / (m1 - m0)
        share = np.where(np.isfinite(share), np.clip(share, 0.0, 1.0), 1.0)
        out[inner] = f[j - 1] + share * (f[j] - f[j - 1])
    return out.reshape(m.shape[:-1])


def f_needed(
    fractions: np.ndarray,
    curves: np.ndarray,
    references: np.ndarray,
    tolerance: float,
    higher: bool = True,
) -> float:
    """The headline estimate: where the mean-over-seeds margin first reaches 0 (``inf``: never)."""
    margins = recovery_margins(curves, references, tolerance, higher)
    return float(first_crossing(fractions, margins.mean(axis=-2)))


def _acceptance(
    fractions: np.ndarray, margins: np.ndarray, crit: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where the t-test keeps the crossing, for a batch of ``B×S×F`` margins.

    Returns ``start_ok`` (B: "recovered already at fractions[0]" kept), ``seg_low`` and
    ``seg_high`` (B×(F−1): the smallest and largest kept fraction in each grid segment, NaN
    where none is) and ``censored_ok`` (B: "not recovered within the grid" kept).
    """
    f = np.asarray(fractions, dtype=float)
    n_batch, n_seeds = margins.shape[:2]
    mean = margins.mean(axis=1)  # B×F
    se = margins.std(axis=1, ddof=1) / math.sqrt(n_seeds)
    start_ok = mean[:, 0] >= -crit * se[:, 0]
    censored_ok = mean[:, -1] <= crit * se[:, -1]
    if len(f) < 2:
        empty = np.full((n_batch, 0), np.nan)
        return start_ok, empty, empty, censored_ok
    # All segments at once: a = the margins at each segment's left end, d = the step to its right.
    a = margins[:, :, :-1]
    d = np.diff(margins, axis=2)
    a_bar, d_bar = a.mean(axis=1), d.mean(axis=1)  # B×(F−1)
    a_c, d_c = a - a_bar[:, None, :], d - d_bar[:, None, :]
    v_aa = (a_c**2).sum(axis=1) / (n_seeds - 1)
    v_ad = (a_c * d_c).sum(axis=1) / (n_seeds - 1)
    v_dd = (d_c**2).sum(axis=1) / (n_seeds - 1)
    # mean(w)² − k²·var(w)/S ≤ 0 with mean(w) = a_bar + w·d_bar, w in [0, 1] along a segment
    kappa = crit**2 / n_seeds
    qa = d_bar**2 - kappa * v_dd
    qb = 2 * (a_bar * d_bar - kappa * v_ad)
    qc = a_bar**2 - kappa * v_aa
    w_lo, w_hi = _quadratic_set_hull(qa.ravel(), qb.ravel(), qc.ravel())
    width = np.diff(f)
    seg_low = f[:-1] + w_lo.reshape(qa.shape) * width
    seg_high = f[:-1] + w_hi.reshape(qa.shape) * width
    return start_ok, seg_low, seg_high, censored_ok


def _combine(
    fractions: np.ndarray,
    start_ok: np.ndarray,
    seg_low: np.ndarray,
    seg_high: np.ndarray,
    censored_ok: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The hull ``(low, high)`` of a kept set from :func:`_acceptance`'s parts; ``high`` is
    ``inf`` when "not recovered" is kept, ``low`` too when nothing else is."""
    f0 = float(fractions[0])
    seg_min = np.where(np.isnan(seg_low), np.inf, seg_low).min(axis=1, initial=np.inf)
    seg_max = np.where(np.isnan(seg_high), -np.inf, seg_high).max(axis=1, initial=-np.inf)
    low = np.minimum(np.where(start_ok, f0, np.inf), seg_min)
    high = np.maximum(np.where(start_ok, f0, -np.inf), seg_max)
    empty = np.isposinf(low) & ~censored_ok  # cannot happen with a positive spread
    high = np.where(censored_ok, np.inf, high)
    low = np.where(empty, np.nan, low)
    high = np.where(empty, np.nan, high)
    return low, high


def inversion_bounds(
    fractions: np.ndarray, margins: np.ndarray, crit: float
) -> tuple[np.ndarray, np.ndarray]:
    """Hull of the t-test acceptance set for the crossing, for a batch of ``B×S×F`` margins.

    Returns ``(low, high)`` arrays of length B; ``high`` is ``inf`` where "not recovered within
    the grid" is kept, and ``low`` too where nothing else is. See the module docstring for
    the three kinds of hypothesis.
    """
    f = np.asarray(fractions, dtype=float)
    low, high = _combine(f, *_acceptance(f, margins, crit))
    # A grid point whose margin is the same on every seed (a curve point that *is* the
    # reference, as for the clean or oracle rows at f = 0) is known, not estimated: with a
    # monotone recovery curve the crossing is at or before the first such point at or above
    # 0, and after the last such point below 0. The t-test alone cannot use it (t = ±inf).
    mean = margins.mean(axis=1)
    exact = margins.std(axis=1) <= 1e-12 * (1 + np.abs(mean))
    at_or_above = np.where(exact & (mean >= 0), f, np.inf).min(axis=1)
    below = np.where(exact & (mean < 0), f, -np.inf).max(axis=1)
    low = np.where(np.isposinf(low), low, np.maximum(low, below))
    high = np.minimum(high, at_or_above)
    crossed = high < low  # only a non-monotone mean curve gets here: keep its estimate alone
    low = np.where(crossed, np.inf, low)
    high = np.where(crossed, -np.inf, high)
    # The estimate has t = 0 and is always kept; saying so explicitly keeps it inside when
    # rounding hides a (near-)zero spread, e.g. seeds that differ only by a shared offset.
    estimate = first_crossing(f, mean)
    low = np.fmin(low, estimate)
    high = np.where(np.isposinf(estimate), np.inf, np.fmax(high, estimate))
    return low, high


def _quadratic_set_hull(
    qa: np.ndarray, qb: np.ndarray, qc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest ``w`` in [0, 1] with ``qa·w² + qb·w + qc ≤ 0`` (NaN when none)."""
    n = len(qa)
    roots = np.full((n, 2), np.nan)
    scale = np.maximum.reduce([np.abs(qa), np.abs(qb), np.abs(qc), np.full(n, 1e-300)])
    linear = np.abs(qa) <= 1e-12 * scale
    with np.errstate(invalid="ignore", divide="ignore"):
        disc = qb**2 - 4 * qa * qc
        sq = np.sqrt(np.where(disc >= 0, disc, np.nan))
        # the numerically stable pair of roots
        q = -0.5 * (qb + np.copysign(sq, qb))
        roots[:, 0] = np.where(linear, -qc / qb, q / qa)
        roots[:, 1] = np.where(linear, np.nan, qc / q)
    roots[~np.isfinite(roots) | (roots <= 0) | (roots >= 1)] = np.nan
    # Candidate ends: 0, the roots inside (0, 1), 1; q has one sign strictly between two.
    cand = np.sort(np.column_stack([np.zeros(n), roots, np.ones(n)]), axis=1)  # NaN last

    def q_at(w: np.ndarray) -> np.ndarray:
        return (qa[:, None] * w + qb[:, None]) * w + qc[:, None]

    at_ends = q_at(cand) <= 0
    is_root = np.zeros_like(at_ends)
    is_root[:, 1:3] = np.isfinite(cand[:, 1:3]) & (cand[:, 1:3] < 1)
    point_ok = (at_ends | is_root) & np.isfinite(cand)
    mids = (cand[:, :-1] + cand[:, 1:]) / 2
    piece_ok = np.isfinite(mids) & (q_at(np.nan_to_num(mids)) <= 0)
    accepted = point_ok.copy()
    accepted[:, :-1] |= piece_ok
    accepted[:, 1:] |= piece_ok
    lo = np.where(accepted, cand, np.inf).min(axis=1)
    hi = np.where(accepted, cand, -np.inf).max(axis=1)
    none = ~accepted.any(axis=1)
    lo[none] = np.nan
    hi[none] = np.nan
    return lo, hi


def _checked(
    fractions: np.ndarray, curves: np.ndarray, references: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = np.asarray(fractions, dtype=float)
    c = np.asarray(curves, dtype=float)
    r = np.asarray(references, dtype=float)
    if f.ndim != 1 or c.ndim != 2 or c.shape != (len(r), len(f)) or r.ndim != 1:
        raise ValueError(
            f"expected fractions (F), curves (S×F) and references (S), got {f.shape}, "
            f"{c.shape}, {r.shape}"
        )
    if np.any(np.diff(f) <= 0):
        raise ValueError("fractions must be strictly increasing")
    if not (np.isfinite(c).all() and np.isfinite(r).all()):
        raise ValueError(
            "curves and references must be finite: cut the grid where a seed lacks a value "
            "(bench.analysis.recovery.seed_curves does)"
        )
    return f, c, r


def crossing_interval(
    fractions: np.ndarray,
    curves: np.ndarray,
    references: np.ndarray,
    tolerance: float,
    higher: bool = True,
    level: float = 0.95,
) -> tuple[float, float]:
    """The ``level`` test-inversion interval ``(low, high)`` on ``f_needed``.

    fractions: increasing grid of extra clean fractions (F); curves: S×F per-seed metric values;
    references: S per-seed clean values, paired with the curves by seed; tolerance: how close
    to the reference counts as recovered (metric units); higher: whether larger is better.

    ``high`` is ``inf`` when the data cannot rule out "not recovered within the grid" (and
    ``low`` too when that is all they cannot rule out); ``low`` is ``fractions[0]`` when they
    cannot rule out "already recovered". ``(nan, nan)`` with fewer than 2 seeds or an empty
    grid. Exact coverage when the seed-to-seed spread of the margins
    is normal (module docstring).
    """
    check_level(level)
    f, c, r = _checked(fractions, curves, references)
    if len(r) < 2 or len(f) == 0:
        return math.nan, math.nan
    margins = recovery_margins(c, r, tolerance, higher)[None]
    low, high = inversion_bounds(f, margins, t_quantile(len(r) - 1, level))
    return float(low[0]), float(high[0])


def percentile_bootstrap_interval(
    fractions: np.ndarray,
    curves: np.ndarray,
    references: np.ndarray,
    tolerance: float,
    higher: bool = True,
    level: float = 0.95,
    n_boot: int = 1000,
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """The seed-bootstrap percentile interval (the method before :func:`crossing_interval`).

    Each of ``n_boot`` resamples draws S seed indices with replacement, used for the reference
    and the curve alike; the bounds are the ``(1 ± level)/2`` quantiles of the resampled
    crossings, ``inf`` where the quantile lands on a resample that never crosses. Kept for
    comparison: it covers far less than ``level`` with few seeds
    (:func:`bench.analysis.simulation.simulated_coverage`).
    """
    check_level(level)
    f, c, r = _checked(fractions, curves, references)
    if n_boot <= 0 or len(r) == 0 or len(f) == 0:
        return math.nan, math.nan
    if rng is None:
        raise ValueError("the bootstrap needs rng (an np.random.Generator)")
    s = len(r)
    idx = rng.integers(0, s, size=(n_boot, s))
    margins = recovery_margins(c[idx], r[idx], tolerance, higher).mean(axis=1)
    crossing = first_crossing(f, margins)
    finite_max = f[-1]
    sentinel = np.where(np.isfinite(crossing), crossing, finite_max + 1e9)
    alpha = (1 - level) / 2
    low, high = np.quantile(sentinel, [alpha, 1 - alpha], method="inverted_cdf")
    return (
        float(low) if low <= finite_max else math.inf,
        float(high) if high <= finite_max else math.inf,
    )


def expanded_level(level: float, n_seeds: int) -> float:
    """The nominal level an expanded percentile bootstrap uses with ``n_seeds`` (Hesterberg
    2015): the normal level whose quantile is ``sqrt(n/(n−1))·t_{n−1}``, correcting the
    bootstrap's too-narrow spread and its normal tails."""
    if n_seeds < 2:
        return level
    z = math.sqrt(n_seeds / (n_seeds - 1)) * t_quantile(n_seeds - 1, level)
    return float(1 - 2 * ndtr(-z))


def expanded_bootstrap_interval(
    fractions: np.ndarray,
    curves: np.ndarray,
    references: np.ndarray,
    tolerance: float,
    higher: bool = True,
    level: float = 0.95,
    n_boot: int = 1000,
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """The percentile bootstrap at :func:`expanded_level` (for comparison; still short of
    ``level`` at 3 seeds, where the most extreme resamples are the per-seed range)."""
    n_seeds = np.asarray(references).shape[0]
    return percentile_bootstrap_interval(
        fractions,
        curves,
        references,
        tolerance,
        higher,
        expanded_level(level, n_seeds),
        n_boot,
        rng,
    )


def _t_inversion(
    fractions: np.ndarray,
    curves: np.ndarray,
    references: np.ndarray,
    tolerance: float,
    higher: bool = True,
    level: float = 0.95,
    n_boot: int = 0,
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    return crossing_interval(fractions, curves, references, tolerance, higher, level)


#: interval methods by name, all called as ``(fractions, curves, references, tolerance, higher,
#: level, n_boot, rng)`` (the t-inversion ignores the last two)
CROSSING_METHODS: dict[str, Callable[..., tuple[float, float]]] = {
    "t-inversion": _t_inversion,
    "percentile": percentile_bootstrap_interval,
    "expanded-percentile": expanded_bootstrap_interval,
}


def crossing_method(method: str) -> Callable[..., tuple[float, float]]:
    if method not in CROSSING_METHODS:
        raise ParamError(
            "method", f"unknown interval method {method!r} (valid: {', '.join(CROSSING_METHODS)})"
        )
    return CROSSING_METHODS[method]


def seed_range(
    fractions: np.ndarray,
    curves: np.ndarray,
    references: np.ndarray,
    tolerance: float,
    higher: bool = True,
) -> tuple[float, float]:
    """The smallest and largest per-seed ``f_needed`` (each seed's curve against its own
    reference; ``inf`` for a seed that never recovers). What a report shows instead of an
    interval when there are fewer than :data:`MIN_SEEDS_FOR_INTERVAL` seeds."""
    f, c, r = _checked(fractions, curves, references)
    if len(r) == 0 or len(f) == 0:
        return math.nan, math.nan
    per_seed = first_crossing(f, recovery_margins(c, r, tolerance, higher))
    return float(per_seed.min()), float(per_seed.max())


def interval_kind(n_seeds: int) -> Literal["interval", "range", "none"]:
    """What :func:`crossing_bounds` returns for ``n_seeds`` seeds: a confidence ``interval``
    (≥ 3 seeds), the per-seed ``range`` (1–2 seeds), or ``none`` (no seeds)."""
    if n_seeds >= MIN_SEEDS_FOR_INTERVAL:
        return "interval"
    return "range" if n_seeds >= 1 else "none"


def interval_label(n_seeds: int, level: float = 0.95, method: str = DEFAULT_METHOD) -> str:
    """How a report names the bounds of :func:`crossing_bounds`, e.g. ``95 % interval
    (t-inversion, 5 seeds)`` or ``per-seed range (2 seeds)``."""
    crossing_method(method)
    kind = interval_kind(n_seeds)
    seeds = f"{n_seeds} seed{'s' if n_seeds != 1 else ''}"
    if kind == "interval":
        return f"{100 * level:g} % interval ({method}, {seeds})"
    return f"per-seed range ({seeds})" if kind == "range" else "no seeds"


def crossing_bounds(
    fractions: np.ndarray,
    curves: np.ndarray,
    references: np.ndarray,
    tolerance: float,
    higher: bool = True,
    level: float = 0.95,
    method: str = DEFAULT_METHOD,
    n_boot: int = 1000,
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """The bounds a report shows around ``f_needed``: the ``method`` interval at ``level`` with
    at least :data:`MIN_SEEDS_FOR_INTERVAL` seeds, else the per-seed range
    (:func:`interval_kind` / :func:`interval_label` say which).

    method: ``t-inversion`` (default; see the module docstring), ``percentile`` or
        ``expanded-percentile`` (seed bootstraps with ``n_boot`` resamples drawn from ``rng``).
    """
    run = crossing_method(method)
    n_seeds = np.asarray(references).shape[0]
    if interval_kind(n_seeds) != "interval":
        return seed_range(fractions, curves, references, tolerance, higher)
    return run(fractions, curves, references, tolerance, higher, level, n_boot, rng)


# ---------------------------------------------------------------------------------------------
# The paired difference of two crossings: a defense's value


def _interpolate(fractions: np.ndarray, margins: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Per-seed margins (S×F) at the fractions ``at`` (P): a P×S array."""
    j = np.clip(np.searchsorted(fractions, at, side="right") - 1, 0, len(fractions) - 2)
    w = (at - fractions[j]) / (fractions[j + 1] - fractions[j])
    return (margins[:, j] * (1 - w) + margins[:, j + 1] * w).T


DIFFERENCE_METHODS = ("linearized", "projection")


def crossing_difference_interval(
    fractions: np.ndarray,
    curves_a: np.ndarray,
    curves_b: np.ndarray,
    references: np.ndarray,
    tolerance: float,
    higher: bool = True,
    level: float = 0.95,
    method: Literal["linearized", "projection"] = "linearized",
) -> tuple[float, float]:
    """A ``level`` interval on ``f_needed(a) − f_needed(b)`` from curves paired by seed.

    For a defense's value, ``a`` is the undefended curve and ``b`` the defended one (positive:
    the defense saves clean data). curves_a, curves_b: S×F per-seed values on one grid, same
    seeds in the same order; references: the S per-seed clean values both are measured against.
    A bound is ``±inf`` when a curve may not recover within the grid (``+inf``: a may not;
    ``−inf``: b may not). ``(nan, nan)`` with fewer than 2 seeds.

    Both methods invert t-tests on per-seed margins, as :func:`crossing_interval` does:

    - ``linearized`` (default): with ``φ̂`` the defended estimate and ``e_s = D_b,s(φ̂)`` each
      seed's defended margin there (mean 0), keep every ``ψ`` where the t-test of
      ``E[D_a(ψ) − c·e] = 0`` does not reject, ``c`` the ratio of the mean curves' slopes at
      ``ψ`` and ``φ̂`` (so a seed whose defended crossing is late by ``e_s/slope_b`` moves ``ψ``
      by the same amount: the pairing), and report ``ψ − φ̂``. The undefended side is
      exact as in :func:`crossing_interval`; the defended side is linearised (delta method).
      Where "a recovered already at the first grid point" or "a not recovered within the
      grid" is kept, ψ is pinned to that end and the difference ranges over b's own
      interval. When the defended estimate sits at the grid's first point or beyond its end
      (no slope), the ``projection`` method is used.
    - ``projection``: keep ``φ`` by the t-test of ``E[D_b(φ)] = 0`` and, given ``φ``, ``ψ`` by
      the t-test of ``E[D_a(ψ) − D_b(φ)] = 0``, each at ``(1 − level)/2`` (Bonferroni): the
      kept pairs contain the true pair with probability ≥ ``level`` by construction; the
      interval is the range of ``ψ − φ`` over them (φ scanned on :data:`DIFFERENCE_GRID`
      points per segment). Valid but conservative (~99 % simulated at a 95 % label).

    Simulated coverage: :func:`bench.analysis.simulation.simulated_coverage` with
    ``target="difference"``.
    """
    check_level(level)
    if method not in DIFFERENCE_METHODS:
        raise ParamError(
            "method", f"unknown method {method!r} (valid: {', '.join(DIFFERENCE_METHODS)})"
        )
    f, ca, r = _checked(fractions, curves_a, references)
    _, cb, _ = _checked(fractions, curves_b, references)
    if len(r) < 2 or len(f) == 0:
        return math.nan, math.nan
    da = recovery_margins(ca, r, tolerance, higher)
    db = recovery_margins(cb, r, tolerance, higher)
    if method == "linearized" and len(f) > 1:
        bounds = _linearized_difference(f, da, db, t_quantile(len(r) - 1, level))
        if bounds is not None:
            return bounds
    return _projected_difference(f, da, db, t_quantile(len(r) - 1, 1 - (1 - level) / 2))


def _linearized_difference(
    f: np.ndarray, da: np.ndarray, db: np.ndarray, crit: float
) -> tuple[float, float] | None:
    """The ``linearized`` difference interval, or None when the defended mean curve does not
    cross strictly inside the grid (no slope to linearise with)."""
    mean_a, mean_b = da.mean(axis=0), db.mean(axis=0)
    phi = float(first_crossing(f, mean_b))
    if not (f[0] < phi < math.inf):
        return None
    j = int(np.searchsorted(f, phi, side="left")) - 1  # segment [f[j], f[j+1]] holding φ̂
    slope_b = (mean_b[j + 1] - mean_b[j]) / (f[j + 1] - f[j])  # > 0: crosses from below
    e = _interpolate(f, db, np.array([phi]))[0]  # S
    slopes_a = np.diff(mean_a) / np.diff(f)  # one per ψ segment
    # Segment k of ψ is tested on D_a − c_k·e; batch k carries that margin array.
    w = da[None, :, :] - (slopes_a / slope_b)[:, None, None] * e[None, :, None]
    _, seg_low, seg_high, _ = _acceptance(f, w, crit)
    k = np.arange(len(f) - 1)
    lows = [v - phi for v in seg_low[k, k] if math.isfinite(v)]
    highs = [v - phi for v in seg_high[k, k] if math.isfinite(v)]
    # At the grid's ends ψ does not move with φ: "a recovered already at f[0]" gives
    # f[0] − φ and "a not recovered within the grid" gives (f[-1] − φ, inf], for φ in b's
    # own interval.
    a_start, _, _, a_censored = _acceptance(f, da[None], crit)
    b_low, b_high = inversion_bounds(f, db[None], crit)
    if a_start[0]:
        lows.append(f[0] - float(b_high[0]))
        highs.append(f[0] - float(b_low[0]))
    if a_censored[0]:
        lows.append(f[-1] - float(b_high[0]))
        highs.append(math.inf)
    psi = float(first_crossing(f, mean_a))  # the estimate is always kept (t = 0)
    lows.append(min(psi, f[-1]) - phi)
    highs.append(psi - phi)
    return min(lows), max(highs)


def _projected_difference(
    f: np.ndarray, da: np.ndarray, db: np.ndarray, crit: float
) -> tuple[float, float]:
    """The ``projection`` difference interval (each test at the Bonferroni ``crit``)."""
    n_seeds = da.shape[0]
    lows: list[float] = []
    highs: list[float] = []
    a_low, a_high = inversion_bounds(f, da[None], crit)
    # ψ "beyond the grid" means ψ > f[-1]: the difference's lower end uses that infimum.
    a_low = np.where(np.isposinf(a_low), f[-1], a_low)
    mean_b, se_b = db.mean(axis=0), db.std(axis=0, ddof=1) / math.sqrt(n_seeds)
    if mean_b[0] >= -crit * se_b[0]:  # b recovered already at f[0]: a's own test decides ψ
        lows.append(float(a_low[0]) - f[0])
        highs.append(float(a_high[0]) - f[0])
    if mean_b[-1] <= crit * se_b[-1]:  # b may not recover within the grid
        lows.append(-math.inf)
        highs.append(float(a_high[0]) - f[-1])
    if len(f) > 1:
        phi = _difference_scan(f, db, crit)
        if len(phi):
            db_at = _interpolate(f, db, phi)  # P×S
            w = da[None, :, :] - db_at[:, :, None]  # P×S×F
            psi_low, psi_high = inversion_bounds(f, w, crit)
            ok = ~np.isnan(psi_low)
            psi_low = np.where(np.isposinf(psi_low), f[-1], psi_low)
            lows.extend((psi_low[ok] - phi[ok]).tolist())
            highs.extend((psi_high[ok] - phi[ok]).tolist())
    phi_hat, psi_hat = (float(first_crossing(f, m.mean(axis=0))) for m in (db, da))
    if math.isfinite(phi_hat):  # the estimate is always kept
        lows.append(min(psi_hat, f[-1]) - phi_hat)
        highs.append(psi_hat - phi_hat)
    if not lows:
        return math.nan, math.nan
    return float(min(lows)), float(max(highs))


def _difference_scan(fractions: np.ndarray, margins: np.ndarray, crit: float) -> np.ndarray:
    """Points of ``(fractions[0], fractions[-1]]`` kept by the two-sided t-test of
    ``E[D(φ)] = 0``: :data:`DIFFERENCE_GRID` per segment plus the kept set's exact ends."""
    steps = np.linspace(0, 1, DIFFERENCE_GRID + 1)[1:]
    grid = np.concatenate(
        [
            fractions[j] + steps * (fractions[j + 1] - fractions[j])
            for j in range(len(fractions) - 1)
        ]
    )
    lo, hi = inversion_bounds(fractions, margins[None], crit)
    ends = [v for v in (float(lo[0]), float(hi[0])) if math.isfinite(v)]
    phi = np.unique(np.concatenate([grid, ends]))
    phi = phi[phi > fractions[0]]
    at = _interpolate(fractions, margins, phi)  # P×S
    mean = at.mean(axis=1)
    se = at.std(axis=1, ddof=1) / math.sqrt(margins.shape[0])
    return phi[np.abs(mean) <= crit * se * (1 + 1e-9) + 1e-15]


def check_level(level: float) -> None:
    """Raise ``ValueError`` unless ``level`` (an interval's coverage) is in (0, 1)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
