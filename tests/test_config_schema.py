"""The JSON Schema of configs: shipped, current, and it accepts every shipped config and
rejects wrong ones (the parser stays the authority on meaning; the schema is for editors)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from bench.run.config import parse_config
from bench.run.config_schema import SHIPPED, config_schema, schema_text

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def validator():
    schema = json.loads((ROOT / SHIPPED).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_schema_is_current():
    """Regenerate with `poisonbench schema > configs/poisonbench.schema.json` (built-ins only:
    `python -c 'from bench.run.config_schema import schema_text; print(schema_text(True), end="")'`)."""
    assert (ROOT / SHIPPED).read_text() == schema_text(builtin_only=True)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates_and_points_at_the_schema(path, validator):
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=poisonbench.schema.json")
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(text))]
    assert errors == []


BASE = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda c: c["models"].append("logistic"), "logistic"),
        (lambda c: c["defenses"].append({"name": "iforest", "per_class": "yes"}), "yes"),
        (lambda c: c["defenses"].append({"name": "iforest", "n_trees": 5}), "n_trees"),
        (lambda c: c["rates"].append(2), "2"),
        (lambda c: c.update(seed=3), "seed"),
        (lambda c: c.update(seeds={"min": 3, "max": 9}), "precision"),
        (lambda c: c["recovery"].update(metric="auc"), "auc"),
        (lambda c: c["datasets"][0]["split"].update(validation=0.1), "validation"),
    ],
    ids=["model", "param-type", "param-name", "rate", "top-key", "seeds", "metric", "split"],
)
def test_a_wrong_config_is_rejected_by_the_schema_and_the_parser(change, words, validator):
    config = copy.deepcopy(BASE)
    change(config)
    errors = list(validator.iter_errors(config))
    assert errors, "the schema accepted a wrong config"
    with pytest.raises(Exception) as info:  # the parser names the field (ConfigError)
        parse_config(config)
    assert type(info.value).__name__ == "ConfigError"


def test_the_schema_lists_each_plugins_parameters_with_defaults():
    schema = config_schema(builtin_only=True)
    models = schema["properties"]["models"]["items"]["anyOf"]
    logreg = next(m for m in models[1:] if m["properties"]["name"] == {"const": "logreg"})
    assert logreg["properties"]["C"]["type"] == "number"
    assert logreg["properties"]["C"]["default"] == 1.0
    assert "logreg" in models[0]["enum"]
