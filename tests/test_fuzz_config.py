"""Hostile configs: every failure of the config loader is the project's own error naming a field.

Hypothesis throws random structures, wrong types, unknown names, huge or negative sizes,
NaN/inf rates and parameters, empty grids, non-string keys, deep nesting and YAML tags at
``parse_config`` and ``load_config``; every config that parses is then expanded into its grid
(which binds plug-ins to datasets) and every cell's identity is hashed. Anything but a
:class:`~bench.run.config.ConfigError` naming the field (or, from expansion, a
:class:`~bench.data.datasets.DatasetError`) is a bug: a traceback where the user should read which
field is wrong.

``POISONBENCH_FUZZ_EXAMPLES`` raises the number of examples per test (default 200).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from collections import Counter, defaultdict

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attacks import ATTACKS
from bench.data.datasets import DATASETS, DatasetError
from bench.models import MODELS
from bench.run.config import ConfigError, load_config, parse_config
from bench.run.grid import expand
from defenses import DEFENSES

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

#: per fuzz test: configs tried, rejected (errors), parsed (valid), expanded, cells hashed
TRIED: dict[str, Counter] = defaultdict(Counter)
#: grids larger than this are parsed but not expanded (a hostile seed count makes them huge)
MAX_EXPANDED_CELLS = 500

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
        if not isinstance(parent, (dict, list)):
            continue  # an earlier mutation put a string (which indexes) where a mapping was
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
    may also raise a DatasetError); anything else escaping is a bug."""
    allowed = (ConfigError, DatasetError) if expanding else ConfigError
    assert isinstance(exc, allowed), f"{type(exc).__name__} escaped: {exc!r}"
    if isinstance(exc, ConfigError):
        assert exc.field and FIELD.match(exc.field), f"no field path in {exc!r}"
        assert str(exc).startswith(f"{exc.field}: ")
        assert len(str(exc)) < 2000, "error message is not short"


def _expand(config, tried: Counter) -> None:
    """Expand a parsed config's grid and hash every cell (identities are canonical JSON, which
    has no inf or NaN); only a ConfigError or a DatasetError may escape."""
    if _grid_size(config) > MAX_EXPANDED_CELLS:
        tried["too big to expand"] += 1
        return
    try:
        cells = expand(config)  # binds attacks/models/defenses to each dataset
        ids = [cell.cell_id for cell in cells]
    except Exception as exc:
        tried["errors"] += 1
        _check(exc, expanding=True)
        return
    assert len(set(ids)) == len(ids) == len(cells)
    tried["expanded"] += 1
    tried["cells"] += len(ids)


def _parse(raw, test: str):
    """Parse ``raw``; if it parses, expand its grid and hash its cells (see :func:`_expand`)."""
    tried = TRIED[test]
    tried["configs"] += 1
    try:
        config = parse_config(raw)
    except Exception as exc:
        tried["errors"] += 1
        _check(exc)
        return None
    tried["valid"] += 1
    _expand(config, tried)
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
    _parse(raw, "random structures")


@FUZZ
@given(mutated())
def test_mutated_configs_fail_with_a_config_error(raw):
    _parse(raw, "mutated")


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
    _load_and_check(path, "mutated through YAML")


def _load_and_check(path, test: str) -> None:
    """Load a config file; any failure must be the project's own error naming a field. A
    config that loads is expanded and its cells hashed (see :func:`_expand`)."""
    tried = TRIED[test]
    tried["configs"] += 1
    try:
        config = load_config(path)
    except Exception as exc:
        tried["errors"] += 1
        _check(exc)
        return
    tried["valid"] += 1
    _expand(config, tried)


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
    _load_and_check(path, "random YAML text")


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


# ---------------------------------------------------------------------------------------------
# Plug-in parameters: every registered plug-in, hostile values for its own fields
# ---------------------------------------------------------------------------------------------

#: config section -> registry; datasets only those that load offline (no download when expanded)
REGISTRIES = {"models": MODELS, "attacks": ATTACKS, "defenses": DEFENSES, "datasets": DATASETS}
OFFLINE_DATASETS = ("iris", "wine", "breast_cancer", "digits")

HOSTILE_NUMBERS = [
    math.inf,
    -math.inf,
    math.nan,
    1e308,
    -1e308,
    1e-320,
    0,
    -1,
    2**63,
    10**400,  # a YAML integer literal this long is legal; float() of it overflows
    -(10**30),
]


def _arms(tp) -> tuple:
    """The types an annotation accepts (the arms of a union; a tuple's element type)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return tuple(a for arm in typing.get_args(tp) for a in _arms(arm))
    if origin in (tuple, list):
        return _arms(typing.get_args(tp)[0])
    return (tp,)


def plugin_fields(kind: type) -> list[tuple[str, str, str]]:
    """(section, plug-in name, field) for every init field of every registered plug-in whose
    annotation accepts ``kind`` (``float``, or ``int`` but not also ``str``: class names)."""
    out = []
    for section, registry in REGISTRIES.items():
        for name, cls in registry.items():
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                arms = _arms(hints.get(f.name))
                if f.init and kind in arms and str not in arms:
                    out.append((section, name, f.name))
    return out


def _with_plugin(section: str, entry: dict) -> dict:
    """The valid config with ``section`` holding the one plug-in ``entry``."""
    raw = copy.deepcopy(VALID)
    cls = REGISTRIES[section].get(entry["name"])
    entry = {**getattr(cls, "example_params", {}), **entry}  # required parameters filled in
    if section == "datasets":
        entry = {**entry, "split": {"train": 0.5, "test": 0.3}}
    if section == "attacks":
        raw["rates"] = [0, 0.1]
    raw[section] = [entry]
    return raw


@st.composite
def plugin_params(draw):
    """The valid config with one registered plug-in given one or two hostile parameters."""
    section = draw(st.sampled_from(sorted(REGISTRIES)))
    names = OFFLINE_DATASETS if section == "datasets" else list(REGISTRIES[section])
    name = draw(st.sampled_from(sorted(names)))
    fields = [f.name for f in dataclasses.fields(REGISTRIES[section].get(name)) if f.init]
    entry = {"name": name}
    hostile = st.one_of(
        st.sampled_from(HOSTILE_NUMBERS), scalars, st.lists(st.sampled_from(HOSTILE_NUMBERS))
    )
    for field in draw(st.lists(st.sampled_from(fields), max_size=2, unique=True)) if fields else []:
        entry[field] = draw(hostile)
    return _with_plugin(section, entry)


@FUZZ
@given(plugin_params())
def test_hostile_plugin_parameters_fail_with_a_config_error(raw):
    _parse(raw, "plug-in parameters")


FLOAT_FIELDS = plugin_fields(float)
INT_FIELDS = plugin_fields(int)


def test_the_plugin_field_lists_are_not_empty():
    assert ("models", "logreg", "C") in FLOAT_FIELDS
    assert ("attacks", "feature_noise", "sigma") in FLOAT_FIELDS
    assert ("defenses", "iforest", "n_estimators") in INT_FIELDS
    assert not any(f in ("source", "target") for _, _, f in INT_FIELDS)  # class references


def _rejected(section: str, name: str, field: str, value) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(_with_plugin(section, {"name": name, field: value}))
    _check(info.value)
    assert info.value.field == f"{section}[0].{field}", str(info.value)
    return info.value


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize(("section", "name", "field"), FLOAT_FIELDS)
def test_non_finite_float_parameters_are_config_errors(section, name, field, value):
    """Cell identities are canonical JSON, which has no inf or NaN: such a value used to pass
    validation and crash while hashing the cell (``Out of range float values``)."""
    _rejected(section, name, field, value)


@pytest.mark.parametrize("value", [1e300, -1e300, 10**400], ids=["1e300", "-1e300", "10**400"])
@pytest.mark.parametrize(("section", "name", "field"), FLOAT_FIELDS)
def test_absurd_float_parameters_are_config_errors(section, name, field, value):
    """Every float parameter has a natural range; beyond it every cell would fail later (e.g.
    ``sigma: 1e308`` overflows the noised features). The message states the allowed range."""
    error = _rejected(section, name, field, value)
    assert re.search(r"[\[(].*, .*[\])]|finite", error.message), error.message


@pytest.mark.parametrize("value", [-1, 10**12], ids=["-1", "1e12"])
@pytest.mark.parametrize(("section", "name", "field"), INT_FIELDS)
def test_out_of_range_integer_parameters_are_config_errors(section, name, field, value):
    """Counts (trees, epochs, neighbours, folds, layer sizes...) have a natural lower bound and a
    sane upper one: ``n_estimators: 0`` or ``-1`` used to pass and fail every cell."""
    if field == "hidden":
        value = [value]
    _rejected(section, name, field, value)


@pytest.mark.parametrize(
    ("section", "name", "field", "value", "allowed"),
    [
        ("attacks", "feature_noise", "sigma", 1e308, "(0, 1000]"),
        ("models", "logreg", "C", 1e7, "(0, 1e+06]"),
        ("models", "torch-mlp", "lr", 100.0, "(0, 10]"),
        ("models", "torch-mlp", "epochs", 10**6, "[1, 10000]"),
        ("defenses", "iforest", "n_estimators", 0, "[1, 10000]"),
        ("defenses", "extra_clean", "fraction", 1e4, "[0, 1000]"),
        ("models", "mlp", "alpha", -1.0, "[0, 1000]"),
    ],
)
def test_range_errors_say_the_allowed_range(section, name, field, value, allowed):
    error = _rejected(section, name, field, value)
    assert allowed in error.message, error.message


def test_non_finite_parameter_through_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    raw = _with_plugin("models", {"name": "logreg", "C": 1.0})
    path.write_text(yaml.safe_dump(raw).replace("C: 1.0", "C: .inf"))
    with pytest.raises(ConfigError, match=r"^models\[0\]\.C: expected a finite number, got inf"):
        load_config(path)


def test_the_fuzzing_above_was_not_vacuous():
    """Runs last in this file (pytest keeps file order): each fuzz test that ran tried configs,
    and those built from the valid one were also expanded and hashed. Prints the counts."""
    if not TRIED:
        pytest.skip("no fuzz test ran before this one (run the whole file)")
    for test, tried in sorted(TRIED.items()):
        print(f"\nfuzzed ({test}): {dict(tried)}")
    total = sum(TRIED.values(), Counter())
    assert total["configs"] > 0 and total["errors"] > 0
    for test in ("mutated", "mutated through YAML", "plug-in parameters"):
        if test in TRIED:
            assert TRIED[test]["errors"] > 0, test
            assert TRIED[test]["expanded"] > 0 and TRIED[test]["cells"] > 0, test
