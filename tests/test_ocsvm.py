"""One-Class SVM's kernel width and the outlier filters' feature spaces, on digits, where the
old default width (1/n_features on PCA scores of raw pixels) left the detector at chance."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from attacks.label_flip import LabelFlip
from bench.core.metrics import detection_metrics
from bench.core.types import DefenseContext, ParamError, TrainingSet
from bench.data.datasets import load_dataset, split
from defenses import DEFENSES
from defenses.outlier import parse_space, project, rbf_gamma


def _digits_with_flips(seed: int) -> tuple[TrainingSet, DefenseContext]:
    """300 digits train rows with 10 % random label flips (the issue's setting)."""
    ds = load_dataset("digits")
    rows = split(ds, 300, 0.25, rng=np.random.default_rng(seed)).train
    X, y = ds.X[rows], ds.y[rows]
    out = LabelFlip(mode="random").bind(ds.info).poison(X, y, 0.1, np.random.default_rng(seed))
    train = TrainingSet(X=out.X, y=out.y, mask=out.mask, n_classes=ds.info.n_classes)
    ctx = DefenseContext(ds.info, 300, np.empty((0, X.shape[1]), np.float32), np.empty(0, np.int64))
    return train, ctx


def _flip_auc(params: dict, seed: int = 0) -> float:
    train, ctx = _digits_with_flips(seed)
    result = DEFENSES.get("ocsvm").from_params(params).apply(train, ctx, np.random.default_rng(0))
    n_classes = train.n_classes
    return detection_metrics(train.mask, result.removed, result.scores, train.y, n_classes)[
        "det_roc_auc"
    ]


@pytest.mark.parametrize("approx", ["exact", "nystroem"])
@pytest.mark.parametrize("seed", [0, 1])
def test_per_class_ocsvm_in_pca_space_finds_random_flips_on_digits(approx, seed):
    auc = _flip_auc({"space": "pca:20", "approx": approx}, seed)
    assert auc >= 0.85, auc


def test_the_old_width_is_what_failed():
    # PyOD's 1/n_features: within-class squared distances ~1,000 put every kernel value at
    # ~1e-21 and the ranking at chance or worse (0.35 here)
    assert _flip_auc({"space": "pca:20", "gamma": "auto"}) < 0.6
    assert _flip_auc({"space": "pca:20", "gamma": 1 / 20}) < 0.6  # the same, as a number


def test_scale_width_is_scikit_learns():
    rng = np.random.default_rng(0)
    Z = rng.normal(0, 30, size=(80, 5))
    gamma = rbf_gamma(Z, "scale")
    assert gamma == pytest.approx(1 / (5 * Z.var()))
    ours = OneClassSVM(gamma=gamma).fit(Z).decision_function(Z)
    sklearn = OneClassSVM(gamma="scale").fit(Z).decision_function(Z)
    np.testing.assert_allclose(ours, sklearn, rtol=1e-9, atol=1e-12)
    assert rbf_gamma(Z, "auto") == pytest.approx(1 / 5)
    assert rbf_gamma(Z, 0.3) == 0.3
    assert rbf_gamma(np.ones((4, 3)), "scale") == 1.0  # constant rows: sklearn's fallback


@pytest.mark.parametrize("gamma", ["wide", 0, -1.0, float("inf")])
def test_gamma_errors_name_the_field(gamma):
    with pytest.raises(ParamError) as exc:
        DEFENSES.get("ocsvm").from_params({"gamma": gamma}, "defenses[0]")
    assert exc.value.field == "defenses[0].gamma"


def test_gamma_shows_in_the_label_when_not_the_default():
    ocsvm = DEFENSES.get("ocsvm")
    assert ocsvm.from_params({}).label() == "ocsvm"
    assert ocsvm.from_params({"gamma": "auto"}).label() == "ocsvm(gamma=auto)"
    assert ocsvm.from_params({"gamma": 0.5, "approx": "nystroem"}).label() == (
        "ocsvm(gamma=0.5,nystroem:300)"
    )


def test_std_pca_standardizes_before_pca_and_pca_does_not():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 6)) * np.array([1, 1, 1, 1, 50, 200])
    std = project(X, "std-pca:3", is_image=False, seed=0)
    expected = PCA(n_components=3, random_state=0).fit_transform(StandardScaler().fit_transform(X))
    np.testing.assert_allclose(std, expected)
    raw = project(X, "pca:3", is_image=False, seed=0)
    np.testing.assert_allclose(raw, PCA(n_components=3, random_state=0).fit_transform(X))
    assert not np.allclose(np.abs(raw), np.abs(std))
    assert parse_space("std-pca:12") == ("std-pca", 12)
    for bad in ("std-pca:0", "std-pca:x", "stdpca:3"):
        with pytest.raises(ParamError, match="std-pca:K"):
            parse_space(bad)


@pytest.mark.parametrize("name", ["iforest", "lof", "ocsvm"])
def test_every_filter_runs_in_std_pca(name):
    train, ctx = _digits_with_flips(0)
    result = (
        DEFENSES.get(name)
        .from_params({"space": "std-pca:20"})
        .apply(train, ctx, np.random.default_rng(0))
    )
    auc = detection_metrics(train.mask, result.removed, result.scores, train.y, train.n_classes)
    assert auc["det_roc_auc"] > 0.7  # chance is 0.5; raw pca:20 does better on pixels
