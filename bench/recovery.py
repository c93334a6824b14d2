"""The headline: how much extra clean data a poisoned (and defended) model needs to get back to
the clean model's quality, estimated from the long results table.

Definitions (all pure functions of the table; nothing here trains a model):

- **Reference**: the clean model of the same dataset and model (attack ``none``, rate 0, defense
  ``none``, extra fraction ``f = 0``): the metric's mean over seeds.
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
  :func:`bench.stats.crossing_interval`: every ``f`` where a t-test on the per-seed margins
  ``curve_s(f) − (reference_s − tolerance)`` (paired by seed: a seed's clean model and
  poisoned curve share the split and test set) does not reject "the mean margin is 0", plus
  "already recovered" and "not recovered within the grid" unless rejected. Its simulated
  coverage is within Monte Carlo error of 95 % at 3, 5 and 10 seeds (the seed-bootstrap
  percentile interval used before covered ~74 / 85 / 90 %). ``f_high`` is ``inf`` when the
  data cannot rule out "not recovered within the grid". With 1–2 seeds the bounds are the
  per-seed range of ``f_needed`` instead (:func:`bench.stats.interval_kind`).
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

from bench.grid import stage_rng
from bench.stats import DEFAULT_METHOD, crossing_bounds

#: metrics for which smaller is better (recovered when value ≤ reference + tolerance)
LOWER_IS_BETTER = frozenset({"attack_success_rate", "log_loss"})

#: the grouping of the headline table (one output row per group)
GROUP_KEYS = ("dataset", "model", "attack", "attack_label", "rate", "defense")

#: the output columns of :func:`estimate_recovery`, in order
COLUMNS = (
    *GROUP_KEYS,
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
    "defense_value_f",
    "defense_value_rows",
    "defense_value_kind",
    "poison_fraction",
    "residual_poison_fraction",
    "n_classes",
    "theory_f",
    "theory_f_mixed",
    "diluted_rate",
)

POOL_EXHAUSTED = "pool_exhausted"
EARLY_STOP = "early_stop"


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` are better (False for ASR and log-loss)."""
    return metric not in LOWER_IS_BETTER


def recovered(value: float, reference: float, tolerance: float, higher: bool = True) -> bool:
    """Whether ``value`` is back within ``tolerance`` of ``reference`` (NaN is not recovered)."""
    if not (math.isfinite(value) and math.isfinite(reference)):
        return False
    return value >= reference - tolerance if higher else value <= reference + tolerance


def _crossings(
    fractions: np.ndarray, values: np.ndarray, targets: np.ndarray, higher: bool
) -> np.ndarray:
    """Vectorised :func:`crossing_point` over the rows of ``values`` (B×F) and ``targets`` (B)."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    targets = np.broadcast_to(np.asarray(targets, dtype=float), (values.shape[0],))
    with np.errstate(invalid="ignore"):
        ok = values >= targets[:, None] if higher else values <= targets[:, None]
    ok &= np.isfinite(values)
    out = np.full(values.shape[0], np.inf)
    hit = ok.any(axis=1)
    first = ok.argmax(axis=1)
    at_start = hit & (first == 0)
    out[at_start] = fractions[0]
    inner = np.flatnonzero(hit & (first > 0))
    if len(inner):
        j = first[inner]
        f0, f1 = fractions[j - 1], fractions[j]
        v0, v1 = values[inner, j - 1], values[inner, j]
        t = targets[inner]
        with np.errstate(invalid="ignore", divide="ignore"):
            share = (t - v0) / (v1 - v0)
        # v0 is on the wrong side of the target and v1 on the right one, so share is in (0, 1];
        # an unknown previous point (NaN) gives the grid point itself (no interpolation).
        share = np.where(np.isfinite(share), np.clip(share, 0.0, 1.0), 1.0)
        out[inner] = f0 + share * (f1 - f0)
    return out


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
    return float(_crossings(f, v[None, :], np.array([target]), higher_is_better)[0])


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
    """Bounds ``(low, high)`` around the crossing point: :func:`bench.stats.crossing_bounds`.

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


def _n_classes(group: pd.DataFrame) -> int | None:
    for column in ("confusion", "pred_distribution"):
        if column in group:
            for value in group[column].dropna():
                return len(_json_list(value))
    return None


def _class_index(dataset: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    try:  # a class name: resolve it with the dataset's class names (cached loader)
        from bench.datasets import load_dataset

        return int(load_dataset(dataset).info.class_index(value, "source"))
    except Exception:  # an unknown dataset or name leaves the reference undefined (NaN)
        return None


def _target_pair(dataset: str, attack_params: Any) -> tuple[int, int] | None:
    if not isinstance(attack_params, str):
        return None
    params = json.loads(attack_params)
    source = _class_index(dataset, params.get("source"))
    target = _class_index(dataset, params.get("target"))
    if source is None or target is None:
        return None
    return source, target


def _pair_rate(confusion: Any, pair: tuple[int, int]) -> float:
    """The clean model's share of source-class test rows predicted as the target."""
    m = np.asarray(_json_list(confusion), dtype=float)
    source, target = pair
    total = m[source].sum()
    return float(m[source, target] / total) if total else math.nan


def clean_reference(
    table: pd.DataFrame, metric: str = "accuracy", attack_params: str | None = None
) -> pd.DataFrame:
    """Per-seed clean reference values: columns dataset, model, seed, reference.

    The clean rows are attack ``none``, rate 0, defense ``none``, f = 0, status ok. For the
    attack success rate the clean cell has no attack to measure, so the value is read from its
    confusion matrix for the (source, target) pair of ``attack_params``.
    """
    clean = table[
        (table["attack"] == "none")
        & (table["rate"] == 0)
        & (table["defense"] == "none")
        & (table["extra_fraction"] == 0)
        & (table["status"] == "ok")
    ]
    if metric == "attack_success_rate" and attack_params is not None:
        values = []
        for _, row in clean.iterrows():
            pair = _target_pair(row["dataset"], attack_params)
            ok = pair is not None and isinstance(row.get("confusion"), str | list)
            values.append(_pair_rate(row["confusion"], pair) if ok else math.nan)
        out = clean[["dataset", "model", "seed"]].copy()
        out["reference"] = values
    else:
        out = clean[["dataset", "model", "seed", metric]].rename(columns={metric: "reference"})
    return out.groupby(["dataset", "model", "seed"], as_index=False)["reference"].mean()


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


def label_models(table: pd.DataFrame) -> pd.DataFrame:
    """The table with ``model`` made unique per parameter set: a model name used with several
    ``model_params`` becomes ``name(k=v, ...)`` over the parameters that differ (e.g.
    ``logreg(C=0.1)``); a name used with one parameter set is left as it is."""
    if "model_params" not in table or table.empty:
        return table
    pairs = table[["model", "model_params"]].drop_duplicates()
    if not pairs["model"].duplicated().any():
        return table
    names: dict[tuple[str, str], str] = {}
    for model, group in pairs.groupby("model"):
        params = {p: json.loads(p) if isinstance(p, str) else {} for p in group["model_params"]}
        keys = sorted({k for d in params.values() for k in d})
        differ = [k for k in keys if len({json.dumps(d.get(k)) for d in params.values()}) > 1]
        for raw, d in params.items():
            inner = ", ".join(f"{k}={d.get(k)}" for k in differ)
            names[(model, raw)] = f"{model}({inner})" if len(params) > 1 else model
    out = table.copy()
    out["model"] = [
        names.get((m, p), m) for m, p in zip(out["model"], out["model_params"], strict=True)
    ]
    return out


def _mean(group: pd.DataFrame, column: str) -> float:
    if column not in group:
        return math.nan
    values = pd.to_numeric(group[column], errors="coerce").dropna()
    return float(values.mean()) if len(values) else math.nan


def estimate_recovery(
    table: pd.DataFrame,
    metric: str = "accuracy",
    tolerance: float = 0.005,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """The extra-clean-data headline: one row per (dataset, model, attack_label, rate, defense).

    table: the long results table (one row per cell and extra fraction; see README).
    metric: a numeric column, e.g. ``accuracy``, ``macro_f1`` or ``attack_success_rate``
        (lower is better for the latter and ``log_loss``).
    tolerance: how close to the reference counts as recovered, in the metric's units
        (0.005 = half a percentage point of accuracy).
    n_boot: seed-bootstrap resamples for ``[f_low, f_high]`` (0: no interval, NaN).
    seed: seeds the bootstrap (each group draws from its own stream keyed by its identity,
        so a group's interval does not depend on which other groups are in the table).

    A model name used with several parameter sets is told apart as ``name(k=v)`` (see
    :func:`label_models`).

    Columns (see the module docstring for the definitions): the group keys; ``n_seeds`` (seeds
    in both the curve and the reference), ``n_train``, ``reference`` (clean mean), ``value_at_0``
    and ``value_at_max`` (the curve's ends); ``f_needed`` (``inf`` when not recovered within
    the grid), ``f_low``/``f_high``, ``censored``, ``f_max`` (largest fraction measured for all
    seeds), ``grid_max`` (largest fraction configured), ``pool_exhausted`` (the clean pool ended
    the curve before ``grid_max``); ``rows_needed``/``rows_low``/``rows_high`` (× n_train).
    ``defense_value_f``/``defense_value_rows``: undefended minus defended ``f_needed``;
    ``defense_value_kind`` says ``exact``; ``lower_bound`` when the undefended curve is censored
    but the defended one recovers (the value is ``f_max(undefended) − f_needed``: the defense
    saves at least that); NaN with kind ``unknown`` when the defended curve is censored.
    ``poison_fraction`` (poisoned share of the train set), ``residual_poison_fraction`` (share
    of poisoned rows left after the defense's filtering), ``n_classes``; ``theory_f`` (random
    label flips only: ``1/margin² − 1`` with margin ``1 − ηK/(K−1)`` at the residual poison
    share η) and ``theory_f_mixed`` (the same bound when the added rows are clean); and
    ``diluted_rate`` (the residual poison share after appending ``f_needed × n_train`` rows).
    """
    if metric not in table:
        numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
        raise ValueError(f"metric {metric!r} is not a column of the table (numeric: {numeric})")
    if not 0 <= tolerance < math.inf:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    higher = higher_is_better(metric)
    keys = list(GROUP_KEYS)
    rows: list[dict[str, Any]] = []
    if table.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    table = label_models(table[table["status"].isin(["ok", "skipped"])])
    table = table.assign(_reason=skip_reasons(table))
    k_by_dataset = {ds: _n_classes(g) for ds, g in table.groupby("dataset", sort=False)}
    # Group a slim copy: the nested JSON columns make every group's copy slow otherwise.
    slim = table[[c for c in (*keys, *_SLIM) if c in table] + [metric]]
    slim = slim.loc[:, ~slim.columns.duplicated()]
    refs_cache: dict[Any, dict[tuple[str, str], dict[int, float]]] = {}
    for key, group in slim.groupby(keys, sort=True, dropna=False):
        ident = dict(zip(keys, key, strict=True))
        params = group["attack_params"].iloc[0] if "attack_params" in group else None
        cache_key = params if metric == "attack_success_rate" else None
        if cache_key not in refs_cache:
            refs = clean_reference(table, metric, cache_key)
            refs_cache[cache_key] = {
                (d, m): dict(zip(g["seed"].astype(int), g["reference"], strict=True))
                for (d, m), g in refs.groupby(["dataset", "model"])
            }
        ref_by_seed = refs_cache[cache_key].get((ident["dataset"], ident["model"]), {})
        grid, seeds, values, grid_max = seed_curves(group, metric)
        paired = [i for i, s in enumerate(seeds) if np.isfinite(ref_by_seed.get(s, np.nan))]
        values = values[paired]
        seeds = [seeds[i] for i in paired]
        references = np.array([ref_by_seed[s] for s in seeds], dtype=float)
        n_train = _mean(group, "n_train")
        row: dict[str, Any] = {
            **ident,
            "metric": metric,
            "tolerance": tolerance,
            "n_seeds": len(seeds),
            "n_train": n_train,
            "grid_max": grid_max,
        }
        if seeds and len(grid):
            reference = float(references.mean())
            curve = values.mean(axis=0)
            target = reference - tolerance if higher else reference + tolerance
            f_needed = float(_crossings(grid, curve[None, :], np.array([target]), higher)[0])
            rng = stage_rng("recovery-bootstrap", seed, [str(v) for v in key])
            f_low, f_high = bootstrap_crossing(
                grid, values, references, tolerance, higher, n_boot, rng
            )
            f_max = float(grid[-1])
            row.update(
                reference=reference,
                value_at_0=float(curve[0]),
                value_at_max=float(curve[-1]),
                f_needed=f_needed,
                f_low=f_low,
                f_high=f_high,
                censored=not math.isfinite(f_needed),
                f_max=f_max,
                pool_exhausted=bool(_pool_ran_out(group) and f_max < grid_max),
            )
        else:
            row.update(
                reference=float(references.mean()) if len(references) else math.nan,
                value_at_0=math.nan,
                value_at_max=math.nan,
                f_needed=math.nan,
                f_low=math.nan,
                f_high=math.nan,
                censored=False,
                f_max=math.nan,
                pool_exhausted=bool(_pool_ran_out(group)),
            )
        for name in ("needed", "low", "high"):
            row[f"rows_{name}"] = row[f"f_{name}"] * n_train
        row.update(_poison_shares(group[group["extra_fraction"] == 0]))
        row["n_classes"] = k_by_dataset.get(ident["dataset"])
        random_flip = ident["attack"] == "label_flip" and _is_random(group)
        eta = row["residual_poison_fraction"]
        k = row["n_classes"]
        theory_ok = random_flip and k is not None and math.isfinite(eta)
        row["theory_f"] = theory_extra_fraction(eta, k) if theory_ok else math.nan
        row["theory_f_mixed"] = theory_extra_fraction_mixed(eta, k) if theory_ok else math.nan
        row["diluted_rate"] = diluted_rate(eta, row["f_needed"]) if math.isfinite(eta) else math.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    out = _add_defense_value(out)
    out["censored"] = out["censored"].astype(bool)
    out["pool_exhausted"] = out["pool_exhausted"].astype(bool)
    return out[list(COLUMNS)].reset_index(drop=True)


#: the columns the per-group estimate reads (besides the group keys and the metric)
_SLIM = (
    "seed",
    "extra_fraction",
    "status",
    "_reason",
    "attack_params",
    "n_train",
    "n_poisoned",
    "poison_fraction",
    "n_removed",
    "clean_removed",
)


def _pool_ran_out(group: pd.DataFrame) -> bool:
    reasons = group["_reason"] if "_reason" in group else skip_reasons(group)
    return bool((reasons == POOL_EXHAUSTED).any())


def _is_random(group: pd.DataFrame) -> bool:
    if "attack_params" in group:
        params = group["attack_params"].dropna()
        if len(params):
            return json.loads(params.iloc[0]).get("mode") == "random"
    return bool(group["attack_label"].str.contains("random").any())


def _poison_shares(rows: pd.DataFrame) -> dict[str, float]:
    """Poisoned share of the train set before and after the defense's filtering (f = 0 rows)."""
    poison = _mean(rows, "poison_fraction")
    n_train = _mean(rows, "n_train")
    n_poisoned = _mean(rows, "n_poisoned")
    n_removed = _mean(rows, "n_removed")
    clean_removed = _mean(rows, "clean_removed")
    residual = poison
    if all(math.isfinite(v) for v in (n_train, n_poisoned, n_removed, clean_removed)):
        left = n_poisoned - (n_removed - clean_removed)
        kept = n_train - n_removed
        residual = left / kept if kept > 0 else math.nan
    return {"poison_fraction": poison, "residual_poison_fraction": residual}


def _add_defense_value(out: pd.DataFrame) -> pd.DataFrame:
    base_keys = ["dataset", "model", "attack", "attack_label", "rate"]
    undefended = out[out["defense"] == "none"][[*base_keys, "f_needed", "f_max"]].rename(
        columns={"f_needed": "_f_none", "f_max": "_fmax_none"}
    )
    out = out.merge(undefended, on=base_keys, how="left")
    f_none, f_def = out["_f_none"], out["f_needed"]
    exact = np.isfinite(f_none) & np.isfinite(f_def)
    lower = ~np.isfinite(f_none) & f_none.notna() & np.isfinite(f_def)
    value = np.where(exact, f_none - f_def, np.where(lower, out["_fmax_none"] - f_def, np.nan))
    out["defense_value_f"] = value.astype(float)
    out["defense_value_rows"] = out["defense_value_f"] * out["n_train"]
    out["defense_value_kind"] = np.where(exact, "exact", np.where(lower, "lower_bound", "unknown"))
    return out.drop(columns=["_f_none", "_fmax_none"])


def recovery_curves(table: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Mean and std over seeds of ``metric`` at each extra fraction, per group (for plots).

    Columns: the group keys, ``extra_fraction``, ``mean``, ``std``, ``n_seeds``. Uses the same
    rules as :func:`estimate_recovery` (cut at pool exhaustion, early stop carried forward).
    """
    rows = []
    table = label_models(table[table["status"].isin(["ok", "skipped"])])
    table = table.assign(_reason=skip_reasons(table))
    for key, group in table.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        grid, seeds, values, _ = seed_curves(group, metric)
        for j, f in enumerate(grid):
            column = values[:, j]
            rows.append(
                {
                    **dict(zip(GROUP_KEYS, key, strict=True)),
                    "extra_fraction": float(f),
                    "mean": float(column.mean()),
                    "std": float(column.std(ddof=1)) if len(column) > 1 else 0.0,
                    "n_seeds": len(seeds),
                }
            )
    return pd.DataFrame(rows, columns=[*GROUP_KEYS, "extra_fraction", "mean", "std", "n_seeds"])
