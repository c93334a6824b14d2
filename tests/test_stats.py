"""Intervals over seeds (bench/analysis/stats.py): paired differences, the t-inversion interval
on the extra clean data needed and the paired interval on a difference of two crossings (the
simulation that checks each interval covers what its label says: tests/test_simulation.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bench.analysis.recovery import bootstrap_crossing, crossing_point
from bench.analysis.simulation import RecoveryModel
from bench.analysis.stats import (
    PairedDifference,
    crossing_bounds,
    crossing_difference_interval,
    crossing_interval,
    describe_difference,
    expanded_level,
    f_needed,
    interval_kind,
    interval_label,
    is_resolved,
    paired_difference,
    percentile_bootstrap_interval,
    recovery_margins,
    seed_range,
)
from bench.core.types import ParamError

GRID = np.array([0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0])


# --- paired differences ------------------------------------------------------------------------


def test_paired_difference_matches_scipy_paired_t_interval():
    rng = np.random.default_rng(0)
    a = rng.normal(0.9, 0.02, 5)
    b = a - 0.01 + rng.normal(0, 0.005, 5)
    d = paired_difference(a, b, level=0.9)
    ref = scipy_stats.ttest_rel(a, b).confidence_interval(0.9)
    assert d.mean == pytest.approx(np.mean(a - b))
    assert (d.low, d.high) == pytest.approx((ref.low, ref.high))
    assert d.n == 5 and d.level == 0.9


def test_pairing_resolves_what_the_seed_spread_would_hide():
    # seeds differ by ±0.03 but arm a beats arm b by ~0.01 on every seed
    seed_effect = np.array([-0.03, 0.0, 0.03])
    a = 0.90 + seed_effect + np.array([0.011, 0.009, 0.010])
    b = 0.90 + seed_effect
    d = paired_difference(a, b)
    assert d.resolved and is_resolved(d) and d.low > 0
    unpaired = scipy_stats.ttest_ind(a, b).confidence_interval(0.95)
    assert unpaired.low < 0 < unpaired.high  # two independent means would not resolve it
    assert describe_difference(d) == f"+0.010 [{d.low:+.3f}, {d.high:+.3f}]"


def test_unresolved_difference_says_not_distinguishable_at_n_seeds():
    d = paired_difference([0.91, 0.93, 0.90], [0.92, 0.90, 0.91])
    assert d.low < 0 < d.high and not d.resolved
    assert describe_difference(d).startswith("not distinguishable at 3 seeds (")


def test_paired_difference_drops_seeds_missing_on_either_side():
    d = paired_difference([1.0, np.nan, 3.0, 4.0], [0.0, 1.0, np.nan, 1.0])
    assert d.n == 2 and d.mean == pytest.approx(2.0)  # pairs (1, 0) and (4, 1)
    half = scipy_stats.t.ppf(0.975, 1) * 1.0  # sd of (1, 3) is sqrt(2), / sqrt(2) seeds
    assert (d.low, d.high) == pytest.approx((2.0 - half, 2.0 + half))


def test_one_seed_has_a_difference_but_no_interval_and_none_has_nothing():
    one = paired_difference([0.9], [0.8])
    assert one.n == 1 and one.mean == pytest.approx(0.1)
    assert math.isnan(one.low) and math.isnan(one.high) and not one.resolved
    assert describe_difference(one) == "+0.100 (1 seed, no interval)"
    none = paired_difference([np.nan], [0.8])
    assert none.n == 0 and math.isnan(none.mean) and not none.resolved
    assert describe_difference(none) == "no paired seeds"


def test_identical_differences_give_a_zero_width_interval():
    same = paired_difference([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0) and not same.resolved
    shifted = paired_difference([0.91, 0.81, 0.71], [0.9, 0.8, 0.7])
    assert shifted.low == pytest.approx(0.01) and shifted.resolved


def test_paired_difference_rejects_unpaired_shapes_and_bad_levels():
    with pytest.raises(ValueError, match="one value per seed"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="level"):
        paired_difference([1.0, 2.0], [1.0, 1.0], level=95)
    assert PairedDifference(0.1, 0.05, 0.2, 3, 0.95).resolved


# --- the crossing and its t-inversion interval -------------------------------------------------


def _linear_case(offsets):
    """Curves 0.85 + 0.1·f + offset_s against a fixed reference 0.95 (tolerance 0.005): every
    per-seed margin is linear in f, so the interval has a closed form."""
    grid = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    offsets = np.asarray(offsets, dtype=float)
    curves = 0.85 + 0.1 * grid[None, :] + offsets[:, None]
    refs = np.full(len(offsets), 0.95)
    return grid, curves, refs


def test_interval_has_the_closed_form_of_a_linear_curve():
    grid, curves, refs = _linear_case([-0.01, 0.0, 0.01])
    low, high = crossing_interval(grid, curves, refs, 0.005)
    # mean margin 0.1·f − 0.095, its SE 0.01/√3: kept where |0.1·f − 0.095| ≤ t₂·SE
    half = scipy_stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3) / 0.1
    assert (low, high) == pytest.approx((0.95 - half, 0.95 + half))
    assert f_needed(grid, curves, refs, 0.005) == pytest.approx(0.95)


def test_interval_agrees_with_a_brute_force_scan_of_the_t_statistic():
    rng = np.random.default_rng(3)
    fine = np.unique(np.concatenate([np.linspace(0, 3, 6001), GRID]))
    for _ in range(60):
        s = int(rng.integers(2, 8))
        truth = 0.83 + rng.uniform(0.02, 0.2) * (1 - np.exp(-GRID / rng.uniform(0.2, 3)))
        curves = (
            truth
            + rng.normal(0, rng.uniform(0.002, 0.03), (s, 1))
            + rng.normal(0, rng.uniform(0.001, 0.02), (s, len(GRID)))
        )
        refs = 0.93 + rng.normal(0, 0.01, s)
        low, high = crossing_interval(GRID, curves, refs, 0.005)
        margins = recovery_margins(curves, refs, 0.005)
        at = np.stack([np.interp(fine, GRID, m) for m in margins])  # seeds × points
        t = at.mean(axis=0) / (at.std(axis=0, ddof=1) / math.sqrt(s))
        k = scipy_stats.t.ppf(0.975, s - 1)
        kept = fine[np.abs(t) <= k]
        lo = min([*kept, *([0.0] if t[0] >= -k else [])], default=math.inf)
        hi = max([*kept, *([0.0] if t[0] >= -k else [])], default=-math.inf)
        hi = math.inf if t[-1] <= k else hi
        assert low == pytest.approx(lo, abs=1e-3) or low == lo
        assert high == pytest.approx(hi, abs=1e-3) or high == hi


def test_estimate_is_always_inside_its_interval():
    rng = np.random.default_rng(4)
    model = RecoveryModel()
    curves, _, refs = model.draw(5, 200, rng)
    for c, r in zip(curves, refs, strict=True):
        est = f_needed(GRID, c, r, 0.005)
        assert est == pytest.approx(crossing_point(GRID, c.mean(axis=0), r.mean() - 0.005))
        low, high = crossing_interval(GRID, c, r, 0.005)
        assert low <= est <= high


def test_lower_is_better_mirrors_higher_is_better():
    grid, curves, refs = _linear_case([-0.01, 0.004, 0.01])
    up = crossing_interval(grid, curves, refs, 0.005, higher=True)
    down = crossing_interval(grid, 1 - curves, 1 - refs, 0.005, higher=False)
    assert down == pytest.approx(up)


def test_censored_and_already_recovered_curves():
    grid, curves, refs = _linear_case([-0.01, 0.0, 0.01])
    never = crossing_interval(grid, curves - 0.3, refs, 0.005)
    assert never == (math.inf, math.inf)  # clearly not recovered by the grid's end
    maybe = crossing_interval(grid, curves - 0.1, refs, 0.005)  # mean margin 0.005 at f = 2
    half = scipy_stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3) / 0.1
    assert maybe[0] == pytest.approx(1.95 - half) and maybe[1] == math.inf
    already = crossing_interval(grid, curves + 0.3, refs, 0.005)
    assert already == (0.0, 0.0)


def test_a_point_equal_to_the_reference_on_every_seed_is_known_exactly():
    # the clean group: its f = 0 rows are the reference, so the margin there is exactly the
    # tolerance on every seed, and later points are noisy
    refs = np.array([0.978, 0.956, 0.911])
    later = np.array([[0.022, 0.0], [0.0, 0.0], [0.022, 0.022]])  # seeds × (f = 0.25, 0.5)
    curves = np.column_stack([refs, refs[:, None] + later])
    assert crossing_interval(np.array([0.0, 0.25, 0.5]), curves, refs, 0.005) == (0.0, 0.0)


def test_interval_input_checks():
    grid, curves, refs = _linear_case([-0.01, 0.0, 0.01])
    assert all(math.isnan(v) for v in crossing_interval(grid, curves[:1], refs[:1], 0.005))
    bad = curves.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        crossing_interval(grid, bad, refs, 0.005)
    with pytest.raises(ValueError, match="increasing"):
        crossing_interval(grid[::-1], curves, refs, 0.005)
    with pytest.raises(ValueError, match="S×F"):
        crossing_interval(grid, curves.T, refs, 0.005)


# --- fewer seeds: the per-seed range; method names ----------------------------------------------


def test_fewer_than_three_seeds_give_the_per_seed_range():
    grid, curves, refs = _linear_case([-0.01, 0.01])
    per_seed = [crossing_point(grid, c, r - 0.005) for c, r in zip(curves, refs, strict=True)]
    assert seed_range(grid, curves, refs, 0.005) == pytest.approx((1.05, 0.85)[::-1])
    assert seed_range(grid, curves, refs, 0.005) == (min(per_seed), max(per_seed))
    assert crossing_bounds(grid, curves, refs, 0.005) == seed_range(grid, curves, refs, 0.005)
    one = crossing_bounds(grid, curves[:1], refs[:1], 0.005)
    assert one == pytest.approx((1.05, 1.05))
    assert [interval_kind(n) for n in (0, 1, 2, 3, 10)] == [
        "none",
        "range",
        "range",
        "interval",
        "interval",
    ]
    assert interval_label(2) == "per-seed range (2 seeds)"
    assert interval_label(5) == "95 % interval (t-inversion, 5 seeds)"


def test_three_seeds_give_the_interval_and_methods_are_checked():
    grid, curves, refs = _linear_case([-0.01, 0.0, 0.01])
    assert crossing_bounds(grid, curves, refs, 0.005) == crossing_interval(
        grid, curves, refs, 0.005
    )
    rng = np.random.default_rng(0)
    boot = crossing_bounds(grid, curves, refs, 0.005, method="percentile", n_boot=200, rng=rng)
    assert boot == percentile_bootstrap_interval(
        grid, curves, refs, 0.005, n_boot=200, rng=np.random.default_rng(0)
    )
    with pytest.raises(ParamError) as exc:
        crossing_bounds(grid, curves, refs, 0.005, method="bca")
    assert exc.value.field == "method" and "t-inversion" in str(exc.value)


def test_recovery_bootstrap_crossing_delegates_to_the_new_interval():
    grid, curves, refs = _linear_case([-0.01, 0.0, 0.01])
    rng = np.random.default_rng(0)
    assert bootstrap_crossing(grid, curves, refs, 0.005, True, 100, rng) == crossing_interval(
        grid, curves, refs, 0.005
    )
    assert all(math.isnan(v) for v in bootstrap_crossing(grid, curves, refs, 0.005, True, 0, rng))


def test_expanded_level_follows_hesterberg():
    for n in (3, 5, 10):
        z = math.sqrt(n / (n - 1)) * scipy_stats.t.ppf(0.975, n - 1)
        assert expanded_level(0.95, n) == pytest.approx(1 - 2 * scipy_stats.norm.cdf(-z))
    assert expanded_level(0.95, 10) == pytest.approx(0.9829, abs=1e-4)


# --- the paired difference of two crossings (a defense's value) --------------------------------


def _two_arms(offsets):
    """Undefended 0.85 + 0.05·f and defended 0.85 + 0.1·f, each seed shifted by one offset
    shared by both arms and its reference: crossings 1.9 and 0.95, difference 0.95."""
    grid = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    offsets = np.asarray(offsets, dtype=float)
    a = 0.85 + 0.05 * grid[None, :] + offsets[:, None]
    b = 0.85 + 0.1 * grid[None, :] + offsets[:, None]
    refs = 0.95 + offsets + np.array([0.002, -0.003, 0.001, 0.0])[: len(offsets)]
    return grid, a, b, refs


@pytest.mark.parametrize("method", ["linearized", "projection"])
def test_difference_interval_covers_a_known_difference_and_resolves_it(method):
    grid, a, b, refs = _two_arms([-0.02, 0.0, 0.02, 0.01])
    low, high = crossing_difference_interval(grid, a, b, refs, 0.005, method=method)
    estimate = f_needed(grid, a, refs, 0.005) - f_needed(grid, b, refs, 0.005)
    assert low <= estimate <= high
    assert low <= 0.95 <= high and low > 0  # contains the truth and resolves the saving


def test_projection_is_wider_than_linearized():
    grid, a, b, refs = _two_arms([-0.02, 0.0, 0.02, 0.01])
    lin = crossing_difference_interval(grid, a, b, refs, 0.005, method="linearized")
    proj = crossing_difference_interval(grid, a, b, refs, 0.005, method="projection")
    assert proj[0] <= lin[0] and proj[1] >= lin[1] and proj[1] - proj[0] > lin[1] - lin[0]


def test_identical_arms_differ_by_zero():
    grid, a, _, refs = _two_arms([-0.02, 0.0, 0.02, 0.01])
    low, high = crossing_difference_interval(grid, a, a, refs, 0.005)
    assert low < 0 < high or low == high == 0.0


def test_difference_is_open_where_an_arm_may_not_recover():
    grid, a, b, refs = _two_arms([-0.02, 0.0, 0.02, 0.01])
    low, high = crossing_difference_interval(grid, a - 0.3, b, refs, 0.005)
    assert high == math.inf and low > 0  # undefended never recovers: saves more than this
    low, high = crossing_difference_interval(grid, a, b - 0.3, refs, 0.005)
    assert low == -math.inf and high < 0  # defended never recovers: costs at least this
    with pytest.raises(ParamError, match="method"):
        crossing_difference_interval(grid, a, b, refs, 0.005, method="delta")
