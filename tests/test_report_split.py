"""The report's fast paths for large tables give what the plain pandas forms give.

On the committed CI baseline replicated into two (dataset, model) pairs, with a missing value
and a missing table cell, each fast path is compared with the pandas expression it replaces:
the per-pair split (boolean masks), the per-cell ``mean ± std`` (``groupby.apply``), the pivot
(``pivot_table(aggfunc="first")``) and the id labels (``drop_duplicates``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis.formats import DASH, fmt_rate
from bench.analysis.report.frames import (
    PairSplit,
    at_f0,
    dataset_model_pairs,
    id_labels,
    mean_std,
    mean_std_cells,
    pivot_defenses,
    split_of,
    subset,
)
from bench.core.schema import NO_DEFENSE_ID
from bench.core.store import read_table

BASELINE = Path(__file__).parents[1] / "results" / "baseline" / "ci"


def _two_pairs() -> pd.DataFrame:
    base = read_table(BASELINE)
    other = base.copy()
    model = json.loads(base["model_id"].iloc[0])
    other["model_id"] = json.dumps({**model, "params": {"C": 99.0}}, sort_keys=True)
    other["model_label"] = "logreg(C=99)"
    df = pd.concat([base, other], ignore_index=True)
    df.loc[3, "accuracy"] = np.nan  # a missing value inside a cell
    return df


def _reference_pivot(frame: pd.DataFrame, value: str, order: list[str]) -> pd.DataFrame:
    """The pivot as pivot_table builds it (the form pivot_defenses replaced)."""
    attack = id_labels(frame, "attack")
    defense = id_labels(frame, "defense")
    wide = frame.pivot_table(
        index=["attack_id", "rate"], columns="defense_id", values=value, aggfunc="first"
    )
    wide = wide[[d for d in order if d in wide.columns]]
    wide.columns = [defense[d] for d in wide.columns]
    wide = wide.reset_index()
    wide.insert(0, "attack", wide.pop("attack_id").map(attack))
    wide["rate"] = wide["rate"].map(fmt_rate)
    wide = wide.sort_values(["attack"], kind="stable")
    return wide.fillna(DASH).reset_index(drop=True)


def test_pair_split_gives_the_rows_a_mask_gives():
    df = _two_pairs()
    pairs = dataset_model_pairs(df)
    assert len(pairs) == 2
    for keep in (False, True):
        split = PairSplit(df, keep=keep)
        for dataset, model, _ in pairs:
            pd.testing.assert_frame_equal(split(dataset, model), subset(df, dataset, model))
        assert split("no such dataset", pairs[0][1]).empty
    assert split_of(df, split) is split
    assert split_of(df.copy(), split) is not split  # another frame's split is not used


def test_at_f0_returns_the_frame_itself_when_every_row_is_at_f0():
    df = _two_pairs()
    f0 = at_f0(df)
    assert 0 < len(f0) < len(df)
    assert at_f0(f0) is f0


def test_mean_std_cells_is_the_groupby_of_mean_std():
    df = _two_pairs()
    keys = ["attack_id", "rate", "defense_id"]
    fast = mean_std_cells(df, keys, "accuracy")
    slow = df.groupby(keys, sort=True)["accuracy"].apply(mean_std)
    assert fast.tolist() == slow.tolist()
    assert fast.index.equals(slow.index)


def test_pivot_defenses_is_the_pivot_table_with_labels():
    df = at_f0(_two_pairs())
    keys = ["attack_id", "rate", "defense_id"]
    cells = mean_std_cells(df, keys, "accuracy").rename("cell").reset_index()
    meta = df[["attack_id", "attack_label", "defense_id", "defense_label"]]
    frame = cells.merge(meta.drop_duplicates(["attack_id", "defense_id"]), on=keys[::2])
    # a cell with no value: left out of the pivot, shown as a dash
    frame.loc[frame["defense_id"] != NO_DEFENSE_ID, "cell"] = frame["cell"].where(
        frame.index != frame.index[frame["defense_id"] != NO_DEFENSE_ID][0], None
    )
    order = sorted(frame["defense_id"].unique(), reverse=True)
    fast = pivot_defenses(frame, "cell", order)
    slow = _reference_pivot(frame, "cell", order)
    assert list(fast.columns) == list(slow.columns)
    assert fast.astype(str).values.tolist() == slow.astype(str).values.tolist()
    assert (fast == DASH).to_numpy().any()


def test_id_labels_keep_each_ids_first_label():
    df = _two_pairs()
    labels = id_labels(df, "model")
    expected = df.drop_duplicates("model_id").set_index("model_id")["model_label"].to_dict()
    assert labels == expected and len(labels) == 2
    large = pd.concat([df] * 12, ignore_index=True)  # past the plain-Python size
    assert len(large) > 10_000 and id_labels(large, "model") == expected
