"""The store: one JSON record per cell, written atomically; the consolidated results table.

Layout of a run directory::

    RUN_DIR/config.yaml        the config as given
    RUN_DIR/cells/<id>.json    one record per cell (identity hash of its canonical spec)
    RUN_DIR/results.parquet    the long-format table (also results.csv)
    RUN_DIR/run.json           run metadata: versions, counts, wall time
    RUN_DIR/report.md          the report

Records are JSON (never pickle). A record that cannot be read, or has another schema version
or identity than its file name says, is reported and its cell recomputed; never trusted.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.grid import stable_hash
from bench.runner import SCHEMA_VERSION

#: columns holding nested values (lists, dicts): JSON text in the tables
NESTED_COLUMNS = ("per_class", "confusion", "pred_distribution", "removed_per_class")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None reads back as NaN in the table
    return value


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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

    def write(self, record: dict[str, Any]) -> None:
        atomic_write_text(
            self.path(record["cell_id"]), json.dumps(_jsonable(record), allow_nan=False)
        )

    def read(self, cell_id: str) -> dict[str, Any] | None:
        """The record of a cell if present and valid, else None (problems are remembered)."""
        path = self.path(cell_id)
        if not path.exists():
            return None
        problem = None
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            record, problem = None, f"unreadable ({type(exc).__name__})"
        if record is not None:
            problem = validate_record(record, cell_id)
        if problem:
            self.problems.append(f"{path.name}: {problem}; the cell will be recomputed")
            return None
        return record

    def finished(self, cell_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Valid records among ``cell_ids`` whose cell ran (failed cells are retried)."""
        out = {}
        for cell_id in cell_ids:
            record = self.read(cell_id)
            if record is not None and record["status"] == "ok":
                out[cell_id] = record
        return out

    def records(self, cell_ids: list[str] | None = None) -> list[dict[str, Any]]:
        if cell_ids is None:
            cell_ids = sorted(p.stem for p in self.cells_dir.glob("*.json"))
        return [r for r in (self.read(c) for c in cell_ids) if r is not None]


def validate_record(record: Any, cell_id: str) -> str | None:
    """Why a record cannot be trusted, or None when it can."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("schema_version") != SCHEMA_VERSION:
        return f"schema version {record.get('schema_version')!r}, expected {SCHEMA_VERSION}"
    for key, kind in (("cell_id", str), ("spec", dict), ("rows", list), ("status", str)):
        if not isinstance(record.get(key), kind):
            return f"field {key!r} missing or not a {kind.__name__}"
    if record["cell_id"] != cell_id:
        return f"names cell {record['cell_id']}, not {cell_id}"
    try:
        actual = stable_hash(record["spec"])
    except (TypeError, ValueError):
        return "spec is not canonical JSON"
    if actual != cell_id:
        return "spec does not hash to its cell id (edited by hand?)"
    if record["status"] not in ("ok", "failed"):
        return f"status {record['status']!r} is not ok or failed"
    if not record["rows"] or not all(
        isinstance(r, dict) and r.get("cell_id") == cell_id for r in record["rows"]
    ):
        return "rows missing or belong to another cell"
    return None


def records_to_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The long-format results table: one row per cell and extra-clean fraction, sorted by
    identity so that the table does not depend on the order cells finished in."""
    rows = [row for record in records for row in record["rows"]]
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
    keys = [
        "dataset",
        "model",
        "attack",
        "attack_params",
        "rate",
        "defense",
        "defense_params",
        "seed",
        "extra_fraction",
    ]
    df = df.sort_values(keys, kind="stable").reset_index(drop=True)
    return df


def write_table(df: pd.DataFrame, root: Path) -> None:
    """Write ``results.parquet`` and ``results.csv`` atomically."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / ".results.parquet.tmp"
    df.to_parquet(tmp, index=False)
    os.replace(tmp, root / "results.parquet")
    atomic_write_text(root / "results.csv", df.to_csv(index=False))


def read_table(path: str | Path) -> pd.DataFrame:
    """A results table from a run directory, a ``.parquet`` file or a ``.csv`` file."""
    from bench.types import PoisonBenchError

    path = Path(path)
    if path.is_dir():
        for name in ("results.parquet", "results.csv"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise PoisonBenchError(f"{path} holds no results.parquet or results.csv")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix == ".csv":
            return pd.read_csv(path)
    except Exception as exc:  # pyarrow and pandas raise many kinds; all mean "unusable"
        raise PoisonBenchError(
            f"cannot read results table {path}: {type(exc).__name__}: {exc}"
        ) from None
    raise PoisonBenchError(f"{path}: expected a run directory, .parquet or .csv")
