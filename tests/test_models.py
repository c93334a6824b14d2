"""scikit-learn model adapter: soft targets by weighted duplication, all-class probabilities,
single-class training."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression

from bench.core.types import DatasetInfo, ParamError
from bench.models import MODELS, SklearnClassifier, expand_soft_targets

K = 3
INFO = DatasetInfo("blobs", ("a", "b", "c"), n_features=4)
SKLEARN_MODELS = ["logreg", "random_forest", "svm", "mlp"]


@pytest.fixture
def data():
    X, y = make_blobs(n_samples=90, centers=K, n_features=4, cluster_std=1.5, random_state=0)
    return X.astype(np.float32), y.astype(np.int64)


def test_expand_soft_targets_is_the_weighted_duplication():
    targets = np.array([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0], [0.2, 0.2, 0.6]])
    weight = np.array([1.0, 2.0, 0.5])
    rows, labels, w = expand_soft_targets(targets, weight, K)
    got = sorted(zip(rows.tolist(), labels.tolist(), np.round(w, 12).tolist(), strict=True))
    expected = [
        (0, 0, 0.7),
        (0, 1, 0.3),
        (1, 2, 2.0),
        (2, 0, 0.1),
        (2, 1, 0.1),
        (2, 2, 0.3),
    ]
    assert got == expected
    # Each row's weights sum to its sample weight: no row gains or loses influence.
    np.testing.assert_allclose(np.bincount(rows, weights=w, minlength=3), weight)


def test_expand_hard_targets_is_the_identity():
    y = np.array([2, 0, 1, 1])
    rows, labels, w = expand_soft_targets(y, None, K)
    np.testing.assert_array_equal(rows, np.arange(4))
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_array_equal(w, np.ones(4))
    assert labels.dtype == np.int64


def test_soft_fit_equals_a_fit_on_the_expanded_rows(data):
    X, y = data
    rng = np.random.default_rng(0)
    targets = 0.7 * np.eye(K)[y] + 0.3 * rng.dirichlet(np.ones(K), size=len(y))
    model = SklearnClassifier(LogisticRegression(max_iter=1000), K).fit(X, targets)
    rows, labels, w = expand_soft_targets(targets, None, K)
    reference = LogisticRegression(max_iter=1000).fit(X[rows], labels, sample_weight=w)
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X), atol=1e-6)


def test_uniform_weights_other_than_one_are_passed_on(data):
    """A uniform weight c != 1 changes a regularised fit: it must not be dropped as 'no weight'."""
    X, y = data
    half = np.full(len(y), 0.5)
    model = SklearnClassifier(LogisticRegression(max_iter=1000), K).fit(X, y, half)
    reference = LogisticRegression(max_iter=1000).fit(X, y, sample_weight=half)
    unweighted = LogisticRegression(max_iter=1000).fit(X, y)
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X), atol=1e-6)
    assert not np.allclose(reference.predict_proba(X), unweighted.predict_proba(X), atol=1e-4)


@pytest.mark.parametrize("name", SKLEARN_MODELS)
def test_absent_class_gets_probability_zero(name, data):
    X, y = data
    present = y != 1
    model = MODELS.get(name)().build(INFO, seed=0).fit(X[present], y[present])
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), K)
    np.testing.assert_array_equal(proba[:, 1], 0.0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba.argmax(axis=1)[y != 1] == y[y != 1]).mean() > 0.9


@pytest.mark.parametrize("name", SKLEARN_MODELS)
def test_single_class_training_gives_a_constant_predictor(name, data):
    X, y = data
    model = MODELS.get(name)().build(INFO, seed=0).fit(X[y == 2], y[y == 2])
    proba = model.predict_proba(X)
    np.testing.assert_array_equal(proba, np.tile([0.0, 0.0, 1.0], (len(X), 1)))


@pytest.mark.parametrize("name", SKLEARN_MODELS)
def test_models_learn_easy_data_from_hard_and_soft_targets(name, data):
    X, y = data
    soft = 0.9 * np.eye(K)[y] + 0.1 / K
    for targets in (y, soft):
        model = MODELS.get(name)().build(INFO, seed=0).fit(X, targets)
        assert (model.predict_proba(X).argmax(axis=1) == y).mean() > 0.9


def test_images_are_flattened():
    rng = np.random.default_rng(0)
    y = np.arange(30) % K
    X = rng.random((30, 1, 4, 4)).astype(np.float32) + y[:, None, None, None]
    model = MODELS.get("logreg")().build(INFO, seed=0).fit(X, y)
    assert model.predict_proba(X).shape == (30, K)


def test_same_seed_same_model_and_seed_matters(data):
    X, y = data
    a = MODELS.get("random_forest")(n_estimators=5).build(INFO, seed=1).fit(X, y)
    b = MODELS.get("random_forest")(n_estimators=5).build(INFO, seed=1).fit(X, y)
    c = MODELS.get("random_forest")(n_estimators=5).build(INFO, seed=2).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("logreg", {"C": 0}, "C"),
        ("logreg", {"C": "big"}, "C"),
        ("random_forest", {"n_estimators": 0}, "n_estimators"),
        ("random_forest", {"max_depth": 1.5}, "max_depth"),
        ("svm", {"kernel": "linear"}, "kernel"),
        ("mlp", {"hidden": []}, "hidden"),
    ],
)
def test_model_param_errors_name_the_field(name, params, field):
    with pytest.raises(ParamError) as exc:
        MODELS.get(name).from_params(params, "models[0]")
    assert exc.value.field == f"models[0].{field}"


def test_unknown_model_lists_valid_names():
    with pytest.raises(ParamError, match=r"unknown model 'xgb' \(valid: .*logreg.*svm"):
        MODELS.get("xgb", "models[0]")


def test_svm_with_a_single_row_class_still_gives_probabilities(data):
    X, y = data
    keep = np.r_[np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:1]]
    model = MODELS.get("svm")().build(INFO, seed=0).fit(X[keep], y[keep])
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba.argmax(axis=1)[y != 2] == y[y != 2]).mean() > 0.9
