"""Out-of-tree plug-ins: the modules a config's ``plugins:`` list imports, and whether the
processes that run cells can see every plug-in a config names.

A plug-in reaches the registries in one of three ways:

- **entry points** of an installed distribution (groups ``poisonbench.attacks``,
  ``poisonbench.defenses``, ``poisonbench.models``, ``poisonbench.datasets``): loaded lazily by
  :class:`bench.core.types.Registry` in every process, workers included;
- a config's ``plugins: [module, ...]``: modules whose import registers plug-ins with the
  decorators. They are imported when the config is parsed, and again by every worker process
  before it runs a task (:func:`import_plugins` is what both call);
- code that registers directly (a notebook, a script): visible in that process only, so it runs
  in-process (``jobs=1``); a run that starts worker processes refuses it before any cell runs
  (:func:`check_workers_see`).

The module list is not part of any cell's identity: a plug-in is identified by its registered
name and parameters, like a built-in, wherever its code comes from. Reordering ``plugins:``,
renaming the module or moving the plug-in into an installed package keeps the stored cells.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from attacks import ATTACKS
from bench.core.types import BUILTIN, ParamError, Registry, plugin_escape, registering_from
from bench.data.datasets import DATASETS
from bench.models import MODELS
from bench.run.errors import ConfigError
from defenses import DEFENSES

#: a dotted module name (``pkg.module``); a config names modules, never files or ``mod:attr``
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class PluginImportError(ParamError):
    """A module of a config's ``plugins:`` list cannot be imported; ``field`` is
    ``plugins[i]``."""


def check_module_names(value: Any, field: str = "plugins") -> tuple[str, ...]:
    """The ``plugins:`` value as a tuple of module names (order kept, repeats dropped).

    Raises PluginImportError naming ``plugins`` or ``plugins[i]`` when it is not a list of
    dotted module names.
    """
    if not isinstance(value, list | tuple):
        raise PluginImportError(
            field, f"expected a list of module names (e.g. [mypkg.plugins]), got {value!r:.80}"
        )
    names: list[str] = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or not _MODULE.fullmatch(name):
            raise PluginImportError(
                f"{field}[{i}]",
                f"expected a module name like package.module (no file paths, no ':'), "
                f"got {name!r:.80}",
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def _path_hint() -> str:
    here = os.getcwd()
    if any(os.path.abspath(entry or ".") == here for entry in sys.path):
        return "is it installed, or under the current directory?"
    return (
        "is it installed? The current directory is not on sys.path here: run "
        "`python -m bench.interfaces.cli ...`, set PYTHONPATH=., or pip install your package"
    )


def import_plugins(modules: Sequence[str], field: str = "plugins") -> None:
    """Import each module of a ``plugins:`` list; what they register is recorded as coming from
    ``plugins: <module>``. Importing a module twice does nothing (Python caches it).

    Raises PluginImportError naming ``plugins[i]`` when a module cannot be imported (missing,
    or its own code fails: a syntax error, a missing dependency, a name registered twice).
    """
    for i, module in enumerate(modules):
        try:
            with registering_from(f"plugins: {module}"):
                importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (module == exc.name or module.startswith(f"{exc.name}.")):
                raise PluginImportError(
                    f"{field}[{i}]", f"no module named {exc.name!r} ({_path_hint()})"
                ) from None
            raise PluginImportError(
                f"{field}[{i}]", f"importing {module!r} failed: ModuleNotFoundError: {exc}"
            ) from exc
        except Exception as exc:  # the module's own code: say whose and why, keep the cause
            raise PluginImportError(
                f"{field}[{i}]", f"importing {module!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        except BaseException as exc:  # sys.exit() or another BaseException on import
            why = plugin_escape(exc)
            if why is None:  # a stop signal
                raise
            raise PluginImportError(f"{field}[{i}]", f"plugin {module!r} {why} on import") from None


def _registries() -> dict[str, Registry]:
    return {"dataset": DATASETS, "model": MODELS, "attack": ATTACKS, "defense": DEFENSES}


def used_plugins(config: Any) -> Iterator[tuple[str, str, str]]:
    """``(field, kind, name)`` of every plug-in a config names, in config order."""
    for i, ds in enumerate(config.datasets):
        yield f"datasets[{i}]", "dataset", ds.name
    for i, m in enumerate(config.models):
        yield f"models[{i}]", "model", m.name
    for i, a in enumerate(config.attacks):
        yield f"attacks[{i}]", "attack", a.name
    for i, steps in enumerate(config.defenses):
        for j, s in enumerate(steps):
            yield f"defenses[{i}][{j}]" if len(steps) > 1 else f"defenses[{i}]", "defense", s.name


def _listed(module: str, plugins: Sequence[str]) -> bool:
    return any(module == m or module.startswith(f"{m}.") for m in plugins)


def _main_script_reloads(local: bool) -> bool:
    """Whether local workers re-import this process's ``__main__``: they do (as
    ``__mp_main__``, the way ``spawn`` does) when it is a script file, not a notebook or REPL."""
    main = sys.modules.get("__main__")
    return local and bool(getattr(main, "__file__", None))


def check_workers_see(config: Any, workers: str, local: bool = True) -> None:
    """Raise ConfigError unless every plug-in ``config`` names is visible to fresh worker
    processes: built in, an installed entry point, or defined under a module of the config's
    ``plugins:`` list. ``workers`` says which (``2 worker processes``) for the message.

    A plug-in registered by the running code itself (a notebook cell, an imported module the
    config does not list) exists only in this process; a spawned local worker or a Dask worker
    starts fresh and would fail every such cell. One exception: local workers (``local``)
    re-import a main *script* file, so plug-ins it registers reach them (not Dask workers).
    """
    registries = _registries()
    plugins = tuple(getattr(config, "plugins", ()) or ())
    for field, kind, name in used_plugins(config):
        registry = registries[kind]
        origin = registry.origin(name)
        if origin == BUILTIN or origin.startswith("entry point "):
            continue
        module = registry.get(name).__module__
        if origin.startswith("plugins: ") and _listed(origin.removeprefix("plugins: "), plugins):
            continue
        if _listed(module, plugins):
            continue
        if module in ("__main__", "__mp_main__") and _main_script_reloads(local):
            continue
        if module in ("__main__", "__mp_main__"):
            fix = (
                "move it into an importable module (a .py file on sys.path or an installed "
                "package) and list that module under `plugins:`"
            )
        else:
            fix = f"list its module under `plugins:` (plugins: [{module}])"
        raise ConfigError(
            field,
            f"{kind} {name!r} was registered in {module} ({origin}), which the {workers} "
            f"cannot see: they start as fresh processes and know only built-in plug-ins, "
            f"installed entry points and the modules the config lists under `plugins:`. "
            f"To run it there, {fix}; or run in this process (jobs=1).",
        )


def plugin_origins(config: Any) -> list[dict[str, str]]:
    """The plug-ins a config names that are not built in: ``{"kind", "name", "origin"}``
    each (for ``run.json``)."""
    registries = _registries()
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for _, kind, name in used_plugins(config):
        origin = registries[kind].origin(name)
        if origin != BUILTIN:
            seen.setdefault((kind, name), {"kind": kind, "name": name, "origin": origin})
    return list(seen.values())
