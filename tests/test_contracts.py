"""Contract tests over EVERY registered attack, defense and model (scikit-learn's check_estimator
idea): the registries are read at collection time, so a plug-in is tested the moment it is
registered.

A plug-in may refuse a kind of data in ``bind`` (an image-only CNN on tabular rows) by raising
ParamError: that combination is skipped as not applicable. Any other exception fails.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from attacks import ATTACKS
from bench.models import MODELS
from bench.types import (
    DatasetInfo,
    DefenseContext,
    ParamError,
    Poisoned,
    StepResult,
    TrainingSet,
)
from defenses import DEFENSES

K = 3
KINDS = ("tabular", "image")


def tiny(kind: str, n: int = 45, seed: int = 0) -> tuple[DatasetInfo, np.ndarray, np.ndarray]:
    """A tiny 3-class dataset: 4 blob features, or 1×12×12 "images" in [0, 1]. Rows are distinct."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % K
    names = tuple(f"class{i}" for i in range(K))
    if kind == "tabular":
        centers = np.array([[0, 0, 0, 0], [4, 4, 0, 0], [0, 4, 4, 4]], dtype=np.float64)
        X = (centers[y] + rng.normal(size=(n, 4))).astype(np.float32)
        return DatasetInfo("tiny", names, n_features=4), X, y
    X = rng.random((n, 1, 12, 12)).astype(np.float32)
    X[np.arange(n), 0, y * 4, :] = 1.0  # a class-specific bright row
    return DatasetInfo("tiny-img", names, n_features=144, image_shape=(1, 12, 12)), X, y


def bind_or_skip(plugin, info: DatasetInfo):
    """``plugin.bind(info)``; a ParamError means 'this plug-in does not take this data'."""
    try:
        return plugin.bind(info, "plugin")
    except ParamError as exc:
        pytest.skip(f"{type(plugin).__name__} does not apply to {info.name}: {exc}")


def check_params_round_trip(cls) -> object:
    # A plug-in with required parameters (an import path) declares what the contract builds it
    # with; every other plug-in is built from its defaults.
    instance = cls.from_params(getattr(cls, "example_params", {}))
    params = instance.params()
    json.dumps(params, allow_nan=False)  # cell identities hash these: they must be plain JSON
    again = cls.from_params(params)
    assert again == instance
    assert again.params() == params
    assert isinstance(instance.label() if hasattr(instance, "label") else cls.name, str)
    return instance


# --------------------------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_contract(name, kind):
    cls = ATTACKS.get(name)
    attack = bind_or_skip(check_params_round_trip(cls), tiny(kind)[0])
    info, X, y = tiny(kind)
    X0, y0 = X.copy(), y.copy()
    for rate in (0.0, 0.3, 1.0):
        out = attack.poison(X, y, rate, np.random.default_rng(0))
        assert isinstance(out, Poisoned)
        assert out.X.shape == X.shape and out.X.dtype == np.float32
        assert out.y.shape == y.shape and out.y.dtype == np.int64
        assert out.mask.shape == y.shape and out.mask.dtype == bool
        assert out.y.min() >= 0 and out.y.max() < info.n_classes
        changed = (out.y != y) | np.any(out.X.reshape(len(X), -1) != X.reshape(len(X), -1), axis=1)
        np.testing.assert_array_equal(out.mask, changed, err_msg="mask must be the changed rows")
        assert out.mask.sum() <= attack.eligible(y).sum()
        if rate == 0:
            assert not out.mask.any()
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
    info, X, y = tiny(kind, n=60)
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


def snapshot(train: TrainingSet) -> dict[str, np.ndarray]:
    return {
        k: np.array(getattr(train, k), copy=True) for k in ("X", "y", "mask", "targets", "trusted")
    }


def row_keys(X: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.ascontiguousarray(X.reshape(len(X), -1))]


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(DEFENSES))
def test_defense_contract(name, kind, soft):
    cls = DEFENSES.get(name)
    train, ctx = defense_inputs(kind, soft)
    defense = bind_or_skip(check_params_round_trip(cls), ctx.info)
    before = snapshot(train)
    result = defense.apply(train, ctx, np.random.default_rng(0))
    assert isinstance(result, StepResult)
    out = result.train
    assert isinstance(out, TrainingSet)
    # The input is never mutated.
    for key, value in before.items():
        np.testing.assert_array_equal(getattr(train, key), value, err_msg=f"input {key} changed")
    # Consistent shapes and types.
    n = len(out)
    assert out.X.shape[1:] == train.X.shape[1:] and out.X.dtype == np.float32
    assert out.y.shape == (n,) and out.y.dtype == np.int64
    assert out.mask.shape == (n,) and out.mask.dtype == bool
    assert out.trusted.shape == (n,) and out.trusted.dtype == bool
    assert out.n_classes == K
    if out.soft:
        assert out.targets.shape == (n, K)
        np.testing.assert_allclose(out.targets.sum(axis=1), 1.0)
        assert np.all(out.targets >= 0)
    else:
        assert out.targets.shape == (n,)
    if out.sample_weight is not None:
        assert out.sample_weight.shape == (n,) and np.all(out.sample_weight >= 0)
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
            assert source[key] == (int(label), bool(m), bool(t))
        else:
            assert key in pool, "a defense may only add trusted rows from the clean pool"
            assert pool[key] == int(label) and t and not m
    # Trusted rows are the defender's own: never removed.
    assert out.trusted.sum() >= train.trusted.sum()
    if result.removed is not None:
        assert result.removed.shape == (len(train),) and result.removed.dtype == bool
        assert not result.removed[train.trusted].any(), "trusted rows were removed"
        assert n == len(train) - result.removed.sum()
        np.testing.assert_array_equal(out.X, train.X[~result.removed])
    if result.scores is not None:
        assert result.scores.shape == (len(train),)
        assert np.isfinite(result.scores[~train.trusted]).all()
    json.dumps(result.details, allow_nan=True)  # details go into records: plain values only
    # Same rng seed → same output.
    again = defense.apply(train, ctx, np.random.default_rng(0)).train
    np.testing.assert_array_equal(again.X, out.X)
    np.testing.assert_array_equal(again.targets, out.targets)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def check_proba(proba: np.ndarray, n: int) -> None:
    assert proba.shape == (n, K)
    assert np.isfinite(proba).all() and np.all(proba >= -1e-9)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_model_contract(name, kind):
    cls = MODELS.get(name)
    info, X, y = tiny(kind)
    spec = bind_or_skip(check_params_round_trip(cls), info)
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
    assert proba[:, 2].max() < 0.5

    np.testing.assert_array_equal(X, X0)
    # Same seed → same predictions.
    again = spec.build(info, seed=0).fit(X, y).predict_proba(X_test)
    np.testing.assert_allclose(again, hard.predict_proba(X_test), rtol=1e-6, atol=1e-9)


def test_registries_are_not_empty():
    assert {"none", "label_flip", "feature_noise"} <= set(ATTACKS)
    assert {"none", "iforest", "lof", "ocsvm", "pyod", "oracle_filter", "random_filter"} <= set(
        DEFENSES
    )
    assert {"logreg", "random_forest", "svm", "mlp"} <= set(MODELS)
