"""Datasets from files (``bench/data/files.py``): ``table``, ``image_folder`` and ``openml``.

Every loader problem is a DatasetError (load) or a ConfigError (config) that names the field,
and through the CLI it stops the run before any cell with ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.datasets import DatasetError, data_root, load_dataset
from bench.interfaces.cli import main
from bench.run.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[1]

#: 12 rows: text labels (not in sorted order of appearance), a text column, a numeric one
ROWS = """x,color,flag,label
1.5,red,true,yes
2.0,blue,false,no
3.5,red,true,yes
4.0,green,false,no
5.5,blue,true,yes
6.0,green,false,no
7.5,red,true,maybe
8.0,blue,false,maybe
9.5,green,true,yes
10.0,red,false,no
11.5,blue,true,maybe
12.0,green,false,no
"""


@pytest.fixture(autouse=True)
def fresh_cache():
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def table(path: Path, target: str = "label", **params) -> object:
    return load_dataset("table", None, {"path": str(path), "target": target, **params})


# ---------------------------------------------------------------------------------------------
# table: labels, encoding, selection, imputation, fingerprint
# ---------------------------------------------------------------------------------------------


def test_text_labels_become_sorted_class_names_and_text_columns_one_hot(tmp_path):
    ds = table(write(tmp_path / "data.csv", ROWS))
    assert ds.info.class_names == ("maybe", "no", "yes")  # sorted text, not order of appearance
    raw = pd.read_csv(tmp_path / "data.csv")
    np.testing.assert_array_equal(ds.y, [ds.info.class_names.index(v) for v in raw["label"]])
    # x, then color one-hot in sorted level order (blue, green, red), then flag as 0/1
    assert ds.X.shape == (12, 5) and ds.info.n_features == 5
    np.testing.assert_array_equal(ds.X[:, 0], raw["x"])
    np.testing.assert_array_equal(ds.X[0, 1:4], [0, 0, 1])  # red
    np.testing.assert_array_equal(ds.X[1, 1:4], [1, 0, 0])  # blue
    np.testing.assert_array_equal(ds.X[:4, 4], [1, 0, 1, 0])
    assert ds.info.name == "table(data.csv)"
    assert "one-hot encoded: color (3 levels)" in ds.notes
    assert "booleans as 0/1: flag" in ds.notes


def test_integer_labels_sort_numerically(tmp_path):
    text = "a,label\n" + "".join(f"{i},{lab}\n" for i, lab in enumerate([10, 2, 1, 10, 2, 1]))
    ds = table(write(tmp_path / "ints.csv", text))
    assert ds.info.class_names == ("1", "2", "10")
    np.testing.assert_array_equal(ds.y, [2, 1, 0, 2, 1, 0])
    floats = "a,label\n" + "".join(f"{i},{lab}\n" for i, lab in enumerate([1.0, 0.0, 1.0, 0.0]))
    assert table(write(tmp_path / "f.csv", floats)).info.class_names == ("0", "1")


def test_features_and_drop_choose_columns(tmp_path):
    path = write(tmp_path / "data.csv", ROWS)
    assert table(path, features=["x"]).X.shape == (12, 1)
    dropped = table(path, drop=["color"])
    assert dropped.X.shape == (12, 2) and not any("one-hot" in n for n in dropped.notes)


def test_missing_values_are_an_error_naming_columns_and_counts(tmp_path):
    text = ROWS.replace("2.0,blue", "2.0,").replace("3.5,", ",").replace("4.0,", ",")
    path = write(tmp_path / "gaps.csv", text)
    with pytest.raises(DatasetError) as err:
        table(path)
    message = str(err.value)
    assert "missing values in 2 feature columns" in message
    assert "x (2), color (1)" in message
    assert "impute: median" in message


def test_impute_fills_median_and_most_frequent(tmp_path):
    text = ROWS.replace("2.0,blue", "2.0,").replace("3.5,", ",").replace("4.0,", ",")
    path = write(tmp_path / "gaps.csv", text)
    raw = pd.read_csv(path)
    ds = table(path, impute="median")
    assert ds.X[2, 0] == ds.X[3, 0] == raw["x"].median()
    # color's most frequent value: green and red tie at 4 after the gap; the first in sorted
    # order (green) wins
    assert raw["color"].value_counts()[["green", "red"]].tolist() == [4, 4]
    np.testing.assert_array_equal(ds.X[1, 1:4], [0, 1, 0])
    assert any("imputed (median" in n and "x (2), color (1)" in n for n in ds.notes)
    ds2 = table(path, impute="most_frequent")
    assert ds2.X[2, 0] == raw["x"].mode().iloc[0]


def test_parquet_and_feather_read_as_csv_does(tmp_path):
    csv = table(write(tmp_path / "data.csv", ROWS))
    frame = pd.read_csv(tmp_path / "data.csv")
    frame.to_parquet(tmp_path / "data.parquet")
    frame.to_feather(tmp_path / "data.feather")
    with gzip.open(tmp_path / "data.csv.gz", "wt") as fh:
        fh.write(ROWS)
    for name in ("data.parquet", "data.feather", "data.csv.gz"):
        ds = table(tmp_path / name)
        np.testing.assert_array_equal(ds.X, csv.X)
        np.testing.assert_array_equal(ds.y, csv.y)
        assert ds.info.class_names == csv.info.class_names


def test_fingerprint_covers_the_file_bytes_and_the_cache_sees_edits(tmp_path):
    path = write(tmp_path / "data.csv", ROWS)
    before = table(path, drop=["color"])
    # An edit to a dropped column leaves the arrays alike but is a different file.
    write(path, ROWS.replace("red", "crimson"))
    after = table(path, drop=["color"])  # no cache_clear: the file's stat is in the cache key
    np.testing.assert_array_equal(before.X, after.X)
    assert before.fingerprint != after.fingerprint
    write(path, ROWS)
    assert table(path, drop=["color"]).fingerprint == before.fingerprint


def test_relative_paths_resolve_against_the_current_directory(tmp_path, monkeypatch):
    write(tmp_path / "data.csv", ROWS)
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("table", None, {"path": "data.csv", "target": "label"})
    assert ds.X.shape == (12, 5)
    config = parse_config(
        {
            "datasets": [{"name": "table", "path": "data.csv", "target": "label"}],
            "models": ["logreg"],
            "attacks": ["none"],
            "rates": [0],
            "defenses": ["none"],
        }
    )
    assert config.datasets[0].params["path"] == "data.csv", "stored as written"


# ---------------------------------------------------------------------------------------------
# table: every error case
# ---------------------------------------------------------------------------------------------

LOAD_ERRORS = [
    # (file name, file bytes or None for no file, extra params, expected message pieces)
    ("absent.csv", None, {}, ["path: no such file 'PATH'", "current directory"]),
    ("empty.csv", b"", {}, ["path:", "is empty"]),
    ("binary.parquet", b"\x00\x01not parquet at all", {}, ["path: cannot read", "PARQUET"]),
    ("bad.csv.gz", b"not gzip", {}, ["path: cannot read", "gzip"]),
    ("ragged.csv", b'a,label\n1,x\n2,y\n"unterminated,x\n', {}, ["path: cannot read", "CSV"]),
    ("latin1.csv", "a,label\n1,caf\xe9\n".encode("latin-1"), {}, ["cannot read", "UTF-8"]),
    ("data.csv", ROWS.encode(), {"target": "Label"}, ["target: no column 'Label'", "columns: x"]),
    ("data.csv", ROWS.encode(), {"features": ["x", "size"]}, ["features: no column 'size'"]),
    ("data.csv", ROWS.encode(), {"drop": ["size"]}, ["drop: no column 'size'"]),
    ("data.csv", ROWS.encode(), {"drop": ["x", "color", "flag"]}, ["features: no feature"]),
    ("data.csv", ROWS.encode(), {"encode": False}, ["encode: false", "color", "not numeric"]),
    ("data.csv", ROWS.encode(), {"max_levels": 2}, ["max_levels:", "'color' has 3 distinct"]),
    ("data.csv", ROWS.encode(), {"target": "x"}, ["target:", "non-integer numbers"]),
    ("data.csv", ROWS.encode(), {"target": "color", "drop": ["label"]}, []),  # fine: control
    ("one.csv", b"a,label\n1,x\n2,x\n3,y\n", {}, ["target: class y", "single row"]),
    ("same.csv", b"a,label\n1,x\n2,x\n", {}, ["target:", "single class"]),
    ("nolabel.csv", b"a,label\n1,x\n2,\n3,y\n4,y\n5,x\n", {}, ["target:", "1 missing value"]),
    ("inf.csv", b"a,label\n1,x\ninf,x\n3,y\n4,y\n", {}, ["features: column 'a'", "infinite"]),
    ("header.csv", b"a,label\n", {}, ["path: the table has no rows"]),
    (
        "allnan.csv",
        b"a,b,label\n1,,x\n2,,x\n3,,y\n4,,y\n",
        {"impute": "median"},
        ["impute:", "'b' has no values"],
    ),
]


@pytest.mark.parametrize(("name", "content", "params", "pieces"), LOAD_ERRORS)
def test_table_load_errors_name_the_field(tmp_path, name, content, params, pieces):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    params = {"target": "label", **params}
    if not pieces:
        table(path, **params)
        return
    with pytest.raises(DatasetError) as err:
        table(path, **params)
    for piece in pieces:
        assert piece.replace("PATH", str(path)) in str(err.value)


def test_a_folder_as_table_path_is_an_error(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DatasetError, match=r"path: .* is a folder"):
        table(tmp_path / "dir.csv")


def test_dates_are_rejected(tmp_path):
    frame = pd.DataFrame(
        {"when": pd.date_range("2024-01-01", periods=4), "label": ["a", "b", "a", "b"]}
    )
    frame.to_parquet(tmp_path / "dates.parquet")
    with pytest.raises(DatasetError, match="features: column 'when' holds dates"):
        table(tmp_path / "dates.parquet")


def config_with(entry: dict) -> dict:
    return {
        "datasets": [entry],
        "models": ["logreg"],
        "attacks": ["none"],
        "rates": [0],
        "defenses": ["none"],
    }


CONFIG_ERRORS = [
    ({"name": "table", "target": "y"}, "datasets[0].path", "required"),
    ({"name": "table", "path": "d.csv"}, "datasets[0].target", "required"),
    (
        {"name": "table", "path": "d.xlsx", "target": "y"},
        "datasets[0].path",
        "cannot tell the format",
    ),
    ({"name": "table", "path": "d.parquet.gz", "target": "y"}, "datasets[0].path", "format"),
    (
        {"name": "table", "path": "d.csv", "target": "y", "features": ["a"], "drop": ["b"]},
        "datasets[0].drop",
        "not both",
    ),
    (
        {"name": "table", "path": "d.csv", "target": "y", "features": ["y"]},
        "datasets[0].features",
        "target",
    ),
    (
        {"name": "table", "path": "d.csv", "target": "y", "drop": ["y"]},
        "datasets[0].drop",
        "target",
    ),
    (
        {"name": "table", "path": "d.csv", "target": "y", "features": []},
        "datasets[0].features",
        "empty",
    ),
    (
        {"name": "table", "path": "d.csv", "target": "y", "drop": ["a", "a"]},
        "datasets[0].drop",
        "twice",
    ),
    (
        {"name": "table", "path": "d.csv", "target": "y", "impute": "mean"},
        "datasets[0].impute",
        "median",
    ),
    (
        {"name": "table", "path": "d.csv", "target": "y", "encode": "yes"},
        "datasets[0].encode",
        "true or false",
    ),
    (
        {"name": "table", "path": "d.csv", "target": "y", "max_levels": 1},
        "datasets[0].max_levels",
        "in [2, 100000]",
    ),
    (
        {"name": "table", "path": "d.csv", "target": "y", "sep": ";"},
        "datasets[0].sep",
        "unknown parameter",
    ),
    ({"name": "image_folder"}, "datasets[0].path", "required"),
    ({"name": "image_folder", "path": "d", "size": [28]}, "datasets[0].size", "height, width"),
    ({"name": "image_folder", "path": "d", "size": [0, 28]}, "datasets[0].size", "1..4096"),
    ({"name": "openml"}, "datasets[0].data_id", "either"),
    ({"name": "openml", "data_id": 31, "dataset": "credit-g"}, "datasets[0].data_id", "not both"),
    ({"name": "openml", "data_id": 31, "version": 1}, "datasets[0].version", "goes with dataset"),
    ({"name": "openml", "data_id": 0}, "datasets[0].data_id", "in [1, 1000000000]"),
    (
        {"name": "openml", "dataset": "credit-g", "version": 0},
        "datasets[0].version",
        "in [1, 1000000]",
    ),
]


@pytest.mark.parametrize(("entry", "field", "piece"), CONFIG_ERRORS)
def test_config_errors_name_the_field(entry, field, piece):
    with pytest.raises(ConfigError) as err:
        parse_config(config_with(entry))
    assert err.value.field == field
    assert piece in err.value.message


# ---------------------------------------------------------------------------------------------
# Through the CLI: errors stop the run before any cell, exit status 2
# ---------------------------------------------------------------------------------------------


def cli_config(tmp_path: Path, dataset: str, models: str = "[logreg]") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"name: files\ndatasets: [{dataset}]\nmodels: {models}\n"
        "attacks: [{name: label_flip, mode: random}]\nrates: [0, 0.2]\ndefenses: [none]\n"
        "seeds: 1\nrecovery: {fractions: [0]}\n"
    )
    return path


@pytest.mark.parametrize(
    ("dataset", "pieces"),
    [
        ("{name: table, path: absent.csv, target: label}", ["datasets[0] (table)", "no such file"]),
        ("{name: table, path: data.csv, target: kind}", ["target: no column 'kind'"]),
        ("{name: table, path: gaps.csv, target: label}", ["missing values", "x (1)"]),
        (
            "{name: table, path: data.csv, target: label, split: {train: 10, test: 5}}",
            ["datasets[0].split", "exceed the 12 rows"],
        ),
        ("{name: table, path: data.xlsx, target: label}", ["datasets[0].path", "format"]),
    ],
)
def test_cli_stops_with_exit_2_before_any_cell(tmp_path, monkeypatch, capsys, dataset, pieces):
    write(tmp_path / "data.csv", ROWS)
    write(tmp_path / "gaps.csv", ROWS.replace("3.5,", ","))
    monkeypatch.chdir(tmp_path)
    config = cli_config(tmp_path, dataset)
    capsys.readouterr()
    code = main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ")
    for piece in pieces:
        assert piece in err
    assert not (tmp_path / "run" / "cells").exists() or not any(
        (tmp_path / "run" / "cells").iterdir()
    )


def test_python_m_bench_cli_reports_a_missing_file(tmp_path):
    config = cli_config(tmp_path, "{name: table, path: nowhere/data.csv, target: label}")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.interfaces.cli",
            "run",
            str(config),
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: datasets[0] (table): table(data.csv): path: no such file")
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------------------------------------
# image_folder
# ---------------------------------------------------------------------------------------------


def write_images(root: Path, per_class: int = 4, side: int = 16, classes=("cat", "ant")) -> Path:
    """Tiny PNGs: class i is a bright bar at row 4·i on a dark background (plus noise)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for j in range(per_class):
            pixels = rng.integers(0, 40, size=(side, side, 3), dtype=np.uint8)
            pixels[4 * i : 4 * i + 3, :, :] = 250
            Image.fromarray(pixels).save(folder / f"{j:03d}.png")
    return root


def test_image_folder_loads_nchw_in_unit_range_with_folder_classes(tmp_path):
    root = write_images(tmp_path / "imgs")
    (root / "ant" / "notes.txt").write_text("not an image")
    ds = load_dataset(
        "image_folder", None, {"path": str(root), "size": [12, 12], "grayscale": True}
    )
    assert ds.X.shape == (8, 1, 12, 12) and ds.X.dtype == np.float32
    assert ds.X.min() >= 0 and ds.X.max() <= 1
    assert ds.info.class_names == ("ant", "cat")  # sorted folder names
    assert ds.info.image_shape == (1, 12, 12)
    np.testing.assert_array_equal(ds.y, [0, 0, 0, 0, 1, 1, 1, 1])  # sorted path order
    # ant (index 0 in sorted order, written second) has its bar at rows 4..6 of 16 pixels
    assert ds.X[0, 0, 3:5].mean() > 0.8 and ds.X[4, 0, 0:2].mean() > 0.8
    assert any("ignored 1 non-image files" in n for n in ds.notes)
    rgb = load_dataset("image_folder", None, {"path": str(root)})
    assert rgb.X.shape == (8, 3, 16, 16)
    load_dataset.cache_clear()
    assert load_dataset("image_folder", None, {"path": str(root)}).fingerprint == rgb.fingerprint


def test_image_folder_errors_name_the_problem(tmp_path):
    def load(root, **params):
        return load_dataset("image_folder", None, {"path": str(root), **params})

    with pytest.raises(DatasetError, match=r"path: .*no such folder"):
        load(tmp_path / "absent")
    one = tmp_path / "one"
    write_images(one, classes=("only",))
    with pytest.raises(DatasetError, match="holds 1 class folder"):
        load(one)
    empty = write_images(tmp_path / "empty")
    (empty / "zebra").mkdir()
    with pytest.raises(DatasetError, match=r"class folder zebra .* holds no image"):
        load(empty)
    single = write_images(tmp_path / "single", per_class=1)
    with pytest.raises(DatasetError, match="single image"):
        load(single)
    broken = write_images(tmp_path / "broken")
    (broken / "cat" / "999.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"cannot decode cat/999\.png"):
        load(broken)
    mixed = write_images(tmp_path / "mixed")
    from PIL import Image

    Image.fromarray(np.zeros((20, 16), dtype=np.uint8)).save(mixed / "cat" / "big.png")
    with pytest.raises(DatasetError, match=r"size: images differ in size .*set size"):
        load(mixed)
    assert load(mixed, size=[16, 16]).X.shape == (9, 3, 16, 16)
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        load(mixed / "cat" / "big.png")


def test_image_folder_runs_with_cnn_through_the_cli(tmp_path, capsys):
    pytest.importorskip("torch")
    root = write_images(tmp_path / "imgs", per_class=10)
    config = cli_config(
        tmp_path,
        f"{{name: image_folder, path: {root}, size: [12, 12], grayscale: true, "
        "split: {train: 10, test: 6}}",
        models="[{name: cnn, epochs: 1, batch_size: 8, device: cpu}]",
    )
    capsys.readouterr()
    code = main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    df = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert len(df) == 2 and (df["status"] == "ok").all(), df["error"].tolist()
    assert set(df["dataset_label"]) == {"image_folder(imgs)"}
    assert df["n_train"].eq(10).all() and df["n_test"].eq(6).all()


# ---------------------------------------------------------------------------------------------
# openml (fetch_openml monkeypatched: no test downloads anything)
# ---------------------------------------------------------------------------------------------


def fake_bunch():
    from sklearn.utils import Bunch

    frame = pd.read_csv(pd.io.common.StringIO(ROWS))
    data = frame.drop(columns=["label"])
    data["color"] = data["color"].astype("category")  # OpenML nominal columns arrive so
    return Bunch(
        data=data,
        target=frame["label"].astype("category"),
        details={"id": "4242", "version": "2", "md5_checksum": "abc"},
    )


def test_openml_fetches_into_the_data_root_and_encodes_as_table(tmp_path, monkeypatch):
    import sklearn.datasets

    calls = []

    def fetch(**kwargs):
        calls.append(kwargs)
        return fake_bunch()

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fetch)
    ds = load_dataset("openml", str(tmp_path), {"data_id": 4242})
    assert calls[0]["data_home"] == str(tmp_path / "openml")
    assert calls[0]["data_id"] == 4242 and calls[0]["as_frame"] is True
    assert ds.info.class_names == ("maybe", "no", "yes")
    assert ds.X.shape == (12, 5) and "one-hot encoded: color (3 levels)" in ds.notes
    assert ds.info.name == "openml(4242)"
    load_dataset("openml", str(tmp_path), {"dataset": "toy", "version": 2, "target": "label"})
    assert calls[1]["name"] == "toy" and calls[1]["version"] == 2
    assert calls[1]["target_column"] == "label"
    assert data_root(str(tmp_path)) / "openml" == tmp_path / "openml"


def test_openml_offline_and_not_cached_says_where_the_cache_is(tmp_path, monkeypatch):
    import sklearn.datasets

    def offline(**kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", offline)
    with pytest.raises(DatasetError) as err:
        load_dataset("openml", str(tmp_path), {"dataset": "credit-g", "version": 1})
    message = str(err.value)
    assert "openml(credit-g v1)" in message
    assert f"The cache is {tmp_path / 'openml'}" in message
    assert "name resolution" in message


def test_openml_unknown_dataset_and_missing_target(tmp_path, monkeypatch):
    import sklearn.datasets

    def unknown(**kwargs):
        raise ValueError("No active dataset nosuch found.")

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", unknown)
    with pytest.raises(DatasetError, match="openml\\(nosuch\\): dataset: No active dataset"):
        load_dataset("openml", str(tmp_path), {"dataset": "nosuch"})

    def no_target(**kwargs):
        bunch = fake_bunch()
        bunch.target = None
        return bunch

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", no_target)
    with pytest.raises(DatasetError, match="target: the dataset has no default target"):
        load_dataset("openml", str(tmp_path), {"data_id": 7})


def test_list_shows_the_file_datasets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("table", "image_folder", "openml"):
        assert f"  {name} " in out
    assert "one-hot encoded" in out
