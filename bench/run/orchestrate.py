"""Run a whole config: expand the grid, skip finished (cell, fraction) pairs, execute the rest
in tasks, write the records as they arrive, then the table and ``run.json``."""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from bench.analysis.precision import plan_round, precision_table
from bench.core.atomic import check_writable
from bench.core.schema import SCHEMA_VERSION
from bench.core.signals import held_signals
from bench.core.store import (
    RunLock,
    Store,
    atomic_write_text,
    read_run_meta,
    read_table,
    records_to_table,
    write_run_meta,
    write_table,
)
from bench.run.config import Config
from bench.run.destination import check_run_destination
from bench.run.executors import check_executor, execute, start_pool
from bench.run.grid import Cell, expand, make_tasks
from bench.run.plugins import check_workers_see, plugin_origins
from bench.run.schedule import TailOrder, split_tail
from bench.run.workers import cap_workers, cpu_count

PACKAGES = ("poisonbench", "numpy", "scikit-learn", "pyod", "pandas", "torch", "torchvision")

#: cells per task at most: a task shares the split, attack and defense stages of one poisoned
#: training set; larger groups are cut so one task never holds much more work than a few cells
MAX_TASK_CELLS = 16


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


@dataclass
class RunOptions:
    """How to run a config (everything but the config and the output directory).

    jobs: local worker processes (1: in this process). fresh: recompute every cell.
    progress: show a progress bar on stderr. executor: ``local``, ``dask`` (the cluster at
    ``scheduler``) or ``dask-local`` (a LocalCluster of ``workers`` processes).
    on_warning: called with each problem found in stored records (as found).
    on_record: called with each new record once stored (e.g. MLflow tracking).
    share_stages: run the cells of one poisoned training set as one task, so its split, attack
    output and defense-step outputs are computed once (False: one cell per task, every stage
    recomputed; the table is the same, only slower: for measuring what sharing saves).
    """

    jobs: int = 1
    fresh: bool = False
    progress: bool = True
    executor: str = "local"
    scheduler: str | None = None
    workers: int | None = None
    on_warning: Callable[[str], None] | None = None
    on_record: Callable[[dict[str, Any]], None] | None = None
    share_stages: bool = True

    @property
    def n_workers(self) -> int:
        """Processes that compute cells (for the efficiency figure)."""
        if self.executor == "local":
            return max(1, self.jobs)
        return max(1, self.workers or self.jobs)


@dataclass
class RunSummary:
    """What a run did: cells (configurations × seeds) and fits ((cell, fraction) pairs)."""

    out_dir: Path
    n_cells: int
    n_fits: int = 0
    n_run: int = 0  # cells with at least one fraction computed now
    n_cached: int = 0  # cells with every fraction already stored
    n_failed: int = 0  # cells computed now with a failed row
    fits_run: int = 0
    fits_cached: int = 0
    workers: int = 1
    wall_seconds: float = 0.0
    compute_seconds: float = 0.0  # the cells' own time (split .. predict), summed
    problems: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    #: a Dask cluster's worker threads at the start and, if it changed, at the end
    workers_seen: list[int] = field(default_factory=list)

    def failure_reasons(self) -> list[tuple[str, int]]:
        """The distinct reasons cells failed in this run, most frequent first, with counts."""
        counts: dict[str, int] = {}
        for failure in self.failures:
            reason = failure.split(": ", 1)[1] if ": " in failure else failure
            counts[reason] = counts.get(reason, 0) + 1
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))

    @property
    def efficiency(self) -> float:
        """compute / workers / wall: 1 means every worker computed cells all the time."""
        if self.wall_seconds <= 0 or self.workers <= 0:
            return float("nan")
        return self.compute_seconds / self.workers / self.wall_seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "cells": self.n_cells,
            "run": self.n_run,
            "cached": self.n_cached,
            "failed": self.n_failed,
            "fits": self.n_fits,
            "fits_run": self.fits_run,
            "fits_cached": self.fits_cached,
            "workers": self.workers,
            **({"workers_seen": self.workers_seen} if len(self.workers_seen) > 1 else {}),
            "wall_seconds": round(self.wall_seconds, 3),
            "compute_seconds": round(self.compute_seconds, 3),
            "efficiency": round(self.efficiency, 4) if self.fits_run else None,
        }


class RunInterrupted(KeyboardInterrupt):
    """A stop signal ended a run early; ``summary`` says how many cells are done (their records
    saved) and ``signum`` which signal it was (SIGINT for a plain KeyboardInterrupt)."""

    def __init__(self, summary: RunSummary, signum: int = signal.SIGINT) -> None:
        super().__init__()
        self.summary = summary
        self.signum = signum


def run_config(
    config: Config, out_dir: str | Path, options: RunOptions | None = None, **kwargs: Any
) -> RunSummary:
    """Run every unfinished (cell, fraction) of ``config`` into ``out_dir``; write the table.

    options: a :class:`RunOptions`, or its fields as keyword arguments. The run directory is
    locked for the whole run (a second run on it fails at once); records are written as tasks
    finish, so a run stopped at any moment (Ctrl-C, kill -9) resumes where it was. A stop
    signal raises :class:`RunInterrupted`.
    """
    if options is None:
        names = {f.name for f in fields(RunOptions)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"run_config: unknown option {unknown[0]!r} (valid: {sorted(names)})")
        options = RunOptions(**kwargs)
    elif kwargs:
        raise TypeError("run_config: give options or keyword arguments, not both")
    started = time.perf_counter()
    out = check_run_destination(out_dir)  # before anything is made or computed

    check_executor(options.executor, options.scheduler)  # before the run directory is made
    with RunLock(out) as lock:  # first: a second run here fails before loading any data
        pool = _early_pool(config, options)
        try:
            grid = expand(config)  # validates; writes nothing
            check_writable(out)  # a filesystem fault stops the run before any work, not after
            summary = _run_locked(config, out, grid, options, started, pool, lock=lock)
            if config.precision is not None:
                summary = _precision_rounds(config, out, options, started, summary, lock)
            return summary
        finally:
            if pool is not None:
                pool.close(kill=True)  # a no-op when the run used and closed it


def _precision_rounds(
    config: Config,
    out: Path,
    options: RunOptions,
    started: float,
    first: RunSummary,
    lock: RunLock | None = None,
) -> RunSummary:
    """Add seeds in rounds to the groups whose headline interval is still wider than the
    config's precision (:mod:`bench.analysis.precision`), until all are resolved or at the cap.

    Each round is an ordinary resumable run of the grid with more seeds for those groups: the
    stored (cell, fraction) pairs are skipped, so an interrupted or repeated precision run
    replays the finished rounds from disk and goes on where it stopped. ``run.json`` gets a
    ``precision`` section with every group's seeds, width and status.
    """
    spec = config.precision
    assert spec is not None
    options = dataclasses.replace(options, fresh=False)  # later rounds extend the first
    total = first
    counts: dict[tuple[Any, ...], int] = {}
    rounds = [{"groups": None, "cells_run": first.n_run}]
    while True:
        table = read_table(out)
        status = precision_table(
            table, spec.target, spec.max_seeds, config.recovery.metric, config.recovery.tolerance
        )
        want = plan_round(status, spec.max_seeds)
        if not want:
            break
        counts.update(want)
        grid = expand(config, _extra_seeds(config.seeds, counts))
        summary = _run_locked(config, out, grid, options, started, lock=lock)
        rounds.append({"groups": len(want), "cells_run": summary.n_run})
        total = _merged(total, summary)
    meta = read_run_meta(out)
    meta["summary"] = total.as_dict()
    meta["precision"] = {
        "target": spec.target,
        "max_seeds": spec.max_seeds,
        "min_seeds": len(config.seeds),
        "rounds": rounds,
        "groups": status.to_dict(orient="records"),
    }
    write_run_meta(out, meta)
    return total


def _extra_seeds(
    configured: tuple[int, ...], counts: dict[tuple[Any, ...], int]
) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """For each group, the seeds beyond ``configured`` that bring it to its count: the
    smallest non-negative integers not configured, so every group's seeds are a prefix of one
    sequence (and the groups that move together share them, paired)."""
    taken = set(configured)
    longest = max(counts.values(), default=0) - len(configured)
    sequence = [s for s in range(len(configured) + longest + len(taken)) if s not in taken]
    return {key: tuple(sequence[: n - len(configured)]) for key, n in counts.items()}


def _merged(before: RunSummary, after: RunSummary) -> RunSummary:
    """One summary for two rounds of a run: ``after``'s grid, both rounds' work."""
    n_run = before.n_run + after.n_run
    fits_run = before.fits_run + after.fits_run
    return dataclasses.replace(
        after,
        n_run=n_run,
        n_cached=max(0, after.n_cells - n_run),
        n_failed=before.n_failed + after.n_failed,
        fits_run=fits_run,
        fits_cached=max(0, after.n_fits - fits_run),
        compute_seconds=before.compute_seconds + after.compute_seconds,
        problems=list(dict.fromkeys([*before.problems, *after.problems])),
        failures=[*before.failures, *after.failures],
    )


def _early_pool(config: Config, options: RunOptions) -> Any:
    """Local workers started before the grid is expanded, so that their start-up (imports,
    dataset loads) overlaps the expansion; None for one process or another executor."""
    if options.executor != "local" or options.jobs <= 1 or options.jobs > cpu_count():
        return None  # beyond the cores: started once the task count caps them (cap_workers)
    datasets = [(ds.name, ds.params) for ds in config.datasets]
    plugins = tuple(getattr(config, "plugins", ()))

    return start_pool(options.jobs, datasets=datasets, data_dir=config.data_dir, plugins=plugins)


def _todo(
    store: Store, cells: list[Cell], fractions: tuple[float, ...], fresh: bool
) -> list[tuple[Cell, tuple[float, ...]]]:
    """Each cell with the fractions it still needs (all of them for an early-stop cell that
    misses any: its rows depend on the whole grid)."""
    out = []
    for cell in cells:
        done = set() if fresh else store.done_fractions(cell.cell_id)
        missing = tuple(f for f in fractions if f not in done)
        if missing and cell.spec.get("early_stop"):
            missing = tuple(fractions)
        if missing:
            out.append((cell, missing))
    return out


def _run_locked(
    config: Config,
    out: Path,
    grid: Any,
    options: RunOptions,
    started: float,
    pool: Any = None,
    lock: RunLock | None = None,
) -> RunSummary:
    store = Store(out)
    store.remove_temporaries()
    cells = grid.cells
    todo = _todo(store, cells, grid.fractions, options.fresh)
    if todo and (options.executor != "local" or options.jobs > 1):
        workers = (
            f"{options.jobs} worker processes" if options.executor == "local" else "Dask workers"
        )
        # before any cell: a worker would fail every one
        check_workers_see(config, workers, local=options.executor == "local")
    n_fits = len(cells) * len(grid.fractions)
    fits_todo = sum(len(f) for _, f in todo)
    summary = RunSummary(
        out_dir=out,
        n_cells=len(cells),
        n_fits=n_fits,
        n_cached=len(cells) - len(todo),
        fits_cached=n_fits - fits_todo,
        workers=options.n_workers,
    )
    if options.on_warning is not None:
        for problem in [*grid.warnings, *store.problems]:
            options.on_warning(problem)
    atomic_write_text(
        out / "config.yaml", yaml.safe_dump(config.raw or {"name": config.name}, sort_keys=False)
    )

    bar = None
    if options.progress and todo:
        from tqdm import tqdm

        bar = tqdm(
            total=len(todo), desc=config.name, unit="cell", file=sys.stderr, dynamic_ncols=True
        )
    seen_workers: list[int] = []  # a Dask cluster's worker threads, at the start (and end)
    written: dict[str, dict[str, Any]] = {}  # this run's records by cell id, as stored
    tasks = make_tasks(
        todo, MAX_TASK_CELLS if options.share_stages else 1, getattr(config, "plugins", ())
    )
    options = cap_workers(options, len(tasks), options.on_warning)  # no idle workers
    summary.workers = options.n_workers
    order = None
    if options.share_stages and options.n_workers > 1:  # one worker has no tail to balance
        tasks, tail = split_tail(tasks, options.n_workers)
        order = TailOrder(tasks, tail)
    records_in = execute(
        tasks,
        config.data_dir,
        executor=options.executor,
        jobs=options.jobs,
        scheduler=options.scheduler,
        workers=options.workers,
        run_dir=out,
        pool=pool,
        timeout=getattr(config, "timeout", None),
        seen_workers=seen_workers,
        arrange=order.arrange if order is not None else None,
    )
    try:
        for records in records_in:
            for record in records:
                computed = len(record["rows"])
                seconds = float(record.get("seconds") or 0.0)  # this run's, not the merged total
                if lock is not None:  # the folder removed or replaced: stop, count nothing more
                    lock.check()
                with held_signals():  # a record on disk is a record counted in the summary
                    record = store.merge(record) if not options.fresh else _write(store, record)
                    written[record["cell_id"]] = record
                    summary.n_run += 1
                    summary.fits_run += computed
                    summary.compute_seconds += seconds
                if order is not None:
                    order.observe(record)
                if options.on_record is not None:
                    options.on_record(record)
                if record["status"] != "ok":
                    summary.n_failed += 1
                    error = next(
                        (r.get("error") for r in record["rows"] if r.get("status") == "failed"),
                        record.get("error"),
                    )
                    summary.failures.append(f"{record['cell_id']}: {error}")
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
        if any(seen_workers):  # the cluster's count, not the --workers/--jobs default
            summary.workers = max(seen_workers)
            summary.workers_seen = list(seen_workers)
        summary.problems = list(store.problems)
        summary.wall_seconds = time.perf_counter() - started

    if lock is not None:
        lock.check()
    records = store.records([c.cell_id for c in cells], written)
    table = records_to_table(records, grid.fractions)
    write_table(table, out)
    write_run_meta(out, run_meta(config, grid, summary))
    return summary


def _write(store: Store, record: dict[str, Any]) -> dict[str, Any]:
    return store.write(record)


def run_meta(config: Config, grid: Any, summary: RunSummary) -> dict[str, Any]:
    """What ``run.json`` says about a run (read back by the report and compare)."""
    return {
        "name": config.name,
        "schema_version": SCHEMA_VERSION,
        "summary": summary.as_dict(),
        "versions": package_versions(),
        "datasets": grid.datasets,
        "recovery": {
            "fractions": list(config.recovery.fractions),
            "metric": config.recovery.metric,
            "tolerance": config.recovery.tolerance,
            "bootstrap": config.recovery.bootstrap,
            "early_stop": config.recovery.early_stop,
        },
        "seeds": list(config.seeds),
        "precision": None,
        "plugins": {
            "modules": list(getattr(config, "plugins", ()) or ()),
            "used": plugin_origins(config),
        },
    }
