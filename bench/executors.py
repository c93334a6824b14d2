"""Executors: run cells in local worker processes, in-process, or on a Dask cluster.

On 2-core machines oversubscribed BLAS makes small fits ~20× slower, so every worker is limited
to one thread. Records go back to the caller, which writes them as they arrive: the store works
the same whatever runs the cells, and a run started with one executor resumes with another.

A task (:class:`bench.grid.Task`) is the cells of one poisoned training set, each with the
fractions it still needs; it carries only their small JSON specs. Each worker process loads a
dataset once, through the bounded per-process cache of :func:`bench.datasets.load_dataset`, and
reuses it for every later task; dataset arrays never travel over the network. Every executor
yields, per task, the list of its cells' records.
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

from bench.grid import Task
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


def _run(payload: list[Any], data_dir: str | None) -> list[dict[str, Any]]:
    from bench.runner import run_task

    return run_task(payload, data_dir)


def _run_on_worker(payload: list[Any], data_dir: str | None, threads: int) -> list[dict[str, Any]]:
    """Run one task on a Dask worker, limiting the worker's threads on its first task."""
    if _limited_to != threads:
        limit_threads(threads)
    return _run(payload, data_dir)


def lost_task(task: Task, error: str) -> list[dict[str, Any]]:
    """The records of a task that could not run (its worker died): every cell ``failed`` with
    ``error`` for the fractions it was to compute (retried on the next run)."""
    from bench.runner import failed_record

    return [failed_record(cell, fractions, error) for cell, fractions in task.items]


def run_local(
    tasks: list[Task], data_dir: str | None = None, jobs: int = 1, threads: int = 1
) -> Iterator[list[dict[str, Any]]]:
    """Yield each task's records as it finishes, from ``jobs`` worker processes.

    ``jobs=1`` runs in this process (no start-up cost). Workers are started with ``spawn``:
    a fork of a process that already holds BLAS or torch thread pools can deadlock. If the
    caller stops early (Ctrl-C, ``close()``), running workers are terminated, not waited for.
    """
    if jobs <= 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads):
            for task in tasks:
                yield _run(task.payload(), data_dir)
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_init_worker, initargs=(threads,)
    )
    pending: set[Future] = set()
    queue = list(reversed(tasks))
    finished = False
    try:
        # Keep a bounded number in flight so an interrupt loses little and memory stays flat.
        while queue or pending:
            while queue and len(pending) < 2 * jobs:
                task = queue.pop()
                pending.add(pool.submit(_run, task.payload(), data_dir))
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
    tasks: list[Task],
    data_dir: str | None = None,
    scheduler: str | None = None,
    workers: int = 2,
    threads: int = 1,
) -> Iterator[list[dict[str, Any]]]:
    """Yield each task's records as it finishes on a Dask cluster.

    ``scheduler``: the address of a running scheduler (``tcp://host:8786``); the cluster may
    be local, Slurm/PBS (dask-jobqueue) or Kubernetes (dask-kubernetes). Without it, a
    ``LocalCluster`` of ``workers`` processes (one thread each, bound to 127.0.0.1, no
    dashboard) is started and shut down here. Workers need poisonbench installed, and
    ``data_dir`` must be readable at the same path on every worker.

    Tasks are submitted a few at a time (twice the cluster's current thread count) so that an
    interrupt loses little and the scheduler never holds the whole grid. A task whose worker
    dies repeatedly comes back as ``failed`` records (retried on the next run).
    """
    distributed = _import_distributed()
    if not tasks:
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
    futures: dict[Any, tuple[Any, Task]] = {}
    try:

        def slots() -> int:  # re-read as results arrive: clusters scale up and down
            return max(2, 2 * sum(client.nthreads().values()))

        queue = list(reversed(tasks))
        ready = distributed.as_completed()

        def submit() -> None:
            task = queue.pop()
            first = task.items[0][0].cell_id
            future = client.submit(
                _run_on_worker,
                task.payload(),
                data_dir,
                threads,
                key=f"poisonbench-task-{first}",  # a cell is in exactly one task
            )
            futures[future.key] = (future, task)
            ready.add(future)

        while queue and len(futures) < slots():
            submit()
        for future in ready:
            _, task = futures.pop(future.key)
            try:
                records = future.result()
            except Exception as exc:  # a worker died (KilledWorker) or the task broke
                records = lost_task(task, f"dask: {type(exc).__name__}: {exc}")
            future.release()
            limit = slots() if queue else 0
            while queue and len(futures) < limit:
                submit()
            yield records
    finally:
        with contextlib.suppress(Exception):
            client.cancel([future for future, _ in futures.values()], force=True)
        with contextlib.suppress(Exception):
            client.close(timeout=10)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=10)


def execute(
    tasks: list[Task],
    data_dir: str | None = None,
    executor: str = "local",
    jobs: int = 1,
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int = 1,
) -> Iterator[list[dict[str, Any]]]:
    """Yield the records of each of ``tasks`` from the chosen executor (:data:`EXECUTORS`)."""
    if executor == "local":
        if scheduler:
            raise ExecutorError("--scheduler needs --executor dask")
        return run_local(tasks, data_dir, jobs=jobs, threads=threads)
    if executor == "dask":
        if not scheduler:
            raise ExecutorError(
                "--executor dask needs --scheduler tcp://HOST:8786 "
                "(or use --executor dask-local to start a local cluster)"
            )
        _import_distributed()
        return run_dask(tasks, data_dir, scheduler=scheduler, threads=threads)
    if executor == "dask-local":
        if scheduler:
            raise ExecutorError("--scheduler needs --executor dask, not dask-local")
        _import_distributed()
        return run_dask(tasks, data_dir, workers=workers or jobs, threads=threads)
    raise ExecutorError(f"unknown executor {executor!r} (valid: {', '.join(EXECUTORS)})")
