"""Executors: run cells in local worker processes (one BLAS/OpenMP thread each) or in-process.

On 2-core machines oversubscribed BLAS makes small fits ~20× slower, so every worker is limited
to one thread. Records go back to the caller, which writes them: the store works the same
whatever runs the cells.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from bench.grid import Cell

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def limit_threads(n: int = 1) -> None:
    """Limit BLAS/OpenMP (threadpoolctl) and torch, if loaded later, to ``n`` threads."""
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    os.environ["POISONBENCH_THREADS"] = str(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)


def _init_worker(threads: int) -> None:
    limit_threads(threads)


def _run(spec: dict[str, Any], data_dir: str | None) -> dict[str, Any]:
    from bench.runner import run_cell

    return run_cell(Cell(spec), data_dir)


def run_local(
    cells: list[Cell], data_dir: str | None = None, jobs: int = 1, threads: int = 1
) -> Iterator[dict[str, Any]]:
    """Yield each cell's record as it finishes, from ``jobs`` worker processes.

    ``jobs=1`` runs in this process (no start-up cost). Workers are started with ``spawn``:
    a fork of a process that already holds BLAS or torch thread pools can deadlock.
    """
    if jobs <= 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads):
            for cell in cells:
                yield _run(cell.spec, data_dir)
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_init_worker, initargs=(threads,)
    )
    pending: set[Future] = set()
    queue = list(reversed(cells))
    try:
        # Keep a bounded number in flight so an interrupt loses little and memory stays flat.
        while queue or pending:
            while queue and len(pending) < 2 * jobs:
                cell = queue.pop()
                pending.add(pool.submit(_run, cell.spec, data_dir))
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
