"""How the report writes numbers: multiples of the train set, headline cells with their
intervals, clean rows saved, poison rates. One place for each format, shared by every section."""

from __future__ import annotations

import math

import pandas as pd

DASH = "–"
#: marks a headline estimated on another metric than the run's (``schema.FALLBACK_METRICS``)
FALLBACK_MARK = "‡"


def fallback_rows(rec: pd.DataFrame, metric: str) -> pd.Series:
    """The estimates of ``rec`` made on another metric than ``metric`` (a label flip's, on
    accuracy, in a run measured on ``backdoor_asr``)."""
    return rec["metric"].notna() & (rec["metric"] != metric)


def fallback_note(rec: pd.DataFrame, metric: str) -> str | None:
    """The footnote for the rows :func:`fallback_rows` marks (None when there are none)."""
    other = rec[fallback_rows(rec, metric)]
    if other.empty:
        return None
    attacks = ", ".join(sorted(set(other["attack_label"].astype(str))))
    on = ", ".join(
        f"`{m}` (tolerance {t:g})"
        for m, t in other[["metric", "tolerance"]].drop_duplicates().itertuples(index=False)
    )
    return (
        f"{FALLBACK_MARK} measured on {on}, not `{metric}`: {attacks} has no `{metric}` "
        "(no trigger), so its headline is the clean data that brings it back to the clean "
        "model on that metric."
    )


def fmt_multiple(f: float) -> str:
    """An extra fraction as a multiple of n_train: ``0.25``, ``1.5``, ``12`` (no unit)."""
    if not math.isfinite(f):
        return "∞"
    if f == 0:
        return "0"
    if f < 10:
        return f"{f:.2g}" if f < 1 else f"{f:.1f}".rstrip("0").rstrip(".")
    return f"{f:.0f}"


def fmt_recovery(row: pd.Series) -> str:
    """A headline cell: ``0.5× [0.25–1.0]``; ``> 2×`` when censored (``†`` when the clean pool
    ended the grid); the interval's upper end reads ``2+`` when it lies beyond the grid."""
    f, f_max = float(row["f_needed"]), float(row["f_max"])
    if math.isnan(f):
        return DASH
    dagger = "†" if bool(row.get("pool_exhausted", False)) else ""
    if math.isinf(f):
        return f"> {fmt_multiple(f_max)}×{dagger}"
    text = f"{fmt_multiple(f)}×"
    lo, hi = float(row.get("f_low", math.nan)), float(row.get("f_high", math.nan))
    if not math.isnan(lo):
        hi_text = f"{fmt_multiple(f_max)}+" if math.isinf(hi) else fmt_multiple(hi)
        lo_text = f"{fmt_multiple(f_max)}+" if math.isinf(lo) else fmt_multiple(lo)
        text += f" [{lo_text}–{hi_text}]"
    return text + dagger


def fmt_rows(row: pd.Series) -> str:
    """A defense-value cell in clean rows saved, with its paired interval: ``+120 [+30, +210]``,
    ``≥ +300`` (a lower bound), ``+40 [−20, +100] n.s.`` when the interval includes 0 (not
    distinguishable from no defense), ``–`` when unknown."""
    value, kind = float(row["defense_value_rows"]), row["defense_value_kind"]
    if math.isnan(value):
        return DASH
    text = f"{value:+.0f}"
    if kind == "lower_bound":
        return f"≥ {text}"
    n = float(row.get("n_train", math.nan))
    low, high = (
        float(row.get("defense_value_low", math.nan)),
        float(row.get("defense_value_high", math.nan)),
    )
    if math.isnan(low) or math.isnan(n):
        return text
    bounds = [
        f"{v * n:+.0f}" if math.isfinite(v) else ("+∞" if v > 0 else "−∞") for v in (low, high)
    ]
    text += f" [{bounds[0]}, {bounds[1]}]"
    return text if bool(row.get("defense_value_resolved", False)) else f"{text} n.s."


def fmt_rate(rate: float) -> str:
    """A poison rate as a percentage: ``10%``, ``2.5%``."""
    return f"{rate:.0%}" if rate * 100 == round(rate * 100) else f"{rate:.1%}"


def fmt_span(low: float, high: float) -> str:
    """``0.5×`` or ``0–0.25×``."""
    if low == high:
        return f"{fmt_multiple(low)}×"
    return f"{fmt_multiple(low)}–{fmt_multiple(high)}×"
