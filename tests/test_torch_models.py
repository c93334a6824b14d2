"""The torch models: lazy import, learning, determinism, soft targets, weights, devices."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import require

from bench.core.types import DatasetInfo, ParamError
from bench.data.datasets import load_dataset
from bench.models import MODELS
from defenses.label_smoothing import LabelSmoothing

BLOBS_INFO = DatasetInfo(name="blobs", class_names=("a", "b", "c"), n_features=4)


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """One intra-op thread, as in a worker process: spinning OpenMP threads on a busy 2-core
    machine make fits 10-30× slower and the suite's time erratic."""
    monkeypatch.setenv("POISONBENCH_THREADS", "1")


def test_harness_imports_do_not_load_torch():
    """`import torch` costs seconds and ~0.8 GB per process: only torch cells may pay it."""
    code = textwrap.dedent(
        """
        import sys
        import bench.interfaces.cli, bench.run.runner, bench.run.executors
        from bench.run.config import parse_config
        from bench.run.grid import expand
        from bench.models import MODELS
        assert {"cnn", "cnn-large", "torch-mlp"} <= set(MODELS), sorted(MODELS)
        config = parse_config({
            "datasets": [{"name": "mnist-5k", "split": {"train": 100, "test": 100}}],
            "models": ["cnn", {"name": "torch-mlp", "epochs": 1}],
            "attacks": [{"name": "label_flip", "mode": "targeted", "source": 7, "target": 1}],
            "rates": [0, 0.1], "defenses": ["none", "ocsvm"], "seeds": 1,
        })
        assert len(expand(config)) == 8
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print("LOADED", loaded)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout


def _mnist_split(n_train: int, n_test: int) -> tuple:
    ds = load_dataset("mnist-5k")
    order = np.random.default_rng(0).permutation(len(ds.y))  # mnist-5k is sorted by class
    tr, te = order[:n_train], order[n_train : n_train + n_test]
    return ds, ds.X[tr], ds.y[tr], ds.X[te], ds.y[te]


def test_cnn_learns_mnist_5k_in_a_small_budget():
    require("torch")
    ds, X, y, X_test, y_test = _mnist_split(2000, 1000)
    spec = MODELS.get("cnn").from_params({"epochs": 2, "lr": 0.003, "batch_size": 32})
    proba = spec.build(ds.info, 0).fit(X, y).predict_proba(X_test)
    assert proba.shape == (1000, 10) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (proba.argmax(axis=1) == y_test).mean() > 0.85  # chance is 0.1


@pytest.mark.parametrize("name", ["cnn", "cnn-large", "torch-mlp"])
def test_same_seed_gives_identical_predictions_and_leaves_global_rng_alone(name):
    torch = require("torch")
    ds, X, y, X_test, _ = _mnist_split(300, 200)
    spec = MODELS.get(name).from_params({"epochs": 1, "batch_size": 32, "device": "cpu"})
    state = torch.random.get_rng_state()
    first = spec.build(ds.info, 7).fit(X, y).predict_proba(X_test)
    second = spec.build(ds.info, 7).fit(X, y).predict_proba(X_test)
    other = spec.build(ds.info, 8).fit(X, y).predict_proba(X_test)
    assert np.array_equal(first, second)
    assert not np.allclose(first, other)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_one_hot_soft_targets_equal_hard_labels(blobs):
    require("torch")
    X, y = blobs
    spec = MODELS.get("torch-mlp").from_params({"epochs": 5, "lr": 0.01, "device": "cpu"})
    hard = spec.build(BLOBS_INFO, 1).fit(X, y).predict_proba(X)
    soft = spec.build(BLOBS_INFO, 1).fit(X, np.eye(3)[y]).predict_proba(X)
    np.testing.assert_allclose(hard, soft, atol=1e-4)  # same loss, two code paths
    assert (hard.argmax(axis=1) == y).mean() > 0.95


def test_label_smoothing_targets_reach_the_loss(blobs, monkeypatch):
    """The loss sees exactly (1 − ε)·onehot + ε/k for every row (full-batch, one epoch)."""
    torch = require("torch")
    import torch.nn.functional as F

    from bench.core.types import DefenseContext, TrainingSet

    X, y = blobs
    info = BLOBS_INFO
    train = TrainingSet(X=X, y=y, mask=np.zeros(len(y), bool), n_classes=3)
    ctx = DefenseContext(info=info, n_train=len(y), pool_X=X[:0], pool_y=y[:0])
    smoothed = LabelSmoothing(epsilon=0.3).apply(train, ctx, np.random.default_rng(0)).train
    seen = []
    real = F.cross_entropy

    def spy(logits, target, *args, **kwargs):
        seen.append(target.detach().clone())
        return real(logits, target, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", spy)
    spec = MODELS.get("torch-mlp").from_params({"epochs": 1, "batch_size": len(y)})
    spec.build(info, 0).fit(train.X, smoothed.targets)
    assert len(seen) == 1
    got = seen[0].numpy().astype(np.float64)
    want = 0.7 * np.eye(3)[y] + 0.1
    # rows arrive shuffled: compare the sorted rows
    assert np.allclose(got[np.lexsort(got.T)], want[np.lexsort(want.T)], atol=1e-6)
    assert np.isclose(got.max(), 0.8) and np.isclose(got.min(), 0.1)


def test_sample_weight_is_honoured(blobs):
    require("torch")
    X, y = blobs
    spec = MODELS.get("torch-mlp").from_params({"epochs": 3, "device": "cpu"})
    plain = spec.build(BLOBS_INFO, 3).fit(X, y).predict_proba(X)
    uniform = spec.build(BLOBS_INFO, 3).fit(X, y, np.full(len(y), 2.5)).predict_proba(X)
    assert np.array_equal(plain, uniform)  # weights are rescaled to mean 1
    weight = np.where(y == 0, 1e-6, 1.0)
    ignored = spec.build(BLOBS_INFO, 3).fit(X, y, weight).predict_proba(X)
    # class 0 carries (almost) no loss: the model stops predicting it
    assert (plain.argmax(axis=1) == 0).sum() > 80
    assert (ignored.argmax(axis=1) == 0).sum() < (plain.argmax(axis=1) == 0).sum() / 2


def test_probabilities_cover_classes_absent_from_training(blobs):
    require("torch")
    X, y = blobs
    keep = y != 2
    proba = MODELS.get("torch-mlp").from_params({"epochs": 1}).build(BLOBS_INFO, 0)
    proba = proba.fit(X[keep], y[keep]).predict_proba(X)
    assert proba.shape == (len(y), 3)


def test_device_cuda_without_cuda_fails_clearly():
    torch = require("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    ds = load_dataset("mnist-5k")
    spec = MODELS.get("cnn").from_params({"device": "cuda"})
    with pytest.raises(ParamError) as err:
        spec.bind(ds.info, "models[0]")
    assert err.value.field == "models[0].device"
    assert "cuda" in err.value.message and "'cpu'" in err.value.message
    with pytest.raises(ParamError, match=r"^device: 'cuda' was asked for"):
        spec.build(ds.info, 0).fit(ds.X[:10], ds.y[:10])


def test_cnn_on_tabular_data_names_the_field_and_the_image_datasets():
    iris = load_dataset("iris").info
    for name in ("cnn", "cnn-large"):
        with pytest.raises(ParamError) as err:
            MODELS.get(name).from_params({}).bind(iris, "models[1]")
        assert err.value.field == "models[1].name"
        assert "mnist-5k" in err.value.message and "torch-mlp" in err.value.message
    assert MODELS.get("torch-mlp").from_params({}).bind(iris, "models[0]") is not None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0}, "lr"),
        ({"weight_decay": -1}, "weight_decay"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"device": "tpu"}, "device"),
        ({"hidden": []}, "hidden"),
    ],
)
def test_bad_params_name_the_field(params, field):
    with pytest.raises(ParamError) as err:
        MODELS.get("torch-mlp").from_params(params, "models[0]")
    assert err.value.field == f"models[0].{field}"


def test_worker_thread_setting_is_applied(blobs, monkeypatch):
    torch = require("torch")
    X, y = blobs
    before = torch.get_num_threads()
    monkeypatch.setenv("POISONBENCH_THREADS", "2")
    try:
        torch.set_num_threads(1)
        MODELS.get("torch-mlp").from_params({"epochs": 1}).build(BLOBS_INFO, 0).fit(X, y)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# Common random numbers: the model's seed is keyed by (dataset, model, seed) only
# ---------------------------------------------------------------------------------------------

NO_OPS = [
    "none",
    {"name": "random_filter", "contamination": 0.0},
    {"name": "extra_clean", "fraction": 0.0},
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dataset", "model"),
    [
        ({"name": "digits", "split": {"train": 200, "test": 200}},
         {"name": "torch-mlp", "epochs": 3, "hidden": [32], "device": "cpu"}),
        ({"name": "mnist-5k", "split": {"train": 200, "test": 200}},
         {"name": "cnn", "epochs": 1, "batch_size": 32, "device": "cpu"}),
    ],
    ids=["torch-mlp", "cnn"],
)  # fmt: skip
def test_identical_training_sets_give_identical_models(dataset, model, monkeypatch):
    """Defenses that change nothing (none, a 0 % random filter, 0× extra data) train on the
    same rows; with the model seed keyed by (dataset, model, seed) their models, and so every
    metric, are identical at every extra-clean fraction. Another seed differs (the control)."""
    require("torch")
    monkeypatch.setenv("POISONBENCH_THREADS", "1")
    from bench.run.config import parse_config
    from bench.run.grid import expand
    from bench.run.runner import StageCache, run_cell

    config = parse_config(
        {
            "name": "crn",
            "datasets": [dataset],
            "models": [model],
            "attacks": [{"name": "label_flip", "mode": "random"}],
            "rates": [0.2],
            "defenses": NO_OPS,
            "seeds": [0, 1],
        }
    )
    cells = [c for c in expand(config) if c.spec["rate"] > 0]
    cache = StageCache()
    rows = {
        (c.spec["defense"][0]["name"], c.seed): run_cell(c, [0.0, 0.5], cache=cache)["rows"]
        for c in cells
    }
    metrics = ("accuracy", "macro_f1", "log_loss", "confusion")

    def values(key):
        return [[r[m] for m in metrics] for r in rows[key]]

    for name in ("random_filter", "extra_clean"):
        assert values((name, 0)) == values(("none", 0)), name
        assert values((name, 1)) == values(("none", 1)), name
    assert values(("none", 0)) != values(("none", 1))  # the seed does change the model
