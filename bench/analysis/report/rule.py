"""The rule-of-thumb check: measured extra data (no defense) beside the commonly quoted rule."""

from __future__ import annotations

import math

import pandas as pd

from bench.analysis.document import Section, Table
from bench.analysis.formats import FALLBACK_MARK, fmt_multiple, fmt_rate, fmt_recovery
from bench.analysis.report.frames import (
    PairSplit,
    split_of,
)
from bench.core.schema import (
    NO_ATTACK_ID,
    NO_DEFENSE_ID,
)

#: The commonly quoted rule of thumb: poison rate → (low, high) extra clean data needed (× n).
#: "~10 %" at 5 % poisoning is read as the range 0.05–0.2×.
RULE_OF_THUMB: dict[float, tuple[float, float, str]] = {
    0.05: (0.05, 0.2, "~0.1×"),
    0.10: (0.3, 0.5, "0.3–0.5×"),
    0.50: (3.0, 5.0, "3–5×"),
}


def rule_of_thumb_table(rec: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Measured extra data (no defense) beside the rule of thumb at 5, 10 and 50 % poisoning,
    with a verdict: ``holds`` when the interval overlaps the rule's range, ``needs less`` /
    ``needs more`` otherwise, ``unknown`` when the grid ends before the rule's range. With
    ``metric`` (the run's), a row estimated on another metric ends in ``FALLBACK_MARK``."""
    rows = []
    frame = rec[(rec["defense_id"] == NO_DEFENSE_ID) & (rec["attack_id"] != NO_ATTACK_ID)]
    for _, r in frame.iterrows():
        rule = next((v for k, v in RULE_OF_THUMB.items() if math.isclose(k, r["rate"])), None)
        if rule is None or math.isnan(float(r["f_needed"])):
            continue
        lo_rule, hi_rule, text = rule
        rows.append(
            {
                "attack": r["attack_label"],
                "rate": fmt_rate(r["rate"]),
                "rule of thumb": text,
                "measured": fmt_recovery(r)
                + (f" {FALLBACK_MARK}" if metric not in (None, r["metric"]) else ""),
                "verdict": rule_verdict(r, lo_rule, hi_rule),
            }
        )
    return pd.DataFrame(rows, columns=["attack", "rate", "rule of thumb", "measured", "verdict"])


def rule_verdict(r: pd.Series, lo_rule: float, hi_rule: float) -> str:
    """``holds``, ``needs less``, ``needs more`` or ``unknown (grid ends at X×)``."""
    f, f_max = float(r["f_needed"]), float(r["f_max"])
    lo, hi = float(r.get("f_low", math.nan)), float(r.get("f_high", math.nan))
    if math.isnan(lo) or math.isnan(hi):
        lo, hi = f, f
    if math.isinf(f):
        if f_max >= hi_rule:
            return "needs more"
        return f"unknown (grid ends at {fmt_multiple(f_max)}×)"
    if hi < lo_rule:
        return "needs less"
    if lo > hi_rule:
        return "needs more"
    return "holds"


def rule_summary(rule: pd.DataFrame) -> str:
    """One sentence: where the rule of thumb holds and where it does not."""
    if rule.empty:
        return "No measured rate matches the rule's 5, 10 or 50 %."
    counts = rule["verdict"].map(lambda v: v.split(" (")[0]).value_counts()
    holds = rule[rule["verdict"] == "holds"]
    text = f"The rule holds for {counts.get('holds', 0)} of {len(rule)} attack/rate pairs"
    if not holds.empty:
        text += " (" + ", ".join(f"{a} at {r}" for a, r in holds[["attack", "rate"]].values)
        text += ")"
    more = counts.get("needs more", 0)
    less = counts.get("needs less", 0)
    text += f"; the measured need is larger in {more} and smaller in {less}"
    unknown = counts.get("unknown", 0)
    if unknown:
        text += f", and {unknown} cannot be judged because the grid ends too early"
    return text + "."


def rule_section(
    rec: pd.DataFrame,
    pairs: list[tuple[str, str, str]],
    metric: str | None = None,
    rec_of: PairSplit | None = None,
) -> Section:
    """The "Rule-of-thumb check" section: per dataset and model, the table and one sentence
    (``metric``: the run's, to mark the rows estimated on another; ``rec_of``: ``rec``'s
    :class:`PairSplit`, shared with other sections)."""
    section = Section("Rule-of-thumb check", paragraphs=[RULE_TEXT])
    rec_of = split_of(rec, rec_of)
    for dataset, model, heading in pairs:
        rule = rule_of_thumb_table(rec_of(dataset, model), metric)
        section.subsections.append(
            Section(heading, level=3, tables=[Table(rule)], paragraphs=[rule_summary(rule)])
        )
    return section


#: how to read the rule-of-thumb tables
RULE_TEXT = (
    "A commonly quoted rule: 5 % poisoning needs ~10 % more clean data, 10 % needs "
    "30–50 %, 50 % needs 3–5×. Measured without a defense; `holds` when the interval "
    "overlaps the rule's range (~10 % read as 5–20 %). For targeted flips the rate is "
    "of the source class, so the poisoned share of the train set is much smaller."
)
