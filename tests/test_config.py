"""Config errors through the CLI: one clear line ``error: <field path>: ...`` on stderr, exit code
2, no traceback; and a fuzz test: any mangled config parses or raises ConfigError, nothing else."""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.interfaces.cli import main
from bench.run.config import ConfigError, parse_config

BASE = {
    "name": "bad",
    "datasets": [{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.1],
    "defenses": ["none"],
    "seeds": 1,
}


def run_cli(tmp_path, capsys, text: str) -> tuple[int, str]:
    """Run ``poisonbench run`` on a config text; return (exit code, stderr)."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    capsys.readouterr()
    code = main(["run", str(path), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert not (out / "cells").exists(), "nothing may run when the config is invalid"
    return code, err


def with_changes(**changes) -> str:
    raw = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    return yaml.safe_dump(raw, sort_keys=False)


def assert_one_error(code: int, err: str, expected_start: str, *fragments: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert lines[0].startswith(f"error: {expected_start}"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


CASES = {
    "unknown top-level key": (
        {"colour": "red"},
        "colour: unknown key (valid: attacks, data_dir, datasets, defenses, description,",
        (),
    ),
    "unknown dataset": (
        {"datasets": ["irs"]},
        "datasets[0].name: unknown dataset 'irs' (valid: ",
        ("breast_cancer", "digits", "iris", "mnist-5k", "wine"),
    ),
    "unknown model": (
        {"models": ["xgboost"]},
        "models[0]: unknown model 'xgboost' (valid: ",
        ("logreg", "mlp", "random_forest", "svm"),
    ),
    "unknown model in a mapping": (
        {"models": [{"name": "xgboost"}]},
        "models[0].name: unknown model 'xgboost' (valid: ",
        ("logreg",),
    ),
    "unknown attack": (
        {"attacks": ["gradient_matching"]},
        "attacks[0]: unknown attack 'gradient_matching' (valid: ",
        ("backdoor", "feature_noise", "label_flip"),
    ),
    "unknown defense in a pipeline": (
        {"defenses": ["none", ["iforest", "magic"]]},
        "defenses[1][1]: unknown defense 'magic' (valid: ",
        ("iforest", "label_smoothing", "oracle_filter", "random_filter"),
    ),
    "unknown plugin parameter": (
        {"models": [{"name": "logreg", "gamma": 2}]},
        "models[0].gamma: unknown parameter (valid: C, max_iter",
        (),
    ),
    "unknown defense parameter": (
        {"defenses": [{"name": "iforest", "trees": 5}]},
        "defenses[0].trees: unknown parameter (valid: ",
        ("per_class", "contamination", "space", "n_estimators"),
    ),
    "wrong type": (
        {"models": [{"name": "logreg", "C": "large"}]},
        "models[0].C: expected a number, got 'large'",
        (),
    ),
    "wrong type for a flag": (
        {"defenses": [{"name": "iforest", "per_class": "yes"}]},
        "defenses[0].per_class: expected true or false, got 'yes'",
        (),
    ),
    "wrong type for a list": (
        {"models": "logreg"},
        "models: expected a list, got str",
        (),
    ),
    "rate out of range": (
        {"rates": [0, 1.5]},
        "rates[1]: 1.5 is outside [0, 1]",
        (),
    ),
    "negative rate": (
        {"rates": [-0.1]},
        "rates[0]: -0.1 is outside [0, 1]",
        (),
    ),
    "rate not a number": (
        {"rates": ["ten percent"]},
        "rates[0]: expected a fraction in [0, 1], got 'ten percent'",
        (),
    ),
    "empty list": (
        {"models": []},
        "models: must not be empty",
        (),
    ),
    "empty defense pipeline": (
        {"defenses": [[]]},
        "defenses[0]: an empty list of steps (use 'none')",
        (),
    ),
    "split size zero": (
        {"datasets": [{"name": "iris", "split": {"train": 0}}]},
        "datasets[0].split.train: row count 0 must be >= 1",
        (),
    ),
    "split fraction above one": (
        {"datasets": [{"name": "iris", "split": {"train": 1.5}}]},
        "datasets[0].split.train: fraction 1.5 is outside (0, 1]",
        (),
    ),
    "split larger than the data": (
        {"datasets": [{"name": "iris", "split": {"train": 120, "test": 40}}]},
        "datasets[0].split: train 120 + test 40 + pool 0 rows exceed the 150 rows of iris",
        (),
    ),
    "split unknown key": (
        {"datasets": [{"name": "iris", "split": {"validation": 0.1}}]},
        "datasets[0].split.validation: unknown key (valid: pool, test, train)",
        (),
    ),
    "missing required key": (
        {"models": None},
        "models: missing (required keys: datasets, models, attacks, rates, defenses)",
        (),
    ),
    "targeted source not a class": (
        {"attacks": [{"name": "label_flip", "mode": "targeted", "source": 11, "target": 2}]},
        "attacks[0].source: 11 is not a class of iris (0..2)",
        (),
    ),
    "targeted source name not a class": (
        {"attacks": [{"name": "label_flip", "mode": "targeted", "source": "rose", "target": 2}]},
        "attacks[0].source: 'rose' is not a class of iris (names: setosa, versicolor, virginica",
        (),
    ),
    "source equals target": (
        {"attacks": [{"name": "label_flip", "mode": "targeted", "source": 1, "target": 1}]},
        "attacks[0].target: must differ from source (1)",
        (),
    ),
    "source equals target by name": (
        {
            "attacks": [
                {"name": "label_flip", "mode": "targeted", "source": 1, "target": "versicolor"}
            ]
        },
        "attacks[0].target: must differ from source (1)",
        (),
    ),
    "targeted without source": (
        {"attacks": [{"name": "label_flip", "mode": "targeted", "target": 1}]},
        "attacks[0].source: required when mode is 'targeted'",
        (),
    ),
    "bad mode": (
        {"attacks": [{"name": "feature_noise", "mode": "salt"}]},
        "attacks[0].mode: 'salt' is not one of 'uniform', 'gaussian'",
        (),
    ),
    "seed count zero": ({"seeds": 0}, "seeds: a seed count must be in 1..10000, got 0", ()),
    "negative seed": ({"seeds": [3, -1]}, "seeds[1]: expected a seed in 0..2**32-1, got -1", ()),
    "duplicate seeds": ({"seeds": [1, 1]}, "seeds: seeds must be distinct", ()),
    "seed not a number": (
        {"seeds": ["one"]},
        "seeds[0]: expected a seed in 0..2**32-1, got 'one'",
        (),
    ),
    "bad name": ({"name": "../escape"}, "name: expected letters, digits", ()),
    "recovery metric": (
        {"recovery": {"metric": "auc"}},
        "recovery.metric: 'auc' is not one of accuracy, macro_f1, attack_success_rate",
        (),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_input_gives_one_clear_error(case, tmp_path, capsys):
    changes, expected, fragments = CASES[case]
    code, err = run_cli(tmp_path, capsys, with_changes(**changes))
    assert_one_error(code, err, expected, *fragments)


def test_nan_rate(tmp_path, capsys):
    text = with_changes().replace("- 0.1", "- .nan")
    assert ".nan" in text
    code, err = run_cli(tmp_path, capsys, text)
    assert_one_error(code, err, "rates[1]: expected a fraction in [0, 1], got nan")


def test_nan_plugin_parameter(tmp_path, capsys):
    text = with_changes(defenses=[{"name": "random_filter", "contamination": 0.25}])
    code, err = run_cli(tmp_path, capsys, text.replace("0.25", ".nan"))
    assert_one_error(code, err, "defenses[0].contamination: expected a number, got NaN")


def test_malformed_yaml_names_the_line(tmp_path, capsys):
    text = "name: broken\ndatasets: [iris\nmodels: [logreg]\n"
    code, err = run_cli(tmp_path, capsys, text)
    assert_one_error(code, err, "config: ", "is not valid YAML at line 3")


def test_yaml_that_is_not_a_mapping(tmp_path, capsys):
    code, err = run_cli(tmp_path, capsys, "- just\n- a list\n")
    assert_one_error(code, err, "config: expected a mapping, got list")


def test_missing_config_file(tmp_path, capsys):
    capsys.readouterr()
    code = main(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert_one_error(code, err, "config: cannot read ")


def test_python_objects_in_yaml_are_refused(tmp_path, capsys):
    """yaml.safe_load: a config is data; a python tag is a YAML error, not code."""
    code, err = run_cli(tmp_path, capsys, "name: !!python/object/apply:os.system ['true']\n")
    assert_one_error(code, err, "config: ", "is not valid YAML")


def test_a_valid_config_parses_with_defaults():
    config = parse_config(copy.deepcopy(BASE))
    assert config.name == "bad"
    assert config.seeds == (0,)
    assert config.rates == (0.0, 0.1)
    assert config.models[0].params == {"C": 1.0, "max_iter": 1000}
    assert config.defenses[0][0].name == "none"
    assert config.recovery.fractions[0] == 0.0


# --------------------------------------------------------------------------------------------
# Fuzz: mangled configs raise ConfigError or parse; never anything else
# --------------------------------------------------------------------------------------------

junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["iris", "logreg", "none", "label_flip", "rest", "", "targeted"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
paths = st.sampled_from(
    [
        ("name",),
        ("datasets",),
        ("datasets", 0),
        ("datasets", 0, "split"),
        ("datasets", 0, "split", "train"),
        ("models",),
        ("models", 0),
        ("attacks", 0),
        ("attacks", 0, "mode"),
        ("rates",),
        ("rates", 1),
        ("defenses",),
        ("defenses", 0),
        ("seeds",),
        ("recovery",),
        ("data_dir",),
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=paths, value=junk)
def test_mangled_configs_raise_config_error_or_parse(path, value):
    raw = copy.deepcopy(BASE)
    raw["recovery"] = {"fractions": [0, 0.5]}
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        config = parse_config(raw)
    except ConfigError as exc:
        assert exc.field is not None and exc.message
        return
    # What parsed is usable: rates are finite fractions, seeds distinct ints.
    assert all(0 <= r <= 1 and not math.isnan(r) for r in config.rates)
    assert len(set(config.seeds)) == len(config.seeds)
