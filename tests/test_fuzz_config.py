"""Hostile configs: every failure of the config loader is the project's own error naming a field.

Hypothesis throws random structures, wrong types, unknown names, huge or negative sizes,
NaN/inf rates, empty grids, non-string keys, deep nesting and YAML tags at ``parse_config``
and ``load_config`` (and at grid expansion, which binds plug-ins to datasets). Anything but a
:class:`~bench.config.ConfigError` (or another ``PoisonBenchError`` that names the field) is a
bug: a traceback where the user should read which field is wrong.

``POISONBENCH_FUZZ_EXAMPLES`` raises the number of examples per test (default 200).
"""

from __future__ import annotations

import copy
import math
import os
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.config import ConfigError, load_config, parse_config
from bench.grid import expand
from bench.types import PoisonBenchError

EXAMPLES = int(os.environ.get("POISONBENCH_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,  # the same examples on every run: CI failures reproduce
)

#: how a field path starts: a top-level key (``datasets[0].split.train``), ``config`` (the
#: file as a whole) or a quoted odd key (``'a b'``, ``7``)
FIELD = re.compile(r"^([A-Za-z_][\w-]*|'.*'|\".*\"|-?\d+|None|True|False|b'.*')([.\[]|$)")

VALID = {
    "name": "fuzz",
    "datasets": [{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "targeted", "source": 1, "target": 2}],
    "rates": [0, 0.1],
    "defenses": ["none", "iforest", ["iforest", {"name": "label_smoothing", "epsilon": 0.1}]],
    "seeds": 2,
    "recovery": {"fractions": [0, 0.5], "metric": "accuracy", "tolerance": 0.01},
}

TRIED = {"configs": 0, "errors": 0, "valid": 0}

# Values a YAML file can hold, and then some: NaN/inf, huge ints, bytes, nested containers.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 0.5]),
    st.text(max_size=20),
    st.sampled_from(
        ["none", "rest", "logreg", "iris", "digits", "label_flip", "iforest", "../../etc", ""]
    ),
    st.binary(max_size=8),
)
keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from([*sorted(VALID), "split", "train", "test", "pool", "name", "params"]),
    st.integers(),
    st.none(),
    st.booleans(),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=20,
)


def _paths(obj, prefix=()):
    """Every path into a nested dict/list structure (the root is the empty path)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


PATHS = [p for p in _paths(VALID) if p]


@st.composite
def mutated(draw):
    """The valid config with one to three entries replaced, deleted or joined by a stray key."""
    raw = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = raw
        try:
            for step in path[:-1]:
                parent = parent[step]
            last = path[-1]
            parent[last]  # still there after an earlier mutation?
        except (KeyError, IndexError, TypeError):
            continue
        action = draw(st.sampled_from(["replace", "delete", "stray", "empty"]))
        if action == "replace":
            parent[last] = draw(values)
        elif action == "delete":
            del parent[last]
        elif action == "empty":
            parent[last] = draw(st.sampled_from([[], {}, None, ""]))
        elif isinstance(parent, dict):
            parent[draw(keys)] = draw(values)
        else:
            parent.append(draw(values))
    return raw


def _check(exc: BaseException, expanding: bool = False) -> None:
    """A failure must be a ConfigError naming a field path (expansion, which loads datasets,
    may also raise another PoisonBenchError such as DatasetError)."""
    allowed = PoisonBenchError if expanding else ConfigError
    assert isinstance(exc, allowed), f"{type(exc).__name__} escaped: {exc!r}"
    if isinstance(exc, ConfigError):
        assert exc.field and FIELD.match(exc.field), f"no field path in {exc!r}"
        assert str(exc).startswith(f"{exc.field}: ")
        assert len(str(exc)) < 2000, "error message is not short"


def _parse(raw, bind: bool = False):
    TRIED["configs"] += 1
    try:
        config = parse_config(raw)
    except Exception as exc:
        TRIED["errors"] += 1
        _check(exc)
        return None
    if bind and _grid_size(config) <= 500:
        try:
            expand(config)  # binds attacks/models/defenses to each dataset
        except Exception as exc:
            TRIED["errors"] += 1
            _check(exc, expanding=True)
            return None
    TRIED["valid"] += 1
    return config


def _grid_size(config) -> int:
    return (
        len(config.datasets)
        * len(config.models)
        * (len(config.attacks) * len(config.rates) + 1)
        * len(config.defenses)
        * len(config.seeds)
    )


@FUZZ
@given(values)
def test_random_structures_fail_with_a_config_error(raw):
    _parse(raw)


@FUZZ
@given(mutated())
def test_mutated_configs_fail_with_a_config_error(raw):
    _parse(raw, bind=True)


@FUZZ
@given(mutated())
def test_mutated_configs_through_yaml(tmp_path_factory, raw):
    """What survives a YAML round trip behaves the same through load_config."""
    try:
        text = yaml.safe_dump(raw)
    except yaml.YAMLError:
        return  # not representable as YAML (e.g. bytes keys): not a file a user could write
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(text)
    _load_and_check(path)


def _load_and_check(path) -> None:
    """Load a config file; any failure must be the project's own error naming a field."""
    TRIED["configs"] += 1
    try:
        load_config(path)
    except Exception as exc:
        TRIED["errors"] += 1
        _check(exc)


YAML_PIECES = [
    "name: x\n",
    "datasets: [iris]\n",
    "models: [logreg]\n",
    "attacks: [label_flip]\n",
    "rates: [0, .nan, .inf, -1, 1e999]\n",
    "defenses: [none, [], [[]]]\n",
    "seeds: -3\n",
    "seeds: 99999999999999999999\n",
    "recovery: {fractions: []}\n",
    "!!python/object/apply:os.system ['echo pwned']\n",
    "x: !!python/name:os.system\n",
    "x: !!binary aGVsbG8=\n",
    "x: !!set {a, b}\n",
    "? [a, b]\n: c\n",
    "&a [*a]\n",
    "a: &x [1, 2]\nb: *x\n",
    "- - - - -\n",
    "{1: 2, null: 3, true: 4}\n",
    "datasets: [{name: iris, split: {train: 10000000, test: 0.5}}]\n",
    "\t bad: indent\n",
    "---\n---\n",
    "%YAML 9.9\n",
    "date: 2024-01-01\n",
    "\x00\x01\xff",
]


@FUZZ
@given(st.lists(st.sampled_from(YAML_PIECES) | st.text(max_size=30), min_size=1, max_size=6))
def test_random_yaml_text_fails_with_a_config_error(tmp_path_factory, pieces):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text("".join(pieces), errors="surrogatepass")
    _load_and_check(path)


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['touch {marker}']\n",
        "name: !!python/object/apply:os.system ['touch {marker}']\n",
        "name: !!python/object/new:os.system ['touch {marker}']\n",
        "models: [!!python/name:os.system ]\n",
    ],
)
def test_python_tags_are_rejected_and_never_run(tmp_path, text):
    marker = tmp_path / "pwned"
    path = tmp_path / "c.yaml"
    path.write_text(text.format(marker=marker))
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(path)
    assert info.value.field == "config"
    assert not marker.exists()


@pytest.mark.parametrize("depth", [50, 5_000, 100_000])
def test_deep_nesting_is_a_config_error(tmp_path, depth):
    path = tmp_path / "deep.yaml"
    path.write_text("rates: " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    _check(info.value)
    raw = {**VALID, "rates": [0.1]}
    inner: list = []
    raw["models"] = [{"name": "logreg", "C": inner}]
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    _check(info.value)


def test_yaml_alias_bomb_is_a_config_error_not_a_hang(tmp_path):
    lists = ["&a0 [x, x, x, x, x, x, x, x, x, x]"]
    lists += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text(f"rates: [{', '.join(lists)}]\n")  # 10**9 leaves once expanded
    with pytest.raises(ConfigError, match="more than") as info:
        load_config(path)
    _check(info.value)


def test_binary_and_missing_files_are_config_errors(tmp_path):
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80")
    for path in (binary, tmp_path / "missing.yaml", tmp_path):
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.field == "config"
        assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rates": [float("nan")]}, "rates[0]"),
        ({"rates": [float("inf")]}, "rates[0]"),
        ({"rates": []}, "rates"),
        ({"seeds": -1}, "seeds"),
        ({"seeds": 10**12}, "seeds"),
        ({"seeds": list(range(10_001))}, "seeds"),  # the same limit as a count
        ({"models": ["nope"]}, "models[0]"),
        ({"datasets": [{"name": "iris", "split": {"train": -5}}]}, "datasets[0].split.train"),
        ({"datasets": [{"name": "iris", "split": {"test": math.inf}}]}, "datasets[0].split.test"),
        ({"recovery": {"fractions": [1e9]}}, "recovery.fractions[0]"),
        ({"recovery": {"tolerance": math.nan}}, "recovery.tolerance"),
        ({"name": "../../escape"}, "name"),
        ({"name": "ok\n"}, "name"),
        ({"data_dir": 3}, "data_dir"),
        ({7: "x"}, "config"),
    ],
)
def test_specific_hostile_values_name_their_field(change, field):
    with pytest.raises(ConfigError) as info:
        parse_config({**VALID, **change})
    assert info.value.field == field, str(info.value)


def test_report_how_many_configs_were_fuzzed():
    """Runs last in this file (pytest keeps file order): prints the count for the issue note."""
    print(
        f"\nfuzzed configs: {TRIED['configs']} tried, {TRIED['errors']} rejected with a "
        f"ConfigError/PoisonBenchError, {TRIED['valid']} valid, 0 tracebacks"
    )
    assert TRIED["configs"] == 0 or TRIED["errors"] > 0
