"""Property tests (hypothesis) for the attacks: exact counts, truthful masks, identity at rate 0,
the direction of flips, the range of feature noise, determinism, and parameter errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attacks import ATTACKS
from attacks.feature_noise import FeatureNoise
from attacks.label_flip import LabelFlip
from bench.core.types import DatasetInfo, ParamError, exact_count

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

rates = st.floats(0.0, 1.0, allow_nan=False)
seeds = st.integers(0, 2**32 - 1)


def info_for(k: int) -> DatasetInfo:
    return DatasetInfo(name="toy", class_names=tuple(f"c{i}" for i in range(k)), n_features=3)


@st.composite
def labelled(draw, min_rows: int = 1, max_rows: int = 60, integer_features: bool = False):
    """(X float32 n×d, y int64 in 0..k-1, k): labels may leave classes absent."""
    k = draw(st.integers(2, 6))
    n = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(1, 4))
    y = draw(arrays(np.int64, n, elements=st.integers(0, k - 1)))
    if integer_features:
        # Small integers: every feature with two distinct values has a range >= 1, so a uniform
        # draw (float32) equals the original value with negligible probability.
        elements = st.integers(-20, 20).map(float)
    else:
        elements = st.floats(-1e4, 1e4, allow_nan=False, width=32)
    X = draw(arrays(np.float32, (n, d), elements=elements))
    return X, y, k


def changed_rows(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.any(before.reshape(len(before), -1) != after.reshape(len(after), -1), axis=1)


# --------------------------------------------------------------------------------------------
# Label flips
# --------------------------------------------------------------------------------------------


@PROPERTY
@given(data=labelled(), rate=rates, seed=seeds)
def test_random_flip_counts_mask_and_classes(data, rate, seed):
    X, y, k = data
    X0, y0 = X.copy(), y.copy()
    attack = LabelFlip(mode="random").bind(info_for(k))
    out = attack.poison(X, y, rate, np.random.default_rng(seed))
    # Exact count: rate × eligible (all rows), rounded half up.
    assert out.mask.sum() == exact_count(rate, len(y)) == math.floor(rate * len(y) + 0.5)
    assert out.n_poisoned == out.mask.sum()
    # The mask is exactly the changed rows; features are untouched.
    np.testing.assert_array_equal(out.mask, out.y != y)
    np.testing.assert_array_equal(out.X, X)
    # Every flipped row gets another class inside 0..k-1 (absent classes included).
    assert np.all(out.y[out.mask] != y[out.mask])
    assert out.y.min() >= 0 and out.y.max() < k
    assert out.X.dtype == X.dtype and out.y.dtype == np.int64 and out.mask.dtype == bool
    # Inputs never mutated.
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)


@PROPERTY
@given(data=labelled(), rate=rates, seed=seeds, pair=st.data())
def test_targeted_flip_moves_only_source_to_target(data, rate, seed, pair):
    X, y, k = data
    source = pair.draw(st.integers(0, k - 1), label="source")
    target = pair.draw(st.integers(0, k - 1).filter(lambda t: t != source), label="target")
    y0 = y.copy()
    attack = LabelFlip(mode="targeted", source=source, target=target).bind(info_for(k))
    out = attack.poison(X, y, rate, np.random.default_rng(seed))
    eligible = y == source
    assert out.mask.sum() == exact_count(rate, int(eligible.sum()))
    np.testing.assert_array_equal(out.mask, out.y != y)
    assert np.all(eligible[out.mask]), "only source rows may be flipped"
    assert np.all(out.y[out.mask] == target), "flipped rows go to the target class"
    np.testing.assert_array_equal(out.y[~out.mask], y[~out.mask])
    np.testing.assert_array_equal(out.X, X)
    np.testing.assert_array_equal(y, y0)


def test_targeted_flip_accepts_class_names():
    info = DatasetInfo(name="iris", class_names=("setosa", "versicolor", "virginica"), n_features=4)
    attack = LabelFlip(mode="targeted", source="versicolor", target="virginica").bind(info)
    assert attack.target_pair() == (1, 2)
    y = np.array([0, 1, 1, 1, 2], dtype=np.int64)
    out = attack.poison(np.zeros((5, 4), np.float32), y, 1.0, np.random.default_rng(0))
    np.testing.assert_array_equal(out.y, [0, 2, 2, 2, 2])


# --------------------------------------------------------------------------------------------
# Feature noise
# --------------------------------------------------------------------------------------------


@PROPERTY
@given(data=labelled(), rate=rates, seed=seeds)
def test_uniform_noise_stays_in_clean_ranges_and_mask_is_truthful(data, rate, seed):
    X, y, _ = data
    X0, y0 = X.copy(), y.copy()
    out = FeatureNoise(mode="uniform").poison(X, y, rate, np.random.default_rng(seed))
    low, high = X.min(axis=0), X.max(axis=0)
    assert np.all(low <= out.X) and np.all(high >= out.X)
    np.testing.assert_array_equal(out.mask, changed_rows(X, out.X))
    assert out.mask.sum() <= exact_count(rate, len(y))
    np.testing.assert_array_equal(out.y, y)
    assert out.X.dtype == np.float32
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)


@PROPERTY
@given(data=labelled(min_rows=2, integer_features=True), rate=rates, seed=seeds)
def test_uniform_noise_exact_count_when_features_vary(data, rate, seed):
    X, y, _ = data
    X[0] = X[1] + 1  # every feature has at least two distinct values, so every row can change
    out = FeatureNoise(mode="uniform").poison(X, y, rate, np.random.default_rng(seed))
    assert out.mask.sum() == exact_count(rate, len(y))


def test_uniform_noise_on_constant_rows_changes_nothing_and_says_so():
    X = np.ones((6, 3), np.float32)
    out = FeatureNoise(mode="uniform").poison(
        X, np.zeros(6, np.int64), 1.0, np.random.default_rng(0)
    )
    assert not out.mask.any()
    np.testing.assert_array_equal(out.X, X)


@PROPERTY
@given(
    data=labelled(min_rows=2),
    rate=rates,
    seed=seeds,
    sigma=st.floats(0.01, 10.0, allow_nan=False),
)
def test_gaussian_noise_with_clip_stays_in_range(data, rate, seed, sigma):
    X, y, _ = data
    out = FeatureNoise(mode="gaussian", sigma=sigma, clip=True).poison(
        X, y, rate, np.random.default_rng(seed)
    )
    assert np.all(X.min(axis=0) <= out.X) and np.all(X.max(axis=0) >= out.X)
    np.testing.assert_array_equal(out.mask, changed_rows(X, out.X))
    assert out.mask.sum() <= exact_count(rate, len(y))


@PROPERTY
@given(data=labelled(min_rows=2, integer_features=True), rate=rates, seed=seeds)
def test_gaussian_noise_without_clip_changes_exactly_the_count(data, rate, seed):
    X, y, _ = data
    X[0] = X[1] + 1  # every feature has a positive standard deviation
    out = FeatureNoise(mode="gaussian", sigma=1.0).poison(X, y, rate, np.random.default_rng(seed))
    assert out.mask.sum() == exact_count(rate, len(y))
    np.testing.assert_array_equal(out.mask, changed_rows(X, out.X))


def test_feature_noise_on_images_keeps_shape():
    rng = np.random.default_rng(0)
    X = rng.random((20, 1, 4, 4)).astype(np.float32)
    out = FeatureNoise(mode="uniform").poison(X, np.zeros(20, np.int64), 0.5, rng)
    assert out.X.shape == X.shape and out.X.dtype == np.float32
    assert out.mask.sum() == 10


# --------------------------------------------------------------------------------------------
# Every registered attack: rate 0, determinism, no mutation
# --------------------------------------------------------------------------------------------


def bound_attacks(k: int) -> list:
    """One bound instance per registered attack and mode (targeted 0 → 1)."""
    out = []
    for name, cls in ATTACKS.items():
        if name == "backdoor":  # its default trigger (a patch) needs images; these are tables
            for params in ({"trigger": "blend"}, {"trigger": "features", "features": [0]}):
                out.append(cls.from_params(params).bind(info_for(k)))
            continue
        instance = cls.from_params({})
        out.append(instance.bind(info_for(k)))
        if name == "label_flip":
            out.append(
                cls.from_params({"mode": "targeted", "source": 0, "target": 1}).bind(info_for(k))
            )
        if name == "feature_noise":
            out.append(cls.from_params({"mode": "gaussian", "clip": True}).bind(info_for(k)))
    return out


@PROPERTY
@given(data=labelled(), seed=seeds)
def test_rate_zero_is_the_identity(data, seed):
    X, y, k = data
    for attack in bound_attacks(k):
        out = attack.poison(X, y, 0.0, np.random.default_rng(seed))
        np.testing.assert_array_equal(out.X, X)
        np.testing.assert_array_equal(out.y, y)
        assert out.mask.dtype == bool and not out.mask.any(), attack
        assert out.X is not X and out.y is not y, "the output must not alias the input"


@PROPERTY
@given(data=labelled(), rate=rates, seed=seeds)
def test_same_seed_same_output_and_inputs_untouched(data, rate, seed):
    X, y, k = data
    X0, y0 = X.copy(), y.copy()
    for attack in bound_attacks(k):
        a = attack.poison(X, y, rate, np.random.default_rng(seed))
        b = attack.poison(X, y, rate, np.random.default_rng(seed))
        np.testing.assert_array_equal(a.X, b.X)
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(X, X0)
        np.testing.assert_array_equal(y, y0)


def test_different_seeds_choose_different_rows():
    y = np.arange(200, dtype=np.int64) % 4
    X = np.zeros((200, 2), np.float32)
    attack = LabelFlip(mode="random").bind(info_for(4))
    a = attack.poison(X, y, 0.2, np.random.default_rng(1))
    b = attack.poison(X, y, 0.2, np.random.default_rng(2))
    assert a.mask.sum() == b.mask.sum() == 40
    assert not np.array_equal(a.mask, b.mask)


# --------------------------------------------------------------------------------------------
# Invalid parameters
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), float("inf")])
def test_rate_outside_unit_interval_is_a_param_error(rate):
    attack = LabelFlip(mode="random").bind(info_for(3))
    with pytest.raises(ParamError) as exc:
        attack.poison(
            np.zeros((4, 2), np.float32), np.zeros(4, np.int64), rate, np.random.default_rng(0)
        )
    assert exc.value.field == "rate"
    assert "[0, 1]" in str(exc.value)


def test_source_equal_to_target_is_a_param_error():
    with pytest.raises(ParamError) as exc:
        LabelFlip.from_params({"mode": "targeted", "source": 1, "target": 1}, "attacks[0]")
    assert exc.value.field == "attacks[0].target"
    assert "must differ from source" in str(exc.value)


def test_source_equal_to_target_by_name_is_caught_at_bind():
    info = DatasetInfo(name="iris", class_names=("setosa", "versicolor", "virginica"), n_features=4)
    attack = LabelFlip.from_params({"mode": "targeted", "source": "setosa", "target": 0})
    with pytest.raises(ParamError, match=r"attacks\[0\]\.target: must differ from source"):
        attack.bind(info, "attacks[0]")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("source", 7, r"attacks\[0\]\.source: 7 is not a class of toy \(0\.\.2\)"),
        ("target", -1, r"attacks\[0\]\.target: -1 is not a class of toy \(0\.\.2\)"),
        ("source", "dog", r"attacks\[0\]\.source: 'dog' is not a class of toy \(names: c0, c1, c2"),
    ],
)
def test_class_not_in_dataset_is_a_param_error_listing_valid_classes(field, value, expected):
    params = {"mode": "targeted", "source": 0, "target": 1, field: value}
    attack = LabelFlip.from_params(params, "attacks[0]")
    with pytest.raises(ParamError, match=expected):
        attack.bind(info_for(3), "attacks[0]")


@pytest.mark.parametrize(
    ("params", "field", "expected"),
    [
        ({"mode": "targeted", "target": 1}, "source", "required when mode is 'targeted'"),
        ({"mode": "random", "source": 1}, "source", "only used when mode is 'targeted'"),
        ({"mode": "sideways"}, "mode", "'targeted', 'random'"),
    ],
)
def test_label_flip_mode_errors(params, field, expected):
    with pytest.raises(ParamError) as exc:
        LabelFlip.from_params(params, "attacks[0]")
    assert exc.value.field == f"attacks[0].{field}"
    assert expected in exc.value.message


@pytest.mark.parametrize(
    ("params", "field", "expected"),
    [
        ({"sigma": 0}, "sigma", "must be in (0, 1000], got 0"),
        ({"sigma": 1e308}, "sigma", "must be in (0, 1000], got 1e+308"),
        ({"sigma": float("nan")}, "sigma", "NaN"),
        ({"mode": "salt"}, "mode", "'uniform', 'gaussian'"),
        ({"clip": "yes"}, "clip", "expected true or false"),
        ({"strength": 2}, "strength", "unknown parameter (valid: mode, sigma, clip"),
    ],
)
def test_feature_noise_param_errors(params, field, expected):
    with pytest.raises(ParamError) as exc:
        FeatureNoise.from_params(params, "attacks[1]")
    assert exc.value.field == f"attacks[1].{field}"
    assert expected in exc.value.message
