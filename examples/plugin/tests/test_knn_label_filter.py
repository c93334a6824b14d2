"""The example plug-in's own tests: poisonbench's contract checks (the same ones the project
runs over its built-ins) and one test of what the filter is for."""

from __future__ import annotations

import numpy as np
import pytest
from poisonbench_knn import KnnLabelFilter

import poisonbench as pb
from poisonbench.testing import DATA_KINDS, NotApplicable, check_defense


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("kind", DATA_KINDS)
def test_contract(kind, soft):
    try:
        check_defense(KnnLabelFilter, kind, soft)
    except NotApplicable as exc:
        pytest.skip(str(exc))


def test_registered_under_its_name():
    assert pb.defenses.get("knn_label_filter") is KnnLabelFilter


def test_finds_random_label_flips_on_separated_blobs():
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=300, centers=3, n_features=4, cluster_std=1.0, random_state=0)
    rng = np.random.default_rng(0)
    flipped = rng.random(len(y)) < 0.2
    y_bad = np.where(flipped, (y + rng.integers(1, 3, len(y))) % 3, y)
    train = pb.TrainingSet(
        X=X.astype(np.float32), y=y_bad.astype(np.int64), mask=flipped, n_classes=3
    )
    info = pb.DatasetInfo("blobs", ("a", "b", "c"), n_features=4)
    ctx = pb.DefenseContext(info=info, n_train=len(y), pool_X=X[:0], pool_y=y[:0])
    result = KnnLabelFilter().apply(train, ctx, np.random.default_rng(0))
    removed = result.removed
    precision = (removed & flipped).sum() / removed.sum()
    recall = (removed & flipped).sum() / flipped.sum()
    assert precision > 0.9 and recall > 0.9, (precision, recall)


def test_parameters_are_checked():
    with pytest.raises(pb.ParamError, match="k: 0 must be >= 1"):
        KnnLabelFilter.from_params({"k": 0})
    with pytest.raises(pb.ParamError, match="agreement"):
        KnnLabelFilter.from_params({"agreement": 1.5})
