"""The Dask executor: the same tasks on a ``distributed`` cluster (an existing scheduler, or a
``LocalCluster`` started for the run). ``distributed`` is an optional extra, imported only
here and only when a dask executor runs.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.run.executors.common import (
    ExecutorError,
    limit_threads,
    lost_task,
    run_payload,
    task_limit,
)
from bench.run.grid import Task, TaskPayload

#: on a Dask worker: the key of each task running there -> when it started (time.monotonic),
#: read by :func:`_dask_running` for the time limit; bounded by the worker's threads
_dask_started: dict[str, float] = {}


def _run_on_worker(
    payload: TaskPayload, data_dir: str | None, threads: int
) -> list[dict[str, Any]]:
    """Run one task on a Dask worker, limiting the worker's threads on its first task."""
    limit_threads(threads)
    key = None
    with contextlib.suppress(Exception):  # (outside a worker, e.g. a test calling it directly)
        from distributed import get_worker

        key = str(get_worker().get_current_task())
    if key is not None:
        _dask_started[key] = time.monotonic()
    try:
        return run_payload(payload, data_dir)
    finally:
        if key is not None:
            _dask_started.pop(key, None)


def _dask_running() -> dict[str, float]:
    """On a Dask worker (``client.run``): seconds each of its poisonbench tasks has run."""
    now = time.monotonic()
    return {key: now - since for key, since in list(_dask_started.items())}


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ExecutorError(
            "the dask executors need dask.distributed, an optional extra: "
            "pip install 'poisonbench[dask]' (or pip install -e '.[dask]' in a checkout)"
        ) from None
    return distributed


def local_cluster(workers: int, local_directory: str | Path | None = None) -> Any:
    """A ``distributed.LocalCluster`` of ``workers`` processes, one thread each, bound to
    127.0.0.1 with no dashboard (the scheduler's HTTP endpoints on a free localhost port).

    ``local_directory``: where the workers keep their scratch space (Dask's default, None, is
    the system temp dir).
    """
    distributed = _import_distributed()
    scheduler_kwargs: dict[str, Any] = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}
    if local_directory is not None:
        local_directory = str(local_directory)
        scheduler_kwargs["local_directory"] = local_directory  # the scheduler has one too
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs=scheduler_kwargs,
        silence_logs=logging.ERROR,
        local_directory=local_directory,
    )


def run_dask(
    tasks: list[Task],
    data_dir: str | None = None,
    scheduler: str | None = None,
    workers: int = 2,
    threads: int = 1,
    scratch_dir: str | Path | None = None,
    timeout: float | None = None,
    seen_workers: list[int] | None = None,
    arrange: Callable[[deque[int]], None] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Yield each task's records as it finishes on a Dask cluster.

    ``timeout``: seconds per cell (None: no limit). A task past ``timeout`` × its cell count
    is cancelled, its worker restarted (through its nanny: a hung thread cannot be stopped any
    other way) and its cells ``failed`` (``timed out after N s``); the run goes on.
    ``seen_workers``: when given, the cluster's worker threads are appended to it, at the start
    and (if the count changed) at the end: what the run's efficiency divides by.
    ``arrange``: called with the queue of task indices still to submit, before each round of
    submissions; it may reorder them in place (:meth:`bench.run.schedule.TailOrder.arrange`).

    ``scheduler``: the address of a running scheduler (``tcp://host:8786``); the cluster may
    be local, Slurm/PBS (dask-jobqueue) or Kubernetes (dask-kubernetes). Without it, a
    ``LocalCluster`` of ``workers`` processes (one thread each, bound to 127.0.0.1, no
    dashboard) is started and shut down here, its scratch space in ``scratch_dir`` (removed
    afterwards; None: the system temp dir). Workers need poisonbench installed, and
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
        cluster = local_cluster(workers, scratch_dir)
        client = distributed.Client(cluster)
    futures: dict[Any, tuple[Any, Task]] = {}
    try:

        def slots() -> int:  # re-read as results arrive: clusters scale up and down
            return max(2, 2 * sum(client.nthreads().values()))

        if seen_workers is not None:
            seen_workers.append(_dask_threads(client))

        queue = deque(range(len(tasks)))
        ready = distributed.as_completed()

        def submit() -> None:
            task = tasks[queue.popleft()]
            future = client.submit(
                _run_on_worker,
                task.payload(),
                data_dir,
                threads,
                key=f"poisonbench-task-{task.items[0][0].cell_id}",  # a cell is in one task
            )
            futures[future.key] = (future, task)
            ready.add(future)

        if arrange is not None:
            arrange(queue)
        while queue and len(futures) < slots():
            submit()
        for future in _as_ready(ready, futures, None if timeout is None else 0.5):
            if future is None:  # a poll: stop the tasks past their limit
                for _key, task in _dask_overdue(client, futures, timeout):
                    yield lost_task(task, f"timed out after {task_limit(task, timeout):g} s")
            else:
                if future.key not in futures:
                    continue  # a task cancelled for its time limit (already yielded)
                _, task = futures.pop(future.key)
                try:
                    records = future.result()
                except Exception as exc:  # a worker died (KilledWorker) or the task broke
                    records = lost_task(task, f"dask: {type(exc).__name__}: {exc}")
                future.release()
                yield records
            limit = slots() if queue else 0
            if arrange is not None and queue:
                arrange(queue)
            while queue and len(futures) < limit:
                submit()
        if seen_workers is not None:
            end = _dask_threads(client)
            if end != seen_workers[-1]:
                seen_workers.append(end)
    finally:
        with contextlib.suppress(Exception):
            client.cancel([future for future, _ in futures.values()], force=True)
        with contextlib.suppress(Exception):
            client.close(timeout=10)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=10)
            if scratch_dir is not None:
                shutil.rmtree(scratch_dir, ignore_errors=True)


def _dask_threads(client: Any) -> int:
    """The worker threads the cluster has now (``nthreads`` summed over its workers)."""
    try:
        return int(sum(client.nthreads().values()))
    except Exception:  # the scheduler is gone: the run's own error says so
        return 0


def _as_ready(ready: Any, futures: dict[Any, Any], poll: float | None) -> Iterator[Any]:
    """The futures of ``ready`` (a ``distributed.as_completed``) as they finish; with
    ``poll`` seconds, also None every ``poll`` seconds while none finishes (to check limits)."""
    if poll is None:
        yield from ready
        return
    while futures:
        batch = ready.next_batch(block=False) if ready.has_ready() else []
        if batch:
            yield from batch
        else:
            time.sleep(poll)
            yield None


def _dask_overdue(
    client: Any, futures: dict[Any, tuple[Any, Task]], timeout: float
) -> list[tuple[str, Task]]:
    """Cancel the tasks running past their limit, restart their workers, and return them
    (removed from ``futures``)."""
    try:
        running = client.run(_dask_running)  # {worker address: {key: seconds}}
    except Exception:
        return []
    overdue, restart = [], set()
    for worker, keys in running.items():
        for key, seconds in keys.items():
            if key in futures and seconds >= task_limit(futures[key][1], timeout):
                future, task = futures.pop(key)
                with contextlib.suppress(Exception):
                    client.cancel([future], force=True)
                overdue.append((key, task))
                restart.add(worker)
    if restart:
        with contextlib.suppress(Exception):
            client.restart_workers(sorted(restart), raise_for_error=False)
    return overdue
