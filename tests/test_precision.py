"""A precision request: config, the seeds-needed rule, the rounds of a run and the findings."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from bench.analysis.precision import (
    MAX_LOOKAHEAD,
    next_count,
    plan_round,
    resolved,
    seeds_needed,
)
from bench.analysis.stats import t_quantile
from bench.core.schema import NO_ATTACK_ID, NO_DEFENSE_ID
from bench.interfaces.cli import main
from bench.run.config import ConfigError, parse_config, with_precision

BASE = {
    "name": "p",
    "datasets": [{"name": "digits", "split": {"train": 300, "test": 0.25}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.1],
    "defenses": ["none", "oracle_filter"],
    "recovery": {"fractions": [0, 0.25, 0.5, 1]},
}


def test_a_seeds_mapping_is_a_precision_request():
    config = parse_config({**BASE, "seeds": {"min": 4, "max": 12, "precision": 0.3}})
    assert config.seeds == (0, 1, 2, 3)
    assert config.precision.target == 0.3 and config.precision.max_seeds == 12
    plain = parse_config({**BASE, "seeds": 3})
    assert plain.precision is None
    cli = with_precision(plain, 0.5, 8)
    assert cli.precision.target == 0.5 and cli.precision.max_seeds == 8 and cli.seeds == (0, 1, 2)


@pytest.mark.parametrize(
    ("seeds", "field", "words"),
    [
        ({"min": 3, "max": 10}, "seeds.precision", "missing"),
        ({"min": 5, "max": 3, "precision": 0.2}, "seeds.max", "at least min"),
        ({"min": 1, "precision": 0.2}, "seeds.min", "an interval needs 2"),
        ({"precision": 0}, "seeds.precision", "must be > 0"),
        ({"precision": "wide"}, "seeds.precision", "expected a positive width"),
        ({"precision": 0.2, "step": 2}, "seeds.step", "valid: max, min, precision"),
    ],
)
def test_a_bad_precision_request_names_the_field(seeds, field, words):
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "seeds": seeds})
    assert info.value.field == field, info.value
    assert words in str(info.value)


def test_seeds_needed_scales_a_bounded_width_by_t_over_root_n():
    low, high = np.array([0.5]), np.array([1.5])  # width 1.0 at 4 seeds, target 0.25
    (n,) = seeds_needed(4, low, high, np.zeros((1, 4)), 0.25)
    assert 4 < n < MAX_LOOKAHEAD
    predicted = lambda k: 1.0 * t_quantile(k - 1, 0.95) / t_quantile(3, 0.95) * math.sqrt(4 / k)  # noqa: E731
    assert predicted(n) <= 0.25 < predicted(n - 1)
    assert seeds_needed(4, np.array([0.5]), np.array([0.6]), np.zeros((1, 4)), 0.25)[0] == 4


def test_an_open_interval_needs_seeds_only_when_the_last_margin_is_positive():
    low, high = np.array([0.5, 0.5]), np.array([math.inf, math.inf])
    last = np.array([[0.01, 0.03, -0.01], [-0.02, -0.01, 0.0]])
    up, never = seeds_needed(3, low, high, last, 0.25)
    assert 3 < up < MAX_LOOKAHEAD and never == math.inf
    # at `up` seeds the same mean and spread would reject "not recovered" at the last point
    m, s = last[0].mean(), last[0].std(ddof=1)
    assert math.sqrt(up) * m / s >= t_quantile(int(up) - 1, 0.95)


def test_rounds_at_most_double_and_respect_the_cap():
    assert next_count(3, 4, 20) == 4
    assert next_count(3, 50, 20) == 6  # at most doubling per round
    assert next_count(12, 50, 20) == 20  # the cap
    assert next_count(3, math.inf, 20) == 6
    assert next_count(20, 50, 20) == 20 and next_count(5, 5, 20) == 5
    assert resolved(np.array([math.inf]), np.array([math.inf]), 0.25).tolist() == [True]


def test_a_round_moves_a_group_with_its_clean_reference_and_undefended_twin():
    ds, model, attack = "d", "m", "a"
    status = pd.DataFrame(
        [
            (ds, model, attack, 0.1, "oracle", 3, 1.0, False, "too wide", 9.0),
            (ds, model, attack, 0.1, NO_DEFENSE_ID, 3, 0.1, True, "met", 3.0),
            (ds, model, NO_ATTACK_ID, 0.0, NO_DEFENSE_ID, 3, 0.0, True, "met", 3.0),
            (ds, model, attack, 0.2, NO_DEFENSE_ID, 3, 0.1, True, "met", 3.0),
        ],
        columns=[
            "dataset_id", "model_id", "attack_id", "rate", "defense_id", "n_seeds", "width",
            "precision_met", "precision_status", "seeds_needed",
        ],
    )  # fmt: skip
    want = plan_round(status, 20)
    assert want == {
        (ds, model, attack, 0.1, "oracle"): 6,
        (ds, model, NO_ATTACK_ID, 0.0, NO_DEFENSE_ID): 6,
        (ds, model, attack, 0.1, NO_DEFENSE_ID): 6,
    }  # the resolved 20 % group keeps its 3 seeds


@pytest.mark.slow
def test_a_precision_run_adds_seeds_only_where_needed_and_resumes(tmp_path):
    import yaml

    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump({**BASE, "seeds": {"min": 3, "max": 8, "precision": 0.5}}))
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--no-report"]) == 0
    meta = json.loads((out / "run.json").read_text())
    precision = meta["precision"]
    assert precision["target"] == 0.5 and precision["max_seeds"] == 8
    table = pd.read_parquet(out / "results.parquet")
    seeds = (
        table[table["extra_fraction"] == 0]
        .groupby(["attack_id", "rate", "defense_id"])["seed"]
        .nunique()
    )
    groups = precision["groups"]
    assert len(groups) == len(seeds)
    for g in groups:
        n = seeds[(g["attack_id"], g["rate"], g["defense_id"])]
        assert g["n_seeds"] == n  # run.json says how many seeds each group used
        assert 3 <= n <= 8
        if n < 8 and not g["precision_met"]:
            assert g["seeds_needed"] is None or g["seeds_needed"] > 1000  # seeds cannot help
        if g["precision_met"] and g["precision_status"] == "met":
            assert g["width"] <= 0.5 + 1e-9
    assert seeds.max() > 3 or all(g["precision_met"] for g in groups)
    # a second run replays the rounds from disk: nothing is computed, the table is the same
    assert main(["run", str(config), "--out", str(out), "--quiet", "--no-report"]) == 0
    rerun = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(
        table.drop(columns=["seconds"], errors="ignore").reset_index(drop=True),
        rerun.drop(columns=["seconds"], errors="ignore").reset_index(drop=True),
    )
    assert json.loads((out / "run.json").read_text())["summary"]["run"] == 0
