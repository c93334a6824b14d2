"""Defenses on designed synthetic data (Gaussian blobs), where the right answer is known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from attacks.label_flip import LabelFlip
from bench.core.metrics import detection_metrics
from bench.core.types import DatasetInfo, DefenseContext, ParamError, TrainingSet
from bench.models import MODELS
from defenses import DEFENSES

INFO = DatasetInfo("blobs", ("a", "b", "c"), n_features=4)
K = 3


def blobs(n: int, std: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n_samples=n, centers=K, n_features=4, cluster_std=std, random_state=seed)
    return X.astype(np.float32), y.astype(np.int64)


def poisoned_set(X, y, rate: float, seed: int) -> TrainingSet:
    out = LabelFlip(mode="random").bind(INFO).poison(X, y, rate, np.random.default_rng(seed))
    return TrainingSet(X=out.X, y=out.y, mask=out.mask, n_classes=K)


def no_pool(n_train: int) -> DefenseContext:
    return DefenseContext(INFO, n_train, np.empty((0, 4), np.float32), np.empty(0, np.int64))


def accuracy(train: TrainingSet, X_test, y_test) -> float:
    model = MODELS.get("logreg")().build(INFO, seed=0).fit(train.X, train.targets)
    return float((model.predict_proba(X_test).argmax(axis=1) == y_test).mean())


def apply(name: str, train: TrainingSet, ctx: DefenseContext, seed: int = 0, **params):
    return DEFENSES.get(name).from_params(params).apply(train, ctx, np.random.default_rng(seed))


# --------------------------------------------------------------------------------------------
# Oracle: the ceiling
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_oracle_filter_restores_clean_accuracy_after_heavy_random_flips(seed):
    X, y = blobs(1200, std=2.0)
    X_train, y_train, X_test, y_test = X[:600], y[:600], X[600:], y[600:]
    clean = accuracy(TrainingSet(X_train, y_train, np.zeros(600, bool), K), X_test, y_test)
    train = poisoned_set(X_train, y_train, 0.6, seed)
    undefended = accuracy(train, X_test, y_test)
    result = apply("oracle_filter", train, no_pool(600))
    assert not result.train.mask.any(), "every poisoned row is removed"
    assert len(result.train) == 600 - train.mask.sum() == 240
    np.testing.assert_array_equal(result.removed, train.mask)
    defended = accuracy(result.train, X_test, y_test)
    assert undefended < clean - 0.1, "the design must hurt, or the test shows nothing"
    assert defended == pytest.approx(clean, abs=0.02)


# --------------------------------------------------------------------------------------------
# Outlier filters: per class sees label flips, global does not
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_iforest_detects_random_flips_far_better_than_global(seed):
    X, y = blobs(300, std=1.0)
    train = poisoned_set(X, y, 0.1, seed)
    aucs = {}
    for per_class in (True, False):
        result = apply("iforest", train, no_pool(300), per_class=per_class, contamination=0.1)
        metrics = detection_metrics(train.mask, result.removed, result.scores, train.y, K)
        aucs[per_class] = metrics["det_roc_auc"]
        assert result.removed.sum() == pytest.approx(0.1 * 300, abs=K), "contamination is honoured"
    assert aucs[True] > 0.9
    assert aucs[True] > aucs[False] + 0.3
    assert aucs[False] < 0.7  # a global detector only sees features, which flips leave alone


@pytest.mark.parametrize("name", ["lof", "ocsvm"])
def test_other_per_class_detectors_also_beat_chance_on_flips(name):
    X, y = blobs(300, std=1.0)
    train = poisoned_set(X, y, 0.1, 0)
    result = apply(name, train, no_pool(300))
    metrics = detection_metrics(train.mask, result.removed, result.scores, train.y, K)
    assert metrics["det_roc_auc"] > 0.8


def test_any_pyod_detector_by_name():
    X, y = blobs(150, std=1.0)
    train = poisoned_set(X, y, 0.1, 0)
    result = apply("pyod", train, no_pool(150), detector="knn")
    assert result.removed.dtype == bool and 0 < result.removed.sum() < 150
    with pytest.raises(ParamError, match="not a PyOD detector"):
        DEFENSES.get("pyod").from_params({"detector": "no_such_detector"})


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"contamination": 0.0}, "contamination"),
        ({"contamination": 0.7}, "contamination"),
        ({"space": "pca:0"}, "space"),
        ({"space": "cubic"}, "space"),
    ],
)
def test_outlier_filter_param_errors(params, field):
    with pytest.raises(ParamError) as exc:
        DEFENSES.get("iforest").from_params(params, "defenses[1]")
    assert exc.value.field == f"defenses[1].{field}"


@pytest.mark.parametrize("space", ["raw", "standardized", "pca:2", "auto"])
def test_outlier_filter_spaces_run(space):
    X, y = blobs(120, std=1.0)
    train = poisoned_set(X, y, 0.1, 0)
    result = apply("iforest", train, no_pool(120), space=space)
    assert np.isfinite(result.scores).all()
    assert len(result.train) == 120 - result.removed.sum()


# --------------------------------------------------------------------------------------------
# Random filter: the floor
# --------------------------------------------------------------------------------------------


def test_random_filter_precision_is_about_the_poison_rate():
    X, y = blobs(1200, std=1.0)
    train = poisoned_set(X, y, 0.2, 0)
    precisions = []
    for seed in range(12):
        result = apply("random_filter", train, no_pool(1200), seed=seed, contamination=0.1)
        assert result.removed.sum() == 120  # exactly contamination × rows
        metrics = detection_metrics(train.mask, result.removed, result.scores, train.y, K)
        precisions.append(metrics["det_precision"])
    assert np.mean(precisions) == pytest.approx(0.2, abs=0.04)
    assert len(set(precisions)) > 1, "different seeds remove different rows"


# --------------------------------------------------------------------------------------------
# Label smoothing and extra clean data
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5, 0.9])
def test_label_smoothing_targets(epsilon):
    y = np.array([0, 1, 2, 2, 1], dtype=np.int64)
    train = TrainingSet(np.zeros((5, 4), np.float32), y, np.zeros(5, bool), K)
    out = apply("label_smoothing", train, no_pool(5), epsilon=epsilon).train
    expected = (1 - epsilon) * np.eye(K)[y] + epsilon / K
    np.testing.assert_allclose(out.targets, expected)
    np.testing.assert_allclose(out.targets.sum(axis=1), 1.0)
    np.testing.assert_array_equal(out.y, y)  # the labels (for metrics) stay hard
    assert train.targets.ndim == 1, "the input set is not changed"


def test_label_smoothing_twice_composes():
    y = np.array([0, 1, 2], dtype=np.int64)
    train = TrainingSet(np.zeros((3, 4), np.float32), y, np.zeros(3, bool), K)
    once = apply("label_smoothing", train, no_pool(3), epsilon=0.2).train
    twice = apply("label_smoothing", once, no_pool(3), epsilon=0.2).train
    first = 0.8 * np.eye(K)[y] + 0.2 / K
    np.testing.assert_allclose(twice.targets, 0.8 * first + 0.2 / K)


@pytest.mark.parametrize("epsilon", [-0.1, 1.0, 1.5])
def test_label_smoothing_epsilon_errors(epsilon):
    with pytest.raises(ParamError, match=r"defenses\[0\]\.epsilon: .* outside \[0, 1\)"):
        DEFENSES.get("label_smoothing").from_params({"epsilon": epsilon}, "defenses[0]")


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_extra_clean_appends_fraction_of_n_train_trusted_rows(fraction):
    X, y = blobs(400, std=1.0)
    train = poisoned_set(X[:100], y[:100], 0.2, 0)
    ctx = DefenseContext(INFO, 100, X[100:], y[100:])
    result = apply("extra_clean", train, ctx, fraction=fraction)
    out = result.train
    wanted = round(fraction * 100)
    assert len(out) == 100 + wanted
    assert out.trusted.sum() == wanted and not out.trusted[:100].any()
    np.testing.assert_array_equal(out.X[100:], X[100 : 100 + wanted])  # the pool's prefix
    np.testing.assert_array_equal(out.y[100:], y[100 : 100 + wanted])
    assert not out.mask[100:].any()
    np.testing.assert_array_equal(out.X[:100], train.X)
    assert result.details == {"pool_rows": wanted, "pool_short": 0}


def test_extra_clean_after_filter_and_twice_uses_fresh_pool_rows():
    X, y = blobs(400, std=1.0)
    train = poisoned_set(X[:100], y[:100], 0.2, 0)
    ctx = DefenseContext(INFO, 100, X[100:], y[100:])
    filtered = apply("oracle_filter", train, ctx)
    assert filtered.pool_used == 0
    first = apply("extra_clean", filtered.train, ctx, fraction=0.3)
    assert first.pool_used == 30
    # The runner passes each step the pool rows earlier steps left (DefenseContext.pool_start).
    ctx = dataclasses.replace(ctx, pool_start=first.pool_used)
    second = apply("extra_clean", first.train, ctx, fraction=0.2)
    once, twice = first.train, second.train
    # n_train (before any step) sets the count, not the filtered size.
    assert len(once) == len(filtered.train) + 30
    assert len(twice) == len(once) + 20 and second.pool_used == 20
    np.testing.assert_array_equal(twice.X[len(once) :], X[130:150])  # continues the pool


def test_extra_clean_reports_a_short_pool():
    X, y = blobs(130, std=1.0)
    train = poisoned_set(X[:100], y[:100], 0.2, 0)
    ctx = DefenseContext(INFO, 100, X[100:], y[100:])
    result = apply("extra_clean", train, ctx, fraction=0.5)
    assert len(result.train) == 130
    assert result.details == {"pool_rows": 30, "pool_short": 20}


def test_extra_clean_on_soft_targets_appends_one_hot():
    X, y = blobs(200, std=1.0)
    train = TrainingSet(X[:100], y[:100], np.zeros(100, bool), K)
    ctx = DefenseContext(INFO, 100, X[100:], y[100:])
    smooth = apply("label_smoothing", train, ctx, epsilon=0.3).train
    out = apply("extra_clean", smooth, ctx, fraction=0.1).train
    assert out.targets.shape == (110, K)
    np.testing.assert_allclose(out.targets[100:], np.eye(K)[y[100:110]])


def test_filters_never_remove_trusted_rows():
    X, y = blobs(400, std=1.0)
    train = poisoned_set(X[:100], y[:100], 0.3, 0)
    ctx = DefenseContext(INFO, 100, X[100:], y[100:])
    with_pool = apply("extra_clean", train, ctx, fraction=1.0).train
    for name in ("iforest", "random_filter", "oracle_filter"):
        params = {"contamination": 0.5} if name != "oracle_filter" else {}
        result = apply(name, with_pool, ctx, **params)
        assert not result.removed[100:].any(), name
        assert np.isnan(result.scores[100:]).all(), "trusted rows are not scored"
        assert result.train.trusted.sum() == 100
