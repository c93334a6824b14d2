"""Image datasets (mnist, fashion-mnist: IDX files, data root, offline error), the approximate
One-Class SVM, and a tiny image config end-to-end through the CLI."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import require

import bench.data.datasets as datasets
from bench.core.types import ParamError
from bench.data.datasets import DatasetError, data_root, load_dataset, read_idx
from bench.interfaces.cli import main
from defenses import DEFENSES


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def fake_mnist(raw: Path, n_train: int = 30, n_test: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Write a small MNIST-layout IDX set (train plain, test gzipped); return (images, labels)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_train + n_test, 28, 28), dtype=np.uint8)
    labels = np.arange(n_train + n_test, dtype=np.uint8) % 10
    write_idx(raw / "train-images-idx3-ubyte", images[:n_train])
    write_idx(raw / "train-labels-idx1-ubyte", labels[:n_train])
    write_idx(raw / "t10k-images-idx3-ubyte.gz", images[n_train:])
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels[n_train:])
    return images, labels


@pytest.fixture
def no_download(monkeypatch):
    """Make torchvision's download fail at once, as it does offline; count the attempts."""
    calls = []

    def fail(dataset_class, root):
        calls.append((dataset_class, root))
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(datasets, "download_torchvision", fail)
    return calls


def test_missing_mnist_offline_says_where_to_put_the_files(tmp_path, no_download):
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", str(tmp_path))
    message = str(err.value)
    raw = tmp_path / "MNIST" / "raw"
    for stem in datasets.IDX_FILES:
        assert str(raw / stem) in message
    assert "mnist-5k" in message and "--data-dir" in message and "POISONBENCH_DATA" in message
    assert "no network" in message  # the download's own reason is kept
    assert no_download == [("MNIST", tmp_path)]


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_offline_load_writes_nothing_when_no_download_starts(tmp_path, monkeypatch, name):
    """Offline, the real download path (torchvision's, with the network call failing as it does
    offline) must leave no trace: no ``ROOT/MNIST/raw`` and no missing parents created."""
    require("torchvision")
    import urllib.error
    import urllib.request

    tried: list[str] = []

    def offline(request, *args, **kwargs):
        tried.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian-package"))
    root = tmp_path / "not" / "there" / "yet"
    with pytest.raises(DatasetError, match="download failed") as err:
        load_dataset(name, str(root))
    assert tried and all(url.startswith("http") for url in tried)  # a download was tried
    assert "name resolution" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # and nothing was created


def test_missing_mnist_through_the_cli_is_a_clean_error(tmp_path, no_download, capsys):
    config = tmp_path / "full.yaml"
    config.write_text(
        "datasets: [mnist]\nmodels: [cnn]\nattacks: [{name: label_flip, mode: random}]\n"
        "rates: [0.1]\ndefenses: [none]\nseeds: 1\n"
    )
    data, out = str(tmp_path / "data"), str(tmp_path / "run")
    code = main(["run", str(config), "--data-dir", data, "--out", out, "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "mnist: the IDX files are not in" in err
    assert "Traceback" not in err


def test_mnist_reads_idx_files_train_then_test(tmp_path, no_download):
    images, labels = fake_mnist(tmp_path / "MNIST" / "raw")
    ds = load_dataset("mnist", str(tmp_path))
    assert ds.X.shape == (50, 1, 28, 28) and ds.X.dtype == np.float32
    assert ds.info.image_shape == (1, 28, 28) and ds.info.n_classes == 10
    np.testing.assert_allclose(ds.X[:, 0] * 255.0, images, atol=1e-3)  # train rows come first
    assert np.array_equal(ds.y, labels)
    assert ds.X.min() >= 0.0 and ds.X.max() <= 1.0
    assert no_download == []


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("POISONBENCH_DATA", str(tmp_path / "env"))
    assert data_root(str(tmp_path / "flag")) == tmp_path / "flag"
    assert data_root(None) == tmp_path / "env"
    monkeypatch.delenv("POISONBENCH_DATA")
    assert "poisonbench" in str(data_root(None))


def test_data_root_from_environment_is_used(tmp_path, monkeypatch, no_download):
    fake_mnist(tmp_path / "MNIST" / "raw", n_train=20, n_test=10)
    monkeypatch.setenv("POISONBENCH_DATA", str(tmp_path))
    assert len(datasets.DATASETS.get("mnist")().load(None).y) == 30


def test_read_idx_rejects_other_files(tmp_path):
    bad = tmp_path / "x-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x01" + (4).to_bytes(4, "big") + b"\x00" * 16)
    with pytest.raises(DatasetError, match="not an unsigned-byte IDX file"):
        read_idx(bad)
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(short)


@pytest.mark.skipif(
    not Path(datasets.DEBIAN_FASHION_MNIST).is_dir(),
    reason="apt package dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_is_found_in_the_debian_package(tmp_path, no_download):
    ds = load_dataset("fashion-mnist", str(tmp_path))
    assert ds.X.shape == (70_000, 1, 28, 28)
    assert np.bincount(ds.y).tolist() == [7000] * 10
    assert ds.info.class_names[0] == "T-shirt/top" and ds.info.class_names[9] == "Ankle boot"
    assert no_download == []


# ---------------------------------------------------------------------------------------------
# One-Class SVM: exact, Nystroem, fit subsample
# ---------------------------------------------------------------------------------------------


def planted(n: int = 2000, d: int = 20, n_out: int = 100) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, d))
    X[:n_out] += rng.normal(scale=3.0, size=(n_out, d))
    mask = np.zeros(n, dtype=bool)
    mask[:n_out] = True
    return X, mask


@pytest.mark.parametrize(
    ("params", "label"),
    [
        ({}, "ocsvm"),
        ({"approx": "nystroem"}, "ocsvm(nystroem:300)"),
        ({"max_fit_rows": 500}, "ocsvm(fit≤500)"),
        (
            {"approx": "nystroem", "n_components": 50, "max_fit_rows": 500},
            "ocsvm(nystroem:50,fit≤500)",
        ),
    ],
)
def test_ocsvm_variants_find_planted_outliers_and_say_which_ran(params, label):
    from sklearn.metrics import roc_auc_score

    X, mask = planted()
    detector = DEFENSES.get("ocsvm").from_params({**params, "contamination": 0.05})
    assert detector.label() == label
    scores, flagged = detector.fit_scores(X, seed=0)
    assert roc_auc_score(mask, scores) > 0.95
    assert flagged.sum() == pytest.approx(0.05 * len(X), abs=2)
    again, _ = detector.fit_scores(X, seed=0)
    assert np.array_equal(scores, again)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"approx": "rff"}, "approx"),
        ({"n_components": 0}, "n_components"),
        ({"max_fit_rows": 1}, "max_fit_rows"),
    ],
)
def test_ocsvm_bad_params_name_the_field(params, field):
    with pytest.raises(ParamError) as err:
        DEFENSES.get("ocsvm").from_params(params, "defenses[0]")
    assert err.value.field == f"defenses[0].{field}"


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------

TINY_IMAGES = """
name: tiny-images
datasets: [{name: mnist-5k, split: {train: 300, test: 200}}]
models: [{name: cnn, epochs: 3, lr: 0.003, batch_size: 32}]
attacks: [{name: label_flip, mode: targeted, source: 7, target: 1}]
rates: [0, 0.5]
defenses: [none, {name: ocsvm, approx: nystroem, n_components: 100}]
seeds: [0]
recovery: {fractions: [0, 0.5]}
"""


def test_tiny_image_config_runs_end_to_end_with_a_filter(tmp_path, monkeypatch):
    require("torch")
    monkeypatch.setenv("POISONBENCH_THREADS", "1")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_IMAGES)
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    table = pd.read_parquet(out / "results.parquet")
    # (clean, 50% 7→1) × (none, ocsvm) × 1 seed = 4 cells, × 2 fractions
    assert len(table) == 8
    assert set(table["status"]) == {"ok"}, table["error"].dropna().tolist()
    assert set(table["defense_label"]) == {"none", "ocsvm(nystroem:100)"}
    assert (table["n_fit"] > 0).all()
    poisoned = table[table["rate"] == 0.5]
    assert poisoned["attack_success_rate"].notna().all()
    filtered = poisoned[poisoned["defense"] != "none"]
    assert filtered["det_roc_auc"].notna().all() and (filtered["n_removed"] > 0).all()
    assert (table["accuracy"] > 0.5).all()  # 3 epochs on 300 images: far above chance (0.1)
