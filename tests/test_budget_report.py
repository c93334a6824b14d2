"""The report's "Best use of a clean-data budget" section on a designed table with known answers.

The table: 6 seeds of one poisoned case (20 % random flips, n_train 200). The undefended model's
recovery curve is 0.70 → 0.90 over f = 0 … 1 (plus a per-seed offset with mean 0); three
trusted_filter budgets (10, 20 and 50 rows), a glc at 20 rows and "learn from 10, append 10"
(trusted_filter at b = 0.05 on the curve's f = 0.05 point) are placed where the answer is known:
at 10 rows learning ties with appending, at 20 it wins clearly and matches 75 appended rows, at
50 it beats every measured amount of appended rows. Every number the section prints is checked
against an independent pandas/scipy computation from the table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.analysis.budget import budget_uses, budget_verdicts
from bench.analysis.report import build_report
from bench.core.schema import NO_ATTACK_ID, NO_DEFENSE_ID, dataset_id, defense_id, plugin_id

N_TRAIN = 200
SEEDS = range(6)
OFFSET = np.array([0.0, 0.01, -0.01, 0.02, -0.02, 0.0])  # per seed, mean 0
CURVE = {0.0: 0.70, 0.05: 0.72, 0.1: 0.74, 0.25: 0.80, 0.5: 0.84, 1.0: 0.90}
JITTER = np.array([0.004, -0.004, 0.002, -0.002, 0.0, 0.0])  # mean 0: resolves the winner
TIE = np.array([0.012, -0.008, 0.012, -0.008, 0.007, -0.003])  # mean +0.002, spread ~0.01

DS = dataset_id({"name": "d", "split": {"train": N_TRAIN, "test": 100, "pool": "rest"}})
MODEL = plugin_id("m", {})
ATTACK = plugin_id("label_flip", {"mode": "random"})


def tf(budget: float) -> str:
    return defense_id([{"name": "trusted_filter", "params": {"budget": budget}}])


GLC = defense_id([{"name": "glc", "params": {"budget": 0.1}}])

#: (defense id, label, budget rows read, extra fraction, accuracy per seed without the offset)
LEARNERS = [
    (tf(0.05), "trusted_filter(b=0.05)", 10, 0.0, 0.72 + TIE),
    (tf(0.05), "trusted_filter(b=0.05)", 10, 0.05, 0.78 + JITTER),
    (tf(0.1), "trusted_filter(b=0.1)", 20, 0.0, 0.82 + JITTER),
    (GLC, "glc(b=0.1)", 20, 0.0, 0.75 + JITTER[::-1]),
    (tf(0.25), "trusted_filter(b=0.25)", 50, 0.0, 0.93 + JITTER),
    # f = 0.1 on a 50-row budget totals 70 rows: no budget of the table, so never compared
    (tf(0.25), "trusted_filter(b=0.25)", 50, 0.1, 0.99 + JITTER),
]


def row(seed, defense, label, f, accuracy, read=0, used=0, attack=ATTACK, rate=0.2):
    name = label.split("(")[0]
    return {
        "cell_id": f"{defense}/{seed}", "dataset": "d", "dataset_id": DS, "dataset_label": "d",
        "model": "m", "model_id": MODEL, "model_label": "m", "attack": "label_flip",
        "attack_id": attack, "rate": rate, "seed": seed, "extra_fraction": f, "status": "ok",
        "attack_label": "none" if attack == NO_ATTACK_ID else "label_flip(random)",
        "defense": name, "defense_id": defense, "defense_label": label,
        "defense_reference": False, "defense_append_only": read == 0, "accuracy": accuracy, "n_train": N_TRAIN, "n_pool": 1000,
        "n_eligible": N_TRAIN, "n_poisoned": 40, "poison_fraction": 0.2, "n_removed": 0,
        "clean_removed": 0, "n_trusted_read": read, "n_trusted_used": used,
        "n_extra": int(round(f * N_TRAIN)),
    }  # fmt: skip


def extra(fraction: float) -> str:
    return defense_id([{"name": "extra_clean", "params": {"fraction": fraction}}])


def designed(learners=LEARNERS, curve_from_extra_clean=False) -> pd.DataFrame:
    """The designed table; the append curve as the undefended model's recovery curve, or as
    ``extra_clean(fraction=f)`` cells at f = 0 (the same fits in a real run)."""
    rows = []
    for s in SEEDS:
        rows.append(row(s, NO_DEFENSE_ID, "none", 0.0, 0.95, attack=NO_ATTACK_ID, rate=0.0))
        for f, acc in CURVE.items():
            if curve_from_extra_clean and f > 0:
                r = row(s, extra(f), f"extra_clean({f:g}×)", 0.0, acc + OFFSET[s])
                r["n_trusted_used"] = int(round(f * N_TRAIN))
                rows.append(r)
            else:
                rows.append(row(s, NO_DEFENSE_ID, "none", f, acc + OFFSET[s]))
        for defense, label, read, f, acc in learners:
            rows.append(row(s, defense, label, f, acc[s] + OFFSET[s], read=read, used=read))
    return pd.DataFrame(rows)


def paired(a: pd.Series, b: pd.Series) -> tuple[float, float, float]:
    """Mean of a − b and its 95 % t-interval (independent of bench.analysis.stats)."""
    d = (a - b).to_numpy()
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return designed()


def per_seed(table, defense, f) -> pd.Series:
    ok = table[(table["attack_id"] == ATTACK) & (table["defense_id"] == defense)]
    return ok[np.isclose(ok["extra_fraction"], f)].set_index("seed")["accuracy"].sort_index()


def test_uses_are_the_budgets_learning_defenses_spend_at_equal_total_clean_rows(table):
    uses = budget_uses(table)
    got = sorted(zip(uses["budget_rows"], uses["use"], strict=True))
    assert got == sorted(
        [
            (0, "undefended (no clean rows)"),
            (10, "append 10 rows"),
            (10, "trusted_filter(b=0.05)"),
            (20, "append 20 rows"),
            (20, "trusted_filter(b=0.1)"),
            (20, "glc(b=0.1)"),
            (20, "trusted_filter(b=0.05) + append 10 rows"),
            (50, "append 50 rows"),
            (50, "trusted_filter(b=0.25)"),
        ]
    )
    assert set(uses["kind"]) == {"undefended", "append", "learn"}
    np.testing.assert_allclose(uses["budget"], uses["budget_rows"] / N_TRAIN)


def test_use_numbers_equal_an_independent_pandas_computation(table):
    uses = budget_uses(table).set_index("use")
    base = per_seed(table, NO_DEFENSE_ID, 0.0)
    curve = table[(table["attack_id"] == ATTACK) & (table["defense_id"] == NO_DEFENSE_ID)]
    curve = curve.groupby("extra_fraction")["accuracy"].mean()
    expected = {
        "append 10 rows": (NO_DEFENSE_ID, 0.05),
        "append 50 rows": (NO_DEFENSE_ID, 0.25),
        "trusted_filter(b=0.05)": (tf(0.05), 0.0),
        "trusted_filter(b=0.05) + append 10 rows": (tf(0.05), 0.05),
        "trusted_filter(b=0.1)": (tf(0.1), 0.0),
        "glc(b=0.1)": (GLC, 0.0),
    }
    for use, (defense, f) in expected.items():
        values = per_seed(table, defense, f)
        r = uses.loc[use]
        assert r["mean"] == pytest.approx(values.mean())
        assert r["std"] == pytest.approx(values.std(ddof=1))
        mean, low, high = paired(values, base)
        assert (r["gain"], r["gain_low"], r["gain_high"]) == pytest.approx((mean, low, high))
        assert r["gain_n"] == r["n_seeds"] == 6
        # the undefended curve rises, so its inverse is np.interp with the axes swapped
        rows = np.interp(values.mean(), curve.to_numpy(), curve.index.to_numpy()) * N_TRAIN
        assert r["as_good_as_rows"] == pytest.approx(rows)
    assert uses.loc["trusted_filter(b=0.1)", "as_good_as_rows"] == pytest.approx(75)
    assert uses.loc["append 10 rows", "as_good_as_rows"] == pytest.approx(10)
    assert math.isinf(uses.loc["trusted_filter(b=0.25)", "as_good_as_rows"])  # > the 0.90 max
    assert uses.loc["undefended (no clean rows)", "gain"] == 0


def test_verdicts_name_the_winner_with_its_paired_margin_and_matching_rows(table):
    verdicts = budget_verdicts(table).set_index("budget_rows")
    assert list(verdicts.index) == [10, 20, 50]

    tie = verdicts.loc[10]
    assert tie["winner"] == "trusted_filter(b=0.05)" and tie["runner_up"] == "append 10 rows"
    mean, low, high = paired(per_seed(table, tf(0.05), 0.0), per_seed(table, NO_DEFENSE_ID, 0.05))
    assert (tie["margin"], tie["margin_low"], tie["margin_high"]) == pytest.approx(
        (mean, low, high)
    )
    assert low < 0 < high
    assert "not distinguishable from append 10 rows at 6 seeds" in tie["sentence"]
    assert f"({mean:+.3f} [{low:+.3f}, {high:+.3f}])" in tie["sentence"]

    win = verdicts.loc[20]
    assert win["winner"] == "trusted_filter(b=0.1)"
    assert win["runner_up"] == "trusted_filter(b=0.05) + append 10 rows"
    winner = per_seed(table, tf(0.1), 0.0)
    mean, low, high = paired(winner, per_seed(table, tf(0.05), 0.05))
    assert (win["margin"], win["margin_low"], win["margin_high"]) == pytest.approx(
        (mean, low, high)
    )
    assert mean == pytest.approx(0.04) and low > 0
    over = paired(winner, per_seed(table, NO_DEFENSE_ID, 0.1))
    assert (win["over_append"], win["over_append_low"], win["over_append_high"]) == (
        pytest.approx(over)
    )
    sentence = win["sentence"]
    assert sentence.startswith("label_flip(random) at 20%, 20 clean rows (b = 0.1): ")
    assert f"**trusted_filter(b=0.1)** wins (accuracy {winner.mean():.3f}), by {mean:+.3f}" in (
        sentence
    )
    assert f"over append 20 rows: {over[0]:+.3f} [{over[1]:+.3f}, {over[2]:+.3f}]" in sentence
    assert sentence.endswith("as good as appending 75 rows.")

    beyond = verdicts.loc[50]
    assert beyond["winner"] == "trusted_filter(b=0.25)" and math.isinf(beyond["as_good_as_rows"])
    assert "better than appending any measured amount (up to 200 rows)" in beyond["sentence"]


def test_the_section_is_in_the_report_with_its_table_and_sentences(table):
    report = build_report(table, {"recovery": {"bootstrap": 0}})
    section = report.section("Best use of a clean-data budget")
    (sub,) = section.subsections
    assert sub.title == "d / m"
    assert sub.bullets == list(budget_verdicts(table)["sentence"])
    frame = sub.tables[0].frame
    assert len(frame) == 9
    first = frame[frame["clean rows"] == "20"].iloc[0]  # best use first within a budget
    values = per_seed(table, tf(0.1), 0.0)
    mean, low, high = paired(values, per_seed(table, NO_DEFENSE_ID, 0.0))
    assert first["use"] == "trusted_filter(b=0.1)"
    assert first["accuracy"] == f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
    assert first["vs undefended"] == f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"
    assert first["as good as appending (rows)"] == "75"
    titles = [s.title for s in report.sections]
    assert titles.index("Best use of a clean-data budget") == (
        titles.index("Extra clean data needed") + 1
    )


def test_no_section_without_a_defense_that_learns_from_trusted_rows(table):
    appending_only = table[table["n_trusted_read"] == 0]
    assert budget_uses(appending_only).empty and budget_verdicts(appending_only).empty
    # extra_clean spends pool rows too, but only appends them: no section either
    appending = designed([], curve_from_extra_clean=True)
    assert (appending["n_trusted_used"] > 0).any()
    titles = [s.title for s in build_report(appending, {"recovery": {"bootstrap": 0}}).sections]
    assert "Best use of a clean-data budget" not in titles
    # a table from before the column existed has no section (and no error)
    older = table.drop(columns=["n_trusted_read"])
    titles = [s.title for s in build_report(older, {"recovery": {"bootstrap": 0}}).sections]
    assert "Best use of a clean-data budget" not in titles


def test_seeds_are_paired_by_seed_not_by_position(table):
    """A learner missing one seed is compared with the undefended model on the other five."""
    shuffled = table.sample(frac=1.0, random_state=0)
    gone = (shuffled["defense_id"] == tf(0.1)) & (shuffled["seed"] == 3)
    uses = budget_uses(shuffled[~gone]).set_index("use")
    values = per_seed(table, tf(0.1), 0.0).drop(index=3)
    mean, low, high = paired(values, per_seed(table, NO_DEFENSE_ID, 0.0).drop(index=3))
    r = uses.loc["trusted_filter(b=0.1)"]
    assert r["gain_n"] == 5
    assert (r["gain"], r["gain_low"], r["gain_high"]) == pytest.approx((mean, low, high))


def test_the_append_curve_may_come_from_extra_clean_cells_with_the_same_numbers(table):
    """A study may measure appending with ``extra_clean(fraction=b)`` cells at f = 0 (one fit
    each) instead of a recovery grid on every cell: the section's numbers are the same."""
    cells = designed(curve_from_extra_clean=True)
    assert not ((cells["defense_id"] == NO_DEFENSE_ID) & (cells["extra_fraction"] > 0)).any()
    pd.testing.assert_frame_equal(
        budget_uses(cells).drop(columns=["defense_id", "extra_fraction"]),
        budget_uses(table).drop(columns=["defense_id", "extra_fraction"]),
    )
    pd.testing.assert_frame_equal(budget_verdicts(cells), budget_verdicts(table))


def test_a_table_without_the_append_only_column_appends_on_the_undefended_curve(table):
    older = table.drop(columns=["defense_append_only"])
    pd.testing.assert_frame_equal(budget_uses(older), budget_uses(table))
    # ... and then extra_clean cells are not known to be plain appending
    cells = designed(curve_from_extra_clean=True).drop(columns=["defense_append_only"])
    uses = budget_uses(cells)
    assert not (uses["kind"] == "append").any()
    assert set(uses["as_good_as_rows"]) == {0.0, math.inf}  # a one-point curve: 0 rows only


def test_the_summary_pairs_seeds_within_each_model():
    """Two models share the attack ids; glc ran for one of them only. The summary's best
    defense per model must pair that model's cells (it mixed both models and crashed)."""
    one = designed()
    two = designed([item for item in LEARNERS if item[0] != GLC])
    two["model_id"], two["model_label"], two["model"] = plugin_id("m2", {}), "m2", "m2"
    two["accuracy"] = two["accuracy"] - 0.1 * (two["defense_id"] == tf(0.1))  # worse filter
    report = build_report(pd.concat([one, two]), {"recovery": {"bootstrap": 0}})
    findings = report.section("Findings").subsections
    assert len(findings) == 2
    cells = [
        " ".join(sub.tables[0].frame["best deployable defense (paired gain, f = 0)"])
        for sub in findings
    ]
    assert "trusted_filter(b=0.25) +23.0 pts" in cells[0]  # the best at f = 0
    assert "glc" not in cells[1] and "+23.0 pts" in cells[1]
