"""Executors: run cells in local worker processes, in-process, or on a Dask cluster.

On 2-core machines oversubscribed BLAS makes small fits ~20× slower, so every worker is limited
to one thread. Records go back to the caller, which writes them as they arrive: the store works
the same whatever runs the cells, and a run started with one executor resumes with another.

Shared inputs: a task carries only the cell's small JSON spec. Each worker process loads a
dataset once, through the bounded per-process cache of :func:`bench.datasets.load_dataset`, and
reuses it for every later cell; dataset arrays never travel over the network.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from bench.grid import Cell
from bench.types import PoisonBenchError

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)

#: the executors ``poisonbench run --executor`` accepts
EXECUTORS = ("local", "dask", "dask-local")

_limited_to: int | None = None  # per process: the thread limit already applied


class ExecutorError(PoisonBenchError):
    """An executor cannot start: a missing optional dependency or an unreachable scheduler."""


def limit_threads(n: int = 1) -> None:
    """Limit BLAS/OpenMP (threadpoolctl) and torch, if loaded later, to ``n`` threads."""
    global _limited_to
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    os.environ["POISONBENCH_THREADS"] = str(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    _limited_to = n


def _exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """End this worker soon after its parent dies (e.g. kill -9): nothing else would, since
    the workers themselves hold the task queue's pipe open."""
    while True:
        time.sleep(interval)
        if os.getppid() != parent:
            os._exit(1)


def _init_worker(threads: int) -> None:
    # Ctrl-C reaches the whole process group; only the parent handles it (it stops the workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    limit_threads(threads)


def _run(spec: dict[str, Any], data_dir: str | None) -> dict[str, Any]:
    from bench.runner import run_cell

    return run_cell(Cell(spec), data_dir)


def _run_on_worker(spec: dict[str, Any], data_dir: str | None, threads: int) -> dict[str, Any]:
    """Run one cell on a Dask worker, limiting the worker's threads on its first cell."""
    if _limited_to != threads:
        limit_threads(threads)
    return _run(spec, data_dir)


def failed_record(cell: Cell, error: str) -> dict[str, Any]:
    """A record saying a cell could not run (e.g. its worker died); it is retried next run."""
    from bench.runner import SCHEMA_VERSION, identity_columns

    return {
        "schema_version": SCHEMA_VERSION,
        "cell_id": cell.cell_id,
        "spec": cell.spec,
        "status": "failed",
        "error": error,
        "seconds": 0.0,
        "rows": [
            {**identity_columns(cell), "extra_fraction": 0.0, "status": "failed", "error": error}
        ],
    }


def run_local(
    cells: list[Cell], data_dir: str | None = None, jobs: int = 1, threads: int = 1
) -> Iterator[dict[str, Any]]:
    """Yield each cell's record as it finishes, from ``jobs`` worker processes.

    ``jobs=1`` runs in this process (no start-up cost). Workers are started with ``spawn``:
    a fork of a process that already holds BLAS or torch thread pools can deadlock. If the
    caller stops early (Ctrl-C, ``close()``), running workers are terminated, not waited for.
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
    finished = False
    try:
        # Keep a bounded number in flight so an interrupt loses little and memory stays flat.
        while queue or pending:
            while queue and len(pending) < 2 * jobs:
                cell = queue.pop()
                pending.add(pool.submit(_run, cell.spec, data_dir))
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
        finished = True
    finally:
        for future in pending:
            future.cancel()
        if finished:
            pool.shutdown(wait=True)
        else:
            _terminate(pool)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop a process pool now: cancel queued work and terminate running workers."""
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14
        pool.terminate_workers()
        return
    # Before 3.14 there is no public way; shutdown() forgets the processes, so take them first.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=5)


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ExecutorError(
            "the dask executors need dask.distributed, an optional extra: "
            "pip install 'poisonbench[dask]' (or pip install -e '.[dask]' in a checkout)"
        ) from None
    return distributed


def local_cluster(workers: int) -> Any:
    """A ``distributed.LocalCluster`` of ``workers`` processes, one thread each, bound to
    127.0.0.1 with no dashboard (the scheduler's HTTP endpoints on a free localhost port)."""
    distributed = _import_distributed()
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
        silence_logs=logging.ERROR,
    )


def run_dask(
    cells: list[Cell],
    data_dir: str | None = None,
    scheduler: str | None = None,
    workers: int = 2,
    threads: int = 1,
) -> Iterator[dict[str, Any]]:
    """Yield each cell's record as it finishes on a Dask cluster.

    ``scheduler``: the address of a running scheduler (``tcp://host:8786``); the cluster may
    be local, Slurm/PBS (dask-jobqueue) or Kubernetes (dask-kubernetes). Without it, a
    ``LocalCluster`` of ``workers`` processes (one thread each, bound to 127.0.0.1, no
    dashboard) is started and shut down here. Workers need poisonbench installed, and
    ``data_dir`` must be readable at the same path on every worker.

    Cells are submitted a few at a time (twice the cluster's current thread count) so that an
    interrupt loses little and the scheduler never holds the whole grid. A cell whose worker
    dies repeatedly comes back as a ``failed`` record (retried on the next run).
    """
    distributed = _import_distributed()
    if not cells:
        return
    cluster = None
    if scheduler:
        try:
            client = distributed.Client(scheduler)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ExecutorError(
                f"cannot reach the Dask scheduler at {scheduler}: {type(exc).__name__}: {exc}"
            ) from None
    else:
        if workers < 1:
            raise ExecutorError(f"--workers must be >= 1, got {workers}")
        cluster = local_cluster(workers)
        client = distributed.Client(cluster)
    futures: dict[Any, tuple[Any, Cell]] = {}
    try:

        def slots() -> int:  # re-read as results arrive: clusters scale up and down
            return max(2, 2 * sum(client.nthreads().values()))

        queue = list(reversed(cells))
        ready = distributed.as_completed()

        def submit() -> None:
            cell = queue.pop()
            future = client.submit(
                _run_on_worker,
                cell.spec,
                data_dir,
                threads,
                key=f"poisonbench-cell-{cell.cell_id}",
            )
            futures[future.key] = (future, cell)
            ready.add(future)

        while queue and len(futures) < slots():
            submit()
        for future in ready:
            _, cell = futures.pop(future.key)
            try:
                record = future.result()
            except Exception as exc:  # a worker died (KilledWorker) or the task broke
                record = failed_record(cell, f"dask: {type(exc).__name__}: {exc}")
            future.release()
            limit = slots() if queue else 0
            while queue and len(futures) < limit:
                submit()
            yield record
    finally:
        with contextlib.suppress(Exception):
            client.cancel([future for future, _ in futures.values()], force=True)
        with contextlib.suppress(Exception):
            client.close(timeout=10)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=10)


def execute(
    cells: list[Cell],
    data_dir: str | None = None,
    executor: str = "local",
    jobs: int = 1,
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int = 1,
) -> Iterator[dict[str, Any]]:
    """Yield the records of ``cells`` from the chosen executor (see :data:`EXECUTORS`)."""
    if executor == "local":
        if scheduler:
            raise ExecutorError("--scheduler needs --executor dask")
        return run_local(cells, data_dir, jobs=jobs, threads=threads)
    if executor == "dask":
        if not scheduler:
            raise ExecutorError(
                "--executor dask needs --scheduler tcp://HOST:8786 "
                "(or use --executor dask-local to start a local cluster)"
            )
        _import_distributed()
        return run_dask(cells, data_dir, scheduler=scheduler, threads=threads)
    if executor == "dask-local":
        if scheduler:
            raise ExecutorError("--scheduler needs --executor dask, not dask-local")
        _import_distributed()
        return run_dask(cells, data_dir, workers=workers or jobs, threads=threads)
    raise ExecutorError(f"unknown executor {executor!r} (valid: {', '.join(EXECUTORS)})")
