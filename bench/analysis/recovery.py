"""The headline: how much extra clean data a poisoned (and defended) model needs to get back to
the clean model's quality, estimated from the long results table.

Definitions (all pure functions of the table; nothing here trains a model):

- **Reference**: the clean model of the same dataset and model (attack ``none``, rate 0, defense
  ``none``, extra fraction ``f = 0``): the metric's mean over seeds. For ``backdoor_asr`` it is
  the clean model *triggered*: each attacked row records it (``backdoor_asr_clean``,
  ``schema.ROW_REFERENCES``), since the clean cell knows no trigger.
- **Recovery curve** of a (dataset, model, attack, rate, defense) group: the metric's mean over
  seeds at each extra-clean fraction ``f`` (``f × n_train`` clean pool rows appended to the
  defended training set).
- **Extra clean data needed** ``f_needed``: the smallest ``f`` at which the mean curve is back
  within ``tolerance`` of the reference (``value ≥ reference − tolerance``; for a
  lower-is-better metric such as the attack success rate, ``value ≤ reference + tolerance``),
  linearly interpolated between the two grid points around the first crossing. ``inf`` (and
  ``censored``) when the curve never crosses within the measured grid, whose end ``f_max`` may be
  below the configured grid's end when the clean pool ran out.
- **Interval** ``[f_low, f_high]``: with 3 or more seeds, the 95 % interval of
  :func:`bench.analysis.stats.crossing_interval`: every ``f`` where a t-test on the per-seed margins
  ``curve_s(f) − (reference_s − tolerance)`` (paired by seed: a seed's clean model and
  poisoned curve share the split and test set) does not reject "the mean margin is 0", plus
  "already recovered" and "not recovered within the grid" unless rejected. Its simulated
  coverage is within Monte Carlo error of 95 % at 3, 5 and 10 seeds (the seed-bootstrap
  percentile interval used before covered ~74 / 85 / 90 %). ``f_high`` is ``inf`` when the
  data cannot rule out "not recovered within the grid". With 1–2 seeds the bounds are the
  per-seed range of ``f_needed`` instead (:func:`bench.analysis.stats.interval_kind`).
- **Fallback** (``schema.FALLBACK_METRICS``): with ``backdoor_asr``, an attack that declares no
  trigger (a label flip: none of its rows has the metric) is estimated on ``accuracy`` at the
  default tolerance instead, so a backdoor and the label flip at the same rate are compared in
  one table; each row's ``metric`` and ``tolerance`` columns say what it was estimated on.
- **Defense value**: the undefended ``f_needed`` minus the defended one (positive: the defense
  saves clean data), also in rows (``× n_train``).

Rows a run skipped are read by their reason (column ``skip_reason``, or the ``error`` text of
older tables): ``pool_exhausted`` ends a seed's curve (the grid is cut at the first fraction any
seed lacks), ``early_stop`` (the curve had recovered at two consecutive grid points) carries the
seed's last measured value forward: learning curves with more clean data rise, so the imputed
value is, if anything, pessimistic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.stats import (
    DEFAULT_METHOD,
    crossing_bounds,
    crossing_difference_interval,
    first_crossing,
    interval_label,
)
from bench.analysis.stats import f_needed as stats_f_needed
from bench.core.schema import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_METRIC,
    DEFAULT_TOLERANCE,
    EARLY_STOP,
    GROUP_KEYS,
    GROUP_LABELS,
    NO_ATTACK_ID,
    NO_DEFENSE_ID,
    POOL_EXHAUSTED,
    REFERENCE_COLUMNS,
    ROW_REFERENCES,
    SYMMETRIC_LABEL_NOISE,
    higher_is_better,
    stable_hash,
)

#: descriptive columns carried from the table into each output row (constant within a group)
CARRIED = ("attack", "defense", "defense_reference", "source_class", "target_class", "theory")

#: the output columns of :func:`estimate_recovery`, in order
COLUMNS = (
    *GROUP_KEYS,
    *(c for c in GROUP_LABELS if c != "rate"),
    *CARRIED,
    "metric",
    "tolerance",
    "n_seeds",
    "n_train",
    "reference",
    "value_at_0",
    "value_at_max",
    "f_needed",
    "f_low",
    "f_high",
    "censored",
    "f_max",
    "grid_max",
    "pool_exhausted",
    "rows_needed",
    "rows_low",
    "rows_high",
    "interval",
    "defense_value_f",
    "defense_value_low",
    "defense_value_high",
    "defense_value_rows",
    "defense_value_kind",
    "defense_value_resolved",
    "poison_fraction",
    "residual_poison_fraction",
    "n_classes",
    "theory_f",
    "theory_f_mixed",
    "diluted_rate",
)


def recovered(value: float, reference: float, tolerance: float, higher: bool = True) -> bool:
    """Whether ``value`` is back within ``tolerance`` of ``reference`` (NaN is not recovered)."""
    if not (math.isfinite(value) and math.isfinite(reference)):
        return False
    return value >= reference - tolerance if higher else value <= reference + tolerance


def crossing_point(
    fractions: Sequence[float],
    values: Sequence[float],
    target: float,
    higher_is_better: bool = True,
) -> float:
    """The smallest extra fraction at which ``values`` reach ``target``, linearly interpolated.

    fractions: increasing grid of extra clean fractions (multiples of n_train, ≥ 0).
    values: the metric at each fraction (NaN counts as not reached).
    target: the level to reach: ``values ≥ target`` (or ``≤`` when not ``higher_is_better``).

    Returns ``fractions[0]`` when the first point already reaches the target, the interpolated
    ``f`` between the last point short of it and the *first* point that reaches it (a noisy
    curve that dips again later keeps its first crossing), and ``inf`` when no point reaches it.
    """
    f = np.asarray(fractions, dtype=float)
    v = np.asarray(values, dtype=float)
    if f.ndim != 1 or f.shape != v.shape:
        raise ValueError(
            f"fractions and values must be 1-d of one length, got {f.shape}, {v.shape}"
        )
    if len(f) == 0:
        return math.inf
    if np.any(np.diff(f) <= 0):
        raise ValueError("fractions must be strictly increasing")
    margins = v - target if higher_is_better else target - v
    return float(first_crossing(f, margins))


def bootstrap_crossing(
    fractions: np.ndarray,
    curves: np.ndarray,
    references: np.ndarray,
    tolerance: float,
    higher: bool,
    n_boot: int,
    rng: np.random.Generator,
    level: float = 0.95,
    method: str = DEFAULT_METHOD,
) -> tuple[float, float]:
    """Bounds ``(low, high)`` around the crossing point: :func:`bench.analysis.stats.crossing_bounds`.

    curves: S×F per-seed metric values; references: S per-seed clean values (paired by seed).
    With 3+ seeds the ``method`` interval at ``level`` (default ``t-inversion``; ``percentile``
    is the seed bootstrap this function was named for, drawing ``n_boot`` resamples from
    ``rng``), with fewer the per-seed range. ``(nan, nan)`` when ``n_boot`` is 0 (no interval
    asked for) or there are no seeds.
    """
    if n_boot <= 0 or len(references) == 0:
        return math.nan, math.nan
    return crossing_bounds(
        fractions, curves, references, tolerance, higher, level, method, n_boot, rng
    )


# ---------------------------------------------------------------------------------------------
# Theory lines for random label flips


def label_noise_margin(eta: float, n_classes: int) -> float:
    """The expected margin left by symmetric label noise: ``1 − η·K/(K−1)`` (K = 2: ``1 − 2η``).

    eta: share of training labels flipped uniformly to another class, in [0, 1].
    With K classes a flipped label lands on each wrong class with probability η/(K−1), so the
    true class keeps probability 1 − η against η/(K−1) for any other: their gap is the margin.
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    return 1.0 - eta * n_classes / (n_classes - 1)


def label_noise_multiplier(eta: float, n_classes: int = 2) -> float:
    """Sample-complexity multiplier ``1 / margin²`` of symmetric label noise (inf at margin ≤ 0).

    The classic bound for learning with random classification noise scales the number of
    examples by ``1/(1 − 2η)²`` (binary); the K-class form uses the margin of
    :func:`label_noise_margin`.
    """
    margin = label_noise_margin(eta, n_classes)
    return math.inf if margin <= 0 else 1.0 / margin**2


def theory_extra_fraction(eta: float, n_classes: int = 2) -> float:
    """Extra data implied by the multiplier: ``f = 1/margin² − 1`` (multiples of n_train).

    This reads the bound as "n·multiplier rows *at noise η* match n clean rows", i.e. it treats
    the extra rows as noisy too: an upper line for clean extra rows (see
    :func:`theory_extra_fraction_mixed`).
    """
    return label_noise_multiplier(eta, n_classes) - 1.0


def theory_extra_fraction_mixed(eta: float, n_classes: int = 2) -> float:
    """Extra *clean* data that restores the effective sample size, as a multiple of n_train.

    Appending ``f·n`` clean rows dilutes the noise to ``η/(1+f)``; with effective size
    ``n_total · margin²`` the condition ``(1+f)·(1 − cη/(1+f))² ≥ 1`` (``c = K/(K−1)``) solves
    to ``1+f = ((2cη + 1) + sqrt(4cη + 1)) / 2``. Always below :func:`theory_extra_fraction`.
    """
    if eta <= 0:
        return 0.0
    c = n_classes / (n_classes - 1)
    u = ((2 * c * eta + 1) + math.sqrt(4 * c * eta + 1)) / 2
    return u - 1.0


def diluted_rate(eta: float, f: float) -> float:
    """The poisoned share after appending ``f × n_train`` clean rows: ``η / (1 + f)``."""
    if not math.isfinite(f):
        return math.nan
    return eta / (1.0 + f)


# ---------------------------------------------------------------------------------------------
# Reading the table


def skip_reasons(table: pd.DataFrame) -> pd.Series:
    """Why each row was skipped: ``pool_exhausted``, ``early_stop``, another text, or None.

    Uses the ``skip_reason`` column when present and falls back to the ``error`` text of tables
    written before it existed.
    """
    out = pd.Series([None] * len(table), index=table.index, dtype=object)
    skipped = table["status"] == "skipped"
    if "skip_reason" in table:
        out[skipped] = table.loc[skipped, "skip_reason"]
    missing = skipped & out.isna()
    if missing.any() and "error" in table:
        text = table.loc[missing, "error"].fillna("").astype(str)
        out[missing] = np.where(
            text.str.startswith("clean pool exhausted"),
            POOL_EXHAUSTED,
            np.where(text.str.startswith("early stop"), EARLY_STOP, "skipped"),
        )
    return out


def _json_list(value: Any) -> Any:
    if isinstance(value, str):
        return json.loads(value)
    return value


def _pair_rate(confusion: Any, pair: tuple[int, int]) -> float:
    """The clean model's share of source-class test rows predicted as the target."""
    m = np.asarray(_json_list(confusion), dtype=float)
    source, target = pair
    total = m[source].sum()
    return float(m[source, target] / total) if total else math.nan


def _clean_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[
        (table["attack_id"] == NO_ATTACK_ID)
        & (table["rate"] == 0)
        & (table["defense_id"] == NO_DEFENSE_ID)
        & (table["extra_fraction"] == 0)
        & (table["status"] == "ok")
    ]


def clean_reference(
    table: pd.DataFrame, metric: str = DEFAULT_METRIC, pair: tuple[int, int] | None = None
) -> pd.DataFrame:
    """Per-seed clean reference values: columns dataset_id, model_id, seed, reference.

    The clean rows are attack ``none``, rate 0, defense ``none``, f = 0, status ok. Where they
    carry ``reference_<metric>`` (``recovery.reference_fits`` > 1) that average of several
    clean fits is the reference, else the clean model's own value. For the
    attack success rate the clean cell has no attack to measure, so the value is read from its
    confusion matrix for the targeted ``pair`` (source, target class indices, as the attacked
    rows record them in ``source_class`` / ``target_class``).
    """
    clean = _clean_rows(table)
    keys = ["dataset_id", "model_id", "seed"]
    if metric == "attack_success_rate":
        out = clean[keys].copy()
        if pair is None or "confusion" not in clean:
            out["reference"] = math.nan
        else:
            out["reference"] = [
                _pair_rate(c, pair) if isinstance(c, str | list) else math.nan
                for c in clean["confusion"]
            ]
    else:
        out = clean[[*keys, metric]].rename(columns={metric: "reference"})
        averaged = REFERENCE_COLUMNS.get(metric)
        if averaged in clean:  # recovery.reference_fits > 1: the mean of several clean fits
            values = pd.to_numeric(clean[averaged], errors="coerce")
            out["reference"] = values.where(values.notna(), out["reference"])
    return out.groupby(keys, as_index=False)["reference"].mean()


def row_references(group: pd.DataFrame, column: str) -> dict[int, float]:
    """Per-seed references a group's own rows record (``schema.ROW_REFERENCES``): the value of
    ``column`` in each seed's ok row at f = 0 (e.g. the clean model's ``backdoor_asr`` on the
    group's trigger)."""
    if column not in group:
        return {}
    at0 = group[(group["extra_fraction"] == 0) & (group["status"] == "ok")]
    values = pd.to_numeric(at0[column], errors="coerce")
    return {int(seed): float(v) for seed, v in zip(at0["seed"], values, strict=True)}


def seed_curves(
    group: pd.DataFrame, metric: str
) -> tuple[np.ndarray, list[int], np.ndarray, float]:
    """Per-seed curves of one group: (fractions, seeds, S×F values, grid_max).

    Columns are cut at the first fraction some seed has no value for (pool exhausted, failed,
    missing), so every remaining column has all seeds; early-stopped rows carry the seed's last
    value forward. Seeds with no value at f = 0 (a failed cell) are left out.
    """
    grid = np.unique(group["extra_fraction"].to_numpy(dtype=float))
    reasons = group["_reason"] if "_reason" in group else skip_reasons(group)
    seed_values = group["seed"].to_numpy(dtype=np.int64)
    all_seeds = np.unique(seed_values)
    si = np.searchsorted(all_seeds, seed_values)
    fj = np.searchsorted(grid, group["extra_fraction"].to_numpy(dtype=float))
    values = np.full((len(all_seeds), len(grid)), np.nan)
    ok = (group["status"] == "ok").to_numpy()
    values[si[ok], fj[ok]] = pd.to_numeric(group[metric], errors="coerce").to_numpy()[ok]
    stopped = np.zeros_like(values, dtype=bool)
    early = (reasons == EARLY_STOP).to_numpy()
    stopped[si[early], fj[early]] = True
    for j in range(1, len(grid)):  # carry the last value into early-stopped columns
        carry = stopped[:, j] & np.isnan(values[:, j])
        values[carry, j] = values[carry, j - 1]
    seeds = [int(s) for s in all_seeds]
    keep = np.isfinite(values[:, 0]) if len(grid) else np.zeros(len(seeds), dtype=bool)
    values = values[keep]
    seeds = [s for s, k in zip(seeds, keep, strict=True) if k]
    complete = np.isfinite(values).all(axis=0) if len(seeds) else np.zeros(len(grid), dtype=bool)
    end = len(grid) if complete.all() else int(np.argmin(complete))
    grid_max = float(grid[-1]) if len(grid) else math.nan
    return grid[:end], seeds, values[:, :end], grid_max


def _mean(group: pd.DataFrame, column: str, rows: np.ndarray | None = None) -> float:
    """The mean of ``column``'s values (NaN and NA left out), at ``rows`` (a boolean array)
    when given; numpy, not pandas: called several times per group (thousands of groups in a
    large table), the same pairwise sum as Series.mean."""
    if column not in group:
        return math.nan
    values = pd.to_numeric(group[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    if rows is not None:
        values = values[rows]
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else math.nan


def estimate_recovery(
    table: pd.DataFrame,
    metric: str = DEFAULT_METRIC,
    tolerance: float = DEFAULT_TOLERANCE,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    fallback: str | None = None,
    fallback_tolerance: float = DEFAULT_TOLERANCE,
) -> pd.DataFrame:
    """The extra-clean-data headline: one row per configuration (``schema.GROUP_KEYS``: the
    dataset, model, attack, rate and defense ids; labels and names carried for display).

    table: the long results table (one row per cell and extra fraction; docs/guide/results-table.md).
    metric: a numeric column, e.g. ``accuracy``, ``macro_f1`` or ``attack_success_rate``
        (lower is better for the latter and ``log_loss``).
    tolerance: how close to the reference counts as recovered, in the metric's units
        (0.005 = half a percentage point of accuracy).
    n_boot: 0 for no interval (``f_low``/``f_high`` NaN); otherwise the interval of
        :func:`bench.analysis.stats.crossing_bounds` (t-test inversion, which draws no resamples: the
        count matters only for the bootstrap methods of that function).
    seed: seeds the bootstrap (each group draws from its own stream keyed by its identity,
        so a group's interval does not depend on which other groups are in the table).
    fallback: the metric an attack's groups are estimated on instead when none of its finished
        rows has a value of ``metric`` (``schema.FALLBACK_METRICS``: a label flip in a run
        measured on ``backdoor_asr`` is estimated on ``accuracy``), at ``fallback_tolerance``;
        the ``metric`` and ``tolerance`` columns say what each row was estimated on. The clean
        groups (no attack) stay on ``metric``. None: every group on ``metric``.

    Columns (see the module docstring for the definitions): the group keys and their labels;
    ``n_seeds`` (seeds in both the curve and the reference), ``n_train``, ``reference`` (clean
    mean), ``value_at_0`` and ``value_at_max`` (the curve's ends); ``f_needed`` (``inf`` when not
    recovered within the grid), ``f_low``/``f_high``, ``censored``, ``f_max`` (largest fraction
    measured for all seeds), ``grid_max`` (largest fraction configured), ``pool_exhausted``
    (the clean pool ended the curve before ``grid_max``); ``rows_needed``/``rows_low``/
    ``rows_high`` (× n_train). ``defense_value_f``/``defense_value_rows``: undefended minus
    defended ``f_needed``; ``defense_value_kind`` says ``exact``; ``lower_bound`` when the
    undefended curve is censored but the defended one recovers (the value is
    ``f_max(undefended) − f_needed``: the defense saves at least that); NaN with kind
    ``unknown`` when the defended curve is censored. ``poison_fraction`` (poisoned share of the
    train set), ``residual_poison_fraction`` (share of poisoned rows left after the defense's
    filtering), ``n_classes``; for attacks that declare the symmetric-label-noise theory line
    (random label flips): ``theory_f`` (``1/margin² − 1`` with margin ``1 − ηK/(K−1)`` at the
    residual poison share η) and ``theory_f_mixed`` (the same bound when the added rows are
    clean); and ``diluted_rate`` (the residual poison share after appending
    ``f_needed × n_train`` rows).
    """
    if metric not in table:
        numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
        raise ValueError(f"metric {metric!r} is not a column of the table (numeric: {numeric})")
    if not 0 <= tolerance < math.inf:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    without = _attacks_without(table, metric) if fallback not in (None, metric) else None
    if without is not None and without.any():
        # Two estimates, each with its own metric: an attack's groups (and so its defense
        # values, which compare within an attack and rate) are all in one of them.
        clean = table["attack_id"] == NO_ATTACK_ID
        own = estimate_recovery(table[~without], metric, tolerance, n_boot, seed)
        other = estimate_recovery(
            table[without | clean], str(fallback), fallback_tolerance, n_boot, seed
        )
        other = other[other["attack_id"] != NO_ATTACK_ID]
        out = pd.concat([own, other], ignore_index=True)
        return out.sort_values(list(GROUP_KEYS), kind="stable").reset_index(drop=True)
    higher = higher_is_better(metric)
    keys = list(GROUP_KEYS)
    rows: list[dict[str, Any]] = []
    if table.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    table = table[table["status"].isin(["ok", "skipped"])]
    table = table.assign(_reason=skip_reasons(table))
    # Group a slim copy: the nested JSON columns make every group's copy slow otherwise.
    carried = [c for c in (*GROUP_LABELS, *CARRIED) if c in table and c not in keys]
    row_ref = ROW_REFERENCES.get(metric)  # a reference each attacked row records (backdoor ASR)
    wanted = [*keys, *carried, *_SLIM, metric, *([row_ref] if row_ref else [])]
    slim = table[[c for c in dict.fromkeys(wanted) if c in table]]
    refs_cache: dict[Any, dict[tuple[str, str], dict[int, float]]] = {}
    curves: dict[tuple[Any, ...], tuple[np.ndarray, list[int], np.ndarray, np.ndarray]] = {}
    for key, group in slim.groupby(keys, sort=True, dropna=False):
        ident = dict(zip(keys, key, strict=True))
        first = group.iloc[0]
        ref_by_seed = _seed_references(table, group, ident, metric, row_ref, refs_cache)
        grid, seeds, values, grid_max = seed_curves(group, metric)
        paired = [i for i, s in enumerate(seeds) if np.isfinite(ref_by_seed.get(s, np.nan))]
        values = values[paired]
        seeds = [seeds[i] for i in paired]
        references = np.array([ref_by_seed[s] for s in seeds], dtype=float)
        n_train = _mean(group, "n_train")
        row: dict[str, Any] = {
            **ident,
            **{c: first[c] for c in carried},
            "metric": metric,
            "tolerance": tolerance,
            "n_seeds": len(seeds),
            "n_train": n_train,
            "grid_max": grid_max,
        }
        curves[tuple(key)] = (grid, seeds, values, references)
        row["interval"] = interval_label(len(seeds)) if n_boot > 0 else "none"
        crossing = (grid, values, references, tolerance, higher)
        if seeds and len(grid):
            rng = stage_rng_for(seed, key)
            row.update(_crossing_columns(group, *crossing, n_boot, rng, grid_max))
        else:
            row.update(_no_crossing_columns(group, references))
        for name in ("needed", "low", "high"):
            row[f"rows_{name}"] = row[f"f_{name}"] * n_train
        at0 = (group["extra_fraction"] == 0).to_numpy(dtype=bool, na_value=False)
        row.update(_poison_shares(group, at0))
        row.update(_theory_columns(row, _mean(group, "n_classes")))
        rows.append(row)
    out = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in out:
            out[column] = math.nan
    out = _add_defense_value(out, curves, tolerance, higher)
    out["censored"] = out["censored"].astype(bool)
    out["pool_exhausted"] = out["pool_exhausted"].astype(bool)
    return out[list(COLUMNS)].reset_index(drop=True)


def _attacks_without(table: pd.DataFrame, metric: str) -> pd.Series:
    """The rows of attacks (not the clean one) none of whose finished rows has a value of
    ``metric`` on their (dataset, model): a label flip has no ``backdoor_asr``."""
    keys = ["dataset_id", "model_id", "attack_id"]
    ok = table["status"] == "ok" if "status" in table else pd.Series(True, index=table.index)
    value = pd.to_numeric(table[metric], errors="coerce").notna() & ok
    measured = value.groupby([table[k] for k in keys], dropna=False).transform("any")
    return ~measured.astype(bool) & (table["attack_id"] != NO_ATTACK_ID)


def _seed_references(
    table: pd.DataFrame,
    group: pd.DataFrame,
    ident: dict[str, Any],
    metric: str,
    row_ref: str | None,
    cache: dict[Any, dict[tuple[str, str], dict[int, float]]],
) -> dict[int, float]:
    """The clean reference of one group by seed: from the group's own rows where the metric's
    reference is recorded per row (``row_ref``, e.g. the backdoor ASR), else the clean model's
    (:func:`clean_reference`, computed once per (dataset, model) pair kind and kept in
    ``cache``)."""
    if row_ref is not None:
        return row_references(group, row_ref)
    pair = _pair(group.iloc[0])
    cache_key = pair if metric == "attack_success_rate" else None
    if cache_key not in cache:
        refs = clean_reference(table, metric, pair)
        cache[cache_key] = {
            (d, m): dict(zip(g["seed"].astype(int), g["reference"], strict=True))
            for (d, m), g in refs.groupby(["dataset_id", "model_id"])
        }
    return cache[cache_key].get((ident["dataset_id"], ident["model_id"]), {})


def _crossing_columns(
    group: pd.DataFrame,
    grid: np.ndarray,
    values: np.ndarray,
    references: np.ndarray,
    tolerance: float,
    higher: bool,
    n_boot: int,
    rng: np.random.Generator,
    grid_max: float,
) -> dict[str, Any]:
    """One group's curve ends, ``f_needed`` with its interval, and where the curve stops."""
    curve = values.mean(axis=0)
    f_needed = stats_f_needed(grid, values, references, tolerance, higher)
    f_low, f_high = bootstrap_crossing(grid, values, references, tolerance, higher, n_boot, rng)
    f_max = float(grid[-1])
    return {
        "reference": float(references.mean()),
        "value_at_0": float(curve[0]),
        "value_at_max": float(curve[-1]),
        "f_needed": f_needed,
        "f_low": f_low,
        "f_high": f_high,
        "censored": not math.isfinite(f_needed),
        "f_max": f_max,
        "pool_exhausted": bool(_pool_ran_out(group) and f_max < grid_max),
    }


def _no_crossing_columns(group: pd.DataFrame, references: np.ndarray) -> dict[str, Any]:
    """The columns of :func:`_crossing_columns` for a group with no paired seed or no grid."""
    nan = math.nan
    return {
        "reference": float(references.mean()) if len(references) else nan,
        **dict.fromkeys(("value_at_0", "value_at_max", "f_needed", "f_low", "f_high"), nan),
        "censored": False,
        "f_max": nan,
        "pool_exhausted": bool(_pool_ran_out(group)),
    }


def _theory_columns(row: dict[str, Any], n_classes: float) -> dict[str, Any]:
    """``n_classes`` and the label-noise theory lines of a group's ``row`` (NaN unless its
    attack declares the symmetric-label-noise line), and the poison share left after
    appending ``f_needed × n_train`` clean rows."""
    k = int(n_classes) if math.isfinite(n_classes) else None
    eta = row["residual_poison_fraction"]
    theory_ok = row.get("theory") == SYMMETRIC_LABEL_NOISE and k is not None and math.isfinite(eta)
    return {
        "n_classes": k,
        "theory_f": theory_extra_fraction(eta, k) if theory_ok else math.nan,
        "theory_f_mixed": theory_extra_fraction_mixed(eta, k) if theory_ok else math.nan,
        "diluted_rate": diluted_rate(eta, row["f_needed"]) if math.isfinite(eta) else math.nan,
    }


def stage_rng_for(seed: int, key: tuple[Any, ...]) -> np.random.Generator:
    """The bootstrap's generator for one group: keyed by ``seed`` and the group's identity."""
    digest = stable_hash(["recovery-bootstrap", seed, [str(v) for v in key]], length=32)
    return np.random.default_rng(int(digest, 16))


def _pair(row: pd.Series) -> tuple[int, int] | None:
    """A targeted attack's (source, target) class indices as the run recorded them."""
    source, target = row.get("source_class"), row.get("target_class")
    if source is None or target is None or pd.isna(source) or pd.isna(target):
        return None
    return int(source), int(target)


#: the columns the per-group estimate reads (besides the group keys and the metric)
_SLIM = (
    "seed",
    "extra_fraction",
    "status",
    "_reason",
    "n_train",
    "n_classes",
    "n_poisoned",
    "poison_fraction",
    "n_removed",
    "clean_removed",
)


def _pool_ran_out(group: pd.DataFrame) -> bool:
    reasons = group["_reason"] if "_reason" in group else skip_reasons(group)
    return bool((reasons == POOL_EXHAUSTED).any())


def _poison_shares(group: pd.DataFrame, rows: np.ndarray | None = None) -> dict[str, float]:
    """Poisoned share of the train set before and after the defense's filtering (at ``rows``,
    a boolean array: the f = 0 rows; None: every row)."""
    poison = _mean(group, "poison_fraction", rows)
    n_train = _mean(group, "n_train", rows)
    n_poisoned = _mean(group, "n_poisoned", rows)
    n_removed = _mean(group, "n_removed", rows)
    clean_removed = _mean(group, "clean_removed", rows)
    residual = poison
    if all(math.isfinite(v) for v in (n_train, n_poisoned, n_removed, clean_removed)):
        left = n_poisoned - (n_removed - clean_removed)
        kept = n_train - n_removed
        residual = left / kept if kept > 0 else math.nan
    return {"poison_fraction": poison, "residual_poison_fraction": residual}


def _add_defense_value(
    out: pd.DataFrame,
    curves: dict[tuple[Any, ...], tuple[np.ndarray, list[int], np.ndarray, np.ndarray]],
    tolerance: float,
    higher: bool,
) -> pd.DataFrame:
    """Defense value columns: undefended minus defended ``f_needed`` and its paired interval.

    The interval (:func:`bench.analysis.stats.crossing_difference_interval`) pairs the undefended and
    the defended curve seed by seed (same split, poison and model initialization), over the
    seeds and grid points both have; ``defense_value_resolved`` says it excludes 0.
    """
    base_keys = ["dataset_id", "model_id", "attack_id", "rate"]
    undefended = out[out["defense_id"] == NO_DEFENSE_ID][[*base_keys, "f_needed", "f_max"]]
    undefended = undefended.rename(columns={"f_needed": "_f_none", "f_max": "_fmax_none"})
    out = out.merge(undefended, on=base_keys, how="left")
    f_none = out["_f_none"].astype(float)
    f_def = out["f_needed"].astype(float)
    exact = np.isfinite(f_none) & np.isfinite(f_def)
    lower = ~np.isfinite(f_none) & f_none.notna() & np.isfinite(f_def)
    value = np.where(exact, f_none - f_def, np.where(lower, out["_fmax_none"] - f_def, np.nan))
    out["defense_value_f"] = value.astype(float)
    out["defense_value_rows"] = out["defense_value_f"] * out["n_train"]
    out["defense_value_kind"] = np.where(exact, "exact", np.where(lower, "lower_bound", "unknown"))
    lows, highs = [], []
    for row in out.itertuples(index=False):
        ident = tuple(getattr(row, k) for k in GROUP_KEYS)
        none = (*ident[:4], NO_DEFENSE_ID)
        low = high = math.nan
        if row.defense_id != NO_DEFENSE_ID and none in curves and ident in curves:
            low, high = _paired_value_interval(curves[none], curves[ident], tolerance, higher)
        lows.append(low)
        highs.append(high)
    out["defense_value_low"] = np.asarray(lows, dtype=float)
    out["defense_value_high"] = np.asarray(highs, dtype=float)
    out["defense_value_resolved"] = (out["defense_value_low"] > 0) | (out["defense_value_high"] < 0)
    return out.drop(columns=["_f_none", "_fmax_none"])


def _paired_value_interval(
    undefended: tuple[np.ndarray, list[int], np.ndarray, np.ndarray],
    defended: tuple[np.ndarray, list[int], np.ndarray, np.ndarray],
    tolerance: float,
    higher: bool,
) -> tuple[float, float]:
    """The interval of undefended − defended f over the seeds and grid both curves have."""
    grid_a, seeds_a, values_a, refs_a = undefended
    grid_b, seeds_b, values_b, _ = defended
    common = [s for s in seeds_a if s in seeds_b]
    n = min(len(grid_a), len(grid_b))
    if len(common) < 2 or n == 0 or not np.array_equal(grid_a[:n], grid_b[:n]):
        return math.nan, math.nan
    ia = [seeds_a.index(s) for s in common]
    ib = [seeds_b.index(s) for s in common]
    return crossing_difference_interval(
        grid_a[:n], values_a[ia, :n], values_b[ib, :n], refs_a[ia], tolerance, higher
    )


#: the columns of :func:`recovery_curves`
CURVE_COLUMNS = (
    *GROUP_KEYS,
    *(c for c in GROUP_LABELS if c != "rate"),
    "attack",
    "extra_fraction",
    "mean",
    "std",
    "n_seeds",
)


def recovery_curves(table: pd.DataFrame, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Mean and std over seeds of ``metric`` at each extra fraction, per configuration (for
    plots). Uses the same rules as :func:`estimate_recovery` (cut at pool exhaustion, early
    stop carried forward)."""
    rows = []
    table = table[table["status"].isin(["ok", "skipped"])]
    table = table.assign(_reason=skip_reasons(table))
    labels = [c for c in (*GROUP_LABELS, "attack") if c in table and c not in GROUP_KEYS]
    for key, group in table.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        grid, seeds, values, _ = seed_curves(group, metric)
        first = group.iloc[0]
        for j, f in enumerate(grid):
            column = values[:, j]
            rows.append(
                {
                    **dict(zip(GROUP_KEYS, key, strict=True)),
                    **{c: first[c] for c in labels},
                    "extra_fraction": float(f),
                    "mean": float(column.mean()),
                    "std": float(column.std(ddof=1)) if len(column) > 1 else 0.0,
                    "n_seeds": len(seeds),
                }
            )
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
