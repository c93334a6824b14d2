"""A config file read and its ``plugins:`` modules imported, before any validation: what the
parser (:mod:`bench.run.config`) starts from, and all that ``poisonbench list --config`` and
``schema --config`` need (so they do not import pandas through the schema)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.core.atomic import special_kind
from bench.core.types import ParamError
from bench.run.errors import ConfigError
from bench.run.plugins import check_module_names, import_plugins


def read_config(path: str | Path) -> Any:
    """The YAML data of a config file, not yet validated (ConfigError when unreadable)."""
    import yaml  # here, not at the top: `poisonbench list` without --config reads no YAML

    path = Path(path)
    special = special_kind(path)
    if special is not None:  # reading it could block forever (a FIFO) or never end (a device)
        raise ConfigError("config", f"{path} is {special}, not a regular file (refused)")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError("config", f"{path} is not UTF-8 text (a binary file?)") from None
    try:
        raw = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError("config", f"{path} nests too deeply to be a config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError("config", f"{path} is not valid YAML{where}: {problem}") from None
    return raw


def parse_plugins(value: Any) -> tuple[str, ...]:
    """``plugins: [module, ...]``: validated and imported (ConfigError naming ``plugins[i]``)."""
    if value is None:
        return ()
    try:
        modules = check_module_names(value, "plugins")
        import_plugins(modules, "plugins")
    except ParamError as exc:
        raise ConfigError(exc.field, exc.message) from exc.__cause__
    return modules
