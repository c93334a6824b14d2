"""A JSON Schema of the config format, generated from the registries, for editors.

``poisonbench schema`` prints it; ``configs/poisonbench.schema.json`` is the shipped copy
(a test checks it is current and that every shipped config validates against it). A config
that starts with ``# yaml-language-server: $schema=poisonbench.schema.json`` gets completion
of every dataset, model, attack and defense name and of each one's parameters, with their types,
defaults and the first line of their docs, in editors that speak the YAML language server.

The schema describes the shape; :func:`bench.run.config.parse_config` stays the authority on
meaning (a class index that must exist in the dataset, a split larger than the data): it checks
what a schema cannot and names the field path in every error.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from attacks import ATTACKS
from bench.core.schema import RECOVERY_METRICS
from bench.core.types import BUILTIN, Registry, init_fields
from bench.data.datasets import DATASETS
from bench.models import MODELS
from bench.run.config import (
    DEFAULT_MAX_SEEDS,
    EXCLUDE_FIELDS,
    MAX_REFERENCE_FITS,
    MAX_SEEDS,
    MAX_TIMEOUT,
    TOP_LEVEL,
)
from defenses import DEFENSES

SCHEMA_ID = "https://poisonbench.invalid/config.schema.json"


def _type_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema of one parameter annotation (an open schema for what it cannot say)."""
    origin = typing.get_origin(tp)
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if origin is typing.Literal:
        return {"enum": list(typing.get_args(tp))}
    if origin in (typing.Union, types.UnionType):
        options = [_type_schema(a) for a in typing.get_args(tp)]
        if any(o == {} for o in options):
            return {}
        return {"anyOf": options}
    if tp is type(None):
        return {"type": "null"}
    if origin in (tuple, list) or tp in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item = _type_schema(args[0]) if len(set(args)) == 1 else {}
        return {"type": "array", "items": item} if item else {"type": "array"}
    if origin is dict or tp is dict:
        return {"type": "object"}
    return {}


def _names(registry: Registry, builtin_only: bool) -> list[str]:
    return [n for n in registry if not builtin_only or registry.origin(n) == BUILTIN]


def _plugin_schemas(
    registry: Registry, builtin_only: bool, extra: dict[str, Any] | None = None
) -> list[dict]:
    """One object schema per registered plug-in: ``name`` fixed, each parameter typed."""
    out = []
    for name in _names(registry, builtin_only):
        cls = registry.get(name)
        hints = typing.get_type_hints(cls)
        props: dict[str, Any] = {"name": {"const": name}}
        fields = init_fields(cls) if dataclasses.is_dataclass(cls) else []
        for f in fields:
            schema = dict(_type_schema(hints.get(f.name, Any)))
            if f.default is not dataclasses.MISSING:
                try:
                    json.dumps(f.default)
                    schema["default"] = (
                        list(f.default) if isinstance(f.default, tuple) else f.default
                    )
                except TypeError:
                    pass
            props[f.name] = schema
        props.update(extra or {})
        doc = (cls.__doc__ or "").strip().splitlines()
        entry = {
            "type": "object",
            "properties": props,
            "required": ["name"],
            "additionalProperties": False,
        }
        if doc:
            entry["description"] = doc[0]
        out.append(entry)
    return out


def _entry(
    registry: Registry, builtin_only: bool, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A plug-in entry: a bare name, or a mapping with ``name`` and parameters."""
    names = _names(registry, builtin_only)
    return {
        "anyOf": [
            {"enum": names, "description": f"one of: {', '.join(names)}"},
            *_plugin_schemas(registry, builtin_only, extra),
        ]
    }


def _size() -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "integer", "minimum": 1, "description": "a row count"},
            {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
             "description": "a fraction of the dataset"},
        ]
    }  # fmt: skip


def config_schema(builtin_only: bool = False) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a poisonbench config, from the current registries.

    builtin_only: only the plug-ins that ship with poisonbench (the shipped file); otherwise
    installed entry points too, as ``poisonbench schema`` prints it."""
    split = {
        "type": "object",
        "properties": {
            "train": _size(),
            "test": _size(),
            "pool": {"anyOf": [_size(), {"const": "rest"}]},
        },
        "additionalProperties": False,
    }
    dataset = _entry(DATASETS, builtin_only, {"split": split})
    tune = {
        "description": "tune the step on clean-pool validation rows: {param: [values], budget: b}"
        " or auto",
        "anyOf": [{"const": "auto"}, {"type": "object"}],
    }
    defense = _entry(DEFENSES, builtin_only, {"tune": tune})
    token = {"anyOf": [{"type": "string"}, {"type": "object"}]}
    tokens = {"anyOf": [token, {"type": "array", "items": token}]}
    numbers = {"anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]}
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "poisonbench config",
        "type": "object",
        "required": ["datasets", "models", "attacks", "rates", "defenses"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]{1,64}$"},
            "description": {"type": "string"},
            "datasets": {"type": "array", "minItems": 1, "items": dataset},
            "models": {"type": "array", "minItems": 1, "items": _entry(MODELS, builtin_only)},
            "attacks": {"type": "array", "items": _entry(ATTACKS, builtin_only)},
            "rates": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "defenses": {
                "type": "array",
                "minItems": 1,
                "items": {"anyOf": [defense, {"type": "array", "minItems": 1, "items": defense}]},
            },
            "seeds": {
                "anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": MAX_SEEDS},
                    {
                        "type": "array",
                        "uniqueItems": True,
                        "items": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
                    },
                    {
                        "type": "object",
                        "description": "add seeds in rounds until every headline interval is at "
                        "most `precision` × n_train wide",
                        "required": ["precision"],
                        "additionalProperties": False,
                        "properties": {
                            "min": {"type": "integer", "minimum": 2, "default": 3},
                            "max": {"type": "integer", "default": DEFAULT_MAX_SEEDS},
                            "precision": {"type": "number", "exclusiveMinimum": 0},
                        },
                    },
                ]
            },
            "recovery": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "fractions": {
                        "type": "array",
                        "items": {"type": "number", "minimum": 0, "maximum": 1000},
                    },
                    "metric": {"enum": list(RECOVERY_METRICS)},
                    "tolerance": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                    "bootstrap": {"type": "integer", "minimum": 0, "maximum": 100_000},
                    "early_stop": {"type": "boolean"},
                    "reference_fits": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_REFERENCE_FITS,
                    },
                },
            },
            "data_dir": {"type": "string"},
            "timeout": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_TIMEOUT,
                "description": "seconds per cell (0 or absent: no limit)",
            },
            "plugins": {"type": "array", "items": {"type": "string"}},
            "exclude": {
                "type": "array",
                "items": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": False,
                    "properties": {
                        key: (numbers if key in ("seed", "rate") else tokens)
                        for key in EXCLUDE_FIELDS
                    },
                },
            },
        },
    }
    missing = set(TOP_LEVEL) - set(schema["properties"])
    assert not missing, f"config keys without a schema: {sorted(missing)}"
    return schema


def schema_text(builtin_only: bool = False) -> str:
    """:func:`config_schema` as JSON text (2-space indent), as the shipped file holds it."""
    return json.dumps(config_schema(builtin_only), indent=2, ensure_ascii=False) + "\n"


#: the shipped copy, beside the configs (``# yaml-language-server: $schema=...``)
SHIPPED = "configs/poisonbench.schema.json"
