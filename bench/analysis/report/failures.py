"""The closing sections: rows of the grid that were skipped, and cells that failed."""

from __future__ import annotations

import pandas as pd

from bench.analysis.document import Section, Table
from bench.analysis.formats import fmt_multiple
from bench.analysis.recovery import (
    skip_reasons,
)
from bench.core.schema import (
    EARLY_STOP,
    POOL_EXHAUSTED,
)


def closing_sections(df: pd.DataFrame) -> list[Section]:
    """The report's last sections: the skipped rows and the failed cells, where there are any."""
    if "status" not in df:
        return []
    sections = (skipped_section(df), failed_section(df))
    return [s for s in sections if s is not None]


#: why a row was not trained, as the skipped-rows table says it
SKIP_EXPLAINED = {
    POOL_EXHAUSTED: "the clean pool ran out",
    EARLY_STOP: "early stop: already recovered at two grid points",
}


def skipped_section(df: pd.DataFrame) -> Section | None:
    """The "Skipped rows" section: rows per dataset and reason, with the extra fraction from
    which they start; None when no row was skipped."""
    skipped = df[df["status"] == "skipped"]
    if skipped.empty:
        return None
    reasons = skip_reasons(skipped)
    counts = (
        skipped.assign(reason=reasons.values)
        .groupby(["dataset_label", "reason"], sort=True)
        .agg(rows=("cell_id", "size"), from_fraction=("extra_fraction", "min"))
        .reset_index()
        .rename(columns={"dataset_label": "dataset"})
    )
    counts["from_fraction"] = counts["from_fraction"].map(lambda v: f"{fmt_multiple(v)}×")
    counts["reason"] = counts["reason"].map(lambda v: SKIP_EXPLAINED.get(v, v))
    return Section(
        "Skipped rows",
        paragraphs=[
            "Rows of the grid that were not trained (extra fraction from which they start)."
        ],
        tables=[Table(counts)],
    )


def failed_section(df: pd.DataFrame) -> Section | None:
    """The "Failed cells" section: the distinct reasons and the first failed rows; None when
    no cell failed."""
    failed = df[df["status"] == "failed"]
    if failed.empty:
        return None
    cols = [
        c
        for c in ("cell_id", "dataset_label", "model_label", "attack_label", "rate",
                  "defense_label", "seed", "extra_fraction", "error")
        if c in failed
    ]  # fmt: skip
    return Section(
        "Failed cells",
        paragraphs=[
            f"{failed['cell_id'].nunique()} cell(s) failed ({len(failed)} row(s)); a "
            "rerun of the same command retries them. The distinct reasons:"
        ],
        tables=[
            Table(failed_reasons(df)),
            Table(failed[cols].head(50), title="The first failed rows"),
        ],
    )


def failed_reasons(df: pd.DataFrame) -> pd.DataFrame:
    """The distinct reasons rows failed, with the count of cells and rows for each."""
    failed = df[df["status"] == "failed"]
    if failed.empty:
        return pd.DataFrame(columns=["reason", "cells", "rows"])
    errors = failed["error"].fillna("(no error recorded)").astype(str).str.slice(0, 300)
    frame = failed.assign(reason=errors)
    out = (
        frame.groupby("reason")
        .agg(cells=("cell_id", "nunique"), rows=("cell_id", "size"))
        .reset_index()
        .sort_values(["cells", "reason"], ascending=[False, True])
    )
    return out.reset_index(drop=True)
