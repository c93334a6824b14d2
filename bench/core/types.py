"""Shared value types and the plug-in registry.

This module is the only part of ``bench`` that ``attacks/`` and ``defenses/`` import. It imports
nothing else from the project, so plug-ins never depend on the runner, the store or the CLI.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import reprlib
import signal
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from bench.core.errors import PoisonBenchError

T = TypeVar("T")


class ParamError(PoisonBenchError, ValueError):
    """A parameter is invalid. ``field`` names it; the message says what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable, so that one raised in a worker process reaches the parent as itself.
        return (type(self), (self.field, self.message))


class UnknownNameError(ParamError):
    """A name is not in a registry; the message lists the valid names."""


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """What a plug-in may know about the dataset before seeing any rows."""

    name: str
    class_names: tuple[str, ...]
    n_features: int
    image_shape: tuple[int, ...] | None = None  # (c, h, w) for images, None for tabular

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def class_index(self, value: int | str, field: str) -> int:
        """Resolve a class given as an index or a name; raise ParamError naming ``field``."""
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            if value in self.class_names:
                return self.class_names.index(value)
            raise ParamError(
                field,
                f"{value!r} is not a class of {self.name} "
                f"(names: {', '.join(self.class_names)}; or an index 0..{self.n_classes - 1})",
            )
        index = int(value)
        if not 0 <= index < self.n_classes:
            raise ParamError(
                field, f"{index} is not a class of {self.name} (0..{self.n_classes - 1})"
            )
        return index


#: the source id of trusted rows appended from the clean pool (attack sources are 0..K-1)
TRUSTED_SOURCE = -1


@dataclass(frozen=True)
class Poisoned:
    """An attack's output: the poisoned rows and the ground-truth mask of changed rows.

    ``source`` (int64, one per row, ids 0..K-1) says which data source each row came from when
    the attack was asked for provenance (``sources: K``); None means one source (id 0).
    """

    X: np.ndarray
    y: np.ndarray
    mask: np.ndarray  # bool, True exactly where row i was changed
    source: np.ndarray | None = None

    @property
    def n_poisoned(self) -> int:
        return int(self.mask.sum())


@dataclass
class TrainingSet:
    """The training set as it flows through defense steps to the model.

    ``targets`` is either the hard labels (int64, shape n) or a soft-label matrix (float, n×k).
    ``mask`` marks poisoned rows (kept for detection metrics; a model never sees it).
    ``trusted`` marks rows that came from the clean pool.
    ``loss`` is a training-loss choice set by a robust-loss defense step (e.g.
    ``{"name": "gce", "q": 0.7}``; see ``defenses/robust_loss.py``); None means the model's own
    loss. Only models that support it may fit such a set; the others must refuse it. A loss
    may treat trusted rows differently (``glc`` uses plain cross-entropy on them), so the
    trainer is given ``trusted`` with it.
    ``source`` (int64) is each row's data source: 0..K-1 for the attacked train rows (all 0
    without provenance), :data:`TRUSTED_SOURCE` (−1) for rows appended from the clean pool.
    ``privacy`` is a differential-privacy training choice set by ``dp_sgd`` (e.g.
    ``{"noise_multiplier": 1.0, "epsilon": None, "max_grad_norm": 1.0, "delta": 1e-5}``);
    like ``loss``, only models that support it may fit such a set.
    ``ensemble`` is set by a certified defense (``dpa``, ``bagging``; see
    :class:`EnsemblePlan`): the cell's model becomes an ensemble of base models, each fit on
    the rows the plan assigns it, and its test predictions carry certified radii.
    """

    X: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    n_classes: int
    targets: np.ndarray | None = None
    sample_weight: np.ndarray | None = None
    trusted: np.ndarray | None = None
    loss: dict[str, Any] | None = None
    source: np.ndarray | None = None
    privacy: dict[str, Any] | None = None
    ensemble: EnsemblePlan | None = None

    def __post_init__(self) -> None:
        if self.targets is None:
            self.targets = self.y
        if self.trusted is None:
            self.trusted = np.zeros(len(self.y), dtype=bool)
        if self.source is None:
            self.source = np.where(self.trusted, TRUSTED_SOURCE, 0).astype(np.int64)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def soft(self) -> bool:
        return self.targets is not None and self.targets.ndim == 2

    def subset(self, rows: np.ndarray) -> TrainingSet:
        """The rows selected by a boolean mask or an index array, as a new set."""
        return TrainingSet(
            X=self.X[rows],
            y=self.y[rows],
            mask=self.mask[rows],
            n_classes=self.n_classes,
            targets=self.targets[rows],
            sample_weight=None if self.sample_weight is None else self.sample_weight[rows],
            trusted=self.trusted[rows],
            loss=self.loss,
            source=self.source[rows],
            privacy=self.privacy,
            ensemble=self.ensemble,
        )

    def hard_targets(self) -> np.ndarray:
        """Targets as an n×k float matrix (one-hot when the targets are hard)."""
        if self.soft:
            return np.asarray(self.targets, dtype=np.float64)
        return np.eye(self.n_classes, dtype=np.float64)[self.targets]

    def append(self, X: np.ndarray, y: np.ndarray) -> TrainingSet:
        """This set with trusted clean rows appended (one-hot or hard targets to match)."""
        if len(y) == 0:
            return self
        if self.soft:
            extra_targets = np.eye(self.n_classes, dtype=np.float64)[y]
        else:
            extra_targets = y
        weight = None
        if self.sample_weight is not None:
            weight = np.concatenate([self.sample_weight, np.ones(len(y))])
        return TrainingSet(
            X=np.concatenate([self.X, X]),
            y=np.concatenate([self.y, y]),
            mask=np.concatenate([self.mask, np.zeros(len(y), dtype=bool)]),
            n_classes=self.n_classes,
            targets=np.concatenate([self.targets, extra_targets]),
            sample_weight=weight,
            trusted=np.concatenate([self.trusted, np.ones(len(y), dtype=bool)]),
            loss=self.loss,
            source=np.concatenate([self.source, np.full(len(y), TRUSTED_SOURCE, np.int64)]),
            privacy=self.privacy,
            ensemble=self.ensemble,
        )


class EnsemblePlan:
    """How a certified defense turns the cell's model into an ensemble, and what it certifies.

    Set in :attr:`TrainingSet.ensemble` by a defense step (``defenses/certified.py``); the runner
    then fits :attr:`n_members` base models of the cell's model, member ``j`` on the rows
    ``members(X)[j]`` of the set it fits (an empty index array: that member abstains), predicts
    by plurality vote (ties to the smaller class index) and asks :meth:`radius` for each test
    row's certified radius.
    """

    #: the threat model's unit, for tables: what one change of the radius is
    unit: ClassVar[str] = "rows inserted, deleted or relabelled"
    #: changes of the radius one poisoned row costs when the attack changed its features (DPA:
    #: 2, the row moves partition; bagging: 1, a modified row); a relabelled row costs 1
    feature_change_cost: ClassVar[int] = 2

    @property
    def n_members(self) -> int:
        raise NotImplementedError

    def members(self, X: np.ndarray) -> list[np.ndarray]:
        """Row indices (int64) of ``X`` each base model trains on, ``n_members`` arrays."""
        raise NotImplementedError

    def radius(self, votes: np.ndarray, n_rows: int) -> np.ndarray:
        """Certified radius (int64, one per row of ``votes``) of the plurality class.

        votes: n×k counts of the members' votes (abstaining members count nowhere).
        n_rows: rows of the training set the members were drawn from.
        Returns the number of training-row changes the prediction provably withstands;
        −1 where the plan cannot certify it even without any change (bagging's bound).
        """
        raise NotImplementedError


@dataclass(frozen=True)
class DefenseContext:
    """What a defense step may use besides the training set: the trusted clean pool.

    The pool is one budget shared by every step and then by the recovery curve: a step that
    reads trusted rows takes them from ``pool_X[pool_start:]`` (the rows earlier steps left),
    in order, and says how many it used in :attr:`StepResult.pool_used`; the extra clean rows
    of the recovery grid are appended after all of them, so comparisons are at equal clean data.
    """

    info: DatasetInfo
    n_train: int  # size of the (poisoned) train set before any defense step
    pool_X: np.ndarray
    pool_y: np.ndarray
    pool_start: int = 0  # pool rows already used by earlier steps
    #: rows → their n×h representation under the cell's first-pass model (the cell's model fit
    #: on the poisoned set, the undefended cell's f = 0 fit); set by the runner only for steps
    #: that declare ``needs = {"representation"}``, else None
    features: Callable[[np.ndarray], np.ndarray] | None = None

    def pool_rows(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``count`` unused pool rows (fewer when the pool runs out)."""
        stop = min(len(self.pool_y), self.pool_start + max(int(count), 0))
        return self.pool_X[self.pool_start : stop], self.pool_y[self.pool_start : stop]


@dataclass
class StepResult:
    """A defense step's output: the new training set and, for filters, what was removed.

    ``pool_used``: trusted pool rows this step consumed (read to learn from, or appended),
    counted from ``DefenseContext.pool_start``; the runner records their sum as
    ``n_trusted_used`` and starts the recovery curve's rows after them.
    """

    train: TrainingSet
    scores: np.ndarray | None = None  # outlier scores of the input rows (higher = more suspicious)
    removed: np.ndarray | None = None  # bool over the input rows
    details: dict[str, Any] = field(default_factory=dict)
    pool_used: int = 0


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:  # name the choices, not "Literal"
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def _brief(value: Any) -> str:
    """``repr(value)`` cut to 80 characters (a hostile config can hold a 400-digit number)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}...({len(text)} characters)"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 80, 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a readable length (hostile configs hold huge values)."""
    return _REPR.repr(value)


def _coerce(value: Any, tp: Any, field_path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (bool, int, float, str, Literal, unions)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ParamError(
                field_path,
                f"{short_repr(value)} is not one of {', '.join(repr(c) for c in choices)}",
            )
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        numeric: ParamError | None = None
        for arm in typing.get_args(tp):
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arm, field_path)
            except ParamError as exc:
                errors.append(exc.message)
                if arm in (int, float) and _is_number(value):
                    numeric = exc  # the arm the value was meant for: its reason is the one
        if numeric is not None:
            raise numeric
        names = " or ".join(_type_name(a) for a in typing.get_args(tp))
        raise ParamError(field_path, f"expected {names}, got {_brief(value)}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ParamError(field_path, f"expected a list, got {short_repr(value)}")
        (arm, *_rest) = typing.get_args(tp) or (Any,)
        return tuple(_coerce(v, arm, f"{field_path}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ParamError(field_path, f"expected true or false, got {short_repr(value)}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ParamError(field_path, f"expected an integer, got {short_repr(value)}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ParamError(field_path, f"expected a number, got {short_repr(value)}")
        try:
            value = float(value)
        except OverflowError:  # an integer literal beyond float range (YAML allows any length)
            value = math.inf if value > 0 else -math.inf
        if math.isnan(value):
            raise ParamError(field_path, "expected a number, got NaN")
        if math.isinf(value):  # cell identities are canonical JSON, which has no infinity
            raise ParamError(field_path, f"expected a finite number, got {value}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ParamError(field_path, f"expected a string, got {short_repr(value)}")
        return value
    return value


def init_fields(cls: Any) -> list[dataclasses.Field]:
    """The init fields of a dataclass (class or instance), a subclass's own fields first.

    Keyword-only fields (the options every plug-in of a family inherits from its base, such as
    an attack's ``sources``) go last, so a plug-in's own parameters lead in errors and listings.
    """
    fields = [f for f in dataclasses.fields(cls) if f.init]
    return [f for f in fields if not f.kw_only] + [f for f in fields if f.kw_only]


def build_params(cls: type[T], params: Mapping[str, Any] | None, path: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, naming ``path.field`` in every error.

    Unknown keys are errors that list the valid ones; values are type-checked against the
    dataclass annotations, then the class's own ``__post_init__`` validates their meaning.
    """
    params = dict(params or {})
    prefix = f"{path}." if path else ""
    fields = {f.name: f for f in init_fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "(none)"
        raise ParamError(f"{prefix}{unknown[0]}", f"unknown parameter (valid: {valid})")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints.get(k, Any), f"{prefix}{k}") for k, v in params.items()}
    try:
        return cls(**kwargs)
    except ParamError as exc:
        if prefix and not exc.field.startswith(prefix):
            raise ParamError(f"{prefix}{exc.field}", exc.message) from None
        raise


def params_dict(obj: Any) -> dict[str, Any]:
    """The init parameters of a dataclass instance as plain JSON-able values."""
    out = {}
    for f in init_fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def check_range(
    value: float,
    field: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ParamError naming ``field`` unless ``low <= value <= high`` (``<`` on an open
    side; None: unbounded); the message states the allowed range, e.g. ``must be in (0, 10]``.

    Plug-ins call it in ``__post_init__`` for every numeric parameter with a natural range, so
    an absurd value (``sigma: 1e308``, ``n_estimators: 0``) is a config error at load, not a
    failure in every cell.
    """
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above or value != value:  # NaN compares false both ways
        if high is None:
            allowed = f"{'>' if low_open else '>='} {_number(low)}" if low is not None else ""
        elif low is None:
            allowed = f"{'<' if high_open else '<='} {_number(high)}"
        else:
            allowed = (
                f"in {'(' if low_open else '['}{_number(low)}, "
                f"{_number(high)}{')' if high_open else ']'}"
            )
        raise ParamError(field, f"must be {allowed}, got {_number(value)}")


def check_fraction(value: float, field: str, *, low_open: bool = False) -> None:
    """Raise ParamError unless ``value`` is a finite fraction in [0, 1] (or (0, 1])."""
    ok = 0 < value <= 1 if low_open else 0 <= value <= 1
    if not ok or math.isnan(value):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ParamError(field, f"{value} is outside {interval}")


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


#: the origin of a plug-in that ships with poisonbench (see :meth:`Registry.origin`)
BUILTIN = "builtin"
#: the project's own packages: whatever registers from a module under them is built in
_PROJECT_PACKAGES = frozenset({"attacks", "defenses", "bench"})
#: where registrations come from right now (set by :func:`registering_from`); None: from code
_ORIGIN: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "poisonbench_plugin_origin", default=None
)


class PluginLoadError(ParamError):
    """An installed entry-point plug-in could not be loaded; the message names the entry point
    and its distribution and says why (``field`` is where the plug-in was asked for)."""


@contextlib.contextmanager
def registering_from(origin: str) -> Iterator[None]:
    """Within the block, plug-ins that register (outside the project's own packages) are
    recorded as coming from ``origin``: ``entry point <dist>`` or ``plugins: <module>``."""
    token = _ORIGIN.set(origin)
    try:
        yield
    finally:
        _ORIGIN.reset(token)


def _origin_of(cls: type) -> str:
    module = getattr(cls, "__module__", None) or "?"
    if module.partition(".")[0] in _PROJECT_PACKAGES:
        return BUILTIN
    return _ORIGIN.get() or f"python: {module}"


def _same_definition(old: type, new: type) -> bool:
    """Whether ``new`` re-runs the definition of ``old`` (a notebook cell run again, a reload)."""
    return (old.__module__, old.__qualname__) == (new.__module__, new.__qualname__)


class Registry(Generic[T]):
    """An explicit ``name -> class`` table filled by a ``@register(name)`` decorator.

    Besides the built-ins, a registry holds the plug-ins of installed distributions that
    declare entry points in its ``group`` (``poisonbench.defenses``, ...). They are imported
    lazily, once per process: when the registry is asked for a name it lacks, or listed. A
    lookup of a built-in name never scans them, so configs of plain names stay cheap.
    Every name keeps its origin (``builtin``, ``entry point <dist>``, ``plugins: <module>``,
    or ``python: <module>`` for code that registered directly).
    """

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._items: dict[str, type[T]] = {}
        self._origins: dict[str, str] = {}
        self._entry_points_loaded = group is None
        self._entry_point_errors: dict[str, str] = {}

    def register(self, name: str, origin: str | None = None) -> Callable[[type[T]], type[T]]:
        """A decorator that registers a class as ``name``.

        A second class under a taken name is an error, except a re-run of the same definition
        (same module and qualified name: a notebook cell run twice), which replaces it.
        """

        def decorate(cls: type[T]) -> type[T]:
            where = origin or _origin_of(cls)
            old = self._items.get(name)
            if old is not None and not _same_definition(old, cls):
                raise ValueError(
                    f"{self.kind} {name!r} is registered twice "
                    f"(first from {self._origins[name]}, again from {where})"
                )
            cls.name = name  # type: ignore[attr-defined]
            self._items[name] = cls
            self._origins[name] = where
            return cls

        return decorate

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and notebooks that register a plug-in for a while)."""
        self._items.pop(name, None)
        self._origins.pop(name, None)

    def origin(self, name: str) -> str:
        """Where ``name`` came from: ``builtin``, ``entry point <dist>``, ``plugins: <module>``
        or ``python: <module>``."""
        self.get(name)
        if self._origins[name].startswith("python: "):
            # imported directly before the entry points were read: one of them may claim it
            self.load_entry_points()
        return self._origins[name]

    def get(self, name: str, field: str | None = None) -> type[T]:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            pass
        if isinstance(name, str) and not self._entry_points_loaded:
            self.load_entry_points()
            if name in self._items:
                return self._items[name]
        if isinstance(name, str) and name in self._entry_point_errors:
            raise PluginLoadError(field or self.kind, self._entry_point_errors[name])
        broken = ""
        if self._entry_point_errors:
            broken = f"; entry points that failed to load: {', '.join(self._entry_point_errors)}"
        raise UnknownNameError(
            field or self.kind,
            f"unknown {self.kind} {name!r} (valid: {', '.join(sorted(self._items))}{broken})",
        )

    # ------------------------------------------------------------------ entry points

    def load_entry_points(self, refresh: bool = False) -> None:
        """Import the plug-ins installed in this registry's entry-point group (once; again with
        ``refresh``, e.g. after ``pip install`` in a running notebook).

        An entry point names a plug-in class (``name = package.module:Class``; registered as
        ``name`` unless its module's import already registered it under that name) or a module
        whose import registers plug-ins with the decorators. One that fails is kept as an error
        naming the entry point and its distribution (:attr:`entry_point_errors`), raised when
        its name is asked for; the others load.
        """
        if self.group is None or (self._entry_points_loaded and not refresh):
            return
        self._entry_point_errors = {}
        self._entry_points_loaded = True  # first: a plug-in's import may consult the registry
        from importlib.metadata import entry_points

        for ep in sorted(entry_points(group=self.group), key=lambda e: (e.name, e.value)):
            error = self._load_entry_point(ep)
            if error is not None:
                self._entry_point_errors.setdefault(ep.name, error)

    def _load_entry_point(self, ep: Any) -> str | None:
        dist = getattr(ep, "dist", None)
        dist_name = getattr(dist, "name", None) or "an unnamed distribution"
        version = getattr(dist, "version", None)
        where = (
            f"entry point {ep.name!r} = {ep.value!r} (group {self.group}) of distribution "
            f"{dist_name}{f' {version}' if version else ''}"
        )
        origin = f"entry point {dist_name}"
        try:
            with registering_from(origin):
                obj = ep.load()
        except Exception as exc:  # a plug-in's own code: one line that says whose it is
            return f"{where} failed to load: {type(exc).__name__}: {exc}"
        if isinstance(obj, types.ModuleType):
            return None  # its import registered what it holds
        if not isinstance(obj, type):
            return f"{where}: expected a plug-in class or a module, got {type(obj).__name__}"
        names = [name for name, cls in self._items.items() if cls is obj]
        if not names:
            try:
                self.register(ep.name, origin)(obj)
            except ValueError as exc:
                return f"{where}: {exc}"
        elif ep.name not in names:
            return f"{where}: the class registered itself as {names[0]!r}; name the entry point so"
        elif self._origins[ep.name].startswith("python: "):
            self._origins[ep.name] = origin  # its module was imported before the entry points
        return None

    @property
    def entry_point_errors(self) -> dict[str, str]:
        """``{entry point name: why it failed to load}`` for this registry's group."""
        self.load_entry_points()
        return dict(self._entry_point_errors)

    # ------------------------------------------------------------------ container

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name not in self._items:
            self.load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self.load_entry_points()
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, type[T]]]:
        self.load_entry_points()
        return sorted(self._items.items())


class Plugin:
    """Common base of attacks, defenses and models: a frozen dataclass of parameters."""

    name: ClassVar[str]

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None, path: str = "") -> Any:
        return build_params(cls, params, path)

    def params(self) -> dict[str, Any]:
        return params_dict(self)

    def label(self) -> str:
        """A short readable name for tables (the registry name unless a plug-in says more).

        Need not be unique: where two configurations share a label, the results table adds
        the parameters that differ (``bench.core.schema.assign_labels``)."""
        return self.name

    def bind(self, info: DatasetInfo, path: str = "") -> Any:
        """This plug-in checked against a dataset (class indices, image inputs), names resolved.

        The default has nothing dataset-specific to check and returns ``self``.
        """
        return self


def exact_count(rate: float, n: int) -> int:
    """``rate × n`` rounded half up: the exact number of rows a rate selects."""
    return min(n, int(math.floor(rate * n + 0.5)))


# --- what a plug-in raised that is not an Exception (issue 22, item 5) -----------------------


def plugin_escape(exc: BaseException) -> str | None:
    """How a plug-in's :class:`BaseException` that is not an :class:`Exception` reads in an
    error or a failed row (``called sys.exit(3)``, ``raised KeyboardInterrupt``, ``raised
    MyError: why``), or None when it must propagate: a stop signal (a ``KeyboardInterrupt``
    with a ``signum``, or any ``KeyboardInterrupt`` while Python's own SIGINT handler is
    installed in the main thread, where it may be the user's Ctrl-C) or ``GeneratorExit``.

    Elsewhere a ``KeyboardInterrupt`` is the plug-in's own: a worker process ignores SIGINT,
    a Dask task runs outside the main thread (signals reach only that one), and the CLI's
    handler raises its stop with a ``signum``.
    """
    import threading

    if isinstance(exc, Exception | GeneratorExit):
        return None
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    if isinstance(exc, KeyboardInterrupt):
        if getattr(exc, "signum", None) is not None:
            return None
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            return None
    message = str(exc)
    return f"raised {type(exc).__name__}" + (f": {message}" if message else "")
