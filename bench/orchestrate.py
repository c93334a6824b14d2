"""Run a whole config: expand the grid, skip finished cells, execute the rest, write the table."""

from __future__ import annotations

import contextlib
import json
import platform
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from bench.config import Config
from bench.grid import expand, stage_rng
from bench.store import RunLock, Store, atomic_write_text, records_to_table, write_table

PACKAGES = ("poisonbench", "numpy", "scikit-learn", "pyod", "pandas", "torch", "torchvision")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


@dataclass
class RunSummary:
    out_dir: Path
    n_cells: int
    n_run: int = 0
    n_cached: int = 0
    n_failed: int = 0
    wall_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cells": self.n_cells,
            "run": self.n_run,
            "cached": self.n_cached,
            "failed": self.n_failed,
            "wall_seconds": round(self.wall_seconds, 3),
        }


class RunInterrupted(KeyboardInterrupt):
    """A stop signal ended a run early; ``summary`` says how many cells are done (their records
    saved) and ``signum`` which signal it was (SIGINT for a plain KeyboardInterrupt)."""

    def __init__(self, summary: RunSummary, signum: int = signal.SIGINT) -> None:
        super().__init__()
        self.summary = summary
        self.signum = signum


def check_datasets(config: Config) -> None:
    """Load every dataset and draw its split once; raise DatasetError before any cell runs.

    Catches what would otherwise fail cell after cell: NaN/inf features, a class with too
    few rows for a stratified split, split sizes larger than the dataset, and a train set
    too small to hold every class.
    """
    from bench.datasets import DatasetError, load_dataset, split
    from bench.types import ParamError

    for i, ds in enumerate(config.datasets):
        where = f"datasets[{i}] ({ds.name})"
        try:
            dataset = load_dataset(ds.name, config.data_dir, ds.params)
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        except OSError as exc:
            raise DatasetError(f"{where}: cannot load: {exc}") from None
        key = {**ds.canonical(), "fingerprint": dataset.fingerprint}
        seed = config.seeds[0]
        try:
            parts = split(dataset, ds.train, ds.test, ds.pool, rng=stage_rng("split", key, seed))
        except ParamError as exc:
            raise DatasetError(f"datasets[{i}].{exc.field}: {exc.message}") from None
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        k = dataset.info.n_classes
        present = len(set(dataset.y[parts.train].tolist()))
        if present < k:
            raise DatasetError(
                f"datasets[{i}].split.train: {len(parts.train)} rows hold {present} of the {k} "
                f"classes of {ds.name}; a train set needs at least one row of every class"
            )


def run_config(
    config: Config,
    out_dir: str | Path,
    jobs: int = 1,
    fresh: bool = False,
    progress: bool = True,
    executor: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> RunSummary:
    """Run every unfinished cell of ``config`` into ``out_dir`` and write the results table.

    ``executor``: ``local`` (``jobs`` processes), ``dask`` (the cluster at ``scheduler``) or
    ``dask-local`` (a LocalCluster of ``workers`` processes). The run directory is locked for
    the whole run (a second run on it fails at once); records are written as cells finish, so
    a run stopped at any moment (Ctrl-C, kill -9) resumes where it was. Problems with stored
    records are passed to ``on_warning`` as soon as they are found; each new record, once
    stored, is passed to ``on_record`` (e.g. MLflow tracking). Ctrl-C raises
    :class:`RunInterrupted`.
    """

    started = time.perf_counter()
    out = Path(out_dir)
    with RunLock(out):  # first: a second run on this directory fails before loading any data
        check_datasets(config)
        cells = expand(config)
        ids = [c.cell_id for c in cells]
        return _run_locked(
            config,
            out,
            cells,
            ids,
            started,
            jobs,
            fresh,
            progress,
            executor,
            scheduler,
            workers,
            on_warning,
            on_record,
        )


def _run_locked(
    config: Config,
    out: Path,
    cells: list,
    ids: list[str],
    started: float,
    jobs: int,
    fresh: bool,
    progress: bool,
    executor: str,
    scheduler: str | None,
    workers: int | None,
    on_warning: Callable[[str], None] | None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> RunSummary:
    from bench.executors import execute

    store = Store(out)
    store.remove_temporaries()
    done = {} if fresh else store.finished(ids)
    todo = [c for c in cells if c.cell_id not in done]
    summary = RunSummary(out_dir=out, n_cells=len(cells), n_cached=len(done))
    if on_warning is not None:
        for problem in store.problems:
            on_warning(problem)
    atomic_write_text(
        out / "config.yaml", yaml.safe_dump(config.raw or {"name": config.name}, sort_keys=False)
    )

    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(
            total=len(todo), desc=config.name, unit="cell", file=sys.stderr, dynamic_ncols=True
        )
    records_in = execute(
        todo,
        config.data_dir,
        executor=executor,
        jobs=jobs,
        scheduler=scheduler,
        workers=workers,
        run_dir=out,
    )
    try:
        for record in records_in:
            store.write(record)
            if on_record is not None:
                on_record(record)
            summary.n_run += 1
            if record["status"] != "ok":
                summary.n_failed += 1
                summary.failures.append(f"{record['cell_id']}: {record['rows'][0].get('error')}")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(failed=summary.n_failed, refresh=False)
    except KeyboardInterrupt as exc:
        records_in.close()  # stops the workers now, before the message
        raise RunInterrupted(summary, getattr(exc, "signum", signal.SIGINT)) from None
    finally:
        records_in.close()
        if bar is not None:
            bar.close()
        summary.problems = list(store.problems)
        summary.wall_seconds = time.perf_counter() - started
    records = store.records(ids)
    table = records_to_table(records)
    write_table(table, out)
    meta = {
        "name": config.name,
        "summary": summary.as_dict(),
        "versions": package_versions(),
        "datasets": {c.spec["dataset"]["name"]: c.spec["dataset"]["fingerprint"] for c in cells},
        "recovery": {
            "fractions": list(config.recovery.fractions),
            "metric": config.recovery.metric,
            "tolerance": config.recovery.tolerance,
            "bootstrap": config.recovery.bootstrap,
        },
    }
    atomic_write_text(out / "run.json", json.dumps(meta, indent=2))
    return summary
