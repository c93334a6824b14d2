"""The per-configuration tables at f = 0: accuracy, targeted flips, filter quality."""

from __future__ import annotations

import math

import pandas as pd

from bench.analysis.document import Section, Table
from bench.analysis.formats import DASH
from bench.analysis.report.frames import (
    PairSplit,
    at_f0,
    defense_order,
    id_labels,
    mean_std_cells,
    pivot_defenses,
    split_of,
)
from bench.core.schema import (
    NO_ATTACK_ID,
)


def accuracy_table(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """``metric`` mean ± std over seeds at f = 0: rows (attack, rate) of one dataset/model,
    columns defenses. The rate-0 clean cells (attack ``none``) come first."""
    ok = at_f0(df)
    if ok.empty or metric not in ok:
        return pd.DataFrame()
    cells = mean_std_cells(ok, ["attack_id", "rate", "defense_id"], metric)
    frame = cells.rename("cell").reset_index()
    frame = frame.merge(
        ok[["attack_id", "attack_label"]].drop_duplicates("attack_id"), on="attack_id"
    ).merge(
        ok[["defense_id", "defense_label", "defense_reference"]].drop_duplicates("defense_id")
        if "defense_reference" in ok
        else ok[["defense_id", "defense_label"]].drop_duplicates("defense_id"),
        on="defense_id",
    )
    table = pivot_defenses(frame, "cell")
    clean = table["attack"] == id_labels(ok, "attack").get(NO_ATTACK_ID, "none")
    return pd.concat([table[clean], table[~clean]]).reset_index(drop=True)


def filter_table(df: pd.DataFrame) -> pd.DataFrame:
    """Filter quality at f = 0 (mean over seeds): rows (attack, rate), columns filters, cells
    ``precision / recall / ROC-AUC (clean rows removed)``; reference filters last."""
    if "det_precision" not in df:
        return pd.DataFrame()
    ok = at_f0(df)
    ok = ok[ok["attack_id"] != NO_ATTACK_ID]
    filters = ok.loc[ok["det_precision"].notna() | ok["det_recall"].notna(), "defense_id"].unique()
    filt = ok[ok["defense_id"].isin(filters)]
    if filt.empty:
        return pd.DataFrame()
    stats = (
        filt.groupby(["attack_id", "rate", "defense_id"], sort=True)[
            ["det_precision", "det_recall", "det_roc_auc", "clean_removed"]
        ]
        .mean()
        .reset_index()
    )

    def cell(s: pd.Series) -> str:
        parts = [
            DASH if math.isnan(s[c]) else f"{s[c]:.2f}"
            for c in ("det_precision", "det_recall", "det_roc_auc")
        ]
        return f"{' / '.join(parts)} ({s['clean_removed']:.0f})"

    stats["cell"] = stats.apply(cell, axis=1)
    keep = ["attack_id", "attack_label", "defense_id", "defense_label", "defense_reference"]
    meta = filt[[c for c in keep if c in filt]]
    stats = stats.merge(
        meta.drop_duplicates(["attack_id", "defense_id"]), on=["attack_id", "defense_id"]
    )
    return pivot_defenses(stats, "cell", defense_order(filt))


def targeted_tables(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Source-class accuracy and attack success rate (mean ± std at f = 0) for targeted flips."""
    if "attack_success_rate" not in df:
        return pd.DataFrame(), pd.DataFrame()
    ok = at_f0(df)
    targeted = ok[ok["attack_success_rate"].notna()]
    out = []
    for metric in ("source_accuracy", "attack_success_rate"):
        if targeted.empty:
            out.append(pd.DataFrame())
            continue
        cells = mean_std_cells(targeted, ["attack_id", "rate", "defense_id"], metric)
        frame = cells.rename("cell").reset_index()
        meta = targeted[
            [c for c in ("attack_id", "attack_label", "defense_id", "defense_label",
                         "defense_reference") if c in targeted]
        ]  # fmt: skip
        frame = frame.merge(
            meta.drop_duplicates(["attack_id", "defense_id"]), on=["attack_id", "defense_id"]
        )
        out.append(pivot_defenses(frame, "cell", defense_order(targeted)))
    return out[0], out[1]


def accuracy_section(
    df: pd.DataFrame,
    pairs: list[tuple[str, str, str]],
    metric: str,
    df_of: PairSplit | None = None,
) -> Section:
    """The accuracy (or macro-F1) section: :func:`accuracy_table` per dataset and model
    (``df_of``: ``df``'s :class:`PairSplit`, shared with other sections; these tables read
    the f = 0 rows only, so ``df`` may be those alone)."""
    section = Section(f"{metric.replace('_', ' ').capitalize()} (mean ± std over seeds, f = 0)")
    df_of = split_of(df, df_of)
    for dataset, model, heading in pairs:
        table = accuracy_table(df_of(dataset, model), metric)
        section.subsections.append(Section(heading, level=3, tables=[Table(table)]))
    return section


def targeted_section(
    df: pd.DataFrame, pairs: list[tuple[str, str, str]], df_of: PairSplit | None = None
) -> Section:
    """The targeted-flip section: source-class accuracy and attack success rate per dataset and
    model (:func:`targeted_tables`), or a line saying the run has no targeted attack."""
    section = Section(
        "Targeted flips: source-class accuracy and attack success rate", paragraphs=[TARGETED_TEXT]
    )
    df_of = split_of(df, df_of)
    for dataset, model, heading in pairs:
        src, asr = targeted_tables(df_of(dataset, model))
        if src.empty:
            continue
        section.subsections += [
            Section(f"{heading}: source-class accuracy", level=3, tables=[Table(src)]),
            Section(f"{heading}: attack success rate", level=3, tables=[Table(asr)]),
        ]
    if not section.subsections:
        section.paragraphs.append("_No targeted attack in this run._")
    return section


def filter_section(
    df: pd.DataFrame, pairs: list[tuple[str, str, str]], df_of: PairSplit | None = None
) -> Section:
    """The filter-quality section: :func:`filter_table` per dataset and model that has a filter."""
    section = Section("Filter quality", paragraphs=[FILTER_TEXT])
    df_of = split_of(df, df_of)
    for dataset, model, heading in pairs:
        table = filter_table(df_of(dataset, model))
        if not table.empty:
            section.subsections.append(Section(heading, level=3, tables=[Table(table)]))
    if not section.subsections:
        section.paragraphs.append("_No filter defense in this run._")
    return section


#: how to read the filter-quality tables
FILTER_TEXT = (
    "Precision / recall of the removed rows and ROC-AUC of the outlier scores against "
    "the true poison mask, (clean rows removed), mean over seeds. The oracle filter "
    "(removes exactly the poisoned rows) is the ceiling, the random filter the floor."
)


#: how to read the targeted-flip tables
TARGETED_TEXT = (
    "Source-class accuracy (share of clean source-class test rows predicted correctly) "
    "and attack success rate (share predicted as the target), mean ± std over seeds, "
    "f = 0."
)
