"""Datasets from the user's own files: ``table`` (CSV, TSV, parquet, feather), ``image_folder``
(one sub-folder per class) and ``openml`` (``sklearn.datasets.fetch_openml``, cached under the
data root).

A config entry names one like the built-ins, with its reading options::

    datasets:
      - {name: table, path: data/patients.csv, target: diagnosis, drop: [patient_id]}
      - {name: image_folder, path: data/scans, size: [28, 28], grayscale: true}
      - {name: openml, dataset: credit-g, version: 1, impute: most_frequent}

Relative paths resolve against the current directory (configs are usually run from the
repository root); the params keep the path as written, so it is part of the cell ids as given.

Every problem a file can have (no such file, unreadable, no target column, an unknown feature
column, missing values, a class with one row) is a :class:`~bench.data.datasets.DatasetError` that
names the field and the columns or files involved; ``bench.run.orchestrate.check_datasets`` loads
every dataset before any cell runs, so the CLI stops with ``error: ...`` (exit 2) at once.

pandas, PIL and scikit-learn's OpenML fetcher are imported inside ``load`` only.
"""

from __future__ import annotations

import decimal
import hashlib
import io
import math
import os
import re
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from bench.core.atomic import special_kind
from bench.core.types import ParamError, check_range
from bench.data.datasets import (
    DATASETS,
    Dataset,
    DatasetError,
    DatasetSource,
    data_root,
    make_dataset,
)

if TYPE_CHECKING:
    import pandas as pd

#: file suffixes ``table`` reads, and how (compressed CSV/TSV: pandas infers the codec)
TABLE_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".feather": "feather",
}
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zip": "zip", ".xz": "xz", ".zst": "zstd"}
#: image files ``image_folder`` reads (torchvision's ``IMG_EXTENSIONS``, case-insensitive)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_MAX_LISTED = 8  # columns or files named in one message before "... and N more"


def _listing(items: Sequence[str]) -> str:
    """``a, b, c`` cut to :data:`_MAX_LISTED` names with a count of the rest."""
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    rest = len(items) - _MAX_LISTED
    return f"{shown}, ... and {rest} more" if rest > 0 else shown


def table_format(path: str) -> tuple[str, str | None]:
    """The reader (``csv``, ``tsv``, ``parquet``, ``feather``) and compression for ``path``.

    Raises ParamError naming ``path`` for any other suffix.
    """
    suffixes = [s.lower() for s in Path(path).suffixes]
    compression = None
    if suffixes and suffixes[-1] in _COMPRESSION:
        compression = _COMPRESSION[suffixes.pop()]
    kind = TABLE_FORMATS.get(suffixes[-1]) if suffixes else None
    if kind is None or (compression and kind not in ("csv", "tsv")):
        raise ParamError(
            "path",
            f"cannot tell the format of {path!r} from its suffix (valid: .csv, .tsv, .parquet, "
            ".pq, .feather; CSV and TSV may end in .gz, .bz2, .zip, .xz or .zst)",
        )
    return kind, compression


def resolve_path(path: str) -> Path:
    """``path`` with ``~`` expanded; a relative path is taken from the current directory."""
    return Path(path).expanduser().absolute()


def _stat_token(*paths: Path) -> str:
    parts = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            parts.append(f"{p}:missing")
            continue
        parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


# ---------------------------------------------------------------------------------------------
# Tables: the options shared by ``table`` and ``openml``
# ---------------------------------------------------------------------------------------------

Impute = Literal["median", "most_frequent"]


def _check_columns(value: tuple[str, ...] | None, field: str) -> None:
    if value is None:
        return
    if not value:
        raise ParamError(field, "an empty list (leave it out to use every column)")
    seen: set[str] = set()
    for name in value:
        if name in seen:
            raise ParamError(field, f"column {name!r} is listed twice")
        seen.add(name)


def check_table_options(src: Any) -> None:
    """Validate the reading options ``target``, ``features``, ``drop``, ``max_levels`` of a
    tabular source; raise ParamError naming the field."""
    _check_columns(src.features, "features")
    _check_columns(src.drop, "drop")
    if src.features is not None and src.drop is not None:
        raise ParamError("drop", "give features (the columns to use) or drop, not both")
    target = src.target
    if target is not None and not target:
        raise ParamError("target", "must name a column")
    if target and src.features is not None and target in src.features:
        raise ParamError("features", f"lists the target column {target!r}")
    if target and src.drop is not None and target in src.drop:
        raise ParamError("drop", f"lists the target column {target!r}")
    check_range(src.max_levels, "max_levels", 2, 100_000)


def _select_features(frame: pd.DataFrame, src: Any, label: str) -> pd.DataFrame:
    columns = [str(c) for c in frame.columns]
    if src.features is not None:
        unknown = [c for c in src.features if c not in columns]
        if unknown:
            raise DatasetError(
                f"{label}: features: no column {_listing([repr(c) for c in unknown])} "
                f"(columns: {_listing(columns)})"
            )
        return frame[list(src.features)]
    drop = list(src.drop or ())
    unknown = [c for c in drop if c not in columns]
    if unknown:
        raise DatasetError(
            f"{label}: drop: no column {_listing([repr(c) for c in unknown])} "
            f"(columns: {_listing(columns)})"
        )
    return frame.drop(columns=drop)


def encode_labels(
    values: pd.Series, label: str, field: str = "target"
) -> tuple[np.ndarray, list[str]]:
    """Class indices (int64) and class names for a label column.

    Order of the classes (their indices): integer labels (also floats that are all whole
    numbers, e.g. ``0.0``/``1.0``) sort numerically and are named by their digits (``"0"``,
    ``"10"``); booleans are ``False``, ``True``; anything else is compared as text and sorted
    by Unicode code point (Python's ``sorted``, so ``"B" < "a"``). Raises DatasetError for
    missing labels and for fractional numbers (a regression target).

    Two distinct values never become one class. Text labels (a CSV's target column is read as
    text) are numbers only when every one of them is an exact whole number and no two of them
    name the same number: ``01`` beside ``1``, or ``1e0`` beside ``1``, keep their text.
    Numbers are exact Python integers, so labels beyond int64 (``1e19``, ``2**64 - 1``) stay
    distinct.
    """
    import pandas as pd

    missing = int(values.isna().sum())
    if missing:
        raise DatasetError(
            f"{label}: {field}: column {values.name!r} has {missing} missing "
            f"value{'s' if missing != 1 else ''} (labels are never imputed; remove those rows)"
        )
    plain = values.astype(object) if isinstance(values.dtype, pd.CategoricalDtype) else values
    kind = pd.api.types.infer_dtype(plain, skipna=False)
    if kind == "boolean":
        keys: np.ndarray = np.asarray(plain, dtype=bool).astype(np.int64)
        present = np.unique(keys)
        names = [str(bool(v)) for v in present]
        return np.searchsorted(present, keys).astype(np.int64), names
    raw = np.asarray(plain, dtype=object)
    distinct = list(dict.fromkeys(raw.tolist()))  # in order of appearance, compared exactly
    if kind in ("integer", "floating", "mixed-integer-float", "decimal"):
        numbers = [_whole_number(v, values.name, label, field) for v in distinct]
    elif kind == "string":
        numbers = _numbers_of_text(distinct, values.name, label, field)
    else:
        numbers = None
    if numbers is not None:
        by_value = dict(zip(distinct, numbers, strict=True))
        order = sorted(set(numbers))
        index = {n: i for i, n in enumerate(order)}
        codes = np.fromiter((index[by_value[v]] for v in raw), dtype=np.int64, count=len(raw))
        return codes, [str(n) for n in order]
    text = np.asarray([str(v) for v in raw], dtype=object)
    names = sorted(set(text.tolist()))
    if len(names) < len(distinct):  # e.g. 1 and "1" in one object column
        raise DatasetError(
            f"{label}: {field}: column {values.name!r} holds values of different types that "
            "read as the same text (e.g. the number 1 and the string '1'); store the labels "
            "as text"
        )
    lookup = {name: i for i, name in enumerate(names)}
    return np.fromiter((lookup[t] for t in text), dtype=np.int64, count=len(text)), names


#: the largest decimal exponent of a text label still read as a number (beyond: text)
_MAX_EXPONENT = 100


def _whole_number(value: Any, column: Any, label: str, field: str) -> int:
    """``value`` (a number) as an exact Python int; DatasetError if it is not whole."""
    if isinstance(value, int | np.integer):
        return int(value)
    number = float(value)
    if not math.isfinite(number):
        raise DatasetError(f"{label}: {field}: column {column!r} holds infinite values")
    if not number.is_integer():
        raise DatasetError(
            f"{label}: {field}: column {column!r} holds non-integer numbers (e.g. "
            f"{number:g}); a classification target needs class labels (integers "
            "or names), not a continuous value"
        )
    return int(number)  # exact for any float, so no int64 overflow


def _numbers_of_text(distinct: list[str], column: Any, label: str, field: str) -> list[int] | None:
    """The text labels ``distinct`` as exact whole numbers, or None to keep them as text.

    They are numbers only if every one parses as a finite decimal number (``Decimal``: exact,
    whatever its size) and no two distinct texts give the same number; then a fractional or
    infinite one is the same error as in a numeric column.
    """
    parsed = []
    for text in distinct:
        try:
            number = decimal.Decimal(text.strip()) if text.strip() == text else None
        except (decimal.InvalidOperation, ValueError):
            return None
        if number is None or (number.is_finite() and number.adjusted() > _MAX_EXPONENT):
            return None
        parsed.append(number)
    if any(n.is_nan() for n in parsed):
        return None
    if any(n.is_infinite() for n in parsed):
        raise DatasetError(f"{label}: {field}: column {column!r} holds infinite values")
    fractional = [t for t, n in zip(distinct, parsed, strict=True) if n != n.to_integral_value()]
    if fractional:
        raise DatasetError(
            f"{label}: {field}: column {column!r} holds non-integer numbers (e.g. "
            f"{fractional[0]}); a classification target needs class labels (integers "
            "or names), not a continuous value"
        )
    numbers = [int(n) for n in parsed]
    if len(set(numbers)) < len(numbers):
        return None  # "01" and "1": two texts for one number are two classes
    return numbers


def _check_classes(y: np.ndarray, names: list[str], label: str, column: str) -> None:
    if len(names) < 2:
        raise DatasetError(
            f"{label}: target: column {column!r} holds a single class "
            f"({_listing(names) or 'no rows'}); a classifier needs at least 2"
        )
    counts = np.bincount(y, minlength=len(names))
    single = [names[i] for i in np.flatnonzero(counts < 2)]
    if single:
        raise DatasetError(
            f"{label}: target: class{'es' if len(single) > 1 else ''} {_listing(single)} of "
            f"column {column!r} {'have' if len(single) > 1 else 'has'} a single row "
            f"({len(names)} classes in {len(y)} rows); a stratified split needs at least 2 "
            "rows per class: remove the rare classes or choose another target"
        )


def _impute(X: pd.DataFrame, numeric: list[str], how: str | None, label: str) -> list[str]:
    """Fill missing feature values in place; return the notes. Raise without ``how``."""
    counts = X.isna().sum()
    counts = counts[counts > 0]
    if counts.empty:
        return []
    described = [f"{c} ({n})" for c, n in counts.items()]
    if how is None:
        raise DatasetError(
            f"{label}: missing values in {len(counts)} feature column"
            f"{'s' if len(counts) > 1 else ''} (column (count)): {_listing(described)}; set "
            "impute: median (numeric columns; the most frequent value for the others) or "
            "impute: most_frequent, or drop those columns"
        )
    for column in counts.index:
        present = X[column].dropna()
        if present.empty:
            raise DatasetError(
                f"{label}: impute: column {column!r} has no values at all to impute from; drop it"
            )
        if how == "median" and column in numeric:
            X[column] = X[column].fillna(present.median())
        else:
            # mode() sorts its ties, so the pick is deterministic.
            X[column] = X[column].fillna(present.mode().iloc[0])
    return [f"imputed ({how}, over all rows before the split): {', '.join(described)}"]


def frame_to_dataset(
    frame: pd.DataFrame,
    target: pd.Series,
    src: Any,
    label: str,
    source_digest: str = "",
) -> Dataset:
    """A :class:`Dataset` from feature columns and a label column, with ``src``'s options.

    ``src`` carries ``features``/``drop`` (column choice), ``impute`` (``None``: missing values
    are an error naming the columns and counts; ``median``: numeric columns take their median,
    the others their most frequent value; ``most_frequent``: every column its most frequent
    value), ``encode`` (``True``: non-numeric columns are one-hot encoded, one 0/1 column per
    level in sorted text order; ``False``: they are an error naming them) and ``max_levels``
    (a non-numeric column with more distinct values is an error: likely an id or free text).
    Boolean columns become 0/1. What was done is recorded in ``Dataset.notes``.
    """
    import pandas as pd

    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        raise DatasetError(f"{label}: path: the table has no rows")
    X = _select_features(frame, src, label)
    if X.shape[1] == 0:
        raise DatasetError(f"{label}: features: no feature columns are left besides the target")
    y, names = encode_labels(target, label)
    _check_classes(y, names, label, str(target.name))

    numeric: list[str] = []
    boolean: list[str] = []
    categorical: list[str] = []
    for column in X.columns:
        dtype = X[column].dtype
        if pd.api.types.is_bool_dtype(dtype):
            boolean.append(column)
        elif pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(
            dtype
        ):
            raise DatasetError(
                f"{label}: features: column {column!r} holds dates or durations; convert it to "
                "numbers or drop it"
            )
        elif pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
            numeric.append(column)
        else:
            categorical.append(column)
    if categorical and not src.encode:
        raise DatasetError(
            f"{label}: encode: false, but feature column{'s' if len(categorical) > 1 else ''} "
            f"{_listing(categorical)} {'are' if len(categorical) > 1 else 'is'} not numeric; "
            "set encode: true to one-hot encode them, or drop them"
        )
    notes = _impute(X, numeric, src.impute, label)

    blocks: list[np.ndarray] = []
    encoded: list[str] = []
    for column in X.columns:
        values = X[column]
        if column in categorical:
            text = values.astype(object).map(str)
            levels = sorted(set(text.tolist()))
            if len(levels) > src.max_levels:
                raise DatasetError(
                    f"{label}: max_levels: non-numeric column {column!r} has {len(levels)} "
                    f"distinct values (max_levels: {src.max_levels}); an id or free text is "
                    "no feature: drop it, or raise max_levels"
                )
            codes = np.searchsorted(np.asarray(levels, dtype=object), text.to_numpy(dtype=object))
            blocks.append(np.eye(len(levels), dtype=np.float64)[codes])
            encoded.append(f"{column} ({len(levels)} levels)")
        else:
            block = np.asarray(values, dtype=np.float64).reshape(-1, 1)
            if not np.isfinite(block).all():
                bad = int((~np.isfinite(block)).sum())
                raise DatasetError(
                    f"{label}: features: column {column!r} holds {bad} infinite value"
                    f"{'s' if bad > 1 else ''}; drop the column or fix the rows"
                )
            blocks.append(block)
    if encoded:
        notes.append(f"one-hot encoded: {', '.join(encoded)}")
    if boolean:
        notes.append(f"booleans as 0/1: {', '.join(boolean)}")
    X_arr = np.concatenate(blocks, axis=1)
    return make_dataset(label, X_arr, y, names, notes=tuple(notes), source_digest=source_digest)


# ---------------------------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------------------------


@DATASETS.register("table")
@dataclass(frozen=True)
class Table(DatasetSource):
    """A CSV, TSV, parquet or feather file (by suffix); text feature columns are one-hot encoded

    path: the file (required; relative to the current directory). target: the label column
    (required; integer or text labels, class order: numeric for integers, else sorted text).
    features: the columns to use (default: all but target and drop). drop: columns to leave out.
    encode: one-hot encode non-numeric columns (false: they are an error). impute: ``median``
    or ``most_frequent`` fills missing feature values (default: they are an error).
    max_levels: most distinct values a non-numeric column may have.
    """

    #: parameters that make a valid entry (the contract and fuzz tests start from them)
    example_params: ClassVar[dict[str, Any]] = {"path": "data.csv", "target": "label"}

    path: str = ""
    target: str = ""
    features: tuple[str, ...] | None = None
    drop: tuple[str, ...] | None = None
    encode: bool = True
    impute: Impute | None = None
    max_levels: int = 50

    def __post_init__(self) -> None:
        if not self.path:
            raise ParamError("path", "required: the table file (.csv, .tsv, .parquet, .feather)")
        table_format(self.path)
        if not self.target:
            raise ParamError("target", "required: the name of the label column")
        check_table_options(self)

    def label(self) -> str:
        return f"table({Path(self.path).name})"

    def cache_token(self, data_dir: str | None = None) -> str:
        return _stat_token(resolve_path(self.path))

    def load(self, data_dir: str | None = None) -> Dataset:
        """Read the file (relative paths from the current directory) into a Dataset whose
        fingerprint covers the file's bytes."""

        label = self.label()
        path = resolve_path(self.path)
        if not path.exists():
            raise DatasetError(
                f"{label}: path: no such file {self.path!r} (looked for {path}; relative paths "
                f"start from the current directory, {Path.cwd()})"
            )
        if path.is_dir():
            raise DatasetError(f"{label}: path: {self.path!r} is a folder, not a table file")
        special = special_kind(path)
        if special is not None:  # reading it could block forever (a FIFO) or never end
            raise DatasetError(
                f"{label}: path: {self.path!r} is {special}, not a regular file (refused)"
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DatasetError(
                f"{label}: path: cannot read {path}: {exc.strerror or exc}"
            ) from None
        kind, compression = table_format(self.path)
        frame = _read_table(data, kind, compression, label, path)
        columns = [str(c) for c in frame.columns]
        if self.target not in columns:
            raise DatasetError(
                f"{label}: target: no column {self.target!r} in {path.name} "
                f"(columns: {_listing(columns)})"
            )
        frame.columns = columns
        target = frame[self.target]
        if kind in ("csv", "tsv"):
            target = _read_text_column(data, kind, compression, self.target, frame.index, label)
        digest = hashlib.sha256(data).hexdigest()
        return frame_to_dataset(frame.drop(columns=[self.target]), target, self, label, digest)


def _read_text_column(
    data: bytes, kind: str, compression: str | None, name: str, index: pd.Index, label: str
) -> pd.Series:
    """Column ``name`` of a CSV/TSV as the text written in the file (``index``: the full
    read's row index, which this read must reproduce).

    The label column is read as text so that labels which parse as one number (``01`` and
    ``1``, ``1e0`` and ``1``) stay distinct classes and huge integers never pass through int64
    (:func:`encode_labels` decides whether they are numbers). Only an empty field is missing:
    ``NA``, ``None`` or ``null`` are class names there.
    """
    import pandas as pd

    try:
        column = pd.read_csv(
            io.BytesIO(data),
            sep="\t" if kind == "tsv" else ",",
            compression=compression,
            usecols=[name],  # by name: rows with an extra leading field shift positions
            dtype=str,
            keep_default_na=False,
            na_values=[""],
        ).iloc[:, 0]
    except (ValueError, IndexError) as exc:
        column, reason = None, f"{type(exc).__name__}: {exc}".splitlines()[0]
    else:
        reason = "its rows do not line up with the table's"
    # (dtype=str also reads an implicit index column as text)
    if column is None or not column.index.astype(str).equals(index.astype(str)):
        raise DatasetError(
            f"{label}: target: cannot read column {name!r} as text ({reason}); give it a "
            "name of its own (no other column with the same header)"
        )
    column.name = name
    return column


def _read_table(
    data: bytes, kind: str, compression: str | None, label: str, path: Path
) -> pd.DataFrame:
    """The file's bytes parsed by pandas; any parse failure is a DatasetError naming the file."""
    import pandas as pd
    import pyarrow

    buffer = io.BytesIO(data)
    try:
        if kind in ("csv", "tsv"):
            return pd.read_csv(buffer, sep="\t" if kind == "tsv" else ",", compression=compression)
        if kind == "parquet":
            return pd.read_parquet(buffer)
        return pd.read_feather(buffer)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{label}: path: {path} is empty") from None
    # ParserError, UnicodeDecodeError and pyarrow's ArrowInvalid are ValueErrors; a damaged
    # compressed stream raises OSError, EOFError, zlib.error or BadZipFile.
    except (
        ValueError,
        OSError,
        EOFError,
        zlib.error,
        zipfile.BadZipFile,
        pyarrow.ArrowException,
        ImportError,  # a codec's optional package (zstandard for .zst)
    ) as exc:
        reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        if isinstance(exc, UnicodeDecodeError):
            reason += " (save the file as UTF-8)"
        raise DatasetError(
            f"{label}: path: cannot read {path} as {kind.upper()}"
            f"{f' ({compression})' if compression else ''}: {reason}"
        ) from None


# ---------------------------------------------------------------------------------------------
# image_folder
# ---------------------------------------------------------------------------------------------


@DATASETS.register("image_folder")
@dataclass(frozen=True)
class ImageFolder(DatasetSource):
    """Images in one sub-folder per class (torchvision ImageFolder layout), as n×c×h×w in [0, 1]

    path: the root folder (required; relative to the current directory). Classes are the
    sub-folder names in sorted order; files are read in sorted path order (sub-folders too).
    size: [height, width] to resize every image to (bilinear, antialiased; default: keep, all
    images must then share one size). grayscale: one channel (else RGB, three).
    Names starting with ``.`` (macOS ``._x.png``, ``.DS_Store``) are skipped. 16-bit images
    are scaled by 65535, float images must lie in [0, 1]. Each file is read once: a symlink to
    a folder is refused, two paths to one file (through a file symlink) are refused.
    """

    #: parameters that make a valid entry (the contract and fuzz tests start from them)
    example_params: ClassVar[dict[str, Any]] = {"path": "images"}

    path: str = ""
    size: tuple[int, ...] | None = None
    grayscale: bool = False

    def __post_init__(self) -> None:
        if not self.path:
            raise ParamError("path", "required: the folder holding one sub-folder per class")
        if self.size is not None and (
            len(self.size) != 2 or any(not 1 <= s <= 4096 for s in self.size)
        ):
            raise ParamError(
                "size", f"expected [height, width] in pixels, 1..4096 each, got {list(self.size)}"
            )

    def label(self) -> str:
        return f"image_folder({resolve_path(self.path).name or self.path})"

    def _classes(self, root: Path) -> list[str]:
        return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))

    def cache_token(self, data_dir: str | None = None) -> str:
        """The root's and class folders' mtimes: adding or removing a file changes them (an
        image rewritten in place under the same name does not: restart the process then)."""
        root = resolve_path(self.path)
        try:
            classes = self._classes(root)
        except OSError:
            return _stat_token(root)
        return _stat_token(root, *(root / c for c in classes))

    def load(self, data_dir: str | None = None) -> Dataset:
        """Decode every image once (PIL) into the n×c×h×w float32 array the image models use."""
        label = self.label()
        root = resolve_path(self.path)
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "no such folder"
            raise DatasetError(
                f"{label}: path: {self.path!r}: {what} (looked for {root}; relative paths start "
                f"from the current directory, {Path.cwd()})"
            )
        classes = self._classes(root)
        if len(classes) < 2:
            raise DatasetError(
                f"{label}: path: {root} holds {len(classes)} class folder"
                f"{'s' if len(classes) != 1 else ''} ({_listing(classes) or 'none'}); the "
                "layout is one sub-folder of images per class, at least 2 classes"
            )
        files, ignored, empty = _image_files(root, classes, label)
        if empty:
            raise DatasetError(
                f"{label}: path: class folder{'s' if len(empty) > 1 else ''} {_listing(empty)} "
                f"in {root} hold{'' if len(empty) > 1 else 's'} no image "
                f"({', '.join(IMAGE_EXTENSIONS)})"
            )
        if self.size is not None:
            _check_image_memory(len(files), 1 if self.grayscale else 3, self.size, label)
        arrays = []
        first_size: tuple[int, int] | None = None
        for path, _ in files:
            array = _decode_image(path, root, self.grayscale, self.size, label)
            if first_size is None:
                first_size = array.shape[:2]
                first_path = path
                if self.size is None:  # every image must share this size: it sets the total
                    _check_image_memory(len(files), 1 if self.grayscale else 3, first_size, label)
            elif array.shape[:2] != first_size:
                raise DatasetError(
                    f"{label}: size: images differ in size ({first_path.relative_to(root)} is "
                    f"{first_size[0]}×{first_size[1]}, {path.relative_to(root)} is "
                    f"{array.shape[0]}×{array.shape[1]}, height×width); set size: [height, "
                    "width] to resize them all"
                )
            arrays.append(array)
        X = np.stack(arrays)
        X = X[:, None, :, :] if self.grayscale else X.transpose(0, 3, 1, 2)
        y = np.asarray([index for _, index in files], dtype=np.int64)
        counts = np.bincount(y, minlength=len(classes))
        single = [classes[i] for i in np.flatnonzero(counts < 2)]
        if single:
            raise DatasetError(
                f"{label}: path: class folder{'s' if len(single) > 1 else ''} "
                f"{_listing(single)} hold{'' if len(single) > 1 else 's'} a single image; a "
                "stratified split needs at least 2 per class"
            )
        notes = []
        if ignored:
            notes.append(f"ignored {len(ignored)} non-image files (e.g. {ignored[0]})")
        return make_dataset(
            label, X, y, classes, image_shape=tuple(X.shape[1:]), notes=tuple(notes)
        )


# --- image_folder limits (issue 22, item 4): no walk or decode that cannot end ---------------

#: the most memory an image_folder's decoded array may take (float32, n×c×h×w), bytes: 1 GiB
#: holds 85,000 RGB images of 32×32 or 1,300 of 224×224; the models then need several times it
MAX_IMAGE_BYTES = 1 << 30


def _check_image_memory(n: int, channels: int, size: Sequence[int], label: str) -> None:
    """Refuse an image set whose decoded float32 array would exceed :data:`MAX_IMAGE_BYTES`."""
    h, w = int(size[0]), int(size[1])
    need = n * channels * h * w * 4
    if need > MAX_IMAGE_BYTES:
        raise DatasetError(
            f"{label}: size: {n} images of {h}×{w}×{channels} need {need / 2**30:.1f} GiB as "
            f"float32, more than the {MAX_IMAGE_BYTES / 2**30:.0f} GiB limit; set a smaller "
            "size: [height, width]"
        )


def _image_files(
    root: Path, classes: list[str], label: str
) -> tuple[list[tuple[Path, int]], list[str], list[str]]:
    """The image files under each class folder, each file once: ``(path, class index)`` in
    sorted path order, the ignored files (relative to ``root``), and the classes with none.

    Names that start with ``.`` (macOS ``._x.png`` resource files, ``.DS_Store``, ``.git``) are
    skipped. A symlink to a folder is refused: one that points into ``root`` loads images twice
    (``cat/self -> .`` would put one file in train, pool and test), one that leaves it has no
    bound. A symlink to an image file is read like a copy of that file; two paths that resolve
    to one file are refused, so the split never holds a file twice.
    """
    files: list[tuple[Path, int]] = []
    ignored: list[str] = [e.name for e in os.scandir(root) if e.is_file()]
    empty: list[str] = []
    seen: dict[str, Path] = {}  # resolved path -> the first path it was found under
    for index, name in enumerate(classes):
        folders: list[tuple[str, list[str]]] = []
        pending = [root / name]
        while pending:
            folder = pending.pop()
            names = []
            for entry in os.scandir(folder):
                relative = Path(entry.path).relative_to(root)
                if entry.name.startswith("."):
                    ignored.append(str(relative))
                elif entry.is_dir():
                    if entry.is_symlink():
                        target = os.path.realpath(entry.path)
                        where = "into" if Path(target).is_relative_to(root.resolve()) else "out of"
                        raise DatasetError(
                            f"{label}: path: {relative} is a symlink to a folder ({target}, "
                            f"{where} the image folder); image_folder does not follow folder "
                            "symlinks (one back into the folder loads images twice): replace "
                            "it with the folder itself or remove it"
                        )
                    pending.append(Path(entry.path))
                else:
                    names.append(entry.name)
            folders.append((str(folder), names))
        found = 0
        for folder, names in sorted(folders):
            for fname in sorted(names):
                path = Path(folder) / fname
                if not fname.lower().endswith(IMAGE_EXTENSIONS):
                    ignored.append(str(path.relative_to(root)))
                    continue
                special = special_kind(path)
                if special is not None:  # a FIFO would block the decoder forever
                    raise DatasetError(
                        f"{label}: path: {path.relative_to(root)} is {special}, not a regular "
                        "file (refused)"
                    )
                real = os.path.realpath(path)
                if real in seen:
                    raise DatasetError(
                        f"{label}: path: {path.relative_to(root)} and "
                        f"{seen[real].relative_to(root)} are the same file ({real}, through a "
                        "symlink); a file listed twice would land in train and test: keep one"
                    )
                seen[real] = path
                files.append((path, index))
                found += 1
        if not found:
            empty.append(name)
    return files, ignored, empty


#: PIL modes of more than 8 bits per pixel, with the value that is full brightness
_DEEP_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "F": 1.0}


def _decode_image(
    path: Path, root: Path, grayscale: bool, size: tuple[int, ...] | None, label: str
) -> np.ndarray:
    """One image as float32 in [0, 1]: h×w (grayscale) or h×w×3, resized to ``size``.

    8-bit images are scaled by 255; 16-bit ones (PIL mode ``I;16``) by 65535; 32-bit float
    ones (mode ``F``) are taken as they are and must lie in [0, 1]. 32-bit integer images
    (mode ``I``) have no known full scale and are refused with their mode. An image larger
    than PIL's decompression-bomb limit is refused with its pixel count.
    """
    from PIL import Image, UnidentifiedImageError

    relative = path.relative_to(root)
    try:
        with Image.open(path) as image:
            if image.mode == "I":
                raise DatasetError(
                    f"{label}: path: cannot decode {relative}: mode I (32-bit integer pixels) "
                    "has no known full scale; save it as 8- or 16-bit or as float in [0, 1]"
                )
            if image.mode in _DEEP_MODES:
                full = _DEEP_MODES[image.mode]
                image = image.convert("F")
                if size is not None:
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.float32) / np.float32(full)
                low, high = (float(array.min()), float(array.max())) if array.size else (0, 0)
                if not (np.isfinite(array).all() and low >= 0 and high <= 1):
                    raise DatasetError(
                        f"{label}: path: cannot decode {relative}: mode F (32-bit float) with "
                        f"values {low:g} .. {high:g}; float images must lie in [0, 1]"
                    )
                return array if grayscale else np.repeat(array[:, :, None], 3, axis=2)
            image = image.convert("L" if grayscale else "RGB")
            if size is not None:
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.float32) / np.float32(255.0)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else str(exc)
        raise DatasetError(
            f"{label}: path: cannot decode {relative}: image too large ({pixels}), over "
            f"PIL's limit of {2 * (Image.MAX_IMAGE_PIXELS or 0):,}"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{label}: path: cannot decode {relative}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# openml
# ---------------------------------------------------------------------------------------------


@DATASETS.register("openml")
@dataclass(frozen=True)
class OpenML(DatasetSource):
    """An OpenML dataset by id or by name (+ version), fetched once into <data root>/openml

    data_id: the OpenML id; or dataset: its name, with version (default: the active one).
    target: the label column (default: OpenML's default target). features, drop, encode,
    impute, max_levels: as for ``table``. Offline it is read from the cache, which a first
    online run (or a copied cache folder) fills.
    """

    #: parameters that make a valid entry (the contract and fuzz tests start from them)
    example_params: ClassVar[dict[str, Any]] = {"dataset": "credit-g"}

    data_id: int | None = None
    dataset: str | None = None
    version: int | None = None
    target: str | None = None
    features: tuple[str, ...] | None = None
    drop: tuple[str, ...] | None = None
    encode: bool = True
    impute: Impute | None = None
    max_levels: int = 50

    def __post_init__(self) -> None:
        if (self.data_id is None) == (self.dataset is None):
            raise ParamError(
                "data_id", "give either data_id (e.g. 31) or dataset (e.g. credit-g), not both"
            )
        if self.data_id is not None:
            check_range(self.data_id, "data_id", 1, 10**9)
        if self.dataset is not None and not self.dataset:
            raise ParamError("dataset", "must name an OpenML dataset")
        if self.version is not None:
            if self.dataset is None:
                raise ParamError("version", "goes with dataset (a data_id fixes the version)")
            check_range(self.version, "version", 1, 10**6)
        check_table_options(self)

    def label(self) -> str:
        if self.data_id is not None:
            return f"openml({self.data_id})"
        return f"openml({self.dataset}{f' v{self.version}' if self.version else ''})"

    def cache_folder(self, data_dir: str | None = None) -> Path:
        """Where fetch_openml keeps its files: ``<data root>/openml``."""
        return data_root(data_dir) / "openml"

    def load(self, data_dir: str | None = None) -> Dataset:
        """Fetch (or read from the cache) the dataset and encode it as ``table`` does."""
        import sklearn.datasets

        label = self.label()
        home = self.cache_folder(data_dir)
        kwargs: dict[str, Any] = {
            "data_home": str(home),
            "as_frame": True,
            "target_column": self.target or "default-target",
            "n_retries": 1,
            "delay": 0.1,
        }
        if self.data_id is not None:
            kwargs["data_id"] = self.data_id
        else:
            kwargs["name"] = self.dataset
            kwargs["version"] = self.version if self.version is not None else "active"
        try:
            bunch = sklearn.datasets.fetch_openml(**kwargs)
        except OSError as exc:  # URLError, timeouts, DNS: no network and nothing cached
            reason = f"{type(exc).__name__}: {exc}".strip()
            raise DatasetError(
                f"{label}: not in the local OpenML cache and the download failed ({reason}). "
                f"The cache is {home} (under the data root: --data-dir, the config's data_dir "
                "or $POISONBENCH_DATA); run once with network access, or copy a filled "
                "cache folder there"
            ) from None
        except (ValueError, KeyError) as exc:  # unknown dataset / version / target column
            field = (
                "target"
                if self.target and self.target in str(exc)
                else ("data_id" if self.data_id is not None else "dataset")
            )
            raise DatasetError(f"{label}: {field}: {exc}") from None
        target = bunch.target
        if target is None:
            raise DatasetError(
                f"{label}: target: the dataset has no default target; name the label column "
                f"with target: (columns: {_listing([str(c) for c in bunch.data.columns])})"
            )
        if getattr(target, "ndim", 1) != 1:
            raise DatasetError(f"{label}: target: expected one label column, got several")
        details = getattr(bunch, "details", {}) or {}
        digest = (
            f"openml:{details.get('id')}:{details.get('version')}:{details.get('md5_checksum')}"
        )
        return frame_to_dataset(bunch.data, target, self, label, digest)
