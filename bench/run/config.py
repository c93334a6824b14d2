"""The YAML config: parsed, validated and typed. Every error names the field path.

Example (see ``configs/quick.yaml``)::

    name: quick
    datasets: [{name: digits, split: {train: 300, test: 0.25}}]
    models: [logreg]
    attacks: [{name: label_flip, mode: random}]
    rates: [0, 0.1, 0.2]
    defenses: [none, iforest, [iforest, label_smoothing]]
    seeds: 3
    recovery: {fractions: [0, 0.5, 1], metric: accuracy, tolerance: 0.005}
    plugins: [mypkg.poisonbench_plugins]   # optional: modules that register plug-ins

A config's ``plugins:`` modules are imported when it is parsed (before any name is looked up),
so a config that lists modules runs their code: the trust model of any Python config system.
    exclude: [{model: logreg, defense: glc}]   # cells the grid leaves out (see ExcludeRule)
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attacks import ATTACKS
from bench.core.schema import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_FRACTIONS,
    DEFAULT_METRIC,
    DEFAULT_TOLERANCE,
    RECOVERY_METRICS,
    plugin_id,
)
from bench.core.types import ParamError, Plugin, Registry, short_repr
from bench.data.datasets import DATASETS
from bench.models import MODELS
from bench.run.config_file import parse_plugins, read_config
from bench.run.errors import ConfigError
from bench.run.tuning import parse_tune
from defenses import DEFENSES

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_WORD = re.compile(r"[A-Za-z_][\w-]{0,63}")


@dataclass(frozen=True)
class PluginSpec:
    """A registered plug-in's name and its full parameters (defaults filled in)."""

    name: str
    params: dict[str, Any]
    #: defense steps only: the canonical ``tune`` spec (``bench.run.tuning``), None untuned
    tune: dict[str, Any] | None = None

    def canonical(self) -> dict[str, Any]:
        if self.tune is not None:  # only tuned steps carry it: untuned ids stay as they were
            return {"name": self.name, "params": self.params, "tune": self.tune}
        return {"name": self.name, "params": self.params}


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset plug-in's name and parameters (defaults filled in) and its split sizes."""

    name: str
    train: int | float = 0.5
    test: int | float = 0.25
    pool: int | float | str = "rest"
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    def canonical(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "split": {"train": self.train, "test": self.test, "pool": self.pool},
        }
        if self.params:  # the built-ins take none; left out so their cell ids stay as they were
            out["params"] = self.params
        return out


@dataclass(frozen=True)
class RecoverySpec:
    """How the extra-clean-data headline is measured."""

    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    metric: str = DEFAULT_METRIC
    tolerance: float = DEFAULT_TOLERANCE
    bootstrap: int = DEFAULT_BOOTSTRAP
    early_stop: bool = False
    #: fits the clean reference averages per seed: its own train set and ``reference_fits − 1``
    #: more of the same size and class counts, drawn from the seed's train and pool rows
    #: (never its test rows); 1: the clean model alone. See :mod:`bench.analysis.recovery`.
    reference_fits: int = 1


@dataclass(frozen=True)
class PrecisionSpec:
    """Seeds added in rounds until the headline answers (``seeds: {min, max, precision}``).

    target: the width the "extra clean data needed" interval must reach, in × n_train (0.25:
    the interval spans at most a quarter of the training set); max_seeds: the cap on seeds per
    group. A group whose interval is still wider (or unbounded) after a round gets more seeds;
    the others keep theirs. See :mod:`bench.analysis.precision` for the stopping rule.
    """

    target: float
    max_seeds: int


@dataclass(frozen=True)
class ExcludeRule:
    """Cells the grid leaves out: those matching *every* key the rule gives.

    Each key holds the tokens it matches (None: the key is not part of the rule). A cell
    offers per key the tokens that identify it: a dataset its name; a model or an attack its
    name and its id (``schema.plugin_id``: the name and every parameter), so a rule may name a
    plug-in (every configuration of it) or give one configuration in full; a defense the names
    and ids of its steps (a rule naming ``glc`` drops every pipeline with a ``glc`` step, one
    giving ``{name: extra_clean, fraction: 3}`` every pipeline with that step); a seed and a
    rate their values. Rate-0 cells run as attack ``none``: a rule naming another attack never
    drops them.
    """

    dataset: frozenset[str] | None = None
    model: frozenset[str] | None = None
    attack: frozenset[str] | None = None
    defense: frozenset[str] | None = None
    seed: frozenset[int] | None = None
    rate: frozenset[float] | None = None

    def matches(self, **tokens: Iterable[Any]) -> bool:
        """Whether cells offering these ``tokens`` per key match: for every key of the rule,
        one of its tokens is offered. A key the rule gives but ``tokens`` lacks does not match,
        so a partial description (a dataset and a model) matches only the rules about it."""
        for key in EXCLUDE_FIELDS:
            wanted = getattr(self, key)
            if wanted is None:
                continue
            if key not in tokens or not wanted.intersection(tokens[key]):
                return False
        return True


#: the keys of an exclude rule: registered names (or, for models and attacks, full configurations)
EXCLUDE_KEYS = {"dataset": DATASETS, "model": MODELS, "attack": ATTACKS, "defense": DEFENSES}
EXCLUDE_FIELDS = (*EXCLUDE_KEYS, "seed", "rate")


def plugin_tokens(specs: Iterable[PluginSpec]) -> set[str]:
    """The names and ids of plug-in configurations (what an exclude rule may name)."""
    return {token for s in specs for token in (s.name, plugin_id(s.name, s.params))}


def cell_tokens(
    dataset: str,
    model: PluginSpec,
    attack: PluginSpec,
    defense: Iterable[PluginSpec],
    seed: int,
    rate: float,
) -> dict[str, set[Any]]:
    """What identifies a cell to an :class:`ExcludeRule` (see there)."""
    return {
        "dataset": {dataset},
        "model": plugin_tokens([model]),
        "attack": plugin_tokens([attack]),
        "defense": plugin_tokens(defense),
        "seed": {seed},
        "rate": {float(rate)},
    }


@dataclass(frozen=True)
class Config:
    """A validated config: what a run computes, as :func:`parse_config` returns it.

    Every plug-in entry is a :class:`PluginSpec` with its full parameters (defaults filled in),
    so two configs that mean the same grid compare equal and give the same cell ids. The grid
    is the product of ``datasets`` × ``models`` × ``attacks`` × ``rates`` × ``defenses`` (each
    a list of steps) × ``seeds``, less what an ``exclude`` rule drops
    (:func:`bench.run.grid.iter_specs`); ``recovery`` sets the extra-clean fractions and the
    headline's metric and tolerance. ``raw`` is the YAML data as read (saved as the run's
    ``config.yaml``); ``name`` names the run directory, ``results/runs/<name>``.
    """

    name: str
    datasets: tuple[DatasetSpec, ...]
    models: tuple[PluginSpec, ...]
    attacks: tuple[PluginSpec, ...]
    rates: tuple[float, ...]
    defenses: tuple[tuple[PluginSpec, ...], ...]
    #: the seeds every cell runs (with ``precision``, the first round's: ``seeds.min``)
    seeds: tuple[int, ...]
    recovery: RecoverySpec = field(default_factory=RecoverySpec)
    #: seeds added in rounds to the groups whose headline interval is still too wide (or None)
    precision: PrecisionSpec | None = None
    description: str = ""
    data_dir: str | None = None
    #: modules imported for their plug-ins (``plugins:``); not part of any cell's identity
    plugins: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    exclude: tuple[ExcludeRule, ...] = ()
    #: a cell's time limit in seconds (``timeout:``; None: none); not part of any identity
    timeout: float | None = None

    def excluded(self, **tokens: Iterable[Any]) -> bool:
        """Whether an ``exclude`` rule drops the cells offering ``tokens`` (see
        :meth:`ExcludeRule.matches` and :func:`cell_tokens`)."""
        return any(rule.matches(**tokens) for rule in self.exclude)


TOP_LEVEL = {
    "name",
    "description",
    "datasets",
    "models",
    "attacks",
    "rates",
    "defenses",
    "seeds",
    "recovery",
    "data_dir",
    "plugins",
    "exclude",
    "timeout",
}

#: the largest ``timeout:`` accepted, seconds (a week: beyond it, no limit is meant)
MAX_TIMEOUT = 7 * 24 * 3600.0


def parse_timeout(value: Any, path: str = "timeout") -> float | None:
    """A per-cell time limit in seconds, in (0, :data:`MAX_TIMEOUT`]; None or 0: no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(path, f"expected seconds (a number > 0, or 0 for none), got {_short(value)}")
    if value == 0:
        return None
    if not 0 < value <= MAX_TIMEOUT:
        raise _fail(path, f"expected seconds in (0, {MAX_TIMEOUT:g}] (0: none), got {value!r}")
    return float(value)


def _fail(path: str, message: str) -> ConfigError:
    return ConfigError(path or "config", message)


_short = short_repr  # errors show a readable cut of any value


#: how deep a config may nest lists and mappings (real ones need 4 or 5 levels)
MAX_DEPTH = 16
#: how many values (scalars, lists, mappings, counted with YAML aliases expanded) it may hold
MAX_ENTRIES = 100_000


def _check_depth(raw: Any) -> None:
    """Raise ConfigError naming the first entry nested deeper than :data:`MAX_DEPTH`, or
    when the config holds more than :data:`MAX_ENTRIES` values."""
    stack: list[tuple[Any, str, int]] = [(raw, "", 0)]
    seen = 0
    while stack:
        value, path, depth = stack.pop()
        seen += 1
        if seen > MAX_ENTRIES:  # YAML aliases can expand a tiny file exponentially
            raise _fail(path, f"the config holds more than {MAX_ENTRIES} entries")
        if depth > MAX_DEPTH:
            raise _fail(path, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((item, _join(path, key), depth + 1) for key, item in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def _join(path: str, key: Any) -> str:
    """``path.key``; a key that is not a plain word is quoted (``rates.'a b'``)."""
    part = key if isinstance(key, str) and _WORD.fullmatch(key) else _short(key)
    return f"{path}.{part}" if path else part


def _mapping(value: Any, path: str, allowed: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, f"expected a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise _fail(path, f"keys must be strings, got {_short(key)}")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise _fail(
                _join(path, unknown[0]),
                f"unknown key (valid: {', '.join(sorted(allowed))})",
            )
    return value


def _list(value: Any, path: str, *, allow_scalar: bool = False) -> list[Any]:
    if allow_scalar and not isinstance(value, list | dict):
        return [value]
    if not isinstance(value, list):
        raise _fail(path, f"expected a list, got {type(value).__name__}")
    if not value:
        raise _fail(path, "must not be empty")
    return value


def _plugin(entry: Any, registry: Registry, path: str) -> PluginSpec:
    """``name`` or ``{name: ..., param: value, ...}`` → a validated PluginSpec."""
    if isinstance(entry, str):
        name, params = entry, {}
    elif isinstance(entry, dict):
        entry = _mapping(entry, path)
        if "name" not in entry:
            raise _fail(f"{path}.name", f"missing (valid: {', '.join(registry)})")
        name = entry["name"]
        params = {k: v for k, v in entry.items() if k != "name"}
        if "params" in params and isinstance(params["params"], dict) and len(params) == 1:
            params = params["params"]
    else:
        raise _fail(path, f"expected a name or a mapping with 'name', got {_short(entry)}")
    if not isinstance(name, str):
        raise _fail(f"{path}.name", f"expected a string (valid: {', '.join(registry)})")
    try:
        cls = registry.get(name, f"{path}.name" if isinstance(entry, dict) else path)
    except ParamError as exc:
        raise _fail(exc.field, exc.message) from None
    try:
        instance: Plugin = cls.from_params(params, path)
    except ParamError as exc:
        raise _fail(exc.field, exc.message) from None
    except TypeError as exc:  # e.g. unhashable values inside a frozen dataclass
        raise _fail(path, str(exc)) from None
    return PluginSpec(name=name, params=instance.params())


def _defense_step(entry: Any, path: str) -> PluginSpec:
    """A defense step: a plug-in entry, plus an optional ``tune:`` (see
    :mod:`bench.run.tuning`): ``{name: iforest, tune: {contamination: [0.05, 0.1]}}``."""
    if not (isinstance(entry, dict) and "tune" in entry):
        return _plugin(entry, DEFENSES, path)
    spec = _plugin({k: v for k, v in entry.items() if k != "tune"}, DEFENSES, path)
    try:
        tune = parse_tune(entry["tune"], DEFENSES.get(spec.name), spec.params, f"{path}.tune")
    except ParamError as exc:
        raise _fail(exc.field, exc.message) from None
    return PluginSpec(name=spec.name, params=spec.params, tune=tune)


def _size(value: Any, path: str, allow_rest: bool = False) -> int | float | str:
    if allow_rest and value == "rest":
        return "rest"
    if isinstance(value, bool) or not isinstance(value, int | float):
        extra = ", or 'rest'" if allow_rest else ""
        raise _fail(
            path,
            f"expected a row count (int >= 1) or a fraction in (0, 1]{extra}, got {_short(value)}",
        )
    if isinstance(value, float):
        if math.isnan(value) or not 0 < value <= 1:
            if value.is_integer() and value >= 1:
                return int(value)
            raise _fail(path, f"fraction {value} is outside (0, 1]")
        if value == 1.0:
            return 1.0
        return value
    if value < 1:
        raise _fail(path, f"row count {value} must be >= 1")
    return int(value)


def _dataset(entry: Any, path: str) -> DatasetSpec:
    """``name`` or ``{name: ..., split: {...}, param: value, ...}`` → a validated DatasetSpec."""
    if isinstance(entry, str):
        entry = {"name": entry}
    entry = _mapping(entry, path)
    name = entry.get("name")
    if not isinstance(name, str):
        raise _fail(
            f"{path}.name", f"unknown dataset {_short(name)} (valid: {', '.join(DATASETS)})"
        )
    try:
        DATASETS.get(name, f"{path}.name")  # an installed entry point loads here
    except ParamError as exc:
        raise _fail(exc.field, exc.message) from None
    params = {k: v for k, v in entry.items() if k not in ("name", "split")}
    source = _plugin({"name": name, **params}, DATASETS, path)
    split = _mapping(entry.get("split", {}) or {}, f"{path}.split", {"train", "test", "pool"})
    kwargs: dict[str, Any] = {}
    for key in ("train", "test", "pool"):
        if key in split:
            kwargs[key] = _size(split[key], f"{path}.split.{key}", allow_rest=key == "pool")
    return DatasetSpec(name=name, params=source.params, **kwargs)


def _rate(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise _fail(path, f"expected a fraction in [0, 1], got {_short(value)}")
    if not 0 <= value <= 1:
        raise _fail(path, f"{value} is outside [0, 1] (a rate is the fraction of eligible rows)")
    return float(value)


#: the most seeds a config may ask for, as a count or as a list
MAX_SEEDS = 10_000


#: the seeds-per-group cap a precision request gets when it names none
DEFAULT_MAX_SEEDS = 20


def _seed_plan(value: Any, path: str) -> tuple[tuple[int, ...], PrecisionSpec | None]:
    """``seeds``: a count, a list, or ``{min: 3, max: 20, precision: 0.25}`` (seeds 0..min-1
    first, then rounds of more seeds up to ``max`` for the groups still wider than
    ``precision``)."""
    if not isinstance(value, dict):
        return _seeds(value, path), None
    value = _mapping(value, path, {"min", "max", "precision"})
    if "precision" not in value:
        raise _fail(
            f"{path}.precision",
            "missing: a seeds mapping asks for a precision (the target width of the headline "
            "interval, × n_train, e.g. 0.25); give a count or a list for fixed seeds",
        )
    low = value.get("min", 3)
    high = value.get("max", DEFAULT_MAX_SEEDS)
    for key, number in (("min", low), ("max", high)):
        if isinstance(number, bool) or not isinstance(number, int):
            raise _fail(f"{path}.{key}", f"expected a seed count, got {_short(number)}")
    if not 2 <= low <= MAX_SEEDS:
        raise _fail(f"{path}.min", f"must be in 2..{MAX_SEEDS} (an interval needs 2), got {low}")
    if not low <= high <= MAX_SEEDS:
        raise _fail(f"{path}.max", f"must be in {low}..{MAX_SEEDS} (at least min), got {high}")
    return tuple(range(low)), PrecisionSpec(
        target=_precision(value["precision"], f"{path}.precision"), max_seeds=high
    )


def _precision(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(
            path, f"expected a positive width in × n_train (e.g. 0.25), got {_short(value)}"
        )
    if value <= 0:
        raise _fail(path, f"must be > 0 (the target width of the interval, × n_train), got {value}")
    return float(value)


def with_precision(config: Config, target: float | None, max_seeds: int | None = None) -> Config:
    """``config`` with a precision request set or changed (the CLI's ``--precision`` and
    ``--max-seeds``); seeds as configured become the first round."""
    if target is None and max_seeds is None:
        return config
    current = config.precision
    target = _precision(
        target if target is not None else getattr(current, "target", None), "precision"
    )
    cap = max_seeds if max_seeds is not None else getattr(current, "max_seeds", DEFAULT_MAX_SEEDS)
    if not len(config.seeds) <= cap <= MAX_SEEDS:
        raise _fail(
            "seeds.max",
            f"must be in {len(config.seeds)}..{MAX_SEEDS} (at least the seeds run first), got {cap}",
        )
    return dataclasses.replace(config, precision=PrecisionSpec(target=target, max_seeds=cap))


def _seeds(value: Any, path: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_SEEDS:
            raise _fail(path, f"a seed count must be in 1..{MAX_SEEDS}, got {value}")
        return tuple(range(value))
    items = _list(value, path)
    if len(items) > MAX_SEEDS:
        raise _fail(path, f"a list of {len(items)} seeds; at most {MAX_SEEDS} are allowed")
    seeds = []
    for i, s in enumerate(items):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0 or s >= 2**32:
            raise _fail(f"{path}[{i}]", f"expected a seed in 0..2**32-1, got {_short(s)}")
        seeds.append(int(s))
    if len(set(seeds)) != len(seeds):
        raise _fail(path, "seeds must be distinct")
    return tuple(seeds)


def _recovery(value: Any, path: str) -> RecoverySpec:
    allowed = {"fractions", "metric", "tolerance", "bootstrap", "early_stop", "reference_fits"}
    value = _mapping(value or {}, path, allowed)
    kwargs: dict[str, Any] = {}
    if "fractions" in value:
        fractions = []
        for i, f in enumerate(_list(value["fractions"], f"{path}.fractions")):
            if (
                isinstance(f, bool)
                or not isinstance(f, int | float)
                or math.isnan(f)
                or f < 0
                or f > 1000
            ):
                raise _fail(
                    f"{path}.fractions[{i}]",
                    f"expected a multiple of n_train in [0, 1000], got {_short(f)}",
                )
            fractions.append(float(f))
        fractions = sorted(set(fractions))
        if fractions[0] != 0:
            fractions.insert(0, 0.0)  # f = 0 is the defended model itself: always measured
        kwargs["fractions"] = tuple(fractions)
    if "metric" in value:
        if value["metric"] not in RECOVERY_METRICS:
            raise _fail(
                f"{path}.metric",
                f"{_short(value['metric'])} is not one of {', '.join(RECOVERY_METRICS)}",
            )
        kwargs["metric"] = value["metric"]
    if "tolerance" in value:
        tol = value["tolerance"]
        if (
            isinstance(tol, bool)
            or not isinstance(tol, int | float)
            or math.isnan(tol)
            or not 0 <= tol < 1
        ):
            raise _fail(
                f"{path}.tolerance",
                f"expected a fraction in [0, 1) (0.005 = 0.5 points), got {_short(tol)}",
            )
        kwargs["tolerance"] = float(tol)
    if "bootstrap" in value:
        b = value["bootstrap"]
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= 100_000:
            raise _fail(
                f"{path}.bootstrap", f"expected a resample count in 0..100000, got {_short(b)}"
            )
        kwargs["bootstrap"] = b
    if "early_stop" in value:
        if not isinstance(value["early_stop"], bool):
            raise _fail(
                f"{path}.early_stop", f"expected true or false, got {_short(value['early_stop'])}"
            )
        kwargs["early_stop"] = value["early_stop"]
    if "reference_fits" in value:
        k = value["reference_fits"]
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_REFERENCE_FITS:
            raise _fail(
                f"{path}.reference_fits",
                f"expected a fit count in 1..{MAX_REFERENCE_FITS} (1: the clean model alone), "
                f"got {_short(k)}",
            )
        kwargs["reference_fits"] = k
    return RecoverySpec(**kwargs)


#: the most clean-reference fits per seed a config may ask for
MAX_REFERENCE_FITS = 64


def _exclude(value: Any, path: str) -> tuple[ExcludeRule, ...]:
    """``exclude: [{dataset: digits, model: cnn}, {model: logreg, defense: [glc, dp_sgd]},
    {attack: {name: label_flip, mode: random, sources: 5}, rate: 0.5}]``."""
    if value is None or value == []:
        return ()
    rules = []
    for i, entry in enumerate(_list(value, path)):
        where = f"{path}[{i}]"
        entry = _mapping(entry, where, set(EXCLUDE_FIELDS))
        if not entry:
            keys = ", ".join(EXCLUDE_FIELDS)
            raise _fail(where, f"an empty rule would drop every cell (keys: {keys})")
        kwargs: dict[str, Any] = {}
        for key, values in entry.items():
            one = isinstance(values, dict)  # one configuration given in full
            items = [values] if one else _list(values, f"{where}.{key}", allow_scalar=True)
            at = [
                f"{where}.{key}" if len(items) == 1 else f"{where}.{key}[{j}]"
                for j in range(len(items))
            ]
            if key == "seed":
                for j, s in enumerate(items):
                    if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                        raise _fail(at[j], f"expected a seed >= 0, got {_short(s)}")
                kwargs[key] = frozenset(int(s) for s in items)
            elif key == "rate":
                kwargs[key] = frozenset(_rate(r, at[j]) for j, r in enumerate(items))
            else:
                kwargs[key] = frozenset(
                    _exclude_token(key, item, at[j]) for j, item in enumerate(items)
                )
        rules.append(ExcludeRule(**kwargs))
    return tuple(rules)


def _exclude_token(key: str, item: Any, path: str) -> str:
    """A registered name, or for models, attacks and defense steps a full configuration (its
    id)."""
    registry = EXCLUDE_KEYS[key]
    if isinstance(item, dict) and key != "dataset":
        spec = _plugin(item, registry, path)
        return plugin_id(spec.name, spec.params)
    if not isinstance(item, str) or item not in registry:
        full = " or a configuration ({name: ..., param: ...})" if key != "dataset" else ""
        raise _fail(path, f"unknown {key} {_short(item)} (valid: {', '.join(registry)}{full})")
    return item


def parse_config(raw: Any, default_name: str = "run") -> Config:
    """Validate a config mapping (as loaded from YAML) into a :class:`Config`."""
    raw = _mapping(raw, "", TOP_LEVEL) if raw is not None else {}
    _check_depth(raw)  # before anything recurses into it (YAML aliases can even make cycles)
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _fail(
            "name", f"expected letters, digits, '_', '-' or '.' (max 64), got {_short(name)}"
        )
    for key in ("datasets", "models", "attacks", "rates", "defenses"):
        if key not in raw:
            raise _fail(key, "missing (required keys: datasets, models, attacks, rates, defenses)")
    plugins = parse_plugins(raw.get("plugins", []))  # first: what they register, the rest may name
    datasets = tuple(
        _dataset(e, f"datasets[{i}]") for i, e in enumerate(_list(raw["datasets"], "datasets"))
    )
    models = tuple(
        _plugin(e, MODELS, f"models[{i}]") for i, e in enumerate(_list(raw["models"], "models"))
    )
    attacks = tuple(
        _plugin(e, ATTACKS, f"attacks[{i}]") for i, e in enumerate(_list(raw["attacks"], "attacks"))
    )
    rates = tuple(
        sorted({_rate(r, f"rates[{i}]") for i, r in enumerate(_list(raw["rates"], "rates"))})
    )
    defenses = []
    for i, entry in enumerate(_list(raw["defenses"], "defenses")):
        steps = entry if isinstance(entry, list) else [entry]
        if not steps:
            raise _fail(f"defenses[{i}]", "an empty list of steps (use 'none')")
        defenses.append(
            tuple(
                _defense_step(
                    s, f"defenses[{i}][{j}]" if isinstance(entry, list) else f"defenses[{i}]"
                )
                for j, s in enumerate(steps)
            )
        )
    data_dir = raw.get("data_dir")
    if data_dir is not None and not isinstance(data_dir, str):
        raise _fail("data_dir", f"expected a path string, got {_short(data_dir)}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _fail("description", f"expected a string, got {_short(description)}")
    seeds, precision = _seed_plan(raw.get("seeds", 3), "seeds")
    return Config(
        name=name,
        description=description,
        datasets=datasets,
        models=models,
        attacks=attacks,
        rates=rates,
        defenses=tuple(defenses),
        seeds=seeds,
        precision=precision,
        recovery=_recovery(raw.get("recovery"), "recovery"),
        data_dir=data_dir,
        plugins=plugins,
        raw=raw,
        exclude=_exclude(raw.get("exclude"), "exclude"),
        timeout=parse_timeout(raw.get("timeout")),
    )


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file (``yaml.safe_load``: configs are data)."""
    return parse_config(read_config(path), default_name=Path(path).stem)
