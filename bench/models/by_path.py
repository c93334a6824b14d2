"""Models by import path: any scikit-learn classifier (``sklearn``) or a torch network factory
(``torch``) named in the config, trained by the harness like the built-in models.

::

    models:
      - {name: sklearn, estimator: sklearn.ensemble.HistGradientBoostingClassifier,
         params: {max_iter: 50}, scale: false}
      - {name: torch, network: mypkg.nets:make_net, params: {hidden: 64}, epochs: 5}

A config that names an import path runs that code when it is loaded (the same trust model as
any Python config system: only run configs you would run as scripts). Nothing is imported
until a config names a path: configs of plain names stay import-free.

An import path is ``package.module.Name`` or ``package.module:Name`` (``:attr.sub`` reaches
nested attributes). The module must be importable from where the run starts (installed, or
under the current directory, which ``python -m`` puts on ``sys.path``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from bench.core.types import (
    DatasetInfo,
    ParamError,
    PoisonBenchError,
    TrainingSet,
    build_params,
    plugin_escape,
)
from bench.models.base import (
    MODELS,
    Estimator,
    ModelSpec,
    SklearnClassifier,
    expand_soft_targets,
)
from bench.models.torch_models import TorchClassifier, TorchModel


def resolve_import(path: str, field: str) -> Any:
    """The object an import path names: ``pkg.mod.Name`` or ``pkg.mod:Name.attr``.

    Raises ParamError naming ``field`` when the module cannot be imported or lacks the name.
    """
    if not isinstance(path, str) or not path.strip():
        raise ParamError(field, f"expected an import path like package.module.Name, got {path!r}")
    if ":" in path:
        module_name, _, attrs = path.partition(":")
        candidates = [(module_name, attrs.split("."))] if module_name and attrs else []
    else:
        parts = path.split(".")
        # the longest importable module prefix wins: a.b.C → module a.b, attribute C
        candidates = [(".".join(parts[:i]), parts[i:]) for i in range(len(parts) - 1, 0, -1)]
    if not candidates:
        raise ParamError(
            field, f"{path!r} is not an import path (package.module.Name or package.module:Name)"
        )
    first_error: str | None = None
    for module_name, attrs in candidates:
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # only "this module does not exist" moves on to a shorter prefix; a module that
            # exists but fails to import its own dependencies is reported as it is
            if (
                exc.name is not None
                and module_name.startswith(exc.name)
                and (module_name == exc.name or module_name.startswith(f"{exc.name}."))
            ):
                first_error = first_error or f"no module named {exc.name!r}"
                continue
            raise ParamError(field, f"importing {module_name!r} failed: {exc}") from None
        except ImportError as exc:
            raise ParamError(field, f"importing {module_name!r} failed: {exc}") from None
        except BaseException as exc:  # sys.exit() or another BaseException on import
            why = plugin_escape(exc)
            if why is None:  # an Exception (as before) or a stop signal
                raise
            raise ParamError(field, f"plugin {module_name!r} {why} on import") from None
        for i, attr in enumerate(attrs):
            if not hasattr(obj, attr):
                where = ".".join([module_name, *attrs[:i]])
                raise ParamError(field, f"{where!r} has no attribute {attr!r} (in {path!r})")
            obj = getattr(obj, attr)
        return obj
    here = os.getcwd()
    if any(os.path.abspath(entry or ".") == here for entry in sys.path):
        hint = "is the package installed, or the module under the current directory?"
    else:  # the `poisonbench` command: sys.path[0] is its bin folder, not the current directory
        hint = (
            "is the package installed? The current directory is not on sys.path here: run "
            "`python -m bench.interfaces.cli ...`, set PYTHONPATH=., or pip install your package"
        )
    raise ParamError(field, f"cannot import {path!r}: {first_error} ({hint})")


def _short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _call_label(name: str, params: Mapping[str, Any] | None) -> str:
    inner = ", ".join(f"{k}={_short_value(v)}" for k, v in sorted((params or {}).items()))
    return f"{name}({inner})" if inner else name


def _check_json(params: Mapping[str, Any] | None, field: str) -> None:
    if params is None:
        return
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise ParamError(field, f"expected a mapping of parameter names to values, got {params!r}")
    try:
        json.dumps(params, allow_nan=False)  # cell identities hash these
    except (TypeError, ValueError) as exc:
        raise ParamError(
            field, f"values must be plain JSON (numbers, text, lists): {exc}"
        ) from None


def _rename_params(params: Mapping[str, Any] | None, field_name: str) -> dict[str, Any]:
    """The config's ``params`` key mapped to the dataclass field ``field_name`` (``params`` is
    every plug-in's method that returns its parameters, so no field may take that name)."""
    params = dict(params or {})
    if "params" in params:
        if field_name in params:
            raise ParamError(field_name, f"give params or its alias {field_name}, not both")
        params[field_name] = params.pop("params")
    return params


# ---------------------------------------------------------------------------------------------
# Sample weights
# ---------------------------------------------------------------------------------------------


def needs_weights(targets: np.ndarray, sample_weight: np.ndarray | None, n_classes: int) -> bool:
    """Whether fitting these targets on a scikit-learn model passes ``sample_weight``: soft
    targets (weighted duplication) or weights other than all ones."""
    rows, _labels, weight = expand_soft_targets(targets, sample_weight, n_classes)
    return not (len(rows) == len(targets) and bool(np.all(weight == 1.0)))


class SampleWeightError(PoisonBenchError):
    """The model cannot take the sample weights a training set needs."""


def check_weight_support(spec: ModelSpec, train: TrainingSet, defense: str = "") -> None:
    """Raise SampleWeightError when ``train`` needs sample weights (soft targets from a defense
    such as label smoothing, or reweighted rows) and ``spec``'s estimator cannot take them.

    ``defense``: the label of the cell's defense steps, named in the message. Models without a
    ``supports_sample_weight`` attribute (every built-in) take weights.
    """
    if getattr(spec, "supports_sample_weight", True):
        return
    if not needs_weights(train.targets, train.sample_weight, train.n_classes):
        return
    what = "soft targets" if train.soft else "sample weights"
    raise SampleWeightError(
        f"model {spec.label() if hasattr(spec, 'label') else spec.name}: the estimator's fit "
        f"takes no sample_weight, but defense {defense or '(the cell’s steps)'} gives the "
        f"training set {what}, which scikit-learn models learn through sample weights. Use an "
        "estimator whose fit takes sample_weight, or leave this defense out for this model"
    )


class ImportedClassifier(SklearnClassifier):
    """:class:`SklearnClassifier` for an estimator that may lack ``sample_weight``: such a fit
    with weights needed fails with a clear error instead of a TypeError deep in scikit-learn."""

    def __init__(
        self, estimator: Any, n_classes: int, weight_param: str | None, label: str
    ) -> None:
        super().__init__(estimator, n_classes, weight_param or "sample_weight")
        self.takes_weights = weight_param is not None
        self.label = label

    def fit(
        self, X: np.ndarray, targets: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> ImportedClassifier:
        if not self.takes_weights and needs_weights(targets, sample_weight, self.n_classes):
            raise SampleWeightError(
                f"model {self.label}: the estimator's fit takes no sample_weight, but this "
                "training set has soft targets or sample weights (set by a defense step)"
            )
        super().fit(X, targets, sample_weight)
        return self


# ---------------------------------------------------------------------------------------------
# sklearn: any scikit-learn classifier class by import path
# ---------------------------------------------------------------------------------------------


def _init_params(cls: type) -> tuple[set[str], bool]:
    """The keyword names ``cls.__init__`` takes, and whether it takes any (``**kwargs``)."""
    try:
        signature = inspect.signature(cls.__init__)  # type: ignore[misc]
    except (TypeError, ValueError):
        return set(), True
    names = set()
    any_name = False
    for p in list(signature.parameters.values())[1:]:
        if p.kind is p.VAR_KEYWORD:
            any_name = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.add(p.name)
    return names, any_name


@MODELS.register("sklearn")
@dataclass(frozen=True)
class SklearnImport(ModelSpec):
    """Any scikit-learn-compatible classifier with predict_proba, by import path

    estimator: the class (required), e.g. sklearn.neighbors.KNeighborsClassifier.
    params (alias estimator_params): keyword arguments for it, plain JSON values; random_state
    is set from the cell's seed when the class takes one, n_jobs to 1 unless given.
    scale: standardize the features first (StandardScaler in a Pipeline). Soft targets and
    reweighted rows need an estimator whose fit takes sample_weight.
    """

    estimator: str = ""
    estimator_params: dict[str, Any] | None = None
    scale: bool = False

    #: what the contract test (tests/test_contracts.py) builds this model with
    example_params: ClassVar[dict[str, Any]] = {
        "estimator": "sklearn.tree.DecisionTreeClassifier",
        "params": {"max_depth": 3},
    }

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None, path: str = "") -> Any:
        prefix = f"{path}." if path else ""
        try:
            return build_params(cls, _rename_params(params, "estimator_params"), path)
        except ParamError as exc:
            if exc.field.endswith("estimator_params") and "params" in (params or {}):
                raise ParamError(f"{prefix}params", exc.message) from None
            raise

    def params(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "params": dict(self.estimator_params or {}),
            "scale": self.scale,
        }

    def __post_init__(self) -> None:
        if not self.estimator:
            raise ParamError(
                "estimator",
                "required: the import path of a classifier class, e.g. "
                "sklearn.ensemble.HistGradientBoostingClassifier",
            )
        _check_json(self.estimator_params, "params")
        if not self.estimator_params:  # {} and None are one parameter set
            object.__setattr__(self, "estimator_params", None)
        self._validate()

    def estimator_class(self) -> type:
        """The classifier class ``estimator`` names (imported on first use)."""
        cls = resolve_import(self.estimator, "estimator")
        if not inspect.isclass(cls):
            raise ParamError(
                "estimator", f"{self.estimator!r} is a {type(cls).__name__}, not a class"
            )
        return cls

    def _kwargs(self, cls: type, seed: int | None) -> dict[str, Any]:
        kwargs = dict(self.estimator_params or {})
        names, _any = _init_params(cls)
        if seed is not None and "random_state" in names:
            kwargs["random_state"] = int(seed)
        if "n_jobs" in names and "n_jobs" not in kwargs:
            kwargs["n_jobs"] = 1  # one thread per worker: the executor parallelizes cells
        return kwargs

    def _validate(self) -> None:
        """Import the class and check that it is a classifier with predict_proba that takes
        (and clones with) these parameters; raise ParamError naming the field."""
        from sklearn.base import clone, is_classifier

        cls = self.estimator_class()
        for method in ("fit", "predict_proba", "get_params"):
            if not hasattr(cls, method):
                raise ParamError(
                    "estimator",
                    f"{self.estimator!r} has no {method}(): a scikit-learn-compatible classifier "
                    "with predict_proba is needed",
                )
        names, any_name = _init_params(cls)
        params = self.estimator_params or {}
        if "random_state" in params:
            raise ParamError(
                "params.random_state",
                "is set from each cell's seed (so seeds differ and every defense shares the "
                "model's initialization); leave it out",
            )
        unknown = sorted(set(params) - names)
        if unknown and not any_name:
            raise ParamError(
                f"params.{unknown[0]}",
                f"{cls.__name__} takes no parameter {unknown[0]!r} "
                f"(valid: {', '.join(sorted(names)) or 'none'})",
            )
        try:
            instance = cls(**self._kwargs(cls, 0))
            instance.get_params()
            clone(instance)
            # scikit-learn's own estimators declare their parameters' valid values and check
            # them only in fit; check them now so a bad value is a config error. An estimator
            # written to the template declares none: its values are checked by its own fit.
            if getattr(instance, "_parameter_constraints", None) is not None:
                instance._validate_params()
        except Exception as exc:  # the estimator's own code: one line saying whose it is
            raise ParamError("params", f"{cls.__name__}: {type(exc).__name__}: {exc}") from None
        kind = getattr(instance, "_estimator_type", None)
        if not (is_classifier(instance) or kind == "classifier"):
            raise ParamError(
                "estimator",
                f"{self.estimator!r} is not a classifier (a {kind or 'non-classifier'})",
            )
        if not hasattr(instance, "predict_proba"):
            raise ParamError(
                "params",
                f"{cls.__name__} with these parameters has no predict_proba (e.g. SVC needs "
                "probability: true)",
            )

    @property
    def supports_sample_weight(self) -> bool:
        """Whether the estimator's ``fit`` takes ``sample_weight``."""
        from sklearn.utils.validation import has_fit_parameter

        return bool(has_fit_parameter(self.estimator_class(), "sample_weight"))

    def label(self) -> str:
        """``ClassName(param=value, ...)``, with ``+scale`` when features are standardized."""
        name = self.estimator.replace(":", ".").rsplit(".", 1)[-1]
        return _call_label(name, self.estimator_params) + ("+scale" if self.scale else "")

    def build(self, info: DatasetInfo, seed: int) -> Estimator:
        cls = self.estimator_class()
        estimator = cls(**self._kwargs(cls, seed))
        weights = self.supports_sample_weight
        weight_param: str | None = "sample_weight" if weights else None
        if self.scale:
            from sklearn.pipeline import Pipeline
            from sklearn.preprocessing import StandardScaler

            estimator = Pipeline([("scale", StandardScaler()), ("model", estimator)])
            weight_param = "model__sample_weight" if weights else None
        return ImportedClassifier(estimator, info.n_classes, weight_param, self.label())


# ---------------------------------------------------------------------------------------------
# torch: a network factory by import path, trained by the harness's trainer
# ---------------------------------------------------------------------------------------------


@MODELS.register("torch")
@dataclass(frozen=True)
class TorchImport(TorchModel):
    """A torch network from a factory by import path, trained like cnn (any data)

    network: the factory (required), e.g. mypkg.nets:make_net: called as
    ``factory(info, **params)`` with the DatasetInfo (``image_shape`` (c, h, w) or None,
    ``n_features``, ``n_classes``, ``class_names``), it returns an ``nn.Module`` mapping a batch
    of rows (n×c×h×w images, or n×d float32 rows, unscaled) to n×k logits; a module with
    ``set_scaling(X)`` gets the training rows first. params (alias network_params): keyword
    arguments for the factory. Trainer parameters as for cnn.
    """

    network: str = ""
    network_params: dict[str, Any] | None = None

    example_params: ClassVar[dict[str, Any]] = {"network": "tests.plugin_nets:make_net"}

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None, path: str = "") -> Any:
        prefix = f"{path}." if path else ""
        try:
            return build_params(cls, _rename_params(params, "network_params"), path)
        except ParamError as exc:
            if exc.field.endswith("network_params") and "params" in (params or {}):
                raise ParamError(f"{prefix}params", exc.message) from None
            raise

    def params(self) -> dict[str, Any]:
        out = super().params()
        out.pop("network_params")
        out["params"] = dict(self.network_params or {})
        return out

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.network:
            raise ParamError(
                "network",
                "required: the import path of a function info -> nn.Module, e.g. "
                "mypkg.nets:make_net",
            )
        _check_json(self.network_params, "params")
        if not self.network_params:
            object.__setattr__(self, "network_params", None)
        factory = self.factory()
        try:
            inspect.signature(factory).bind(None, **(self.network_params or {}))
        except TypeError as exc:
            raise ParamError(
                "params", f"{self.network} cannot be called as factory(info, **params): {exc}"
            ) from None
        except ValueError:  # no signature (a builtin): checked when it is called
            pass

    def factory(self) -> Any:
        """The callable ``network`` names (imported on first use)."""
        fn = resolve_import(self.network, "network")
        if not callable(fn):
            raise ParamError("network", f"{self.network!r} is a {type(fn).__name__}, not callable")
        return fn

    def label(self) -> str:
        """``factory(param=value, ...)``: the factory's name and its parameters."""
        name = self.network.replace(":", ".").rsplit(".", 1)[-1]
        return _call_label(name, self.network_params)

    def make_network(self, info: DatasetInfo) -> Any:
        """A fresh ``nn.Module`` from the factory (what ``TorchModel.network`` is for the
        built-ins; that name is this spec's import-path field)."""
        from torch import nn

        net = self.factory()(info, **(self.network_params or {}))
        if not isinstance(net, nn.Module):
            raise PoisonBenchError(
                f"network {self.network}: returned a {type(net).__name__}, not a torch nn.Module"
            )
        return net

    def bind(self, info: DatasetInfo, path: str = "") -> TorchImport:
        """Also build the network once and check it maps two rows of this dataset to 2×k
        logits, so a shape mismatch is a config error, not a failure in every cell."""
        import torch

        super().bind(info, path)
        prefix = f"{path}." if path else ""
        shape = info.image_shape or (info.n_features,)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            try:
                net = self.make_network(info)
            except PoisonBenchError as exc:
                raise ParamError(f"{prefix}network", str(exc)) from None
            except Exception as exc:  # the factory's own code (or not a factory: os:system)
                reason = str(exc).splitlines()[0] if str(exc) else ""
                raise ParamError(
                    f"{prefix}network",
                    f"{self.network}(info, **params) raised {type(exc).__name__}"
                    f"{f': {reason}' if reason else ''} (a factory takes the DatasetInfo and "
                    "returns an nn.Module)",
                ) from None
            net.train(False)  # a trial batch of zeros: batch-norm statistics stay out of it
            try:
                with torch.no_grad():
                    out = net(torch.zeros(2, *shape))
            except (RuntimeError, ValueError, TypeError) as exc:
                raise ParamError(
                    f"{prefix}network",
                    f"{self.network} fails on a batch of shape {[2, *shape]} from {info.name}: "
                    f"{str(exc).splitlines()[0]}",
                ) from None
        expected = (2, info.n_classes)
        if tuple(getattr(out, "shape", ())) != expected:
            raise ParamError(
                f"{prefix}network",
                f"{self.network} maps a batch of shape {[2, *shape]} to "
                f"{list(getattr(out, 'shape', []))}, expected {list(expected)} (one logit per "
                f"class of {info.name})",
            )
        return self

    def build(self, info: DatasetInfo, seed: int) -> Estimator:
        return TorchClassifier(_TrainerView(self), info, seed)


class _TrainerView:
    """The spec as :class:`TorchClassifier` reads it: its trainer parameters, and ``network``
    as the method that builds the module (on :class:`TorchImport` it is the import path)."""

    def __init__(self, spec: TorchImport) -> None:
        self._spec = spec

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spec, name)

    def network(self, info: DatasetInfo) -> Any:
        return self._spec.make_network(info)
