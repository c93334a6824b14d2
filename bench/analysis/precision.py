"""A precision request: how many seeds each headline group needs, and the stopping rule.

A run asked for ``seeds: {min: 3, max: 20, precision: 0.25}`` runs ``min`` seeds, then adds
seeds in rounds to the groups (dataset, model, attack, rate, defense) whose "extra clean data
needed" interval is still wider than ``precision`` (× n_train) or unbounded, until every group
meets it or has ``max`` seeds: the Chow–Robbins fixed-width procedure, in rounds.

**Resolved** means the interval answers: it is bounded and at most ``precision`` wide, or the
data rule out everything but "not recovered within the grid" (the answer is then "> max",
which more seeds cannot sharpen). A group whose interval is open only because the pool or the
grid ends before the curve crosses is not resolvable by seeds: it is reported as such.

**How many seeds a group needs** (:func:`seeds_needed`) comes from the observed spread: a
bounded interval narrows as ``t_{n−1}/√n``, so the width ``W`` seen at ``n`` seeds predicts
``W·(t_{n'−1}/t_{n−1})·√(n/n')`` at ``n'``. An interval that is still open to the right
closes when the mean margin at the grid's last point is significantly above 0, which at the
observed mean ``m`` and spread ``s`` takes the smallest ``n'`` with ``√n'·m/s ≥ t_{n'−1}``.
Each round moves a group to ``min(max, 2n, max(n + 1, needed))`` seeds: at most doubling, so
that a noisy first estimate cannot spend the whole cap at once, and so that the number of looks
(the source of optional-stopping bias) stays small: 3 → 6 → 12 → 20 at the most.

The stopping rule's coverage is checked by simulation
(:func:`bench.analysis.simulation.simulated_sequential_coverage` and its test): stopping when
the interval is narrow enough selects seeds whose spread happened to be small, so the achieved
coverage of a sequential interval is not the fixed-``n`` one; measured, it stays within a few points of the
label at the caps the shipped configs use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import stdtrit

from bench.analysis.recovery import (
    clean_reference,
    estimate_recovery,
    row_references,
    seed_curves,
)
from bench.analysis.stats import (
    recovery_margins,
)
from bench.core.schema import (
    DEFAULT_METRIC,
    DEFAULT_TOLERANCE,
    GROUP_KEYS,
    NO_ATTACK_ID,
    NO_DEFENSE_ID,
    ROW_REFERENCES,
    higher_is_better,
)

#: what a group's precision status says (``precision_status`` column)
MET = "met"
BEYOND_GRID = "beyond grid"  # only "not recovered within the grid" is kept: the answer is "> max"
TOO_WIDE = "too wide"
OPEN = "unbounded"
NO_DATA = "no data"
CAP = "cap reached"

#: the most seeds a prediction looks ahead to (beyond it a group reads "≈ 1,000+ seeds")
MAX_LOOKAHEAD = 1000


def width(low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    """The width of ``[low, high]`` (``inf`` when either end is open, NaN when missing)."""
    low = np.asarray(low, dtype=float)
    high = np.asarray(high, dtype=float)
    with np.errstate(invalid="ignore"):
        out = high - low
    return np.where(np.isposinf(high) | np.isinf(low), np.inf, out)


def resolved(low: np.ndarray | float, high: np.ndarray | float, target: float) -> np.ndarray:
    """Whether each interval answers at ``target`` width: bounded and at most ``target`` wide,
    or "not recovered within the grid" alone (``low`` = ``inf``)."""
    low = np.asarray(low, dtype=float)
    w = width(low, high)
    return (np.isfinite(w) & (w <= target + 1e-12)) | np.isposinf(low)


def _t(df: np.ndarray, level: float) -> np.ndarray:
    return stdtrit(df, 1 - (1 - level) / 2)


def seeds_needed(
    n_seeds: int,
    low: np.ndarray,
    high: np.ndarray,
    last_margins: np.ndarray,
    target: float,
    level: float = 0.95,
) -> np.ndarray:
    """Seeds each interval needs to reach ``target`` width, predicted from what is seen now.

    n_seeds: seeds now (≥ 2); low, high: the intervals (B); last_margins: ``B×S`` per-seed
    margins at the grid's last fraction. Returns B floats: ``n_seeds`` for a resolved
    interval; ``inf`` where the mean margin at the last fraction is ≤ 0, so the crossing may lie
    beyond the grid (more seeds can at most establish "> grid", and :func:`next_count` then
    doubles; a longer grid is what would place the crossing); else the predicted count (capped
    at :data:`MAX_LOOKAHEAD` + 1). See the module docstring for the rule.
    """
    low = np.asarray(low, dtype=float)
    high = np.asarray(high, dtype=float)
    out = np.full(len(low), float(n_seeds))
    done = resolved(low, high, target)
    candidates = np.arange(n_seeds, MAX_LOOKAHEAD + 1, dtype=float)
    t_now = float(_t(n_seeds - 1, level))
    t_at = _t(candidates - 1, level)
    w = width(low, high)
    bounded = ~done & np.isfinite(w)
    if bounded.any():
        # predicted width at each candidate count: W · (t_{n'-1}/t_{n-1}) · sqrt(n/n')
        pred = w[bounded, None] * (t_at / t_now)[None, :] * np.sqrt(n_seeds / candidates)[None, :]
        out[bounded] = _first_true(pred <= target, candidates)
    open_right = ~done & ~np.isfinite(w)
    if open_right.any():
        m = np.asarray(last_margins, dtype=float)[open_right]
        mean = m.mean(axis=1)
        sd = m.std(axis=1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(sd > 0, mean / sd, np.where(mean > 0, np.inf, -np.inf))
        closes = np.sqrt(candidates)[None, :] * z[:, None] >= t_at[None, :]
        needed = _first_true(closes, candidates)
        # one more round than the upper bound alone: the width still has to shrink after it
        out[open_right] = np.where(mean > 0, np.maximum(needed, n_seeds + 1), np.inf)
    return out


def _first_true(mask: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    hit = mask.any(axis=1)
    first = candidates[mask.argmax(axis=1)]
    return np.where(hit, first, float(MAX_LOOKAHEAD + 1))


def next_count(n_seeds: int, needed: float, max_seeds: int) -> int:
    """The seeds a group has after the next round: ``min(max, 2n, max(n + 1, needed))``."""
    if needed <= n_seeds or n_seeds >= max_seeds:
        return n_seeds
    step = max(n_seeds + 1, needed) if math.isfinite(needed) else 2 * n_seeds
    return int(min(max_seeds, 2 * n_seeds, step))


@dataclass(frozen=True)
class GroupPrecision:
    """One group's standing against the precision target."""

    n_seeds: int
    width: float
    status: str
    seeds_needed: float


def precision_table(
    table: pd.DataFrame,
    target: float,
    max_seeds: int,
    metric: str = DEFAULT_METRIC,
    tolerance: float = DEFAULT_TOLERANCE,
    level: float = 0.95,
    estimates: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Each group's precision standing: the group keys, ``n_seeds``, ``width`` (× n_train),
    ``precision_met`` (bool), ``precision_status`` (:data:`MET`, :data:`BEYOND_GRID`,
    :data:`TOO_WIDE`, :data:`OPEN`, :data:`CAP` or :data:`NO_DATA`) and ``seeds_needed`` (the
    predicted count, ``inf`` when seeds cannot resolve it: the grid or the pool ends first).

    estimates: :func:`estimate_recovery` of ``table`` if already computed.
    """
    est = estimates if estimates is not None else estimate_recovery(table, metric, tolerance)
    keys = list(GROUP_KEYS)
    higher = higher_is_better(metric)
    refs = clean_reference(table, metric)
    ref_by = {
        (d, m): dict(zip(g["seed"].astype(int), g["reference"], strict=True))
        for (d, m), g in refs.groupby(["dataset_id", "model_id"])
    }
    ok = table[table["status"].isin(["ok", "skipped"])]
    groups = dict(iter(ok.groupby(keys, sort=False, dropna=False)))
    rows = []
    for _, row in est.iterrows():
        key = tuple(row[k] for k in keys)
        n = int(row["n_seeds"]) if pd.notna(row["n_seeds"]) else 0
        low, high = float(row["f_low"]), float(row["f_high"])
        w = float(width(low, high))
        if n < 2 or math.isnan(low) or math.isnan(high):
            rows.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "n_seeds": n,
                    "width": w,
                    "precision_met": False,
                    "precision_status": NO_DATA,
                    "seeds_needed": math.nan,
                }
            )
            continue
        if bool(resolved(low, high, target)):
            status = BEYOND_GRID if math.isinf(low) else MET
            rows.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "n_seeds": n,
                    "width": w,
                    "precision_met": True,
                    "precision_status": status,
                    "seeds_needed": n,
                }
            )
            continue
        _, seeds, values, _ = seed_curves(groups[key], metric)
        row_ref = ROW_REFERENCES.get(metric)  # as estimate_recovery pairs them
        if row_ref is not None and key[2] != NO_ATTACK_ID:
            by_seed = row_references(groups[key], row_ref)
        else:
            by_seed = ref_by.get((key[0], key[1]), {})
        paired = [i for i, s in enumerate(seeds) if s in by_seed]
        references = np.array([by_seed[seeds[i]] for i in paired], dtype=float)
        margins = recovery_margins(values[paired], references, tolerance, higher)
        needed = float(
            seeds_needed(n, np.array([low]), np.array([high]), margins[None, :, -1], target, level)[
                0
            ]
        )
        status = CAP if n >= max_seeds else (TOO_WIDE if math.isfinite(w) else OPEN)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "n_seeds": n,
                "width": w,
                "precision_met": False,
                "precision_status": status,
                "seeds_needed": needed,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[*keys, "n_seeds", "width", "precision_met", "precision_status", "seeds_needed"],
    )


def plan_round(status: pd.DataFrame, max_seeds: int) -> dict[tuple[object, ...], int]:
    """The seed count each group should have after the next round (only groups that change).

    A group that is not resolved, not at the cap and that more seeds can help moves to
    :func:`next_count`; the clean reference of its dataset and model and its undefended twin
    (same attack and rate, defense ``none``) move with it, since its interval and its paired
    defense value are computed against them.
    """
    keys = list(GROUP_KEYS)
    current = {tuple(r[k] for k in keys): int(r["n_seeds"]) for _, r in status.iterrows()}
    want: dict[tuple[object, ...], int] = {}
    for _, r in status.iterrows():
        if r["precision_met"] or r["precision_status"] == NO_DATA:
            continue
        n = int(r["n_seeds"])
        target_n = next_count(n, float(r["seeds_needed"]), max_seeds)
        if target_n <= n:
            continue
        key = tuple(r[k] for k in keys)
        dataset, model, attack, rate, _ = key
        for dep in (
            key,
            (dataset, model, NO_ATTACK_ID, 0.0, NO_DEFENSE_ID),
            (dataset, model, attack, rate, NO_DEFENSE_ID),
        ):
            want[dep] = max(want.get(dep, 0), target_n)
    return {k: n for k, n in want.items() if n > current.get(k, 0)}
