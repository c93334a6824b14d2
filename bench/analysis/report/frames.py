"""Helpers every report section shares: cell formats, display order, and pivots by id.

Groups are configurations (``schema.GROUP_KEYS``: ids), shown by their labels (unique per id):
two settings of one defense are two columns, never one average.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.formats import DASH, fmt_rate
from bench.core.schema import (
    NO_DEFENSE_ID,
)


def mean_std(values: pd.Series) -> str:
    """``mean ± std`` over seeds (3 decimals); the value alone for one seed, ``–`` for none."""
    # numpy, not pandas: called once per table cell (tens of thousands in a large report);
    # the same sums as Series.mean/std (pairwise, two-pass variance)
    return _mean_std(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan))


def mean_std_cells(frame: pd.DataFrame, keys: list[str], column: str) -> pd.Series:
    """:func:`mean_std` of ``column`` per group of ``keys`` (sorted, as
    ``frame.groupby(keys)[column].apply(mean_std)``), from one sort of the rows instead of
    a Series per group: each group's values in the table's order, so the same numbers."""
    grouped = frame.groupby(keys, sort=True)[column]
    index = grouped.size().index
    codes = grouped.ngroup().to_numpy()
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    kept = codes >= 0  # rows with a missing key are in no group
    order = np.argsort(codes[kept], kind="stable")
    values, codes = values[kept][order], codes[kept][order]
    bounds = np.searchsorted(codes, np.arange(len(index) + 1))
    cells = [_mean_std(values[bounds[i] : bounds[i + 1]]) for i in range(len(index))]
    return pd.Series(cells, index=index, name=column, dtype=object)


def _mean_std(array: np.ndarray) -> str:
    array = array[~np.isnan(array)]
    if not len(array):
        return DASH
    if len(array) == 1:
        return f"{array[0]:.3f}"
    return f"{array.mean():.3f} ± {array.std(ddof=1):.3f}"


def id_labels(frame: pd.DataFrame, kind: str) -> dict[str, str]:
    """id → label for one kind (``defense``, ``attack``, ...) as the table records them."""
    id_col, label_col = f"{kind}_id", f"{kind}_label"
    return _first_of(frame[id_col], frame[label_col])


def _first_of(keys: pd.Series, values: pd.Series) -> dict[Any, Any]:
    """key → the value at its first row (``drop_duplicates`` of the keys, in plain Python:
    the report asks it of small frames a thousand times; pandas for a large one)."""
    if len(keys) > 10_000:
        kept = ~keys.duplicated().to_numpy()
        return dict(zip(keys[kept], values[kept], strict=True))
    first: dict[Any, Any] = {}
    for key, value in zip(keys.tolist(), values.tolist(), strict=True):
        first.setdefault(key, value)
    return first


def defense_order(frame: pd.DataFrame) -> list[str]:
    """Defense ids in display order: ``none`` first, deployable defenses by label, then the
    reference defenses (oracle, random filter: ``defense_reference``)."""
    labels = id_labels(frame, "defense")
    reference = set()
    if "defense_reference" in frame:
        flags = _first_of(frame["defense_id"], frame["defense_reference"])
        reference = {d for d, flag in flags.items() if not pd.isna(flag) and bool(flag)}
    head = [d for d in labels if d == NO_DEFENSE_ID]
    tail = sorted((d for d in labels if d in reference and d not in head), key=labels.get)
    middle = sorted((d for d in labels if d not in head and d not in tail), key=labels.get)
    return head + middle + tail


def pivot_defenses(
    frame: pd.DataFrame, value: str, order: Sequence[str] | None = None
) -> pd.DataFrame:
    """``value`` with rows (attack, rate) and one column per defense configuration.

    Rows and columns are pivoted on the ids and shown with their labels, so two settings of one
    defense are two columns. ``frame`` has one row per (attack_id, rate, defense_id).
    """
    if frame.empty:
        return pd.DataFrame()
    order = list(order) if order is not None else defense_order(frame)
    attack_labels = id_labels(frame, "attack")
    defense_labels = id_labels(frame, "defense")
    # In plain Python, not pivot_table(aggfunc="first"): the frame is small (one row per
    # table cell) and a large report pivots hundreds of them. The same table: per (attack_id,
    # rate) and defense the first value that is not missing, rows and columns without one
    # left out, rows in (attack_id, rate) order and then stably by attack label.
    cells: dict[tuple[Any, Any], dict[Any, Any]] = {}
    columns = (frame[c].tolist() for c in ("attack_id", "rate", "defense_id", value))
    for attack, rate, defense, cell in zip(*columns, strict=True):
        if pd.isna(attack) or pd.isna(rate) or pd.isna(defense) or pd.isna(cell):
            continue
        cells.setdefault((attack, rate), {}).setdefault(defense, cell)
    present = {d for row in cells.values() for d in row}
    shown = [d for d in order if d in present]
    keyed = []
    for (attack, rate), row in sorted(cells.items(), key=lambda item: item[0]):
        label = attack_labels[attack]
        missing = bool(pd.isna(label))  # sorted last, shown as a dash
        cells_shown = [DASH if missing else label, fmt_rate(rate)]
        keyed.append(
            (
                (missing, "" if missing else label),
                [*cells_shown, *(row.get(d, DASH) for d in shown)],
            )
        )
    keyed.sort(key=lambda item: item[0])  # stable: (attack_id, rate) order within a label
    return pd.DataFrame(
        [row for _, row in keyed], columns=["attack", "rate", *(defense_labels[d] for d in shown)]
    )


def at_f0(df: pd.DataFrame) -> pd.DataFrame:
    """The finished rows at f = 0 (``df`` itself when every row is one: no copy)."""
    rows = ((df["status"] == "ok") & (df["extra_fraction"] == 0)).to_numpy(bool, na_value=False)
    return df if rows.all() else df[rows]


def dataset_model_pairs(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(dataset_id, model_id, "dataset / model" heading) in display order."""
    frame = df[["dataset_id", "model_id", "dataset_label", "model_label"]].drop_duplicates(
        ["dataset_id", "model_id"]
    )
    frame = frame.sort_values(["dataset_label", "model_label"])
    return [(d, m, f"{dl} / {ml}") for d, m, dl, ml in frame.itertuples(index=False, name=None)]


def subset(frame: pd.DataFrame, dataset: str, model: str) -> pd.DataFrame:
    return frame[(frame["dataset_id"] == dataset) & (frame["model_id"] == model)]


class PairSplit:
    """``frame`` split once into the rows of each (dataset_id, model_id) pair: ``split(d, m)``
    is ``subset(frame, d, m)`` (the same rows in the same order, the index kept) without
    comparing every row's ids once per pair, which on a large table (64 pairs of 1M rows) was
    most of the report's time. keep: keep each pair's rows once taken, for a split that
    several sections share (:func:`bench.analysis.report.build_report`; they must not change
    the frames it gives them); it then holds a copy of ``frame``."""

    def __init__(self, frame: pd.DataFrame, keep: bool = False) -> None:
        self.frame = frame
        self.keep = keep
        self._taken: dict[tuple[str, str], pd.DataFrame] = {}
        self._rows: dict[tuple[str, str], Any] | None = None
        if not frame.empty and {"dataset_id", "model_id"} <= set(frame.columns):
            groups = frame.groupby(["dataset_id", "model_id"], sort=False, observed=True)
            self._rows = groups.indices

    def __call__(self, dataset: str, model: str) -> pd.DataFrame:
        if self._rows is None:
            return subset(self.frame, dataset, model)
        key = (dataset, model)
        if key in self._taken:
            return self._taken[key]
        rows = self._rows.get(key)
        taken = self.frame.iloc[0:0] if rows is None else self.frame.iloc[rows]
        if self.keep:
            self._taken[key] = taken
        return taken


def split_of(frame: pd.DataFrame, split: PairSplit | None = None) -> PairSplit:
    """``split`` when it is ``frame``'s (one a caller shares between sections), else a new
    :class:`PairSplit` of ``frame``."""
    return split if split is not None and split.frame is frame else PairSplit(frame)
