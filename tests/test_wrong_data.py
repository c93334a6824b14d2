"""No silent wrong data from the user's files (issue 28, items 1-3, 9 and 13's data items).

Class labels that parse as the same number stay distinct classes; an image folder never yields
one file twice (a self-symlink would leak images from train to test); 16-bit and float images
keep their range; a decompression bomb and a device file are named errors.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from bench.data.datasets import DatasetError, load_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_cache():
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


def labelled_csv(path: Path, labels: list[str]) -> Path:
    """A CSV whose target column holds ``labels`` as written, each twice (stratifiable)."""
    rows = [f"{i},{label}" for i, label in enumerate(labels + labels)]
    path.write_text("a,label\n" + "\n".join(rows) + "\n")
    return path


def table(path: Path, **params) -> object:
    return load_dataset("table", None, {"path": str(path), "target": "label", **params})


# ---------------------------------------------------------------------------------------------
# item 1: labels that parse as the same number
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "names"),
    [
        (["01", "1", "2"], ("01", "1", "2")),
        (["1e0", "1"], ("1", "1e0")),
        # distinct and exact as numbers: numeric order, no int64 overflow
        (["1e19", "2e19", "3"], ("3", "10000000000000000000", "20000000000000000000")),
        (
            ["18446744073709551614", "18446744073709551615", "18446744073709551613"],
            ("18446744073709551613", "18446744073709551614", "18446744073709551615"),
        ),
        (["-9223372036854775809", "9223372036854775808"], None),
    ],
)
def test_distinct_label_strings_stay_distinct_classes(tmp_path, labels, names):
    ds = table(labelled_csv(tmp_path / "d.csv", labels))
    assert ds.info.n_classes == len(labels)
    if names is not None:
        assert ds.info.class_names == names
    # every row's class name maps back to a label that parses like the row's own source
    by_name = np.asarray(ds.info.class_names, dtype=object)[ds.y]
    assert len(set(zip(labels + labels, by_name, strict=True))) == len(labels)


def test_integer_labels_beyond_int64_in_a_parquet_file_stay_distinct(tmp_path):
    import pandas as pd

    big = np.asarray([2**64 - 1, 2**64 - 2, 2**64 - 3], dtype=np.uint64)
    frame = pd.DataFrame({"a": np.arange(6.0), "label": np.concatenate([big, big])})
    frame.to_parquet(tmp_path / "u.parquet")
    ds = load_dataset("table", None, {"path": str(tmp_path / "u.parquet"), "target": "label"})
    assert ds.info.class_names == tuple(str(int(v)) for v in sorted(big.tolist()))
    np.testing.assert_array_equal(ds.y, [2, 1, 0, 2, 1, 0])
    floats = pd.DataFrame({"a": np.arange(6.0), "label": [1e19, 2e19, 3.0] * 2})
    floats.to_parquet(tmp_path / "f.parquet")
    ds = load_dataset("table", None, {"path": str(tmp_path / "f.parquet"), "target": "label"})
    assert ds.info.class_names == ("3", "10000000000000000000", "20000000000000000000")


def test_plain_integer_and_whole_float_labels_still_sort_numerically(tmp_path):
    ds = table(labelled_csv(tmp_path / "i.csv", ["10", "2", "-1"]))
    assert ds.info.class_names == ("-1", "2", "10")
    ds = table(labelled_csv(tmp_path / "f.csv", ["1.0", "0.0"]))
    assert ds.info.class_names == ("0", "1")


def test_a_class_named_na_is_a_class_not_a_missing_value(tmp_path):
    ds = table(labelled_csv(tmp_path / "na.csv", ["NA", "ok", "None"]))
    assert ds.info.class_names == ("NA", "None", "ok")
    (tmp_path / "gap.csv").write_text("a,label\n1,x\n2,\n3,y\n4,y\n5,x\n")
    with pytest.raises(DatasetError, match="target: column 'label' has 1 missing value"):
        table(tmp_path / "gap.csv")


# ---------------------------------------------------------------------------------------------
# images: a helper and item 2 (symlinks), item 3 (bit depth), item 9 (bomb), item 13 (dotfiles)
# ---------------------------------------------------------------------------------------------


def write_images(root: Path, per_class: int = 6, classes=("ant", "cat")) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            pixels = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{j:03d}.png")
    return root


def images(root: Path, **params) -> object:
    return load_dataset("image_folder", None, {"path": str(root), "grayscale": True, **params})


def test_a_self_symlink_in_an_image_folder_is_refused_not_loaded_20_times(tmp_path):
    root = write_images(tmp_path / "imgs")  # 12 images
    assert len(images(root).y) == 12
    load_dataset.cache_clear()
    os.symlink(".", root / "cat" / "self")
    with pytest.raises(DatasetError, match=r"path: cat/self is a symlink to a folder"):
        images(root)


def test_symlinks_never_put_one_file_in_the_split_twice(tmp_path):
    root = write_images(tmp_path / "imgs")
    os.symlink(root / "ant" / "000.png", root / "cat" / "copy.png")
    with pytest.raises(DatasetError, match=r"cat/copy\.png and ant/000\.png are the same file"):
        images(root)
    (root / "cat" / "copy.png").unlink()
    os.symlink("..", root / "cat" / "up")
    with pytest.raises(DatasetError, match=r"cat/up is a symlink to a folder"):
        images(root)
    (root / "cat" / "up").unlink()
    outside = write_images(tmp_path / "elsewhere", per_class=2, classes=("x",))
    os.symlink(outside / "x", root / "cat" / "out")
    with pytest.raises(DatasetError, match=r"cat/out is a symlink to a folder"):
        images(root)
    (root / "cat" / "out").unlink()
    # a symlink to one image file outside the folder is read once, like a copy of it
    os.symlink(outside / "x" / "000.png", root / "cat" / "linked.png")
    ds = images(root)
    assert len(ds.y) == 13


def test_16_bit_and_float_images_keep_their_range(tmp_path):
    from PIL import Image

    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)
    for cls in ("a", "b"):
        (tmp_path / "deep" / cls).mkdir(parents=True)
        for j in range(2):
            Image.fromarray(ramp).save(tmp_path / "deep" / cls / f"{j}.png")
    assert Image.open(tmp_path / "deep" / "a" / "0.png").mode == "I;16"
    ds = images(tmp_path / "deep")
    np.testing.assert_allclose(ds.X[0, 0], ramp / 65535.0, rtol=1e-6)
    rgb = load_dataset("image_folder", None, {"path": str(tmp_path / "deep")})
    assert rgb.X.shape == (4, 3, 8, 8)
    np.testing.assert_allclose(rgb.X[0, 2], ramp / 65535.0, rtol=1e-6)
    resized = images(tmp_path / "deep", size=[4, 4])
    assert 0.1 < resized.X.mean() < 0.9  # not clipped to white

    unit = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    for cls in ("a", "b"):
        (tmp_path / "float" / cls).mkdir(parents=True)
        for j in range(2):
            Image.fromarray(unit, mode="F").save(tmp_path / "float" / cls / f"{j}.tif")
    ds = images(tmp_path / "float")
    np.testing.assert_allclose(ds.X[0, 0], unit, atol=1e-7)
    Image.fromarray(unit * 300, mode="F").save(tmp_path / "float" / "b" / "hot.tif")
    with pytest.raises(DatasetError, match=r"cannot decode b/hot\.tif: mode F .* 0 \.\. 300"):
        images(tmp_path / "float")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_named_not_an_internal_error(tmp_path):
    root = write_images(tmp_path / "imgs", per_class=2)
    (root / "cat" / "x.png").write_bytes(_png_header_only(100_000, 100_000))
    with pytest.raises(
        DatasetError, match=r"cannot decode cat/x\.png: image too large \(10,000,000,000 pixels\)"
    ):
        images(root)


def test_macos_resource_files_and_dotfiles_are_skipped(tmp_path):
    root = write_images(tmp_path / "imgs", per_class=2)
    (root / "cat" / "._000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "cat" / ".hidden").mkdir()
    (root / "cat" / ".hidden" / "bad.png").write_bytes(b"not a png")
    ds = images(root)
    assert len(ds.y) == 4
    assert any("ignored 2 " in note for note in ds.notes)


def test_a_device_file_as_a_csv_is_refused(tmp_path):
    """``/dev/zero`` named as a CSV: refused, not read until MemoryError (in a child process
    capped at 1 GiB of address space and 60 s, so a regression cannot hurt the machine)."""
    link = tmp_path / "zero.csv"
    os.symlink("/dev/zero", link)
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from bench.data.datasets import DatasetError, load_dataset\n"
        "try:\n"
        f"    load_dataset('table', None, {{'path': {str(link)!r}, 'target': 'label'}})\n"
        "except DatasetError as exc:\n"
        "    print('refused:', exc); sys.exit(0)\n"
        "except MemoryError:\n"
        "    print('MemoryError'); sys.exit(3)\n"
        "print('loaded'); sys.exit(4)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        pytest.fail("reading /dev/zero as a CSV did not stop within 60 s")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "zero.csv" in done.stdout


def test_the_label_column_is_read_by_name_when_rows_carry_an_index_field(tmp_path):
    """Rows with one field more than the header: pandas takes the first as the index, so the
    label column is not where its header position says."""
    rows = "".join(f"{i},{i * 1.5},{'ab'[i % 2]}\n" for i in range(6))
    (tmp_path / "idx.csv").write_text("a,label\n" + rows)
    ds = table(tmp_path / "idx.csv")
    assert ds.info.class_names == ("a", "b")
    assert ds.y.tolist() == [0, 1, 0, 1, 0, 1]
