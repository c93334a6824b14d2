"""The store: one JSON record per cell, written atomically; the consolidated results table.

Layout of a run directory::

    RUN_DIR/config.yaml        the config as given
    RUN_DIR/cells/<id>.json    one record per cell (identity hash of its canonical spec), with
                               one row per extra-clean fraction computed so far
    RUN_DIR/results.parquet    the long-format table (also results.csv)
    RUN_DIR/run.json           run metadata: versions, counts, wall time
    RUN_DIR/report.md          the report (and its plots, *.png)
    RUN_DIR/dask-scratch/      scratch space of --executor dask-local workers, while it runs

The stored and skipped unit is (cell, extra-clean fraction): a record holds the rows of the
fractions computed so far, and a run with a longer grid computes only the new fractions and
rewrites the record with them added. Records are JSON (never pickle), each with a checksum of
its content. A record that cannot be
read, has another schema version or identity than its file name says, or whose content no
longer matches its checksum (edited by hand) is reported and its cell recomputed; never trusted.

A running ``poisonbench run`` holds ``RUN_DIR/.lock`` (``fcntl.flock``, released by the kernel
when the process ends, however it ends): a second run on the same directory fails at once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.core.atomic import WriteError, atomic_path, atomic_write_text, remove_temporaries
from bench.core.schema import (
    COLUMN_BY_NAME,
    NESTED_COLUMNS,
    ROW_KEYS,
    SCHEMA_VERSION,
    assign_labels,
    coerce_table,
    jsonable,
    stable_hash,
)
from bench.core.types import PoisonBenchError

#: a cell id: 16 hex digits (so a record can never name a path outside ``cells/``)
CELL_ID = re.compile(r"[0-9a-f]{16}")

#: name of the lock file inside a run directory
LOCK_NAME = ".lock"


class RunLockedError(PoisonBenchError):
    """Another process holds the run directory's lock."""


class RunDirectoryLost(PoisonBenchError):
    """The run directory, or its lock file, is no longer the one this run locked (removed,
    moved or replaced while the run went on): its records would go where no one looks."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Create ``path`` through ``write(temporary path)`` (see :func:`bench.core.atomic.atomic_path`)."""
    with atomic_path(path) as tmp:
        write(tmp)


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` as parquet to ``path`` atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


@dataclass
class Store:
    """Records of one run directory."""

    root: Path
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def cells_dir(self) -> Path:
        return self.root / "cells"

    def path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write a cell's record atomically, with a checksum of its content; returns what was
        written (JSON's types, as :meth:`read` would return it)."""
        cell_id = record["cell_id"]
        if not isinstance(cell_id, str) or not CELL_ID.fullmatch(cell_id):
            raise ValueError(f"not a cell id: {cell_id!r}")
        record = jsonable({k: v for k, v in record.items() if k != "checksum"})
        record["checksum"] = record_checksum(record)
        atomic_write_text(self.path(cell_id), json.dumps(record, allow_nan=False))
        return record

    def read(self, cell_id: str) -> dict[str, Any] | None:
        """The record of a cell if present and valid, else None (problems are remembered)."""
        path = self.path(cell_id)
        if not path.exists():
            return None
        if path.is_dir():  # it could never be replaced by the record: stop before computing
            raise WriteError(path, "Is a directory (a record file is expected here)")
        record, problem = None, None
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            problem = f"unreadable ({type(exc).__name__})"
        if problem is None:
            problem = validate_record(record, cell_id)
        if problem:
            message = f"{path}: {problem}; the cell will be recomputed"
            if message not in self.problems:
                self.problems.append(message)
            return None
        return record

    def remove_temporaries(self) -> int:
        """Delete half-written files left by a killed run (records, tables, report, plots: see
        :mod:`bench.core.atomic`); return how many (call under lock)."""
        return remove_temporaries(self.root) + remove_temporaries(self.cells_dir)

    def done_fractions(self, cell_id: str) -> set[float]:
        """The extra-clean fractions a cell has finished rows for (``ok`` or ``skipped``;
        failed rows are retried), from its valid record (none when there is no record)."""
        record = self.read(cell_id)
        if record is None:
            return set()
        return {
            float(r["extra_fraction"])
            for r in record["rows"]
            if r.get("status") in ("ok", "skipped") and r.get("extra_fraction") is not None
        }

    def merge(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write ``record`` with the finished rows of the cell's stored record (fractions the
        new record does not have) kept beside its own; returns what was written."""
        old = self.read(record["cell_id"])
        rows = list(record["rows"])
        if old is not None:
            new_fractions = {float(r["extra_fraction"]) for r in rows}
            rows += [
                r
                for r in old["rows"]
                if r.get("status") in ("ok", "skipped")
                and float(r["extra_fraction"]) not in new_fractions
            ]
        rows.sort(key=lambda r: float(r["extra_fraction"]))
        failed = any(r.get("status") == "failed" for r in rows)
        merged = {
            **record,
            "rows": rows,
            "status": "failed" if failed else "ok",
            "seconds": record.get("seconds", 0.0) + (old or {}).get("seconds", 0.0),
        }
        return self.write(merged)

    def records(
        self, cell_ids: list[str] | None = None, written: Mapping[str, dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """The valid records of ``cell_ids`` (None: every record file), in that order.

        ``written``: records this process wrote (:meth:`write`'s return values) by cell id,
        used instead of reading their files back while the file is there (a record whose file
        has gone is left out, as :meth:`read` would): a run's table is then built from the
        records it just wrote without parsing and checking each again (~1 ms per record)."""
        if cell_ids is None:
            cell_ids = sorted(p.stem for p in self.cells_dir.glob("*.json"))
        written = written or {}
        out = []
        for cell_id in cell_ids:
            record = written.get(cell_id)
            if record is None or not self.path(cell_id).is_file():
                record = self.read(cell_id)
            if record is not None:
                out.append(record)
        return out


def record_checksum(record: dict[str, Any]) -> str:
    """SHA-256 (hex) of a record's canonical JSON, without its ``checksum`` field."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    return stable_hash(body, length=64)


def validate_record(record: Any, cell_id: str) -> str | None:
    """Why a record cannot be trusted, or None when it can.

    Checks, in order: a JSON object, the schema version, the field types, that it names this
    cell and its spec hashes to the cell id, its status and rows, and its content checksum.
    """
    if not isinstance(record, dict):
        return f"not a JSON object (a {type(record).__name__})"
    if record.get("schema_version") != SCHEMA_VERSION:
        return f"schema version {record.get('schema_version')!r}, expected {SCHEMA_VERSION}"
    for key, kind in (("cell_id", str), ("spec", dict), ("rows", list), ("status", str)):
        if not isinstance(record.get(key), kind):
            return f"field {key!r} missing or not a {kind.__name__}"
    if record["cell_id"] != cell_id:
        return f"names cell {record['cell_id']}, not {cell_id}"
    try:
        actual = stable_hash(record["spec"])
    except (TypeError, ValueError, RecursionError):
        return "spec is not canonical JSON"
    if actual != cell_id:
        return "spec does not hash to its cell id (edited by hand?)"
    if record["status"] not in ("ok", "failed"):
        return f"status {record['status']!r} is not ok or failed"
    if not record["rows"] or not all(
        isinstance(r, dict)
        and r.get("cell_id") == cell_id
        and isinstance(r.get("extra_fraction"), int | float)
        for r in record["rows"]
    ):
        return "rows missing, without an extra fraction, or belonging to another cell"
    checksum = record.get("checksum")
    if not isinstance(checksum, str):
        return "no checksum (not written by poisonbench?)"
    try:
        actual_checksum = record_checksum(record)
    except (TypeError, ValueError, RecursionError):
        return "content is not canonical JSON"
    if actual_checksum != checksum:
        return "content does not match its checksum (edited by hand?)"
    return None


class RunLock:
    """An exclusive lock on a run directory: ``RUN_DIR/.lock`` held with ``fcntl.flock``.

    The kernel releases a flock when its process exits, however it exits (kill -9
    included), so a stale lock file never blocks a later run; the file itself stays and
    holds the PID and host of the last holder, for the error message. The descriptor is
    not inherited by worker processes. Use as a context manager.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self._fd: int | None = None
        self._root_id: tuple[int, int] | None = None  # (device, inode) of the locked folder

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLockedError` at once (never waits)."""
        import fcntl

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WriteError.from_os_error(self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                who = _describe_holder(fd)
            finally:
                os.close(fd)
            raise RunLockedError(
                f"{self.root} is in use by {who} (lock file {self.path}). "
                "Wait for it to finish, stop it, or choose another --out."
            ) from None
        # Only the holder writes its PID, and only once it holds the lock.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        st = os.stat(self.root)
        self._root_id = (st.st_dev, st.st_ino)
        return self

    def check(self) -> None:
        """Raise :class:`RunDirectoryLost` unless the run directory and its lock file are still
        the ones locked (same device and inode): ``rm -rf`` of the directory, or a ``mv`` over
        it, or a new ``.lock`` (which a second run could then take) mid-run. Called before
        each record write, and before the table is written."""
        if self._fd is None or self._root_id is None:
            return
        held = os.fstat(self._fd)
        try:
            root, lock = os.stat(self.root), os.stat(self.path)
        except OSError:
            root = lock = None
        if (
            root is None
            or lock is None
            or (root.st_dev, root.st_ino) != self._root_id
            or (lock.st_dev, lock.st_ino) != (held.st_dev, held.st_ino)
        ):
            raise RunDirectoryLost(
                f"the run directory {self.root} was removed or replaced during the run (its "
                f"lock file {self.path} is not the one this run holds); the records written "
                "since are not in it: run again to recompute them"
            )

    def release(self) -> None:
        """Give the lock back (the file stays: deleting it would race with a new holder)."""
        if self._fd is None:
            return
        import fcntl

        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _flock_holders(fd: int) -> list[int]:
    """PIDs holding a ``flock`` on the file open as ``fd``, from the kernel's ``/proc/locks``
    (Linux); empty where that table does not exist or does not list the file."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue  # a process waiting for a lock, or a POSIX/OFD lock
        with contextlib.suppress(ValueError):
            if parts[5] == device and int(parts[4]) > 0:
                pids.append(int(parts[4]))
    return pids


def _running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _describe_holder(fd: int) -> str:
    """Who holds the lock open as ``fd``, for the error message: the holder the kernel names
    (Linux), else the PID and host the last holder wrote, marked when it is no longer running
    (the lock is then held by something that did not write its PID)."""
    recorded = os.read(fd, 200).decode(errors="replace").split()
    pid = recorded[0] if recorded and recorded[0].isdigit() else None
    host = recorded[1] if len(recorded) > 1 else None
    here = host is None or host == socket.gethostname()
    holders = _flock_holders(fd)
    if holders:
        if pid is not None and int(pid) in holders:
            return f"another poisonbench run, PID {pid}{f' on {host}' if host else ''}"
        return f"another process, PID {', '.join(map(str, holders))}"
    if pid is None:
        return "another process"
    if here and not _running(int(pid)):
        return (
            f"another process (last recorded holder: PID {pid}, not running any more; the "
            "lock is held by something that did not record its PID)"
        )
    return f"another poisonbench run, PID {pid}{f' on {host}' if host else ''}"


def records_to_table(
    records: list[dict[str, Any]], fractions: Iterable[float] | None = None
) -> pd.DataFrame:
    """The long-format results table: one row per cell and extra-clean fraction, sorted by
    identity so that the table does not depend on the order cells finished in.

    fractions: keep only rows of these fractions (a run's grid; a record may hold more from an
    earlier, longer grid). Labels are made unique per id (``schema.assign_labels``) and the
    columns get the schema's dtypes.
    """
    wanted = None if fractions is None else {float(f) for f in fractions}
    rows = [
        row
        for record in records
        for row in record["rows"]
        if wanted is None or float(row["extra_fraction"]) in wanted
    ]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for column in NESTED_COLUMNS:
        if column in df:
            df[column] = df[column].map(
                lambda v: (
                    None if v is None or (isinstance(v, float) and math.isnan(v)) else json.dumps(v)
                )
            )
    df = coerce_table(assign_labels(df))
    df = df.sort_values(list(ROW_KEYS), kind="stable").reset_index(drop=True)
    return df


def write_table(df: pd.DataFrame, root: Path) -> None:
    """Write ``results.parquet`` and ``results.csv`` atomically."""
    write_parquet(df, root / "results.parquet")
    atomic_write_text(root / "results.csv", df.to_csv(index=False))


def read_table(
    path: str | Path,
    exclude: Iterable[str] = (),
    categories: bool = False,
) -> pd.DataFrame:
    """A results table from a run directory, a ``.parquet`` file or a ``.csv`` file.

    exclude: columns not to read (absent ones are ignored): a reader that does not need the
        nested JSON columns skips decoding them, which is most of the time spent reading a
        large table.
    categories: read the text columns of a parquet table dictionary-encoded, as pandas
        ``category`` columns (their categories in order of appearance, not sorted): a
        million-row table then reads, groups and de-duplicates in a fraction of the time, but
        code that sorts by such a column or assigns new values to it must convert it first
        (:func:`plain_strings`). Ignored for CSV.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("results.parquet", "results.csv"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise PoisonBenchError(f"{path} holds no results.parquet or results.csv")
    if path.is_dir():  # pyarrow would read a folder as an empty dataset: no columns at all
        raise PoisonBenchError(f"{path} is a folder, not a results table file")
    if path.suffix not in (".parquet", ".csv"):
        raise PoisonBenchError(f"{path}: expected a run directory, .parquet or .csv")
    _check_regular(path)
    skip = set(exclude)
    try:
        if path.suffix == ".parquet":
            table = _read_parquet(path, skip, categories)
        else:
            table = pd.read_csv(path, usecols=lambda c: c not in skip)
    except Exception as exc:  # pyarrow and pandas raise many kinds; all mean "unusable"
        raise PoisonBenchError(
            f"cannot read results table {path}: {type(exc).__name__}: {exc}"
        ) from None
    return coerce_table(table)


def _check_regular(path: Path) -> None:
    """PoisonBenchError unless ``path`` is a regular file or absent (the reader says so): a
    FIFO would block the reader until something writes to it, a device never ends."""
    if path.exists() and not path.is_file():
        raise PoisonBenchError(f"cannot read results table {path}: not a regular file")


def _read_parquet(path: Path, skip: set[str], categories: bool) -> pd.DataFrame:
    """The parquet table at ``path`` without the columns ``skip``; each column in one piece.

    pyarrow reads a large file in batches, and a text column made of several chunks is
    gathered whole for every row selection (``df[mask]``): 13× slower on a million rows than
    the same selection from one chunk, and the report makes hundreds of them.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    columns = [name for name in schema.names if name not in skip]
    text = [  # the schema's text columns only: a damaged numeric column keeps its values
        f.name
        for f in schema
        if f.name in columns
        and getattr(COLUMN_BY_NAME.get(f.name), "dtype", None) == "string"
        and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
    ]
    # Text read dictionary-encoded (as parquet stores it) is 2× faster to read, then decoded
    # in arrow unless categories are wanted.
    table = pq.read_table(path, columns=columns, read_dictionary=text).combine_chunks()
    if not categories:
        for name in text:
            i, kind = table.schema.get_field_index(name), schema.field(name).type
            chunks = [c.dictionary_decode().cast(kind) for c in table.column(i).chunks]
            table = table.set_column(i, name, pa.chunked_array(chunks, type=kind))
    return table.to_pandas()


def read_columns(path: str | Path, columns: Iterable[str], rows: Any = None) -> pd.DataFrame:
    """The ``columns`` of the results table at ``path`` that it has (run directory or table
    file, as :func:`read_table`), only at the rows where the boolean array ``rows`` is true
    (positions in the table as :func:`read_table` returns it; None: every row). For columns
    needed on a few rows of a large table: the plots' nested JSON of the plotted pairs."""
    path = Path(path)
    if path.is_dir():
        path = next(
            (path / n for n in ("results.parquet", "results.csv") if (path / n).exists()), path
        )
    _check_regular(path)
    wanted = list(dict.fromkeys(columns))
    try:
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            present = [c for c in wanted if c in pq.read_schema(path).names]
            table = pq.read_table(path, columns=present)
            if rows is not None:
                table = table.filter(pa.array(np.asarray(rows, dtype=bool)))
            out = table.combine_chunks().to_pandas()
        else:
            out = pd.read_csv(path, usecols=lambda c: c in wanted)
            if rows is not None:
                out = out[np.asarray(rows, dtype=bool)].reset_index(drop=True)
    except Exception as exc:  # pyarrow and pandas raise many kinds; all mean "unusable"
        raise PoisonBenchError(
            f"cannot read results table {path}: {type(exc).__name__}: {exc}"
        ) from None
    return coerce_table(out)


def plain_strings(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its ``category`` columns (see :func:`read_table`) turned back into the
    schema's string columns (the table as :func:`read_table` returns it by default)."""
    categorical = [c for c in df.columns if isinstance(df[c].dtype, pd.CategoricalDtype)]
    if not categorical:
        return df
    out = df.copy()
    for name in categorical:  # the categories' dtype: what pyarrow gives undictionaried text
        out[name] = out[name].astype(out[name].cat.categories.dtype)
    return out


RUN_META = "run.json"
RUN_CONFIG = "config.yaml"


def _meta_dir(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_dir() else path.parent


def write_run_meta(root: Path, meta: dict[str, Any]) -> None:
    """Write ``run.json`` (run metadata: summary, versions, datasets, recovery settings)."""
    atomic_write_text(Path(root) / RUN_META, json.dumps(jsonable(meta), indent=2))


def read_run_meta(path: str | Path) -> dict[str, Any]:
    """``run.json`` beside a results table (``path``: run directory or table file); {} when
    there is none. Raises PoisonBenchError naming the file when it is not a JSON object."""
    file = _meta_dir(path) / RUN_META
    if not file.exists():
        return {}
    try:
        meta = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PoisonBenchError(f"cannot read {file}: {type(exc).__name__}: {exc}") from None
    if not isinstance(meta, dict):
        raise PoisonBenchError(f"{file}: expected a JSON object, got {type(meta).__name__}")
    return meta


def read_run_config(path: str | Path) -> dict[str, Any]:
    """The ``config.yaml`` a run saved (``path``: run directory or table file); {} when there
    is none. Raises PoisonBenchError naming the file when it is not a YAML mapping."""
    import yaml

    file = _meta_dir(path) / RUN_CONFIG
    if not file.exists():
        return {}
    try:
        config = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        raise PoisonBenchError(f"cannot read {file}: {type(exc).__name__}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise PoisonBenchError(f"{file}: expected a YAML mapping, got {type(config).__name__}")
    return config
