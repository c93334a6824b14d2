"""Training-time defenses of the torch trainer: GLC's corrected loss and DP-SGD (Opacus).

Tiny MLPs on Gaussian blobs, a few epochs each. torch (and opacus for DP-SGD) skip locally when
missing and fail under CI=true.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import require
from sklearn.datasets import make_blobs

from attacks.label_flip import LabelFlip
from bench.core.types import DatasetInfo, DefenseContext, TrainingSet
from bench.models import MODELS, fit_options
from defenses import DEFENSES

INFO = DatasetInfo("blobs", ("a", "b", "c"), n_features=4)
K = 3
SWAP_01 = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # labels 0 and 1 always swapped


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """One intra-op thread, as in a worker process (see test_torch_models.py): on a busy 2-core
    machine spinning threads make these fits 10-30× slower."""
    monkeypatch.setenv("POISONBENCH_THREADS", "1")


def blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n_samples=n, centers=K, n_features=4, cluster_std=1.0, random_state=seed)
    return X.astype(np.float32), y.astype(np.int64)


def mlp(**params):
    base = {"hidden": [16], "epochs": 30, "lr": 0.01, "batch_size": 32, "device": "cpu"}
    return MODELS.get("torch-mlp").from_params({**base, **params})


def fit(spec, train: TrainingSet, seed: int = 0):
    return spec.build(INFO, seed).fit(
        train.X, train.targets, train.sample_weight, **fit_options(train)
    )


def accuracy(model, X, y) -> float:
    return float((model.predict_proba(X).argmax(axis=1) == y).mean())


# --------------------------------------------------------------------------------------------
# GLC
# --------------------------------------------------------------------------------------------


def test_glc_loss_is_forward_corrected_on_untrusted_rows_and_plain_on_trusted_rows():
    torch = require("torch")
    from defenses.robust_loss import robust_loss

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([1, 0, 2])
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    identity = {"name": "glc", "C": np.eye(K).tolist()}
    torch.testing.assert_close(robust_loss(logits, labels, identity), ce)
    swap = {"name": "glc", "C": SWAP_01}
    p = torch.softmax(logits, dim=1)
    expected = -torch.log((p @ torch.tensor(SWAP_01))[torch.arange(3), labels])
    torch.testing.assert_close(robust_loss(logits, labels, swap), expected)
    trusted = torch.tensor([True, False, True])
    mixed = robust_loss(logits, labels, swap, trusted=trusted)
    torch.testing.assert_close(mixed, torch.where(trusted, ce, expected))


def test_the_trainer_gives_glc_the_trusted_rows():
    """All rows trusted with their true labels: plain cross-entropy learns the true classes.
    A trainer that dropped ``trusted`` would apply the 0↔1 swap and learn them swapped."""
    require("torch")
    X, y = blobs(300)
    swap = {"name": "glc", "C": SWAP_01}
    train = TrainingSet(X, y, np.zeros(300, bool), K, trusted=np.ones(300, bool), loss=swap)
    assert accuracy(fit(mlp(), train), X, y) > 0.95
    untrusted = TrainingSet(X, y, np.zeros(300, bool), K, loss=swap)
    assert accuracy(fit(mlp(), untrusted), X, y) < 0.5, "the swap does reach untrusted rows"


def test_glc_recovers_a_class_whose_majority_label_was_flipped():
    require("torch")
    X, y = blobs(900)
    X_train, y_train, X_pool, y_pool, X_test, y_test = (
        X[:300], y[:300], X[300:600], y[300:600], X[600:], y[600:]
    )  # fmt: skip
    attack = LabelFlip(mode="targeted", source=0, target=1).bind(INFO)
    out = attack.poison(X_train, y_train, 0.7, np.random.default_rng(0))
    train = TrainingSet(out.X, out.y, out.mask, K)
    ctx = DefenseContext(INFO, 300, X_pool, y_pool)
    spec = mlp()
    plain = fit(spec, DEFENSES.get("extra_clean").from_params({"fraction": 0.1}).apply(
        train, ctx, np.random.default_rng(0)
    ).train)  # fmt: skip
    step = (
        DEFENSES.get("glc").from_params({"budget": 0.1}).apply(train, ctx, np.random.default_rng(0))
    )
    C = np.array(step.details["C"])
    assert C[0, 1] > 0.5 > C[0, 0] > 0.15, "most of class 0 is labelled 1"
    corrected = fit(spec, step.train)
    class0 = y_test == 0
    # At equal clean data (30 rows), appending them leaves class 0 lost; GLC recovers it.
    assert accuracy(plain, X_test[class0], y_test[class0]) < 0.2
    assert accuracy(corrected, X_test[class0], y_test[class0]) > 0.9
    assert accuracy(corrected, X_test, y_test) > 0.95


# --------------------------------------------------------------------------------------------
# DP-SGD
# --------------------------------------------------------------------------------------------


def private(train: TrainingSet, **params) -> TrainingSet:
    ctx = DefenseContext(INFO, len(train), train.X[:0], train.y[:0])
    step = DEFENSES.get("dp_sgd").from_params(params)
    return step.apply(train, ctx, np.random.default_rng(0)).train


def test_dp_sgd_reports_a_finite_epsilon_that_falls_with_more_noise():
    require("torch")
    require("opacus")
    X, y = blobs(300)
    train = TrainingSet(X, y, np.zeros(300, bool), K)
    spec = mlp(epochs=3)
    eps = []
    for sigma in (0.6, 1.0, 2.0):
        model = fit(spec, private(train, noise_multiplier=sigma))
        info = model.fit_info_
        assert info["dp_noise_multiplier"] == sigma and info["dp_delta"] == 1e-5
        assert info["dp_sample_rate"] == pytest.approx(32 / 300)
        assert info["dp_steps"] == 3 * round(300 / 32)
        eps.append(info["dp_epsilon"])
    assert all(math.isfinite(e) and e > 0 for e in eps)
    assert eps[0] > eps[1] > eps[2], eps
    assert fit(spec, train).fit_info_ == {}, "a non-private fit reports nothing"


def test_dp_sgd_with_a_target_epsilon_reaches_it():
    require("torch")
    require("opacus")
    X, y = blobs(300)
    train = TrainingSet(X, y, np.zeros(300, bool), K)
    info = fit(mlp(epochs=3), private(train, epsilon=2.0)).fit_info_
    assert 1.9 < info["dp_epsilon"] <= 2.0
    assert info["dp_noise_multiplier"] > 0


def test_dp_sgd_fits_are_repeatable_and_the_noise_matters():
    require("torch")
    require("opacus")
    X, y = blobs(300)
    train = TrainingSet(X, y, np.zeros(300, bool), K)
    spec = mlp(epochs=3)
    a = fit(spec, private(train, noise_multiplier=1.0)).predict_proba(X)
    b = fit(spec, private(train, noise_multiplier=1.0)).predict_proba(X)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    c = fit(spec, private(train, noise_multiplier=1.0), seed=1).predict_proba(X)
    assert not np.allclose(a, c), "another seed draws other samples and noise"
    noisy = fit(spec, private(train, noise_multiplier=20.0)).predict_proba(X)
    assert (a.argmax(axis=1) == y).mean() > (noisy.argmax(axis=1) == y).mean() + 0.1


def test_a_dp_sgd_cell_records_epsilon_and_an_sklearn_cell_says_why_it_cannot():
    require("torch")
    require("opacus")
    from bench.run.config import parse_config
    from bench.run.grid import expand
    from bench.run.runner import run_cell

    config = parse_config(
        {
            "name": "t",
            "datasets": [{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
            "models": [
                {"name": "torch-mlp", "hidden": [8], "epochs": 2, "device": "cpu"},
                "logreg",
            ],
            "attacks": [{"name": "label_flip", "mode": "random"}],
            "rates": [0.1],
            "defenses": [{"name": "dp_sgd", "noise_multiplier": 1.5}],
            "seeds": 1,
            "recovery": {"fractions": [0, 0.1]},
        }
    )
    cells = [c for c in expand(config) if c.spec["defense"][0]["name"] == "dp_sgd"]
    by_model = {
        c.spec["model"]["name"]: run_cell(c, config.recovery.fractions)
        for c in cells
        if c.spec["rate"] > 0
    }
    rows = by_model["torch-mlp"]["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for row in rows:
        assert math.isfinite(row["dp_epsilon"]) and row["dp_epsilon"] > 0
        assert row["dp_noise_multiplier"] == 1.5
    # More rows at the same batch size: a smaller sample rate, a different ε.
    assert rows[0]["dp_epsilon"] != rows[1]["dp_epsilon"]
    failed = by_model["logreg"]
    assert failed["status"] == "failed"
    assert "cannot train with differential privacy" in failed["rows"][0]["error"]
