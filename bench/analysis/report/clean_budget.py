"""The "Best use of a clean-data budget" section: formats :mod:`bench.analysis.budget`."""

from __future__ import annotations

import math

import pandas as pd

from bench.analysis.budget import budget_uses, budget_verdicts, has_budget_uses
from bench.analysis.document import Section, Table
from bench.analysis.formats import DASH, fmt_rate
from bench.analysis.report.frames import (
    PairSplit,
    dataset_model_pairs,
)
from bench.core.schema import (
    DEFAULT_METRIC,
    higher_is_better,
)


def budget_table(uses: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The clean-budget uses of one dataset/model as report cells: rows (attack, rate, budget,
    use), best use first within a budget."""
    if uses.empty:
        return pd.DataFrame()
    frame = uses.sort_values(
        ["attack_label", "rate", "budget_rows", "mean"],
        ascending=[True, True, True, not higher_is_better(metric)],
        kind="stable",
    )

    def gain(r: pd.Series) -> str:
        if r["kind"] == "undefended":
            return DASH
        text = f"{r['gain']:+.3f}"
        if math.isfinite(r["gain_low"]):
            text += f" [{r['gain_low']:+.3f}, {r['gain_high']:+.3f}]"
            if not (r["gain_low"] > 0 or r["gain_high"] < 0):
                text += " n.s."
        return text

    def matched(v: float) -> str:
        if math.isnan(v):
            return DASH
        return "beyond the curve" if math.isinf(v) else f"{v:.0f}"

    return pd.DataFrame(
        {
            "attack": frame["attack_label"],
            "rate": frame["rate"].map(fmt_rate),
            "clean rows": frame["budget_rows"].map(lambda v: f"{v:.0f}"),
            "use": frame["use"],
            "read by the defense": frame["n_trusted_read"].map(lambda v: f"{v:.0f}"),
            metric: [
                f"{m:.3f}" if not math.isfinite(s) else f"{m:.3f} ± {s:.3f}"
                for m, s in zip(frame["mean"], frame["std"], strict=True)
            ],
            "vs undefended": frame.apply(gain, axis=1),
            "as good as appending (rows)": frame["as_good_as_rows"].map(matched),
        }
    ).reset_index(drop=True)


BUDGET_TEXT = (
    "For each attack and rate: what a budget of clean pool rows buys when it is appended to the "
    "training set, when a defense learns from it (`trusted_filter`, `glc`, ...), or both, at "
    "**equal total clean rows** (rows the defense read or appended + rows appended after it). "
    "*Append N rows* is the poisoned set plus N clean rows and nothing else: the undefended "
    "model's recovery curve at f = N / n_train or an `extra_clean` cell of that fraction (the "
    "same rows, order and model seed, hence the same fit). `{metric}`: mean ± std over seeds; "
    "*vs undefended*: paired difference to the poisoned model without clean rows, same seeds "
    "[95 % t-interval], `n.s.` when it includes 0; *as good as appending*: the number of "
    "appended rows at which that append curve reaches the use's mean (linear interpolation "
    "between measured amounts). A use is a defense configuration at one extra fraction: "
    "`X + append N rows` learnt from part of the budget and appended the rest."
)


def budget_section(df: pd.DataFrame, metric: str = DEFAULT_METRIC) -> Section | None:
    """The "Best use of a clean-data budget" section, or None when the table holds no defense
    that learns from trusted rows (see :func:`budget_uses`, :func:`budget_verdicts`)."""
    if not has_budget_uses(df):
        return None
    uses = budget_uses(df, metric)
    verdicts = budget_verdicts(df, metric)
    section = Section(
        "Best use of a clean-data budget", paragraphs=[BUDGET_TEXT.format(metric=metric)]
    )
    uses_of, verdicts_of = PairSplit(uses), PairSplit(verdicts)
    for dataset, model, heading in dataset_model_pairs(uses):
        sub = uses_of(dataset, model)
        said = verdicts_of(dataset, model) if not verdicts.empty else verdicts
        section.subsections.append(
            Section(
                heading,
                level=3,
                bullets=list(said["sentence"]) if not said.empty else [],
                tables=[Table(budget_table(sub, metric))],
            )
        )
    return section
