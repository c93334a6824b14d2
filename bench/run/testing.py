"""The contract every attack, defense and model obeys, as checks a plug-in author can run
(scikit-learn's ``check_estimator`` idea). ``tests/test_contracts.py`` runs them over every
registered plug-in, built-ins, installed entry points and all; an out-of-tree package runs them
over its own (``examples/plugin/tests``)::

    import pytest
    from poisonbench.testing import DATA_KINDS, NotApplicable, check_defense

    @pytest.mark.parametrize("soft", [False, True])
    @pytest.mark.parametrize("kind", DATA_KINDS)
    def test_my_defense_contract(kind, soft):
        try:
            check_defense(MyDefense, kind, soft)
        except NotApplicable as exc:
            pytest.skip(str(exc))

Each check builds the plug-in from its defaults (or the class's ``example_params``, for one
with required parameters such as an import path), on tiny designed data, and fails with an
``AssertionError`` that says which rule broke. A plug-in may refuse a kind of data in ``bind``
(an image-only CNN on tabular rows) by raising ParamError: the check then raises
:class:`NotApplicable`, which a test turns into a skip.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from typing import Any

import numpy as np

from bench.core.types import (
    DatasetInfo,
    DefenseContext,
    ParamError,
    Poisoned,
    Registry,
    StepResult,
    TrainingSet,
)

#: classes in the tiny datasets
K = 3
#: the kinds of data every plug-in is checked on
DATA_KINDS = ("tabular", "image")


class NotApplicable(Exception):
    """The plug-in refused this kind of data in ``bind``: not a failure (skip the test)."""


def tiny_dataset(
    kind: str, n: int = 45, seed: int = 0
) -> tuple[DatasetInfo, np.ndarray, np.ndarray]:
    """A tiny 3-class dataset: 4 blob features, or 1×12×12 "images" in [0, 1]. Rows are
    distinct. Returns ``(info, X, y)``."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % K
    names = tuple(f"class{i}" for i in range(K))
    if kind == "tabular":
        centers = np.array([[0, 0, 0, 0], [4, 4, 0, 0], [0, 4, 4, 4]], dtype=np.float64)
        X = (centers[y] + rng.normal(size=(n, 4))).astype(np.float32)
        return DatasetInfo("tiny", names, n_features=4), X, y
    if kind != "image":
        raise ValueError(f"kind: expected one of {DATA_KINDS}, got {kind!r}")
    X = rng.random((n, 1, 12, 12)).astype(np.float32)
    X[np.arange(n), 0, y * 4, :] = 1.0  # a class-specific bright row
    return DatasetInfo("tiny-img", names, n_features=144, image_shape=(1, 12, 12)), X, y


def bind(plugin: Any, info: DatasetInfo) -> Any:
    """``plugin.bind(info)``; a ParamError means 'this plug-in does not take this data'
    (raised as :class:`NotApplicable`)."""
    try:
        return plugin.bind(info, "plugin")
    except ParamError as exc:
        raise NotApplicable(
            f"{type(plugin).__name__} does not apply to {info.name}: {exc}"
        ) from None


def _resolve(registry_path: str, plugin: type | str) -> type:
    """A plug-in class given as a class or as a registered name."""
    if not isinstance(plugin, str):
        return plugin
    module, _, attr = registry_path.rpartition(".")
    registry: Registry = getattr(importlib.import_module(module), attr)
    return registry.get(plugin)


def check_params_round_trip(cls: type) -> Any:
    """Build ``cls`` from its defaults (or ``cls.example_params``) and check that its
    parameters are plain JSON and rebuild an equal instance; returns the instance."""
    # A plug-in with required parameters (an import path) declares what the contract builds it
    # with; every other plug-in is built from its defaults.
    instance = cls.from_params(getattr(cls, "example_params", {}))
    params = instance.params()
    json.dumps(params, allow_nan=False)  # cell identities hash these: they must be plain JSON
    again = cls.from_params(params)
    assert again == instance, "from_params(params()) must rebuild an equal plug-in"
    assert again.params() == params, "params() must be stable under a rebuild"
    assert isinstance(instance.label() if hasattr(instance, "label") else cls.name, str), (
        "label() must return a string"
    )
    return instance


# --------------------------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------------------------


def check_attack(plugin: type | str, kind: str = "tabular") -> None:
    """The attack contract: ``poison`` returns a :class:`Poisoned` of the input's shapes and
    dtypes whose mask is exactly the changed rows, changes at most the eligible rows, nothing
    at rate 0, never mutates its input, and is deterministic given the generator."""
    cls = _resolve("attacks.ATTACKS", plugin)
    attack = bind(check_params_round_trip(cls), tiny_dataset(kind)[0])
    info, X, y = tiny_dataset(kind)
    X0, y0 = X.copy(), y.copy()
    for rate in (0.0, 0.3, 1.0):
        out = attack.poison(X, y, rate, np.random.default_rng(0))
        assert isinstance(out, Poisoned), f"poison returned {type(out).__name__}, not Poisoned"
        assert out.X.shape == X.shape and out.X.dtype == np.float32, "X: input shape, float32"
        assert out.y.shape == y.shape and out.y.dtype == np.int64, "y: input shape, int64"
        assert out.mask.shape == y.shape and out.mask.dtype == bool, "mask: one bool per row"
        assert out.y.min() >= 0 and out.y.max() < info.n_classes, "labels outside 0..k-1"
        changed = (out.y != y) | np.any(out.X.reshape(len(X), -1) != X.reshape(len(X), -1), axis=1)
        np.testing.assert_array_equal(out.mask, changed, err_msg="mask must be the changed rows")
        assert out.mask.sum() <= attack.eligible(y).sum(), "changed more than the eligible rows"
        if rate == 0:
            assert not out.mask.any(), "rate 0 must change nothing"
        np.testing.assert_array_equal(X, X0)
        np.testing.assert_array_equal(y, y0)
    a = attack.poison(X, y, 0.5, np.random.default_rng(7))
    b = attack.poison(X, y, 0.5, np.random.default_rng(7))
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.mask, b.mask)


# --------------------------------------------------------------------------------------------
# Defenses
# --------------------------------------------------------------------------------------------


def defense_inputs(kind: str, soft: bool) -> tuple[TrainingSet, DefenseContext]:
    """A poisoned tiny train set (20% random flips, two trusted rows already appended) and a
    context whose pool holds distinct clean rows."""
    info, X, y = tiny_dataset(kind, n=60)
    train_X, train_y = X[:36], y[:36]
    pool_X, pool_y = X[36:], y[36:]
    y_poisoned = train_y.copy()
    mask = np.zeros(len(train_y), dtype=bool)
    mask[::5] = True
    y_poisoned[mask] = (y_poisoned[mask] + 1) % K
    train = TrainingSet(X=train_X, y=y_poisoned, mask=mask, n_classes=K)
    train = train.append(pool_X[:2], pool_y[:2])
    if soft:
        train = TrainingSet(
            X=train.X,
            y=train.y,
            mask=train.mask,
            n_classes=K,
            targets=0.9 * train.hard_targets() + 0.1 / K,
            trusted=train.trusted,
        )
    ctx = DefenseContext(info=info, n_train=len(train_y), pool_X=pool_X, pool_y=pool_y)
    return train, ctx


def stand_in_features(X: np.ndarray) -> np.ndarray:
    """A stand-in for a first-pass model's representation (``DefenseContext.features``) in the
    contract check: a fixed random ReLU layer of 16 units over the flattened rows."""
    flat = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    weights = np.random.default_rng(0).normal(size=(flat.shape[1], 16))
    return np.maximum(flat @ weights, 0.0)


def snapshot(train: TrainingSet) -> dict[str, np.ndarray]:
    return {
        k: np.array(getattr(train, k), copy=True) for k in ("X", "y", "mask", "targets", "trusted")
    }


def row_keys(X: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.ascontiguousarray(X.reshape(len(X), -1))]


def check_defense(plugin: type | str, kind: str = "tabular", soft: bool = False) -> None:
    """The defense contract: ``apply`` returns a :class:`StepResult` whose training set has
    consistent shapes and dtypes, holds only input rows (same label and poison flag) or trusted
    pool rows, never removes trusted rows, never mutates its input, reports filter scores and
    removals consistently, keeps plain-JSON details, and is deterministic given the generator.
    ``soft``: the input carries soft targets (after label smoothing)."""
    cls = _resolve("defenses.DEFENSES", plugin)
    train, ctx = defense_inputs(kind, soft)
    if "representation" in getattr(cls, "needs", ()):
        ctx = dataclasses.replace(ctx, features=stand_in_features)
    defense = bind(check_params_round_trip(cls), ctx.info)
    before = snapshot(train)
    result = defense.apply(train, ctx, np.random.default_rng(0))
    assert isinstance(result, StepResult), f"apply returned {type(result).__name__}"
    out = result.train
    assert isinstance(out, TrainingSet), "StepResult.train must be a TrainingSet"
    # The input is never mutated.
    for key, value in before.items():
        np.testing.assert_array_equal(getattr(train, key), value, err_msg=f"input {key} changed")
    # Consistent shapes and types.
    n = len(out)
    assert out.X.shape[1:] == train.X.shape[1:] and out.X.dtype == np.float32, (
        "X: row shape, float32"
    )
    assert out.y.shape == (n,) and out.y.dtype == np.int64, "y: one int64 per row"
    assert out.mask.shape == (n,) and out.mask.dtype == bool, "mask: one bool per row"
    assert out.trusted.shape == (n,) and out.trusted.dtype == bool, "trusted: one bool per row"
    assert out.n_classes == K, "n_classes changed"
    if out.soft:
        assert out.targets.shape == (n, K), "soft targets: n×k"
        np.testing.assert_allclose(out.targets.sum(axis=1), 1.0)
        assert np.all(out.targets >= 0), "soft targets must be >= 0"
    else:
        assert out.targets.shape == (n,), "hard targets: one per row"
    if out.sample_weight is not None:
        assert out.sample_weight.shape == (n,) and np.all(out.sample_weight >= 0), (
            "sample_weight: one weight >= 0 per row"
        )
    # Every output row is an input row (same label and poison flag) or a trusted pool row.
    source = {
        key: (int(label), bool(m), bool(t))
        for key, label, m, t in zip(
            row_keys(train.X), train.y, train.mask, train.trusted, strict=True
        )
    }
    pool = {key: int(label) for key, label in zip(row_keys(ctx.pool_X), ctx.pool_y, strict=True)}
    for key, label, m, t in zip(row_keys(out.X), out.y, out.mask, out.trusted, strict=True):
        if key in source:
            assert source[key] == (int(label), bool(m), bool(t)), (
                "an input row changed its label, poison flag or trust"
            )
        else:
            assert key in pool, "a defense may only add trusted rows from the clean pool"
            assert pool[key] == int(label) and t and not m, "a pool row must stay trusted and clean"
    # Trusted rows are the defender's own: never removed.
    assert out.trusted.sum() >= train.trusted.sum(), "trusted rows were dropped"
    if result.removed is not None:
        assert result.removed.shape == (len(train),) and result.removed.dtype == bool, (
            "removed: one bool per input row"
        )
        assert not result.removed[train.trusted].any(), "trusted rows were removed"
        assert n == len(train) - result.removed.sum(), "output rows != input rows - removed"
        np.testing.assert_array_equal(out.X, train.X[~result.removed])
    if result.scores is not None:
        assert result.scores.shape == (len(train),), "scores: one per input row"
        assert np.isfinite(result.scores[~train.trusted]).all(), "scores of untrusted rows: finite"
    json.dumps(result.details, allow_nan=True)  # details go into records: plain values only
    # Same rng seed → same output.
    again = defense.apply(train, ctx, np.random.default_rng(0)).train
    np.testing.assert_array_equal(again.X, out.X)
    np.testing.assert_array_equal(again.targets, out.targets)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def check_proba(proba: np.ndarray, n: int) -> None:
    assert proba.shape == (n, K), f"predict_proba: expected shape {(n, K)}, got {proba.shape}"
    assert np.isfinite(proba).all() and np.all(proba >= -1e-9), "probabilities: finite, >= 0"
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


def check_model(plugin: type | str, kind: str = "tabular") -> None:
    """The model contract: ``build(info, seed)`` gives an estimator that fits hard labels,
    soft targets with sample weights and a train set missing a class, predicts an n×k
    probability matrix (a column for every class), never mutates its input, and is
    deterministic given the seed."""
    cls = _resolve("bench.models.MODELS", plugin)
    info, X, y = tiny_dataset(kind)
    spec = bind(check_params_round_trip(cls), info)
    X0 = X.copy()
    X_test = X[:10]

    hard = spec.build(info, seed=0).fit(X, y)
    check_proba(hard.predict_proba(X_test), 10)

    soft_targets = 0.8 * np.eye(K)[y] + 0.2 / K
    soft = spec.build(info, seed=0).fit(X, soft_targets, np.ones(len(y)))
    check_proba(soft.predict_proba(X_test), 10)

    # A class absent from training still gets a column (probability ~0 or small).
    present = y != 2
    absent = spec.build(info, seed=0).fit(X[present], y[present])
    proba = absent.predict_proba(X_test)
    check_proba(proba, 10)
    assert proba[:, 2].max() < 0.5, "a class absent from training must get little probability"

    np.testing.assert_array_equal(X, X0)
    # Same seed → same predictions.
    again = spec.build(info, seed=0).fit(X, y).predict_proba(X_test)
    np.testing.assert_allclose(again, hard.predict_proba(X_test), rtol=1e-6, atol=1e-9)
