"""The report's opening answers: one findings table per dataset and model.

Each row is an attack and poison rate (without a defense), with: the accuracy it costs, the
extra clean data needed to get it back [interval], the best deployable defense by clean rows
saved (paired over seeds), and whether the headline is answered, or roughly how many more seeds
would answer it (:func:`bench.analysis.precision.seeds_needed`). A pure function of the
estimates table (:func:`bench.analysis.recovery.estimate_recovery`) and the results table.

Also the run's headline as MLflow tracking logs it (:func:`headline_table`: per attack and
rate, the extra clean data needed without a defense and with the deployable defense that
needs the least).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.formats import (
    FALLBACK_MARK,
    fallback_rows,
    fmt_rate,
    fmt_recovery,
    fmt_rows,
)
from bench.analysis.precision import (
    BEYOND_GRID,
    MAX_LOOKAHEAD,
    MET,
    NO_DATA,
    precision_table,
    width,
)
from bench.analysis.settings import setting_note
from bench.analysis.stats import paired_difference
from bench.core.schema import NO_ATTACK_ID, NO_DEFENSE_ID, higher_is_better

#: the findings table's columns, in order
FINDINGS_COLUMNS = (
    "attack",
    "rate",
    "seeds",
    "accuracy lost",
    "extra clean data needed",
    "best deployable defense (paired gain, f = 0)",
    "clean rows saved (most)",
    "answer",
)


def _at_f0(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["status"] == "ok") & (df["extra_fraction"] == 0)]


def paired_gain(
    df: pd.DataFrame, attack_id: str, rate: float, defense_id: str, metric: str
) -> tuple[float, float, float, int]:
    """Mean per-seed gain of ``defense_id`` over no defense in ``metric`` (signed so that
    positive is better) at f = 0, with a 95 % t-interval: ``(mean, low, high, n_seeds)``.

    Seeds are paired: a seed's defended and undefended cells share the split, the poison and
    the model initialization, so the difference removes what they share.
    """
    ok = _at_f0(df)
    sub = ok[(ok["attack_id"] == attack_id) & (ok["rate"] == rate)]
    a = sub[sub["defense_id"] == defense_id].groupby("seed")[metric].mean()
    b = sub[sub["defense_id"] == NO_DEFENSE_ID].groupby("seed")[metric].mean()
    common = a.index.intersection(b.index)
    sign = 1.0 if higher_is_better(metric) else -1.0
    diff = paired_difference(
        sign * a.loc[common].to_numpy(float), sign * b.loc[common].to_numpy(float)
    )
    return diff.mean, diff.low, diff.high, diff.n


def _paired_gains(
    sub: pd.DataFrame, defenses: list[str], metric: str
) -> dict[str, tuple[float, float, float, int]]:
    """:func:`paired_gain` of each of ``defenses`` over no defense, from one grouping of
    ``sub`` (the f = 0 rows of one attack and rate) by seed and defense instead of one
    selection per defense: the same numbers (a seed one arm lacks is NaN here, and
    :func:`paired_difference` drops it as :func:`paired_gain` leaves it out)."""
    wide = sub.groupby(["seed", "defense_id"])[metric].mean().unstack("defense_id")
    sign = 1.0 if higher_is_better(metric) else -1.0
    base = sign * wide[NO_DEFENSE_ID].to_numpy(dtype=float, na_value=np.nan)
    gains = {}
    for d in defenses:
        diff = paired_difference(sign * wide[d].to_numpy(dtype=float, na_value=np.nan), base)
        gains[d] = (diff.mean, diff.low, diff.high, diff.n)
    return gains


@dataclass(frozen=True)
class BestGain:
    """The deployable defense with the largest paired gain at f = 0, and how sure it is.

    kind: ``resolved`` (interval excludes 0 and the mean exceeds the tolerance), ``within
    tolerance`` (excludes 0 but smaller than the tolerance) or ``unresolved``; larger: labels
    of unresolved defenses with a larger mean gain than a resolved winner.
    """

    defense_id: str
    label: str
    mean: float
    low: float
    high: float
    n: int
    kind: str
    larger: tuple[str, ...] = ()
    #: the setting it was compared at (:func:`bench.analysis.settings.setting_note`)
    setting: str = ""


def best_gain(
    df: pd.DataFrame, attack_id: str, rate: float, metric: str, tolerance: float
) -> BestGain | None:
    """Which deployable defense helps most at (attack, rate), judged on paired per-seed gains
    over no defense at f = 0: among the defenses whose gain's 95 % interval excludes 0 and whose
    mean gain exceeds ``tolerance``, the one with the largest mean gain; otherwise the largest
    mean gain, marked as not resolved. None without an undefended arm or a positive gain."""
    ok = _at_f0(df)
    sub = ok[(ok["attack_id"] == attack_id) & (ok["rate"] == rate)]
    if NO_DEFENSE_ID not in set(sub["defense_id"]):
        return None
    pairs = sub[["defense_id", "defense_label"]].drop_duplicates("defense_id")
    labels = dict(zip(pairs["defense_id"], pairs["defense_label"], strict=True))
    reference = set()
    if "defense_reference" in sub:
        reference = set(sub.loc[sub["defense_reference"].fillna(False).astype(bool), "defense_id"])
    candidates = [d for d in labels if d != NO_DEFENSE_ID and d not in reference]
    gains = _paired_gains(sub, candidates, metric)
    gains = {d: g for d, g in gains.items() if g[3] > 0 and math.isfinite(g[0])}
    if not gains:
        return None
    resolved = {
        d: g for d, g in gains.items() if g[3] >= 2 and math.isfinite(g[1]) and g[1] > 0
        and g[0] > tolerance
    }  # fmt: skip
    if resolved:
        best = max(resolved, key=lambda d: resolved[d][0])
        larger = tuple(
            labels[d] for d in gains if d not in resolved and gains[d][0] > gains[best][0]
        )
        return BestGain(
            best,
            labels[best],
            *resolved[best],
            kind="resolved",
            larger=larger,
            setting=setting_note(sub, best),
        )
    best = max(gains, key=lambda d: gains[d][0])
    mean, low, high, n = gains[best]
    kind = "within tolerance" if n >= 2 and math.isfinite(low) and low > 0 else "unresolved"
    return BestGain(
        best, labels[best], mean, low, high, n, kind=kind, setting=setting_note(sub, best)
    )


def gain_cell(best: BestGain | None) -> str:
    """A findings cell: ``steady +4.0 pts [+3.9, +4.1]``; ``n.s.`` or ``within tolerance``
    marks a winner that is not one; ``–`` when no defense gains."""
    if best is None:
        return "–"
    interval = f" [{best.low * 100:+.1f}, {best.high * 100:+.1f}]" if np.isfinite(best.low) else ""
    text = f"{best.label}{best.setting} {best.mean * 100:+.1f} pts{interval}"
    if best.kind == "resolved":
        return text
    if best.mean <= 0:  # the least harmful is no winner: every defense costs accuracy here
        return f"none gains (best: {text})"
    return f"{text} {'within tolerance' if best.kind == 'within tolerance' else 'n.s.'}"


def deployable(rec: pd.DataFrame) -> pd.Series:
    """Defended rows of a real defense (not ``none``, not a reference such as the oracle)."""
    reference = rec["defense_reference"].fillna(False).astype(bool)
    return (rec["defense_id"] != NO_DEFENSE_ID) & ~reference


def best_defense(rec: pd.DataFrame) -> pd.Series | None:
    """Among one (attack, rate)'s deployable defenses, the one that saves the most clean rows,
    preferring values that answer (paired interval excludes 0, or a lower bound) over point
    estimates that do not; None when no defense saves rows (a defense that costs clean data is
    in the "Extra clean data needed" tables, not named here as a saver)."""
    rows = rec[deployable(rec) & (rec["defense_value_rows"] > 0)]
    if rows.empty:
        return None
    solid = rows["defense_value_resolved"].fillna(False).astype(bool) | (
        rows["defense_value_kind"] == "lower_bound"
    )
    pool = rows[solid] if solid.any() else rows
    return pool.loc[pool["defense_value_rows"].idxmax()]


def answer(row: pd.Series, status: pd.Series | None) -> str:
    """``answered`` / ``> grid`` / ``not resolved: ≈ N more seeds`` / why seeds cannot help."""
    if status is None or status["precision_status"] == NO_DATA:
        return "–"
    if bool(status["precision_met"]):
        return "answered: > grid" if status["precision_status"] == BEYOND_GRID else "answered"
    needed, n = float(status["seeds_needed"]), int(status["n_seeds"])
    if not math.isfinite(needed):
        cut = "the clean pool" if bool(row.get("pool_exhausted", False)) else "the grid"
        return f"not resolved: {cut} ends before the curve recovers"
    more = int(needed) - n
    if more <= 0:
        return "not resolved"
    if needed > MAX_LOOKAHEAD:  # the crossing sits where the curve is flat, at the grid's end
        return f"not resolved: > {MAX_LOOKAHEAD:,} seeds; a longer grid would answer it"
    return f"not resolved: ≈ {more:,} more seeds"


def findings_table(
    rec: pd.DataFrame,
    df: pd.DataFrame,
    target: float = math.inf,
    metric: str = "accuracy",
    tolerance: float = 0.005,
) -> pd.DataFrame:
    """The findings rows of one dataset and model (``rec`` and ``df`` already cut to them).

    target: the width (× n_train) an interval must reach to count as answered (the run's
    ``precision``; ``inf``: any bounded interval answers).
    """
    gain_metric = metric if metric in ("accuracy", "macro_f1") else "accuracy"
    undefended = rec[(rec["defense_id"] == NO_DEFENSE_ID) & (rec["attack_id"] != NO_ATTACK_ID)]
    other = fallback_rows(undefended, metric)  # estimated on another metric (no trigger)
    status = precision_table(df, target, 10**9, metric, tolerance, estimates=undefended[~other])
    by_key = {(s["attack_id"], s["rate"]): s for _, s in status.iterrows()}
    for (m, tol), est in undefended[other].groupby(["metric", "tolerance"]):
        status = precision_table(df, target, 10**9, str(m), float(tol), estimates=est)
        by_key.update({(s["attack_id"], s["rate"]): s for _, s in status.iterrows()})
    at_f0 = _at_f0(df)  # once: best_gain reads the f = 0 rows only, of one (attack, rate)
    cells = at_f0.groupby(["attack_id", "rate"], sort=False).indices if len(at_f0) else {}
    rows = []
    for _, u in undefended.sort_values(["attack_label", "rate"]).iterrows():
        own = not other[u.name]
        # the damage, in the direction of the metric the row was estimated on
        sign = 1.0 if higher_is_better(metric if own else str(u["metric"])) else -1.0
        lost = sign * (u["reference"] - u["value_at_0"]) * 100
        lost_text = f"{lost:+.1f} pts" if math.isfinite(lost) else "–"
        mark = "" if own else f" {FALLBACK_MARK}"
        if not own and math.isfinite(lost):
            lost_text += f" {u['metric']} lost" if sign > 0 else f" {u['metric']} worse"
        here = rec[(rec["attack_id"] == u["attack_id"]) & (rec["rate"] == u["rate"])]
        saver = best_defense(here)
        cell = cells.get((u["attack_id"], u["rate"]))
        cell_rows = at_f0.iloc[cell] if cell is not None else at_f0.iloc[0:0]
        gain = best_gain(cell_rows, u["attack_id"], float(u["rate"]), gain_metric, tolerance)
        rows.append(
            {
                "attack": u["attack_label"],
                "rate": fmt_rate(float(u["rate"])),
                "seeds": int(u["n_seeds"]),
                "accuracy lost": lost_text + mark,
                "extra clean data needed": fmt_recovery(u) + mark,
                "best deployable defense (paired gain, f = 0)": gain_cell(gain),
                "clean rows saved (most)": "–"
                if saver is None
                else f"{saver['defense_label']}: {fmt_rows(saver)}",
                "answer": answer(u, by_key.get((u["attack_id"], u["rate"]))),
            }
        )
    table = pd.DataFrame(rows, columns=list(FINDINGS_COLUMNS))
    if metric != "accuracy":  # say which metric the damage and the headline are in
        word = "lost" if higher_is_better(metric) else "worse"
        table = table.rename(columns={"accuracy lost": f"{metric} {word}"})
    return table


def answered_share(rec: pd.DataFrame, target: float = math.inf) -> tuple[int, int]:
    """(answered, total) headline cells of poisoned groups: bounded intervals at most
    ``target`` wide, or "> grid" established."""
    poisoned = rec[(rec["attack_id"] != NO_ATTACK_ID) & rec["f_low"].notna()]
    w = width(poisoned["f_low"], poisoned["f_high"])
    ok = ((w <= target) & (w < math.inf)) | (poisoned["f_low"] == math.inf)
    return int(ok.sum()), len(poisoned)


__all__ = [
    "FINDINGS_COLUMNS",
    "MET",
    "answer",
    "answered_share",
    "best_defense",
    "best_gain",
    "deployable",
    "findings_table",
    "gain_cell",
    "paired_gain",
]


#: the headline table's columns (see :func:`headline_table`)
HEADLINE_COLUMNS = (
    "attack_label",
    "rate",
    "extra_clean_data",
    "best_defense",
    "best_extra_clean_data",
    "best_rows_saved",
    "best_resolved",
    "dataset",
    "model",
    "metric",
    "reference",
    "value_at_0",
    "f_needed",
    "f_low",
    "f_high",
    "rows_needed",
    "best_f_needed",
)


def headline_table(rec: pd.DataFrame | None) -> pd.DataFrame:
    """The headline of a run as MLflow tracking logs it, one row per (dataset, model, attack,
    rate) configuration of ``bench.analysis.recovery.estimate_recovery``'s output ``rec``
    (grouped by ids, shown by labels):
    the clean model's metric (``reference``), the undefended model's (``value_at_0``), the extra
    clean data needed without a defense (``f_needed`` × n_train, ``inf`` when not recovered
    within the grid, its interval ``f_low``–``f_high``, ``rows_needed``, and
    ``extra_clean_data`` as the report writes it, e.g. ``0.81× [0.15–2+]``), and the best
    deployable defense: the one (not ``none``, not a reference such as the oracle) with the
    smallest ``f_needed``, ties to the larger rows saved, with its ``best_f_needed``,
    ``best_extra_clean_data`` and ``best_rows_saved`` (clean rows it saves against no defense,
    NaN when unknown; ``best_resolved`` says its paired interval excludes 0)."""
    keys = ["dataset_id", "model_id", "attack_id", "rate"]
    if rec is None or len(rec) == 0:
        return pd.DataFrame(columns=list(HEADLINE_COLUMNS))
    rec = rec[rec["attack_id"] != NO_ATTACK_ID]
    rows = []
    for _, group in rec.groupby(keys, sort=True):
        base = group[group["defense_id"] == NO_DEFENSE_ID]
        first = base.iloc[0] if len(base) else group.iloc[0]
        row: dict[str, Any] = {
            "dataset": first["dataset_label"],
            "model": first["model_label"],
            "attack_label": first["attack_label"],
            "rate": float(first["rate"]),
            "metric": first["metric"],
            "reference": float(first["reference"]),
        }
        if len(base):
            b = base.iloc[0]
            row.update(
                value_at_0=float(b["value_at_0"]),
                f_needed=float(b["f_needed"]),
                f_low=float(b["f_low"]),
                f_high=float(b["f_high"]),
                rows_needed=float(b["rows_needed"]),
                extra_clean_data=fmt_recovery(b),
            )
        real = group[deployable(group) & group["f_needed"].notna()]
        if len(real):
            ranked = real.assign(_saved=real["defense_value_rows"].fillna(-math.inf)).sort_values(
                ["f_needed", "_saved"], ascending=[True, False]
            )
            best = ranked.iloc[0]
            row.update(
                best_defense=str(best["defense_label"]),
                best_f_needed=float(best["f_needed"]),
                best_extra_clean_data=fmt_recovery(best),
                best_rows_saved=float(best["defense_value_rows"]),
                best_resolved=bool(best.get("defense_value_resolved", False)),
            )
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=list(HEADLINE_COLUMNS))
