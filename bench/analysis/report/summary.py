"""The findings table and the summary in plain words (the report's first sections)."""

from __future__ import annotations

import math

import pandas as pd

from bench.analysis.document import Section, Table
from bench.analysis.findings import answered_share, deployable, findings_table
from bench.analysis.formats import (
    fallback_note,
    fallback_rows,
    fmt_multiple,
    fmt_rate,
    fmt_recovery,
    fmt_rows,
    fmt_span,
)
from bench.analysis.report.frames import (
    PairSplit,
    at_f0,
    split_of,
    subset,
)
from bench.core.schema import (
    NO_ATTACK_ID,
    NO_DEFENSE_ID,
    higher_is_better,
)


def findings_section(
    df: pd.DataFrame,
    rec: pd.DataFrame,
    pairs: list[tuple[str, str, str]],
    target: float,
    metric: str,
    tolerance: float,
    df_of: PairSplit | None = None,
    rec_of: PairSplit | None = None,
) -> Section:
    """The report's first section: one findings table per dataset and model (``df_of``,
    ``rec_of``: the tables' :class:`PairSplit`, shared with other sections)."""
    wide = (
        "bounded"
        if math.isinf(target)
        else f"bounded and at most {fmt_multiple(target)}× n_train wide (the run's precision)"
    )
    section = Section(
        "Findings",
        paragraphs=[
            f"Per attack and rate, without a defense: the {metric} lost against the clean "
            "model, the extra clean data needed to get it back (× n_train, [95 % interval]), "
            "and the deployable defense that saves the most clean rows (paired over seeds; "
            "`n.s.`: not distinguishable from none). A headline is *answered* when its interval "
            f'is {wide}, or rules out everything but "not recovered within the grid"; '
            "otherwise the observed spread says roughly how many more seeds would answer it."
        ],
    )
    rec_of, df_of = split_of(rec, rec_of), split_of(df, df_of)
    for dataset, model, heading in pairs:
        table = findings_table(
            rec_of(dataset, model), df_of(dataset, model), target, metric, tolerance
        )
        if not table.empty:
            section.subsections.append(Section(heading, level=3, tables=[Table(table)]))
    note = fallback_note(rec, metric)
    if section.subsections and note is not None:
        section.paragraphs.append(note)
    if not section.subsections:
        section.paragraphs.append("_No poisoned cell finished._")
    return section


def summary_section(
    df: pd.DataFrame,
    rec: pd.DataFrame,
    pairs: list[tuple[str, str, str]],
    metric: str,
    tolerance: float,
    target: float = math.inf,
    df_of: PairSplit | None = None,
    rec_of: PairSplit | None = None,
) -> Section:
    """The "Summary" section: :func:`summary_lines` for every dataset and model, in order
    (``df_of``, ``rec_of`` as in :func:`findings_section`; it reads the f = 0 rows of ``df``
    only, so ``df`` may be those alone)."""
    section = Section("Summary")
    df_of, rec_of = split_of(df, df_of), split_of(rec, rec_of)
    for dataset, model, _ in pairs:
        section.bullets += summary_lines(
            df_of(dataset, model), rec_of(dataset, model), dataset, model, metric, tolerance, target
        )
    return section


def summary_lines(
    df: pd.DataFrame,
    rec: pd.DataFrame,
    dataset: str,
    model: str,
    metric: str,
    tolerance: float,
    target: float = math.inf,
) -> list[str]:
    """At most four short bullets for one dataset/model (ids), each backed by a number of the
    findings table: the clean model and the costliest attack (:func:`clean_line`), how many
    headline cells answer (:func:`answered_line`), the most valuable deployable defense or that
    none is distinguishable from none (:func:`defense_line`), and whether the pool ran out
    (:func:`pool_line`).

    ``metric``: the metric ``rec`` was estimated on (e.g. ``backdoor_asr``, lower is better:
    a rise is the damage)."""
    ok0 = at_f0(subset(df, dataset, model))
    if ok0.empty:
        return []
    r = subset(rec, dataset, model)
    heading = f"{ok0['model_label'].iloc[0]} on {ok0['dataset_label'].iloc[0]}"
    undefended = r[(r["defense_id"] == NO_DEFENSE_ID) & (r["attack_id"] != NO_ATTACK_ID)]
    lines = [
        clean_line(r, undefended, ok0, heading, metric),
        answered_line(undefended, heading, target),
        defense_line(r, heading),
        pool_line(r, heading),
    ]
    return [line for line in lines if line is not None]


def clean_line(
    rec: pd.DataFrame, undefended: pd.DataFrame, ok0: pd.DataFrame, heading: str, metric: str
) -> str | None:
    """The clean model's ``metric`` and the costliest attack with the extra data it needs
    (None without a clean reference). ``rec``, ``undefended``, ``ok0``: one dataset/model's
    estimates, its undefended attacked ones and its finished rows at f = 0."""
    clean = rec[(rec["attack_id"] == NO_ATTACK_ID) & (rec["defense_id"] == NO_DEFENSE_ID)]
    if clean.empty:
        return None
    higher = higher_is_better(metric)
    sign = 1.0 if higher else -1.0
    c = clean.iloc[0]
    n_train = int(ok0["n_train"].mean()) if "n_train" in ok0 else 0
    text = (
        f"**{heading}**: clean {metric} {c['reference']:.3f} ({c['n_seeds']} seeds, "
        f"{n_train} training rows)"
    )
    own = undefended[~fallback_rows(undefended, metric)]  # the others are on another metric
    damage = sign * (own["reference"] - own["value_at_0"])
    if damage.notna().any():
        worst = own.loc[damage.idxmax()]
        text += (
            f"; the costliest attack is {worst['attack_label']} at {fmt_rate(worst['rate'])} "
            f"({damage.max() * 100:.1f} points {'lost' if higher else 'worse'}), which "
            f"needs {fmt_recovery(worst)} extra clean data"
        )
    return text + "."


def answered_line(undefended: pd.DataFrame, heading: str, target: float) -> str | None:
    """How many undefended headline cells are answered (bounded, or within the precision
    ``target``); None when there are none."""
    answered, total = answered_share(undefended, target)
    if not total:
        return None
    wide = "bounded" if math.isinf(target) else f"at most {fmt_multiple(target)}× wide"
    return f"{answered} of {total} headline cells on {heading} are answered ({wide} or > grid)" + (
        "." if answered == total else "; the findings table says what the rest need."
    )


def defense_line(rec: pd.DataFrame, heading: str) -> str | None:
    """The deployable defense that saves the most clean rows (resolved or a lower bound), or
    that no saving is distinguishable from zero; None when no defense has a value."""
    attacked = rec["attack_id"] != NO_ATTACK_ID
    value = rec[deployable(rec) & rec["defense_value_rows"].notna() & attacked]
    solid = value[value["defense_value_resolved"] | (value["defense_value_kind"] == "lower_bound")]
    if not solid.empty and solid["defense_value_rows"].max() > 0:
        best = solid.loc[solid["defense_value_rows"].idxmax()]
        bound = "at least " if best["defense_value_kind"] == "lower_bound" else ""
        return (
            f"The most valuable deployable defense on {heading}: {best['defense_label']}, worth "
            f"{bound}{best['defense_value_rows']:.0f} clean rows at {fmt_rate(best['rate'])} "
            f"{best['attack_label']} ({fmt_rows(best)})."
        )
    if not value.empty:
        return (
            f"No deployable defense's clean-data saving on {heading} is distinguishable from "
            "zero at this seed count."
        )
    return None


def pool_line(rec: pd.DataFrame, heading: str) -> str | None:
    """Where the clean pool ran out before a curve recovered; None when it never did."""
    if not rec["pool_exhausted"].any():
        return None
    cut = rec.loc[rec["pool_exhausted"], "f_max"]
    return (
        f"The clean pool ran out on {heading}: {len(cut)} of {len(rec)} curves stop at "
        f"{fmt_span(cut.min(), cut.max())} (`> X×†`: not recovered within the pool)."
    )
