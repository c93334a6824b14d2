"""Models by import path fail with named errors, never ``internal error`` or silent numbers
(issue 28, items 4, 7, 8): invalid probabilities fail the cell naming the model; an estimator
written to scikit-learn's template runs; a network factory that raises or is no factory is a
config error naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from bench.run.config import ConfigError, parse_config
from bench.run.grid import expand
from bench.run.proba import ModelOutputError, checked_proba
from bench.run.runner import run_cell

BAD = "tests.plugin_bad_models"


def config(model: dict) -> dict:
    return {
        "name": "bad-models",
        "datasets": [{"name": "iris", "split": {"train": 60, "test": 45}}],
        "models": [model],
        "attacks": ["none"],
        "rates": [0],
        "defenses": ["none"],
        "seeds": 1,
        "recovery": {"fractions": [0]},
    }


def run_one(model: dict) -> dict:
    (cell,) = expand(parse_config(config(model))).cells
    return run_cell(cell, [0.0])


@pytest.mark.parametrize(
    ("estimator", "piece"),
    [
        ("NaNProba", "NaN or infinite values (1 row, e.g. row 1: [nan"),
        ("NegativeProba", "values outside [0, 1] (45 rows"),
        ("UnnormalizedProba", "rows that do not sum to 1 within 0.0001 (45 rows"),
    ],
)
def test_invalid_probabilities_fail_the_cell_naming_the_model(estimator, piece):
    record = run_one({"name": "sklearn", "estimator": f"{BAD}.{estimator}"})
    (row,) = record["rows"]
    assert record["status"] == "failed" and row["status"] == "failed"
    assert f"model {estimator}: predict_proba returned" in row["error"]
    assert piece in row["error"]
    assert "accuracy" not in row


def test_checked_proba_accepts_float32_softmax_and_refuses_the_wrong_shape():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10)).astype(np.float32)
    soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert checked_proba(soft, 50, 10, "m") is not None
    assert checked_proba(soft, 50, 10, "m").dtype == np.float32  # the model's own output
    with pytest.raises(ModelOutputError, match=r"model m: predict_proba returned shape \(50, 10\)"):
        checked_proba(soft, 50, 9, "m")


def test_an_estimator_written_to_the_sklearn_template_runs():
    record = run_one({"name": "sklearn", "estimator": f"{BAD}.Template", "params": {"shift": 1}})
    (row,) = record["rows"]
    assert record["status"] == "ok", row.get("error")
    assert 0.2 < row["accuracy"] < 0.5  # the prior of three balanced classes


@pytest.mark.parametrize(
    ("network", "piece"),
    [
        (f"{BAD}:failing_net", "raised KeyError: 'no layer for this dataset'"),
        ("os:system", "raised TypeError"),
        ("os:sep", "not callable"),
    ],
)
def test_a_network_factory_that_fails_is_a_config_error_naming_the_field(network, piece):
    pytest.importorskip("torch")
    entry = {"name": "torch", "network": network, "epochs": 1, "device": "cpu"}
    with pytest.raises(ConfigError) as err:
        expand(parse_config(config(entry)))
    assert err.value.field == "models[0].network", err.value
    assert piece in err.value.message
