"""The simulation study (bench/analysis/simulation.py): the data-generating model, the
censoring-aware coverage check, and the coverage each interval achieves against its label
(fixed seed counts and the sequential precision rule)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.analysis.simulation import (
    SCENARIOS,
    RecoveryModel,
    covers,
    simulated_coverage,
    simulated_sequential_coverage,
)

GRID = np.array([0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0])


# --- the simulation --------------------------------------------------------------------------


def test_model_truth_and_noise_are_what_it_says():
    model = RecoveryModel()
    truth = 0.975 - 0.145 * np.exp(-GRID)
    assert model.truth() == pytest.approx(truth)
    assert model.true_f() == pytest.approx(np.interp(0.943, truth, GRID))  # increasing curve
    assert SCENARIOS["censored"].true_f() == math.inf
    assert SCENARIOS["recovered"].true_f() == 0.0
    curves, defended, refs = model.draw(3, 20000, np.random.default_rng(0))
    assert curves.shape == defended.shape == (20000, 3, len(GRID)) and refs.shape == (20000, 3)
    assert refs.std() == pytest.approx(math.hypot(0.012, 0.008), rel=0.03)
    sd_curve = math.sqrt(0.012**2 + 0.010**2 + 0.005**2)
    assert curves[..., 3].std() == pytest.approx(sd_curve, rel=0.03)
    corr = np.corrcoef(refs.ravel(), curves[..., 3].ravel())[0, 1]
    assert corr == pytest.approx(0.012**2 / (math.hypot(0.012, 0.008) * sd_curve), abs=0.03)


def test_covers_is_censoring_aware():
    low = np.array([0.0, 0.5, 3.0, math.inf])
    high = np.array([1.0, math.inf, math.inf, math.inf])
    assert covers(low, high, 0.7, 0.0).tolist() == [True, True, False, False]
    assert covers(low, high, math.inf, 0.0).tolist() == [False, True, True, True]
    assert covers(low, high, 0.0, 0.0).tolist() == [True, False, False, False]


#: Monte Carlo experiments per seed count: the coverage's MC standard error is
#: sqrt(0.95·0.05/2000) ≈ 0.005, so "label − 5 points − 2 SE" is ~0.89.
N_SIM = 2000
N_SIM_SLOW = 300  # the difference and bootstrap intervals loop in Python: SE ≈ 0.013


def _within_five_points(cov) -> bool:
    slack = 0.05 + 2 * cov.se
    return cov.level - slack <= cov.coverage <= cov.level + slack


@pytest.mark.parametrize("scenario", ["digits", "noisy", "skewed"])
@pytest.mark.parametrize("n_seeds", [3, 5, 10])
def test_f_interval_covers_what_it_says(scenario, n_seeds):
    cov = simulated_coverage(n_seeds, "t-inversion", 0.95, N_SIM, SCENARIOS[scenario], seed=1)
    print(f"{scenario} {n_seeds} seeds: {cov.coverage:.3f} ± {cov.se:.3f}")
    assert _within_five_points(cov), cov


@pytest.mark.parametrize("n_seeds", [3, 5, 10])
def test_difference_interval_covers_what_it_says(n_seeds):
    cov = simulated_coverage(n_seeds, "linearized", 0.95, N_SIM_SLOW, seed=2, target="difference")
    print(f"difference {n_seeds} seeds: {cov.coverage:.3f} ± {cov.se:.3f}")
    assert _within_five_points(cov), cov


def test_the_coverage_check_fails_the_old_percentile_bootstrap():
    # the check has teeth: the percentile interval labelled 95 % covers ~74 % at 3 seeds
    cov = simulated_coverage(3, "percentile", 0.95, N_SIM_SLOW, seed=3, n_boot=200)
    assert cov.coverage < 0.85 and not _within_five_points(cov), cov


@pytest.mark.parametrize("scenario", ["digits", "noisy", "early", "late", "skewed"])
@pytest.mark.parametrize("n_max", [10, 20])
def test_sequential_seeds_keep_the_coverage_they_say(scenario, n_max):
    """The precision rule (add seeds in rounds until the interval is 0.25× wide or at the cap)
    chooses its seed count from the data: its final interval still covers within 5 points."""
    cov = simulated_sequential_coverage(
        SCENARIOS[scenario], 3, n_max, 0.25, 0.95, N_SIM, seed=4, scenario=scenario
    )
    print(f"{scenario} 3..{n_max} seeds: {cov.coverage:.3f} ± {cov.se:.3f}, {cov.mean_seeds:.1f}")
    assert _within_five_points(cov), cov
    assert 3 <= cov.mean_seeds <= n_max
