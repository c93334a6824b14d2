"""Executors: run cells in local worker processes, in-process, or on a Dask cluster.

On 2-core machines oversubscribed BLAS makes small fits ~20× slower, so every worker is limited
to one thread. Records go back to the caller, which writes them as they arrive: the store works
the same whatever runs the cells, and a run started with one executor resumes with another.

A task (:class:`bench.run.grid.Task`) is the cells of one poisoned training set, each with the
fractions it still needs; it carries only their small JSON specs. Each worker process loads a
dataset once, through the bounded per-process cache of :func:`bench.data.datasets.load_dataset`, and
reuses it for every later task; dataset arrays never travel over the network. Every executor
yields, per task, the list of its cells' records.

:mod:`.common` holds what they share, :mod:`.local` the local process pool, :mod:`.dask` the
Dask cluster; this module chooses between them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.run.executors.common import DASK_SCRATCH, EXECUTORS, ExecutorError
from bench.run.executors.dask import _import_distributed, local_cluster, run_dask
from bench.run.executors.local import _Pool, run_local, start_pool
from bench.run.grid import Task


def execute(
    tasks: list[Task],
    data_dir: str | None = None,
    executor: str = "local",
    jobs: int = 1,
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    run_dir: str | Path | None = None,
    pool: _Pool | None = None,
    timeout: float | None = None,
    seen_workers: list[int] | None = None,
    arrange: Callable[[deque[int]], None] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Yield the records of each of ``tasks`` from the chosen executor (:data:`EXECUTORS`).

    ``arrange``: called with the queue of task indices still to hand out, before each
    hand-out; it may reorder them (:meth:`bench.run.schedule.TailOrder.arrange`).

    ``seen_workers``: for the dask executors, the cluster's worker threads are appended to it
    at the start and, if changed, at the end (see :func:`run_dask`).

    ``timeout``: seconds per cell (None: no limit): a task past it is ``failed`` (``timed out
    after N s``) and its worker replaced; see :func:`run_local` and :func:`run_dask`.

    ``run_dir``: the run directory; ``dask-local`` keeps its workers' scratch space in
    ``run_dir/`` :data:`DASK_SCRATCH` (without it, in the system temp dir). ``pool``: local
    workers started earlier by :func:`start_pool` (the local executor with ``jobs > 1``).
    """
    check_executor(executor, scheduler)
    if executor == "local":
        return run_local(
            tasks, data_dir, jobs=jobs, threads=threads, pool=pool, timeout=timeout, arrange=arrange
        )
    if executor == "dask":
        return run_dask(
            tasks,
            data_dir,
            scheduler=scheduler,
            threads=threads,
            timeout=timeout,
            seen_workers=seen_workers,
            arrange=arrange,
        )
    scratch = None if run_dir is None else Path(run_dir) / DASK_SCRATCH
    return run_dask(
        tasks,
        data_dir,
        workers=workers or jobs,
        threads=threads,
        scratch_dir=scratch,
        timeout=timeout,
        seen_workers=seen_workers,
        arrange=arrange,
    )


def check_executor(executor: str, scheduler: str | None = None) -> None:
    """Raise :class:`ExecutorError` unless ``executor`` (one of :data:`EXECUTORS`) can run with
    ``scheduler`` here (the dask executors need the optional ``distributed`` package). Called
    before a run writes anything, and again by :func:`execute`."""
    if executor not in EXECUTORS:
        raise ExecutorError(f"unknown executor {executor!r} (valid: {', '.join(EXECUTORS)})")
    if executor == "local" and scheduler:
        raise ExecutorError("--scheduler needs --executor dask")
    if executor == "dask" and not scheduler:
        raise ExecutorError(
            "--executor dask needs --scheduler tcp://HOST:8786 "
            "(or use --executor dask-local to start a local cluster)"
        )
    if executor == "dask-local" and scheduler:
        raise ExecutorError("--scheduler needs --executor dask, not dask-local")
    if executor != "local":
        _import_distributed()


__all__ = [
    "DASK_SCRATCH",
    "EXECUTORS",
    "ExecutorError",
    "check_executor",
    "execute",
    "local_cluster",
    "run_dask",
    "start_pool",
]
