"""The simulation study of the intervals' coverage: does an interval labelled 95 % cover the
truth ~95 % of the time at the seed counts the configs use?

A data-generating model of a recovery experiment (:class:`RecoveryModel`, calibrated on digits
+ logreg, with the scenarios of :data:`SCENARIOS`) draws many simulated experiments; each
interval method of :mod:`bench.analysis.stats` is computed on every one and checked against
the model's known truth (:func:`covers`, censoring-aware). :func:`simulated_coverage` does it
for the fixed-seed intervals (``f_needed`` and a defense's value), :func:`coverage_table` over
scenarios × methods × seed counts, and :func:`simulated_sequential_coverage` for the
precision rule of :mod:`bench.analysis.precision` (seeds added in rounds until the interval is
narrow enough). ``python -m bench.analysis.simulation`` prints the coverage table (the README's
numbers).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bench.analysis.precision import next_count, resolved, seeds_needed, width
from bench.analysis.stats import (
    DEFAULT_METHOD,
    DIFFERENCE_METHODS,
    check_level,
    crossing_difference_interval,
    crossing_method,
    first_crossing,
    inversion_bounds,
    recovery_margins,
    t_quantile,
)
from bench.core.types import ParamError

#: the recovery grid of the shipped configs
DEFAULT_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0)


@dataclass(frozen=True)
class RecoveryModel:
    """A data-generating model of a recovery experiment, calibrated on digits + logreg.

    The population mean curves rise towards ``plateau`` (more clean data keeps helping):
    ``truth(f) = plateau − (plateau − start)·exp(−f/scale)``, one for the undefended arm
    (``start``, ``scale``) and one for the defended arm (``defended_start``,
    ``defended_scale``). Seed ``s`` of one simulated experiment adds:

    - ``split_sd``: a split effect (train/test split and test set) shared by the seed's
      reference and both of its curves, at every f;
    - ``reference_sd``: the clean model's own noise;
    - ``curve_sd``: a curve effect shared across f (poison draw, model init), correlated
      ``defended_corr`` between the two arms (the defended set is the filtered poisoned set);
    - ``point_sd``: independent noise at each (seed, f), correlated ``defended_corr`` between
      arms (common random numbers).

    With the defaults a seed's accuracy varies by ~0.014–0.016 (digits/logreg: 0.01–0.03);
    ``noise`` picks the shape of every term: ``normal``, ``t4`` (heavy tails) or ``skewed``
    (an occasional bad seed), all scaled to the stated SDs.
    """

    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    reference: float = 0.948
    tolerance: float = 0.005
    start: float = 0.83
    plateau: float = 0.975
    scale: float = 1.0
    defended_start: float = 0.90
    defended_scale: float = 0.5
    split_sd: float = 0.012
    reference_sd: float = 0.008
    curve_sd: float = 0.010
    point_sd: float = 0.005
    defended_corr: float = 0.6
    noise: Literal["normal", "t4", "skewed"] = "normal"

    def truth(self, arm: Literal["undefended", "defended"] = "undefended") -> np.ndarray:
        """The population mean curve on the grid."""
        f = np.asarray(self.fractions, dtype=float)
        start, scale = (
            (self.start, self.scale)
            if arm == "undefended"
            else (self.defended_start, self.defended_scale)
        )
        return self.plateau - (self.plateau - start) * np.exp(-f / scale)

    def true_f(self, arm: Literal["undefended", "defended"] = "undefended") -> float:
        """The estimand: the crossing of the noise-free curve (interpolated on the grid, as the
        estimate is) with ``reference − tolerance``; ``inf`` beyond the grid."""
        margin = self.truth(arm) - (self.reference - self.tolerance)
        return float(first_crossing(np.asarray(self.fractions), margin))

    def _draw_noise(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        if self.noise == "normal":
            return rng.standard_normal(shape)
        if self.noise == "t4":
            return rng.standard_t(4, shape) / math.sqrt(2.0)  # var of t4 is 2
        return 1.0 - rng.exponential(1.0, shape)  # mean 0, var 1, long lower tail

    def draw(
        self, n_seeds: int, n_sim: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n_sim`` simulated experiments with ``n_seeds`` seeds each: undefended curves and
        defended curves (``n_sim×S×F``) and references (``n_sim×S``)."""
        n_f = len(self.fractions)
        shape = (n_sim, n_seeds)
        rho, rest = self.defended_corr, math.sqrt(1 - self.defended_corr**2)
        split = self.split_sd * self._draw_noise(rng, shape)
        refs = self.reference + split + self.reference_sd * self._draw_noise(rng, shape)
        seed_a, seed_o = (self._draw_noise(rng, shape) for _ in range(2))
        point_a, point_o = (self._draw_noise(rng, (*shape, n_f)) for _ in range(2))
        seed_b = rho * seed_a + rest * seed_o
        point_b = rho * point_a + rest * point_o
        shared = split[..., None]
        curves_a = (
            self.truth("undefended")
            + shared
            + self.curve_sd * seed_a[..., None]
            + self.point_sd * point_a
        )
        curves_b = (
            self.truth("defended")
            + shared
            + self.curve_sd * seed_b[..., None]
            + self.point_sd * point_b
        )
        return curves_a, curves_b, refs


@dataclass(frozen=True)
class Coverage:
    """Simulated coverage of an interval method: the share of experiments whose interval
    contains the truth, its Monte Carlo standard error, and context."""

    method: str
    target: str
    n_seeds: int
    level: float
    coverage: float
    se: float
    n_sim: int
    truth: float
    median_width: float
    open_share: float
    scenario: str = ""


def covers(low: np.ndarray, high: np.ndarray, truth: float, first: float) -> np.ndarray:
    """Whether each ``[low, high]`` covers ``truth`` (censoring-aware).

    A truth inside the grid is covered by ``low ≤ truth ≤ high`` (``high`` may be ``inf``); a
    truth beyond the grid (``inf``) only by an interval open to the right; a truth at the first
    grid point ``first`` (already recovered) by an interval that starts there.
    """
    low = np.asarray(low, dtype=float)
    high = np.asarray(high, dtype=float)
    if math.isinf(truth) and truth > 0:
        return np.isposinf(high)
    if truth == first:
        return low <= first
    return (low <= truth) & (truth <= high)


def simulated_coverage(
    n_seeds: int,
    method: str | None = None,
    level: float = 0.95,
    n_sim: int = 2000,
    model: RecoveryModel | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    target: Literal["f", "difference"] = "f",
) -> Coverage:
    """How often the ``method`` interval at ``level`` covers the truth of ``model``.

    n_seeds: seeds per simulated experiment (≥ 2); n_sim: simulated experiments (the Monte
    Carlo SE of the coverage is ``sqrt(p(1−p)/n_sim)``, ~0.005 at 2,000 and p = 0.95);
    model: the data-generating model (default :class:`RecoveryModel`); seed: seeds the draws;
    n_boot: resamples for the bootstrap methods; target: ``f`` (the undefended ``f_needed``;
    method one of :data:`CROSSING_METHODS`, default ``t-inversion``) or ``difference``
    (undefended − defended by :func:`crossing_difference_interval`; method ``linearized``
    (default) or ``projection``).

    Use it to label an interval with its achieved coverage at a seed count.
    """
    check_level(level)
    if n_seeds < 2:
        raise ValueError(f"n_seeds must be >= 2 for an interval, got {n_seeds}")
    model = model or RecoveryModel()
    rng = np.random.default_rng(seed)
    curves_a, curves_b, refs = model.draw(n_seeds, n_sim, rng)
    f = np.asarray(model.fractions, dtype=float)
    if target == "f":
        method = method or DEFAULT_METHOD
        truth = model.true_f("undefended")
        if method == "t-inversion":
            margins = recovery_margins(curves_a, refs, model.tolerance)
            low, high = inversion_bounds(f, margins, t_quantile(n_seeds - 1, level))
        else:
            run = crossing_method(method)
            bounds = [
                run(f, curves_a[i], refs[i], model.tolerance, True, level, n_boot, rng)
                for i in range(n_sim)
            ]
            low, high = (np.array(b, dtype=float) for b in zip(*bounds, strict=True))
        ok = covers(low, high, truth, float(f[0]))
    elif target == "difference":
        method = method or "linearized"
        truth = model.true_f("undefended") - model.true_f("defended")
        if not math.isfinite(truth):
            raise ValueError("the difference needs both true crossings inside the grid")
        bounds = [
            crossing_difference_interval(
                f, curves_a[i], curves_b[i], refs[i], model.tolerance, True, level, method
            )
            for i in range(n_sim)
        ]
        low, high = (np.array(b, dtype=float) for b in zip(*bounds, strict=True))
        ok = (low <= truth) & (truth <= high)
    else:
        raise ParamError("target", f"unknown target {target!r} (valid: f, difference)")
    with np.errstate(invalid="ignore"):  # inf − inf: an interval beyond the grid
        width = np.where(np.isposinf(high) | np.isneginf(low), np.inf, high - low)
    return Coverage(
        method=method,
        target=target,
        n_seeds=n_seeds,
        level=level,
        truth=truth,
        median_width=float(np.median(width)),
        open_share=float(np.mean(~np.isfinite(width))),
        **share_covered(ok),
    )


def share_covered(ok: np.ndarray) -> dict[str, Any]:
    """``coverage`` (the share of simulated experiments whose interval covers the truth), its
    Monte Carlo standard error ``se`` (``sqrt(p(1−p)/n_sim)``) and ``n_sim``."""
    coverage = float(np.mean(ok))
    n_sim = int(np.size(ok))
    return {
        "coverage": coverage,
        "se": math.sqrt(max(coverage * (1 - coverage), 1e-12) / n_sim),
        "n_sim": n_sim,
    }


#: data-generating models the coverage table is simulated under (``digits`` is the default)
SCENARIOS: dict[str, RecoveryModel] = {
    "digits": RecoveryModel(),
    "noisy": RecoveryModel(split_sd=0.024, reference_sd=0.016, curve_sd=0.02, point_sd=0.01),
    "early": RecoveryModel(start=0.90, scale=0.3),
    "late": RecoveryModel(start=0.80, scale=1.6),
    "censored": RecoveryModel(start=0.70, scale=3.0),
    "recovered": RecoveryModel(start=0.95, scale=0.5),
    "split-driven": RecoveryModel(split_sd=0.025, reference_sd=0.004, curve_sd=0.004),
    "t4": RecoveryModel(noise="t4"),
    "skewed": RecoveryModel(noise="skewed"),
}


def coverage_table(
    seed_counts: tuple[int, ...] = (3, 5, 10),
    methods: tuple[str, ...] = ("t-inversion", "percentile", "expanded-percentile"),
    scenarios: tuple[str, ...] = tuple(SCENARIOS),
    n_sim: int = 2000,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    difference_methods: tuple[str, ...] = DIFFERENCE_METHODS,
) -> list[Coverage]:
    """:func:`simulated_coverage` over scenarios × methods × seed counts (``f`` for every
    scenario, the difference where both true crossings are inside the grid)."""
    rows = []
    for name in scenarios:
        model = SCENARIOS[name]
        for n_seeds in seed_counts:
            for method in methods:
                rows.append(
                    _named(
                        name, simulated_coverage(n_seeds, method, level, n_sim, model, seed, n_boot)
                    )
                )
            both_inside = all(math.isfinite(model.true_f(a)) for a in ("undefended", "defended"))
            for method in difference_methods if both_inside else ():
                cov = simulated_coverage(
                    n_seeds, method, level, n_sim, model, seed, target="difference"
                )
                rows.append(_named(name, cov))
    return rows


def _named(scenario: str, cov: Coverage) -> Coverage:
    return dataclasses.replace(cov, scenario=scenario)


# ---------------------------------------------------------------------------------------------
# The sequential rule (a precision request)


@dataclass(frozen=True)
class SequentialCoverage:
    """Simulated coverage of the sequential interval, with what the rule spent."""

    scenario: str
    n_min: int
    n_max: int
    target: float
    level: float
    coverage: float
    se: float
    n_sim: int
    truth: float
    mean_seeds: float
    resolved_share: float
    median_width: float


def simulated_sequential_coverage(
    model: RecoveryModel | None = None,
    n_min: int = 3,
    n_max: int = 20,
    target: float = 0.25,
    level: float = 0.95,
    n_sim: int = 2000,
    seed: int = 0,
    scenario: str = "",
) -> SequentialCoverage:
    """Coverage of the interval at the seed count where the rounds of :func:`plan_round` stop.

    Each simulated experiment draws ``n_max`` seeds up front and uses their first ``n`` at a
    round with ``n`` seeds, so the rounds see exactly what a run would: ``n_min`` first, then
    :func:`next_count` of :func:`seeds_needed` until resolved or at ``n_max``.
    """
    model = model or RecoveryModel()
    rng = np.random.default_rng(seed)
    curves, _, refs = model.draw(n_max, n_sim, rng)
    f = np.asarray(model.fractions, dtype=float)
    margins = recovery_margins(curves, refs, model.tolerance)  # n_sim×n_max×F
    n = np.full(n_sim, n_min)
    final_low = np.full(n_sim, np.nan)
    final_high = np.full(n_sim, np.nan)
    active = np.ones(n_sim, dtype=bool)
    while active.any():
        for count in np.unique(n[active]):
            idx = np.flatnonzero(active & (n == count))
            m = margins[idx, :count]
            low, high = inversion_bounds(f, m, t_quantile(int(count) - 1, level))
            final_low[idx], final_high[idx] = low, high
            needed = seeds_needed(int(count), low, high, m[:, :, -1], target, level)
            nxt = np.array([next_count(int(count), float(x), n_max) for x in needed])
            stop = nxt <= count
            active[idx[stop]] = False
            n[idx[~stop]] = nxt[~stop]
    truth = model.true_f("undefended")
    ok = covers(final_low, final_high, truth, float(f[0]))
    w = width(final_low, final_high)
    return SequentialCoverage(
        scenario=scenario,
        n_min=n_min,
        n_max=n_max,
        target=target,
        level=level,
        truth=truth,
        mean_seeds=float(n.mean()),
        resolved_share=float(resolved(final_low, final_high, target).mean()),
        median_width=float(np.median(w)),
        **share_covered(ok),
    )


def main(argv: list[str] | None = None) -> None:
    """Print the coverage table: ``python -m bench.analysis.simulation [--n-sim N] [--n-boot B]
    [--seed S] [--scenarios a,b] [--methods m,n] [--difference-methods m,n]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.analysis.simulation", description=main.__doc__
    )
    parser.add_argument("--n-sim", type=int, default=2000)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--methods", default="t-inversion,percentile,expanded-percentile")
    parser.add_argument("--difference-methods", default=",".join(DIFFERENCE_METHODS))
    args = parser.parse_args(argv)
    split = lambda text: tuple(v for v in text.split(",") if v)  # noqa: E731
    rows = coverage_table(
        methods=split(args.methods),
        scenarios=split(args.scenarios),
        n_sim=args.n_sim,
        n_boot=args.n_boot,
        seed=args.seed,
        difference_methods=split(args.difference_methods),
    )
    print("| scenario | target | method | seeds | label | coverage | MC SE | median width | open |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.scenario} | {r.target} | {r.method} | {r.n_seeds} | {r.level:.0%} | "
            f"{r.coverage:.3f} | {r.se:.3f} | {r.median_width:.2f} | {r.open_share:.2f} |"
        )


if __name__ == "__main__":
    main()
