"""poisonbench from Python: run a config, read its results, compare runs, register plug-ins.

A thin layer over the harness (``bench``): the same store, the same resume, the same errors,
raised as exceptions (:class:`PoisonBenchError` subclasses) instead of exit codes.

>>> import poisonbench as pb
>>> run = pb.run("configs/quick.yaml", jobs=2)            # or a dict, or a Config
>>> run.table                                              # the long results table
>>> run.recovery()                                         # extra clean data needed
>>> pb.compare("results/baseline/ci", run).exit_code       # the CI gate's verdict
>>> @pb.defenses.register("mine")                          # a plug-in, for this process
... class Mine(pb.Filter): ...

Importing this package is cheap (no scikit-learn, PyOD, pandas or torch): every name below is
imported on first use, through the ``_LAZY`` table. Why not plain imports: a plug-in package
imports ``poisonbench`` (``examples/plugin``), and installed plug-ins are loaded by
``poisonbench list`` and by every worker process; ``import poisonbench`` takes ~0.04 s this
way and ~0.7 s if it imported the API and the harness behind it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from attacks import ATTACKS as attacks
    from attacks import Attack
    from bench.analysis.compare import CompareError, Comparison
    from bench.core.store import RunLockedError
    from bench.core.types import (
        DatasetInfo,
        DefenseContext,
        ParamError,
        PluginLoadError,
        PoisonBenchError,
        Poisoned,
        StepResult,
        TrainingSet,
        UnknownNameError,
        check_fraction,
    )
    from bench.data.datasets import DATASETS as datasets
    from bench.data.datasets import Dataset, DatasetError, DatasetSource, make_dataset
    from bench.models import MODELS as models
    from bench.models import ModelSpec
    from bench.run.config import Config, ConfigError, load_config, parse_config
    from bench.run.executors import ExecutorError
    from bench.run.orchestrate import RunInterrupted
    from bench.run.plugins import PluginImportError
    from defenses import DEFENSES as defenses
    from defenses import Defense, Filter
    from poisonbench.api import Run, RunWarning, compare, load, run

#: public name -> (module, attribute), imported on first access
_LAZY: dict[str, tuple[str, str]] = {
    # the API
    "run": ("poisonbench.api", "run"),
    "load": ("poisonbench.api", "load"),
    "compare": ("poisonbench.api", "compare"),
    "Run": ("poisonbench.api", "Run"),
    "RunWarning": ("poisonbench.api", "RunWarning"),
    "Comparison": ("bench.analysis.compare", "Comparison"),
    "Config": ("bench.run.config", "Config"),
    "load_config": ("bench.run.config", "load_config"),
    "parse_config": ("bench.run.config", "parse_config"),
    # the registries (``@pb.defenses.register("name")``)
    "attacks": ("attacks", "ATTACKS"),
    "defenses": ("defenses", "DEFENSES"),
    "models": ("bench.models", "MODELS"),
    "datasets": ("bench.data.datasets", "DATASETS"),
    # what a plug-in subclasses and handles
    "Attack": ("attacks", "Attack"),
    "Defense": ("defenses", "Defense"),
    "Filter": ("defenses", "Filter"),
    "ModelSpec": ("bench.models", "ModelSpec"),
    "DatasetSource": ("bench.data.datasets", "DatasetSource"),
    "Dataset": ("bench.data.datasets", "Dataset"),
    "make_dataset": ("bench.data.datasets", "make_dataset"),
    "DatasetInfo": ("bench.core.types", "DatasetInfo"),
    "DefenseContext": ("bench.core.types", "DefenseContext"),
    "Poisoned": ("bench.core.types", "Poisoned"),
    "StepResult": ("bench.core.types", "StepResult"),
    "TrainingSet": ("bench.core.types", "TrainingSet"),
    "check_fraction": ("bench.core.types", "check_fraction"),
    # errors
    "PoisonBenchError": ("bench.core.types", "PoisonBenchError"),
    "ParamError": ("bench.core.types", "ParamError"),
    "UnknownNameError": ("bench.core.types", "UnknownNameError"),
    "PluginLoadError": ("bench.core.types", "PluginLoadError"),
    "PluginImportError": ("bench.run.plugins", "PluginImportError"),
    "ConfigError": ("bench.run.config", "ConfigError"),
    "DatasetError": ("bench.data.datasets", "DatasetError"),
    "CompareError": ("bench.analysis.compare", "CompareError"),
    "ExecutorError": ("bench.run.executors", "ExecutorError"),
    "RunLockedError": ("bench.core.store", "RunLockedError"),
    "RunInterrupted": ("bench.run.orchestrate", "RunInterrupted"),
}

__all__ = [
    "Attack",
    "CompareError",
    "Comparison",
    "Config",
    "ConfigError",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "DatasetSource",
    "Defense",
    "DefenseContext",
    "ExecutorError",
    "Filter",
    "ModelSpec",
    "ParamError",
    "PluginImportError",
    "PluginLoadError",
    "PoisonBenchError",
    "Poisoned",
    "Run",
    "RunInterrupted",
    "RunLockedError",
    "RunWarning",
    "StepResult",
    "TrainingSet",
    "UnknownNameError",
    "__version__",
    "attacks",
    "check_fraction",
    "compare",
    "datasets",
    "defenses",
    "load",
    "load_config",
    "make_dataset",
    "models",
    "parse_config",
    "run",
    "testing",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # later lookups skip this function
        return value
    if name == "testing":
        return importlib.import_module("poisonbench.testing")
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("poisonbench")
        except PackageNotFoundError:
            return "0+unknown"
    raise AttributeError(f"module 'poisonbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
