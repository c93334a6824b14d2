"""The headline section "Extra clean data needed": the recovery table, the defense value in
clean rows, and the label-noise theory line.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.analysis.document import Section, Table
from bench.analysis.formats import (
    DASH,
    FALLBACK_MARK,
    fallback_note,
    fallback_rows,
    fmt_multiple,
    fmt_rate,
    fmt_recovery,
    fmt_rows,
    fmt_span,
)
from bench.analysis.recovery import (
    label_noise_multiplier,
)
from bench.analysis.report.frames import (
    PairSplit,
    pivot_defenses,
    split_of,
)
from bench.core.schema import (
    NO_ATTACK_ID,
    NO_DEFENSE_ID,
    SYMMETRIC_LABEL_NOISE,
)


def recovery_table(rec: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """The headline table of one dataset/model: rows (attack, rate), columns defenses, cells
    like ``0.5× [0.25–1.0]``; with ``metric`` (the run's), a cell estimated on another metric
    ends in :data:`~bench.analysis.formats.FALLBACK_MARK`."""
    frame = rec[rec["attack_id"] != NO_ATTACK_ID].copy()
    if frame.empty:
        return pd.DataFrame()
    frame["cell"] = _marked(frame, frame.apply(fmt_recovery, axis=1), metric)
    return pivot_defenses(frame, "cell")


def defense_value_table(rec: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Clean rows each defense saves against no defense: rows (attack, rate), columns defenses
    (marked as in :func:`recovery_table`)."""
    frame = rec[(rec["attack_id"] != NO_ATTACK_ID) & (rec["defense_id"] != NO_DEFENSE_ID)].copy()
    if frame.empty:
        return pd.DataFrame()
    frame["cell"] = _marked(frame, frame.apply(fmt_rows, axis=1), metric)
    return pivot_defenses(frame, "cell")


def _marked(frame: pd.DataFrame, cells: pd.Series, metric: str | None) -> pd.Series:
    """``cells`` with :data:`FALLBACK_MARK` on the rows estimated on another metric."""
    if metric is None:
        return cells
    other = fallback_rows(frame, metric)
    return cells.where(~other, cells + f" {FALLBACK_MARK}")


def theory_table(rec: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Measured extra data (no defense) beside the label-noise theory lines, for attacks that
    declare the symmetric-label-noise line (random flips); marked as in :func:`recovery_table`."""
    frame = rec[
        (rec["defense_id"] == NO_DEFENSE_ID)
        & (rec["theory"] == SYMMETRIC_LABEL_NOISE)
        & rec["theory_f"].notna()
    ].copy()
    if frame.empty:
        return pd.DataFrame()
    return pd.DataFrame(
        {
            "attack": frame["attack_label"],
            "rate": frame["rate"].map(fmt_rate),
            "flipped share η": frame["poison_fraction"].map(lambda v: f"{v:.3f}"),
            "measured": _marked(frame, frame.apply(fmt_recovery, axis=1), metric),
            "1/(1−2η)² − 1": [
                f"{fmt_multiple(label_noise_multiplier(e, 2) - 1)}×"
                for e in frame["poison_fraction"]
            ],
            "K-class: 1/m² − 1": frame["theory_f"].map(lambda v: f"{fmt_multiple(v)}×"),
            "K-class, clean extra rows": frame["theory_f_mixed"].map(
                lambda v: f"{fmt_multiple(v)}×"
            ),
            "poison share after f_needed": frame["diluted_rate"].map(
                lambda v: DASH if math.isnan(v) else f"{v:.3f}"
            ),
        }
    ).reset_index(drop=True)


#: what the theory line is, and why plain ERM is expected to need more (issue 13)
THEORY_TEXT = (
    "A reference, not an estimate. The label-noise sample-complexity multiplier 1/(1−2η)² "
    "(binary; Angluin & Laird 1988) and its K-class form 1/m² with margin m = 1 − ηK/(K−1) are "
    "worst-case scalings for learners that *tolerate* symmetric noise (e.g. by minimizing "
    "disagreements under the noise model), read here as extra data f = multiplier − 1; the "
    "next column solves the same bound when the extra rows are clean (they dilute η). Plain "
    "empirical risk minimization on flipped labels (what the models here do) fits the wrong "
    "labels too, so it is expected to need more than the line. The last column is the poison "
    "share left after appending the measured f_needed × n_train clean rows."
)


def needed_section(
    rec: pd.DataFrame,
    pairs: list[tuple[str, str, str]],
    metric: str,
    tolerance: float,
    rec_of: PairSplit | None = None,
) -> Section:
    """The "Extra clean data needed" section: one subsection per dataset and model (``rec_of``:
    ``rec``'s :class:`PairSplit`, shared with other sections)."""
    section = Section(
        "Extra clean data needed",
        paragraphs=[
            f"The smallest extra clean fraction f (× n_train, clean pool rows appended after the "
            f"defense) at which mean `{metric}` over seeds is back within {tolerance:g} of the "
            "clean model (no attack, no defense, f = 0), linearly interpolated between grid "
            "points; [95 % interval: the f where a t-test on the per-seed margins, paired by "
            "seed, does not reject recovery (simulated coverage ≈ 95 % at 3, 5 and 10 seeds); "
            "with fewer than 3 seeds the per-seed range]. `> X×` means not recovered by the "
            "largest fraction measured; `X+` in an interval means beyond the grid; † marks "
            "curves the clean pool cut short."
        ],
    )
    note = fallback_note(rec, metric)
    if note is not None:
        section.paragraphs.append(note)
    rec_of = split_of(rec, rec_of)
    for dataset, model, heading in pairs:
        section.subsections.append(needed_subsection(rec_of(dataset, model), heading, metric))
    return section


def needed_subsection(rec: pd.DataFrame, heading: str, metric: str | None = None) -> Section:
    """One dataset and model: the recovery table, a note when the pool ran out, the defense
    value in clean rows, and the theory line where an attack declares one (``metric``: the
    run's, to mark the cells estimated on another, :func:`recovery_table`)."""
    section = Section(heading, level=3, tables=[Table(recovery_table(rec, metric))])
    if rec["pool_exhausted"].any():
        cut = rec[rec["pool_exhausted"]]
        section.paragraphs.append(
            f"> **Clean pool exhausted on {heading}**: {len(cut)} of {len(rec)} curves stop at "
            f"{fmt_span(cut['f_max'].min(), cut['f_max'].max())} instead of "
            f"{fmt_multiple(rec['grid_max'].max())}× (see the skipped rows below)."
        )
    section.subsections.append(
        Section(
            f"Defense value on {heading} (clean rows saved)",
            level=4,
            paragraphs=[DEFENSE_VALUE_TEXT],
            tables=[Table(defense_value_table(rec, metric))],
        )
    )
    theory = theory_table(rec, metric)
    if not theory.empty:
        section.subsections.append(
            Section(
                f"Theory line for random label flips on {heading}",
                level=4,
                paragraphs=[THEORY_TEXT],
                tables=[Table(theory)],
            )
        )
    return section


#: how to read the defense-value table
DEFENSE_VALUE_TEXT = (
    "Undefended f minus defended f, times n_train: positive means the defense saves that many "
    "clean rows; [95 % interval, the two curves paired by seed]; `n.s.` when the interval "
    "includes 0 (not distinguishable from no defense at this seed count); `≥` is a lower bound "
    "(the undefended curve never recovered); `–` when the defended curve never recovered."
)
