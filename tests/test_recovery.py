"""The extra-clean-data estimate: crossing points, bootstrap intervals, censoring, the table
estimator, theory lines, and the runner's early stop."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from bench.analysis.recovery import (
    COLUMNS,
    bootstrap_crossing,
    crossing_point,
    estimate_recovery,
    label_noise_multiplier,
    recovery_curves,
    theory_extra_fraction,
    theory_extra_fraction_mixed,
)
from bench.core.schema import (
    SYMMETRIC_LABEL_NOISE,
    assign_labels,
    dataset_id,
    defense_id,
    plugin_id,
)

GRID = [0.0, 0.1, 0.25, 0.5, 1.0, 2.0]


# --- crossing_point ----------------------------------------------------------------------------


def test_crossing_is_interpolated_between_the_grid_points_around_it():
    f = crossing_point([0, 0.5, 1, 2], [0.80, 0.90, 0.95, 0.97], target=0.93)
    assert f == pytest.approx(0.5 + 0.5 * (0.03 / 0.05))


def test_curve_already_at_target_needs_nothing_and_exact_hit_is_that_point():
    assert crossing_point([0, 1, 2], [0.95, 0.90, 0.99], 0.94) == 0.0
    assert crossing_point([0, 1, 2], [0.80, 0.94, 0.99], 0.94) == pytest.approx(1.0)


def test_curve_that_never_crosses_is_inf():
    assert crossing_point([0, 1, 2], [0.5, 0.6, 0.7], 0.9) == math.inf
    assert crossing_point([0, 1, 2], [np.nan, np.nan, np.nan], 0.9) == math.inf


def test_non_monotone_curve_keeps_its_first_crossing():
    # crosses between 0 and 1, dips below at 2, comes back at 4: the first crossing counts
    f = crossing_point([0, 1, 2, 4], [0.80, 0.95, 0.85, 0.96], 0.90)
    assert f == pytest.approx(1 * (0.10 / 0.15))


def test_lower_is_better_crosses_downwards():
    f = crossing_point([0, 0.5, 1, 2], [0.5, 0.3, 0.1, 0.02], 0.05, higher_is_better=False)
    assert f == pytest.approx(1 + (0.1 - 0.05) / (0.1 - 0.02))
    assert crossing_point([0, 1], [0.5, 0.3], 0.05, higher_is_better=False) == math.inf


def test_crossing_point_rejects_bad_grids():
    with pytest.raises(ValueError, match="increasing"):
        crossing_point([0, 1, 1], [0.1, 0.2, 0.3], 0.2)
    with pytest.raises(ValueError, match="one length"):
        crossing_point([0, 1], [0.1], 0.2)


# --- bootstrap interval ------------------------------------------------------------------------


def _simulate(rng, n_seeds, grid, truth, ref=0.95, seed_sd=0.01, noise_sd=0.004):
    """Per-seed curves around a piecewise-linear population curve ``truth`` (values on grid),
    with a seed effect shared by the seed's reference and curve (the paired design)."""
    u = rng.normal(0, seed_sd, size=n_seeds)
    refs = ref + u + rng.normal(0, noise_sd, size=n_seeds)
    curves = truth[None, :] + u[:, None] + rng.normal(0, noise_sd, size=(n_seeds, len(grid)))
    return curves, refs


def test_bootstrap_interval_covers_the_true_crossing_about_95_percent_of_the_time():
    grid = np.array([*GRID, 4.0])
    tol = 0.005
    # population curve: linear in f from 0.85 up to 0.97 at f = 2, flat beyond
    truth = np.minimum(0.85 + 0.06 * grid, 0.97)
    true_f = (0.95 - tol - 0.85) / 0.06  # 1.5833...
    rng = np.random.default_rng(1)
    reps, covered, widths = 300, 0, []
    for _ in range(reps):
        curves, refs = _simulate(rng, 10, grid, truth)
        lo, hi = bootstrap_crossing(grid, curves, refs, tol, True, 300, rng)
        covered += lo <= true_f <= hi
        widths.append(hi - lo)
    coverage = covered / reps
    # percentile intervals of an interpolated crossing are slightly conservative here
    assert 0.88 <= coverage <= 1.0, coverage
    assert np.median(widths) > 0.05


def test_bootstrap_marks_bounds_beyond_the_grid_as_inf_and_zero_resamples_as_nan():
    grid = np.array([0.0, 1.0, 2.0])
    curves = np.array([[0.80, 0.90, 0.941], [0.80, 0.88, 0.93], [0.80, 0.89, 0.95]])
    refs = np.array([0.95, 0.95, 0.95])
    lo, hi = bootstrap_crossing(grid, curves, refs, 0.005, True, 500, np.random.default_rng(0))
    assert lo <= 2.0 and hi == math.inf
    assert all(math.isnan(v) for v in bootstrap_crossing(grid, curves, refs, 0.005, True, 0, None))


# --- estimate_recovery on a synthetic table ------------------------------------------------------


def _rows(attack, rate, defense, seeds, curve, *, label=None, n_train=200, skip=None, extra=None):
    """Table rows of one group: ``curve(seed, f)`` gives the accuracy; ``skip(seed, f)`` a skip
    reason (or None)."""
    out = []
    for s in seeds:
        for f in GRID:
            reason = skip(s, f) if skip else None
            params = {"mode": "random"} if attack == "label_flip" else {}
            row = {
                "cell_id": f"{attack}-{rate}-{defense}-{s}",
                "dataset": "d",
                "dataset_id": DATASET_ID,
                "dataset_label": "d",
                "model": "m",
                "model_id": plugin_id("m", {}),
                "model_label": "m",
                "attack": attack,
                "attack_id": plugin_id(attack, params),
                "attack_label": label or attack,
                "theory": SYMMETRIC_LABEL_NOISE if params.get("mode") == "random" else None,
                "n_classes": 3,
                "rate": rate,
                "defense": defense,
                "defense_id": defense_id([{"name": defense, "params": {}}]),
                "defense_label": defense,
                "defense_reference": False,
                "seed": s,
                "extra_fraction": f,
                "n_train": n_train,
                "n_poisoned": int(rate * n_train),
                "poison_fraction": rate,
                "n_removed": 0,
                "clean_removed": 0,
                "confusion": json.dumps(np.eye(3, dtype=int).tolist()),
                "status": "skipped" if reason else "ok",
                "skip_reason": reason,
                "accuracy": math.nan if reason else curve(s, f),
                **(extra or {}),
            }
            out.append(row)
    return out


SEEDS = [0, 1, 2, 3]
DATASET_ID = dataset_id({"name": "d", "split": {"train": 0.5, "test": 0.25, "pool": "rest"}})


def _clean(seeds=SEEDS):
    return _rows("none", 0.0, "none", seeds, lambda s, f: 0.95 + 0.002 * (s - 1.5))


def test_estimate_finds_a_known_crossing_and_its_rows():
    # every seed's curve is 0.85 + 0.1 f shifted by the same offset as its reference
    curve = lambda s, f: 0.85 + 0.1 * f + 0.002 * (s - 1.5)  # noqa: E731
    table = pd.DataFrame(_clean() + _rows("label_flip", 0.1, "none", SEEDS, curve))
    rec = estimate_recovery(table, n_boot=200)
    assert list(rec.columns) == list(COLUMNS)
    row = rec[rec["attack"] == "label_flip"].iloc[0]
    expected = (0.95 - 0.005 - 0.85) / 0.1  # 0.95
    assert row["f_needed"] == pytest.approx(expected)
    assert row["rows_needed"] == pytest.approx(expected * 200)
    assert row["reference"] == pytest.approx(0.95)
    assert not row["censored"] and row["n_seeds"] == 4
    # a perfectly paired design: every resample gives the same crossing
    assert row["f_low"] == pytest.approx(expected) and row["f_high"] == pytest.approx(expected)
    clean = rec[rec["attack"] == "none"].iloc[0]
    assert clean["f_needed"] == 0.0


def test_estimate_censors_a_curve_that_never_recovers_and_bounds_the_defense_value():
    slow = lambda s, f: 0.80 + 0.02 * f  # noqa: E731
    fast = lambda s, f: 0.90 + 0.1 * f  # noqa: E731
    table = pd.DataFrame(
        _clean()
        + _rows("label_flip", 0.2, "none", SEEDS, slow)
        + _rows("label_flip", 0.2, "iforest", SEEDS, fast)
        + _rows("label_flip", 0.2, "lof", SEEDS, slow)
    )
    rec = estimate_recovery(table, n_boot=100).query("attack != 'none'").set_index("defense")
    assert rec.loc["none", "f_needed"] == math.inf and rec.loc["none", "censored"]
    assert rec.loc["none", "f_high"] == math.inf and rec.loc["none", "f_max"] == 2.0
    f_if = rec.loc["iforest", "f_needed"]
    assert f_if == pytest.approx(0.45)
    # undefended censored at 2×: the filter saves at least 2 − 0.45 of n_train
    assert rec.loc["iforest", "defense_value_kind"] == "lower_bound"
    assert rec.loc["iforest", "defense_value_rows"] == pytest.approx((2.0 - f_if) * 200)
    assert math.isnan(rec.loc["lof", "defense_value_f"])
    assert rec.loc["lof", "defense_value_kind"] == "unknown"


def test_defense_value_is_the_difference_when_both_recover():
    table = pd.DataFrame(
        _clean()
        + _rows("label_flip", 0.1, "none", SEEDS, lambda s, f: 0.85 + 0.1 * f)
        + _rows("label_flip", 0.1, "iforest", SEEDS, lambda s, f: 0.90 + 0.1 * f)
    )
    rec = estimate_recovery(table, n_boot=0).query("attack != 'none'").set_index("defense")
    assert rec.loc["iforest", "defense_value_f"] == pytest.approx(0.95 - 0.45)
    assert rec.loc["iforest", "defense_value_rows"] == pytest.approx(0.5 * 200)
    assert rec.loc["iforest", "defense_value_kind"] == "exact"
    assert math.isnan(rec.loc["iforest", "f_low"])  # no bootstrap asked for


def test_pool_exhaustion_cuts_the_grid_and_is_flagged():
    skip = lambda s, f: "pool_exhausted" if f > 0.5 else None  # noqa: E731
    table = pd.DataFrame(
        _clean() + _rows("label_flip", 0.2, "none", SEEDS, lambda s, f: 0.8 + 0.1 * f, skip=skip)
    )
    row = estimate_recovery(table, n_boot=50).query("attack == 'label_flip'").iloc[0]
    assert row["f_max"] == 0.5 and row["grid_max"] == 2.0
    assert row["pool_exhausted"] and row["censored"]


def test_early_stopped_rows_carry_the_last_value_forward():
    curve = lambda s, f: min(0.85 + 0.1 * f, 0.97)  # noqa: E731
    full = pd.DataFrame(_clean() + _rows("label_flip", 0.1, "none", SEEDS, curve))
    stop = lambda s, f: "early_stop" if f >= 2 and s % 2 == 0 else None  # noqa: E731
    stopped = pd.DataFrame(_clean() + _rows("label_flip", 0.1, "none", SEEDS, curve, skip=stop))
    a = estimate_recovery(full, n_boot=0).query("attack == 'label_flip'").iloc[0]
    b = estimate_recovery(stopped, n_boot=0).query("attack == 'label_flip'").iloc[0]
    assert b["f_needed"] == pytest.approx(a["f_needed"])
    assert b["f_max"] == 2.0 and not b["pool_exhausted"]
    curves = recovery_curves(stopped).query("attack == 'label_flip'")
    assert len(curves) == len(GRID) and curves["n_seeds"].eq(4).all()


def test_old_tables_without_skip_reason_are_read_from_the_error_text():
    skip = lambda s, f: "pool_exhausted" if f > 0.5 else None  # noqa: E731
    rows = _clean() + _rows("label_flip", 0.2, "none", SEEDS, lambda s, f: 0.8, skip=skip)
    table = pd.DataFrame(rows).drop(columns=["skip_reason"])
    table["error"] = np.where(
        table["status"] == "skipped", "clean pool exhausted: f=1 needs 200 rows", None
    )
    row = estimate_recovery(table, n_boot=0).query("attack == 'label_flip'").iloc[0]
    assert row["pool_exhausted"] and row["f_max"] == 0.5


def test_failed_seeds_are_left_out_and_pairing_uses_common_seeds():
    rows = _clean([0, 1, 2]) + _rows("label_flip", 0.1, "none", SEEDS, lambda s, f: 0.9 + 0.1 * f)
    row = estimate_recovery(pd.DataFrame(rows), n_boot=0).query("attack == 'label_flip'").iloc[0]
    assert row["n_seeds"] == 3  # seed 3 has no clean reference


def test_lower_is_better_metric_uses_the_clean_confusion_for_its_reference():
    # clean models put 10 % of class-1 test rows on class 2; the attacked ones 40 % → 5 %
    clean_conf = json.dumps([[10, 0, 0], [0, 9, 1], [0, 0, 10]])
    rows = _rows("none", 0.0, "none", SEEDS, lambda s, f: 0.95, extra={"confusion": clean_conf})
    asr = {0.0: 0.40, 0.1: 0.30, 0.25: 0.2, 0.5: 0.12, 1.0: 0.09, 2.0: 0.05}
    targeted = _rows(
        "label_flip",
        0.2,
        "none",
        SEEDS,
        lambda s, f: 0.9,
        label="label_flip(1→2)",
        extra={
            "attack_id": plugin_id("label_flip", {"mode": "targeted", "source": 1, "target": 2}),
            "source_class": 1,
            "target_class": 2,
            "theory": None,
        },
    )
    for r in targeted:
        r["attack_success_rate"] = asr[r["extra_fraction"]]
    for r in rows:
        r["attack_success_rate"] = math.nan
    table = pd.DataFrame(rows + targeted)
    rec = estimate_recovery(table, metric="attack_success_rate", tolerance=0.01, n_boot=50)
    row = rec.query("attack == 'label_flip'").iloc[0]
    assert row["reference"] == pytest.approx(0.1)
    # target 0.11: between f = 0.5 (0.12) and f = 1 (0.09)
    assert row["f_needed"] == pytest.approx(0.5 + 0.5 * (0.12 - 0.11) / (0.12 - 0.09))


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match="not a column"):
        estimate_recovery(pd.DataFrame(_clean()), metric="acuracy")


def test_bootstrap_is_deterministic_and_independent_of_other_groups():
    rng = np.random.default_rng(5)
    noise = {(s, f): rng.normal(0, 0.01) for s in SEEDS for f in GRID}
    curve = lambda s, f: 0.85 + 0.1 * f + noise[(s, f)]  # noqa: E731
    base = _clean() + _rows("label_flip", 0.1, "none", SEEDS, curve)
    other = _rows("label_flip", 0.2, "none", SEEDS, lambda s, f: 0.8 + 0.05 * f)
    a = estimate_recovery(pd.DataFrame(base), n_boot=200, seed=3)
    b = estimate_recovery(pd.DataFrame(base + other), n_boot=200, seed=3)
    ra, rb = (x.query("attack == 'label_flip' and rate == 0.1").iloc[0] for x in (a, b))
    assert (ra["f_low"], ra["f_high"]) == (rb["f_low"], rb["f_high"])
    c = estimate_recovery(pd.DataFrame(base), n_boot=200, seed=4)
    rc = c.query("attack == 'label_flip'").iloc[0]
    # the default interval (bench.analysis.stats t-inversion) draws no random numbers: the seed is moot
    assert (rc["f_low"], rc["f_high"]) == (ra["f_low"], ra["f_high"])
    assert rc["f_low"] < rc["f_needed"] < rc["f_high"]


def test_models_with_two_parameter_sets_are_two_configurations_with_distinct_labels():
    rows = _clean() + [
        {**r, "model_id": plugin_id("m", {"C": 0.1, "max_iter": 1000})} for r in _clean()
    ]
    for r in rows[: len(rows) // 2]:
        r["model_id"] = plugin_id("m", {"C": 1.0, "max_iter": 1000})
    labelled = assign_labels(pd.DataFrame(rows))
    assert set(labelled["model_label"]) == {"m(C=1)", "m(C=0.1)"}
    rec = estimate_recovery(labelled, n_boot=0)
    assert len(rec) == 2 and set(rec["model_label"]) == {"m(C=1)", "m(C=0.1)"}


# --- theory --------------------------------------------------------------------------------------


def test_label_noise_theory_lines():
    assert label_noise_multiplier(0.1, 2) == pytest.approx(1 / 0.8**2)
    # K classes: margin 1 − ηK/(K−1)
    assert label_noise_multiplier(0.1, 10) == pytest.approx(1 / (1 - 0.1 * 10 / 9) ** 2)
    assert label_noise_multiplier(0.5, 2) == math.inf
    assert theory_extra_fraction(0.0, 10) == 0.0
    for eta in (0.05, 0.1, 0.2, 0.5):
        f = theory_extra_fraction_mixed(eta, 10)
        c = 10 / 9
        # the effective sample size after adding f·n clean rows equals n
        assert (1 + f) * (1 - c * eta / (1 + f)) ** 2 == pytest.approx(1.0)
        assert 0 < f < theory_extra_fraction(eta, 10)


def test_theory_column_only_for_random_flips():
    table = pd.DataFrame(
        _clean()
        + _rows("label_flip", 0.1, "none", SEEDS, lambda s, f: 0.9 + 0.1 * f)
        + _rows("feature_noise", 0.1, "none", SEEDS, lambda s, f: 0.9 + 0.1 * f)
    )
    rec = estimate_recovery(table, n_boot=0).set_index("attack")
    assert rec.loc["label_flip", "theory_f"] == pytest.approx(theory_extra_fraction(0.1, 3))
    assert math.isnan(rec.loc["feature_noise", "theory_f"])
    assert rec.loc["label_flip", "diluted_rate"] == pytest.approx(
        0.1 / (1 + rec.loc["label_flip", "f_needed"])
    )


# --- runner early stop ---------------------------------------------------------------------------


EARLY = """
name: es
datasets: [{name: iris, split: {train: 0.4, test: 0.3}}]
models: [logreg]
attacks: [{name: label_flip, mode: random}]
rates: [0, 0.1]
defenses: [none, oracle_filter]
seeds: [0]
recovery: {fractions: [0, 0.1, 0.25, 0.5], early_stop: true, tolerance: 0.05}
"""


def test_early_stop_uses_the_clean_cells_value_and_skips_after_two_recovered_points():
    import yaml

    from bench.run.config import parse_config
    from bench.run.grid import expand
    from bench.run.runner import run_cell

    config = parse_config(yaml.safe_load(EARLY))
    cells = expand(config).cells
    grid = [0.0, 0.1, 0.25, 0.5]
    expected = {"metric": "accuracy", "tolerance": 0.05, "fractions": grid}
    assert all(c.spec["early_stop"] == expected for c in cells)
    records = {c.cell_id: run_cell(c) for c in cells}
    rows = pd.DataFrame([r for rec in records.values() for r in rec["rows"]])
    clean = rows[(rows["attack"] == "none") & (rows["defense"] == "none")]
    reference = clean.loc[clean["extra_fraction"] == 0, "accuracy"].iloc[0]
    assert np.allclose(rows["early_stop_reference"], reference)
    for _, cell_rows in rows.groupby("cell_id"):
        cell_rows = cell_rows.sort_values("extra_fraction")
        ok = cell_rows["accuracy"] >= reference - 0.05
        streak, stopped_at = 0, None
        for i, (status, good) in enumerate(zip(cell_rows["status"], ok, strict=True)):
            if stopped_at is not None:
                assert status == "skipped"
                assert cell_rows["skip_reason"].iloc[i] == "early_stop"
                continue
            assert status == "ok"
            streak = streak + 1 if good else 0
            if streak == 2:
                stopped_at = i
    # the clean cell recovers at once: two rows trained, the rest skipped
    assert list(clean["status"]) == ["ok", "ok", "skipped", "skipped"]
    # early stop is part of the identity: the same grid without it is other cells
    plain = expand(parse_config(yaml.safe_load(EARLY.replace(", early_stop: true", "")))).cells
    assert not {c.cell_id for c in plain} & set(records)
    # and deterministic
    timings = [c for c in rows.columns if c.startswith("t_")]
    again = pd.DataFrame(run_cell(cells[1])["rows"]).drop(columns=timings)
    first = pd.DataFrame(records[cells[1].cell_id]["rows"]).drop(columns=timings)
    pd.testing.assert_frame_equal(again, first)
