"""``poisonbench list``: every registered plug-in with its parameters and origin; light (the
registries and the config file's ``plugins:``, no pandas)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from attacks import ATTACKS
from bench.core.types import init_fields
from bench.data.datasets import DATASETS
from bench.interfaces.stops import stop_handlers
from bench.models import MODELS
from bench.run.config_file import parse_plugins, read_config
from defenses import DEFENSES


def _describe(cls: type, origin: str = "builtin") -> list[str]:
    doc = (cls.__doc__ or "").strip().splitlines()
    lines = [f"  {cls.name:<18} {doc[0] if doc else ''} [{origin}]"]  # type: ignore[attr-defined]
    hints = typing.get_type_hints(cls)
    for f in init_fields(cls) if dataclasses.is_dataclass(cls) else []:
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        hint = hints.get(f.name, "")
        # A plain class prints as "<class 'float'>": show its name, like the annotation.
        kind = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
        lines.append(f"      {f.name}: {kind} = {default!r}")
    return lines


def list_plugins(args: argparse.Namespace) -> int:
    """``poisonbench list``: 0, or 2 when an installed entry point cannot be loaded."""
    if args.config:
        with stop_handlers():  # a plug-in's own KeyboardInterrupt is its error, as in `run`
            import_config_plugins(args.config)
    broken = []
    for title, registry in (
        ("datasets", DATASETS),
        ("models", MODELS),
        ("attacks", ATTACKS),
        ("defenses", DEFENSES),
    ):
        print(f"{title}:")
        for name, cls in registry.items():
            print("\n".join(_describe(cls, registry.origin(name))))
        broken += registry.entry_point_errors.values()
    for error in broken:  # the others are listed; these are named, one line each
        print(f"error: {error}", file=sys.stderr)
    return 2 if broken else 0


def import_config_plugins(path: str) -> None:
    """Import the ``plugins:`` modules of the config at ``path`` (nothing else is checked)."""
    raw = read_config(path)
    if isinstance(raw, dict):
        parse_plugins(raw.get("plugins"))
