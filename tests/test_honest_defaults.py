"""Defenses at honest settings (issue 25): thresholds from the data, tuning on trusted rows.

The trusted_filter checks run on digits (n_train 1,000, logreg, random flips), the grid of the
issue; the outlier-filter check on breast_cancer with uniform feature noise; the tuning checks
on a tiny digits grid whose test set is tampered with.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import poisonbench as pb
from attacks import ATTACKS
from bench.core.schema import defense_id
from bench.core.types import DefenseContext, TrainingSet
from bench.data.datasets import load_dataset, split
from bench.run.config import ConfigError, parse_config
from bench.run.grid import expand, stage_rng
from bench.run.runner import StageCache, run_cell
from defenses import DEFENSES

DIGITS = {"name": "digits", "split": {"train": 1000, "test": 0.2}}
RANDOM_FLIPS = {"name": "label_flip", "mode": "random"}


def digits_parts(seed: int):
    data = load_dataset("digits", None, {})
    parts = split(data, 1000, 0.2, "rest", rng=stage_rng("split", "honest", seed))
    return data, parts


# --------------------------------------------------------------------------------------------
# trusted_filter: contamination auto
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5])
def test_trusted_filter_auto_removes_about_the_poisoned_share(rate):
    """The share ``auto`` removes is within 0.07 of the true flip share p, mean of 3 seeds, and
    never more than 0.12 away in any seed (b = 0.1: 100 trusted rows)."""
    removed = []
    for seed in range(3):
        data, parts = digits_parts(seed)
        X, y = data.X[parts.train], data.y[parts.train]
        attack = ATTACKS.get("label_flip").from_params({"mode": "random"}).bind(data.info)
        poisoned = attack.poison(X, y, rate, np.random.default_rng(seed))
        train = TrainingSet(X=poisoned.X, y=poisoned.y, mask=poisoned.mask, n_classes=10)
        ctx = DefenseContext(
            info=data.info, n_train=len(y), pool_X=data.X[parts.pool], pool_y=data.y[parts.pool]
        )
        step = DEFENSES.get("trusted_filter").from_params({"budget": 0.1})
        result = step.apply(train, ctx, np.random.default_rng(seed))
        share = float(result.removed.mean())
        assert result.details["contamination_used"] == pytest.approx(share)
        assert result.details["threshold_rule"].startswith("auto")
        removed.append(share)
    assert max(abs(r - rate) for r in removed) <= 0.12, removed
    assert abs(np.mean(removed) - rate) <= 0.07, removed


@pytest.fixture(scope="module")
def digits_flips(tmp_path_factory):
    """The issue's grid for b = 0.1: digits, n_train 1,000, logreg, random flips, 5 seeds."""
    config = {
        "name": "honest-tf",
        "datasets": [DIGITS],
        "models": ["logreg"],
        "attacks": [RANDOM_FLIPS],
        "rates": [0, 0.5],
        "defenses": ["none", {"name": "trusted_filter", "budget": 0.1}],
        "seeds": 5,
        "recovery": {"fractions": [0], "bootstrap": 0},
    }
    out = tmp_path_factory.mktemp("honest") / "run"
    table = pb.run(config, out=out, progress=False, report=False).table
    assert (table["status"] == "ok").all()
    return table


def test_trusted_filter_auto_costs_at_most_half_a_point_on_clean_data(digits_flips):
    mean = digits_flips.groupby(["rate", "defense"])["accuracy"].mean()
    cost = mean[(0.0, "none")] - mean[(0.0, "trusted_filter")]
    assert cost <= 0.005, f"auto costs {100 * cost:.2f} points at 0 % poison"


def test_trusted_filter_auto_recovers_half_the_gap_at_half_flipped(digits_flips):
    mean = digits_flips.groupby(["rate", "defense"])["accuracy"].mean()
    clean, none = mean[(0.0, "none")], mean[(0.5, "none")]
    defended = mean[(0.5, "trusted_filter")]
    assert clean - none > 0.1  # the attack does hurt: there is a gap to recover
    assert (defended - none) / (clean - none) >= 0.5, (clean, none, defended)


def test_the_findings_name_the_setting_of_the_best_defense(digits_flips):
    from bench.analysis.findings import best_gain, gain_cell

    attack_id = digits_flips.loc[digits_flips["rate"] == 0.5, "attack_id"].iloc[0]
    cell = gain_cell(best_gain(digits_flips, attack_id, 0.5, "accuracy", 0.005))
    tf = digits_flips[(digits_flips["rate"] == 0.5) & (digits_flips["defense"] != "none")]
    share = 100 * tf["contamination_used"].mean()
    assert cell.startswith("trusted_filter(b=0.1, auto) [setting: auto: conformal")
    assert f"removed {share:.1f} %" in cell


# --------------------------------------------------------------------------------------------
# Tuning
# --------------------------------------------------------------------------------------------

# trusted_filter: a cheap step to tune (a logreg judge on 30 trusted rows)
TF = {"name": "trusted_filter", "budget": 0.1}
TUNED = {**TF, "tune": {"contamination": [0.05, 0.3], "budget": 0.2}}


def tiny_config(defenses, **extra):
    return parse_config(
        {
            "name": "tune",
            "datasets": [{"name": "digits", "split": {"train": 300, "test": 0.25}}],
            "models": ["logreg"],
            "attacks": [RANDOM_FLIPS],
            "rates": [0.3],
            "defenses": defenses,
            "seeds": 1,
            "recovery": {"fractions": [0, 0.5], "bootstrap": 0},
            **extra,
        }
    )


def poisoned_cell(config):
    return next(c for c in expand(config) if c.spec["rate"] > 0)


def test_tuning_never_reads_a_test_row():
    """A test set whose labels are all wrong changes the accuracy, never the choice."""
    cell = poisoned_cell(tiny_config([TUNED]))
    honest = run_cell(cell, [0.0])
    assert honest["status"] == "ok", honest.get("error")

    cache = StageCache()
    data, key = load_dataset("digits", None, {}), cell.spec["dataset"]
    parts = split(data, 300, 0.25, "rest", rng=stage_rng("split", key, cell.seed))
    wrong = (data.y[parts.test] + 1) % 10  # every test label wrong
    tampered = (data.X[parts.train], data.y[parts.train], data.X[parts.test], wrong,
                data.X[parts.pool], data.y[parts.pool])  # fmt: skip
    cache.get(["split", key, cell.seed], lambda: tampered)
    lying = run_cell(cell, [0.0], cache=cache)
    assert lying["status"] == "ok", lying.get("error")
    (a,), (b,) = honest["rows"], lying["rows"]
    assert a["accuracy"] > 0.5 and b["accuracy"] < 0.2  # the tampered test set was used to score
    assert a["tuned_setting"] == b["tuned_setting"] and a["tune_score"] == b["tune_score"]


def test_tuning_chooses_the_setting_best_on_the_validation_rows():
    """Tuning over {0.05, 0.3} scores each setting as a one-setting space does (the same
    validation rows), keeps the better one, and its cell is then that one-setting cell."""
    single = [{**TF, "tune": {"contamination": [c], "budget": 0.2}} for c in (0.05, 0.3)]
    config = tiny_config([TUNED, *single, TF])
    cells = [c for c in expand(config) if c.spec["rate"] > 0]
    both, low, high, fixed = (run_cell(c, [0.0])["rows"][0] for c in cells)
    assert both["n_tune_rows"] == low["n_tune_rows"] == 60  # 0.2 × 300 validation rows
    scores = {0.05: low["tune_score"], 0.3: high["tune_score"]}
    assert low["tune_score"] != high["tune_score"]  # the choice is not a tie on this data
    best = max(scores, key=scores.get)
    assert json.loads(both["tuned_setting"]) == {"contamination": best}
    assert both["tune_score"] == scores[best]
    assert both["accuracy"] == (low if best == 0.05 else high)["accuracy"]
    assert both["n_trusted_used"] == fixed["n_trusted_used"] + 60


def test_budget_accounting_includes_the_validation_rows():
    """n_trusted_used = the step's own trusted rows + the validation rows, and the recovery
    rows come after both: a budget the untuned step fits in runs out once tuning is added."""
    tuned_tf = {"name": "trusted_filter", "budget": 0.1, "tune": {"contamination": [0.1, 0.2],
                                                                  "budget": 0.2}}  # fmt: skip
    config = tiny_config(
        [{"name": "trusted_filter", "budget": 0.1}, tuned_tf],
        recovery={"fractions": [0, 3.3], "bootstrap": 0},
    )
    plain, tuned = (run_cell(c, [0.0, 3.3]) for c in expand(config) if c.spec["rate"] > 0)
    (p0, p1), (t0, t1) = plain["rows"], tuned["rows"]
    assert p0["n_trusted_used"] == 30 and p0["n_trusted_read"] == 30
    assert t0["n_tune_rows"] == 60 and t0["n_trusted_used"] == 30 + 60
    assert t0["n_trusted_read"] == 30 + 60  # the budget section counts them as read
    # digits: 1,797 rows; 300 train, 449 test: a pool of 1,048; f = 3.3 asks for 990 more rows
    assert p0["n_pool"] == 1048
    assert p1["status"] == "ok"  # 30 + 990 <= 1,048
    assert t1["status"] == "skipped" and t1["skip_reason"] == "pool_exhausted"  # 90 + 990


def test_a_tuned_step_is_identified_by_its_search_space():
    auto = tiny_config([{"name": "trusted_filter", "tune": "auto"}]).defenses[0][0]
    space = DEFENSES.get("trusted_filter").tune_space
    explicit = tiny_config(
        [{"name": "trusted_filter", "tune": {k: list(v) for k, v in space.items()}}]
    ).defenses[0][0]
    plain = tiny_config([{"name": "trusted_filter"}]).defenses[0][0]
    assert auto == explicit  # auto is a spelling of the default space: one id
    assert defense_id([auto.canonical()]) == defense_id([explicit.canonical()])
    assert defense_id([auto.canonical()]) != defense_id([plain.canonical()])
    assert "tune" not in plain.canonical()  # untuned specs (and ids) are as before
    assert auto.tune == {"space": {"contamination": list(space["contamination"])}, "budget": 0.1}


@pytest.mark.parametrize(
    ("tune", "field", "message"),
    [
        ({"depth": [1, 2]}, "defenses[0].tune.depth", "not a parameter of iforest"),
        ({"contamination": []}, "defenses[0].tune.contamination", "non-empty list"),
        ({"contamination": [0.1, 0.9]}, "defenses[0].tune.contamination", "(0, 0.5]"),
        ({"contamination": [0.1], "budget": 0}, "defenses[0].tune.budget", "(0, 10]"),
        ({"budget": 0.1}, "defenses[0].tune", "no parameter to tune"),
        ("maybe", "defenses[0].tune", "expected 'auto' or a mapping"),
    ],
)
def test_bad_tune_specs_name_the_field(tune, field, message):
    with pytest.raises(ConfigError) as exc:
        tiny_config([{"name": "iforest", "tune": tune}])
    assert exc.value.field == field
    assert message in exc.value.message


def test_tune_auto_without_a_default_space_says_which_defenses_have_one():
    with pytest.raises(ConfigError) as exc:
        tiny_config([{"name": "none", "tune": "auto"}])
    assert exc.value.field == "defenses[0].tune"
    assert "no default search space" in exc.value.message and "trusted_filter" in exc.value.message


# --------------------------------------------------------------------------------------------
# Outlier filters: contamination auto (PyThresh)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params"), [("iforest", {}), ("lof", {}), ("ocsvm", {}), ("pyod", {"detector": "knn"})]
)
def test_outlier_filter_auto_removes_fewer_rows_without_noise(name, params):
    """breast_cancer (284 train rows), uniform feature noise: ``auto`` removes fewer rows at 0 %
    than at 20 % noise (mean of 3 seeds), and at 20 % it removes at least half the noised rows."""
    data = load_dataset("breast_cancer", None, {})
    attack = ATTACKS.get("feature_noise").from_params({}).bind(data.info)
    step = DEFENSES.get(name).from_params(params).bind(data.info)
    shares, recalls = {0.0: [], 0.2: []}, []
    for seed in range(3):
        parts = split(data, 0.5, 0.25, "rest", rng=stage_rng("split", "honest", seed))
        X, y = data.X[parts.train], data.y[parts.train]
        ctx = DefenseContext(info=data.info, n_train=len(y), pool_X=X[:0], pool_y=y[:0])
        for rate in shares:
            p = attack.poison(X, y, rate, np.random.default_rng(seed))
            train = TrainingSet(X=p.X, y=p.y, mask=p.mask, n_classes=data.info.n_classes)
            result = step.apply(train, ctx, np.random.default_rng(seed))
            assert result.details["contamination_used"] == pytest.approx(result.removed.mean())
            assert result.details["threshold_rule"] == f"auto: pythresh {step.auto_method}"
            shares[rate].append(float(result.removed.mean()))
            if rate:
                recalls.append(float(result.removed[p.mask].mean()))
    assert np.mean(shares[0.0]) < np.mean(shares[0.2]), shares
    assert np.mean(recalls) >= 0.5, recalls


def test_pythresh_leaves_the_global_generator_as_it_found_it():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    from defenses.outlier import threshold_scores

    threshold_scores(np.random.default_rng(0).normal(size=50), "dsn", seed=7)
    assert np.random.random() == expected


def test_outlier_contamination_rejects_an_unknown_rule():
    with pytest.raises(ConfigError) as exc:
        tiny_config([{"name": "iforest", "contamination": "auto:guess"}])
    assert exc.value.field == "defenses[0].contamination"
    assert "PyThresh method" in exc.value.message and "dsn" in exc.value.message


def test_setting_note_counts_the_tuned_choices_per_seed():
    import pandas as pd

    from bench.analysis.settings import setting_note

    frame = pd.DataFrame(
        {
            "defense_id": ["t"] * 4 + ["u"],
            "extra_fraction": [0.0, 0.0, 0.0, 1.0, 0.0],
            "tuned_setting": ['{"epsilon":0.1}', '{"epsilon":0.1}', '{"epsilon":0.2}', "x", None],
        }
    )
    assert setting_note(frame, "t") == (
        ' [setting: tuned: {"epsilon":0.1} in 2 of 3 seeds, {"epsilon":0.2} in 1 of 3 seeds]'
    )
    assert setting_note(frame, "u") == ""
