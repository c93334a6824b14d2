"""The real-data check of the headline interval: many seeds as the truth, disjoint k-seed
subsets as experiments (``tests/benchmarks/test_estimator.py`` runs it on digits).

For each group (dataset, model, attack, rate, defense) of a run with many seeds, the "truth" is
the estimate from every seed; the run's seeds are then cut into disjoint subsets of ``k``
seeds, and each subset's interval is checked against that truth: its coverage (censoring-aware,
:func:`bench.analysis.simulation.covers`), whether it is bounded, and its width. The reference
can be the clean model's single fit (``single``) or the average of ``recovery.reference_fits`` fits
(``averaged``, the ``reference_accuracy`` column), so one run compares both estimators.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd

from bench.analysis.precision import width
from bench.analysis.recovery import estimate_recovery
from bench.analysis.simulation import covers
from bench.core.schema import DEFAULT_METRIC, DEFAULT_TOLERANCE, GROUP_KEYS, REFERENCE_COLUMNS

#: the study's output columns
STUDY_COLUMNS = (
    "reference",
    "k",
    "experiments",
    "coverage",
    "bounded_share",
    "median_width",
    "median_width_bounded",
)


def with_reference(table: pd.DataFrame, reference: Literal["single", "averaged"]) -> pd.DataFrame:
    """``table`` whose clean rows give the single clean fit (the averaged columns dropped) or
    the average of the reference fits (as recorded)."""
    if reference == "single":
        return table.drop(columns=list(REFERENCE_COLUMNS.values()), errors="ignore")
    if REFERENCE_COLUMNS["accuracy"] not in table:
        raise ValueError("the table has no averaged reference (run with recovery.reference_fits)")
    return table


def subset_study(
    table: pd.DataFrame,
    ks: tuple[int, ...] = (3, 5, 10),
    reference: Literal["single", "averaged"] = "averaged",
    metric: str = DEFAULT_METRIC,
    tolerance: float = DEFAULT_TOLERANCE,
    truth: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Coverage, bounded share and median width of the k-seed intervals against the all-seed
    truth. Returns ``(summary, intervals)``: one summary row per k (:data:`STUDY_COLUMNS`)
    and every subset's interval (group keys, k, subset, f_low, f_high, truth).

    truth: the all-seed estimates to judge against (default: this reference's own); passing
    one estimator's truth to both keeps the comparison on one yardstick.
    """
    t = with_reference(table, reference)
    keys = list(GROUP_KEYS)
    if truth is None:
        truth = estimate_recovery(t, metric, tolerance)
    truth_by = {tuple(r[k] for k in keys): float(r["f_needed"]) for _, r in truth.iterrows()}
    seeds = np.sort(t["seed"].unique())
    rows = []
    for k in ks:
        for start in range(0, len(seeds) - k + 1, k):
            chosen = set(seeds[start : start + k].tolist())
            est = estimate_recovery(t[t["seed"].isin(chosen)], metric, tolerance)
            for _, r in est.iterrows():
                key = tuple(r[c] for c in keys)
                rows.append(
                    {
                        **dict(zip(keys, key, strict=True)),
                        "k": k,
                        "subset": start // k,
                        "f_low": float(r["f_low"]),
                        "f_high": float(r["f_high"]),
                        "truth": truth_by.get(key, math.nan),
                    }
                )
    intervals = pd.DataFrame(rows)
    poisoned = intervals[intervals["rate"] > 0]
    summary = []
    for k, g in poisoned.groupby("k"):
        ok = [
            bool(covers(np.array([lo]), np.array([hi]), tr, 0.0)[0])
            for lo, hi, tr in zip(g["f_low"], g["f_high"], g["truth"], strict=True)
        ]
        w = width(g["f_low"].to_numpy(), g["f_high"].to_numpy())
        bounded = np.isfinite(w)
        summary.append(
            {
                "reference": reference,
                "k": int(k),
                "experiments": len(g),
                "coverage": float(np.mean(ok)),
                "bounded_share": float(bounded.mean()),
                "median_width": float(np.median(w)),
                "median_width_bounded": float(np.median(w[bounded])) if bounded.any() else math.nan,
            }
        )
    return pd.DataFrame(summary, columns=list(STUDY_COLUMNS)), intervals
