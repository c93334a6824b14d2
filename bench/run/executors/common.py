"""What every executor shares: the error, the executors' names, the thread limit of a worker
process, and how a task becomes records (run, or lost).
"""

from __future__ import annotations

import os
from typing import Any

from bench.core.types import PoisonBenchError
from bench.run.grid import Task, TaskPayload
from bench.run.runner import failed_record, run_task
from bench.run.workers import THREAD_VARS

#: the executors ``poisonbench run --executor`` accepts
EXECUTORS = ("local", "dask", "dask-local")
#: where ``dask-local`` workers keep their scratch space (spilled data, locks), inside the run
#: directory; removed when the run ends
DASK_SCRATCH = "dask-scratch"

_limited_to: int | None = None  # per process: the thread limit already applied


class ExecutorError(PoisonBenchError):
    """An executor cannot start: a missing optional dependency or an unreachable scheduler."""


def limit_threads(n: int = 1) -> None:
    """Limit BLAS/OpenMP (threadpoolctl) and torch, if loaded later, to ``n`` threads (once
    per process: nothing to do when the limit is already ``n``)."""
    global _limited_to
    if _limited_to == n:
        return
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    os.environ["POISONBENCH_THREADS"] = str(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    _limited_to = n


def run_payload(payload: TaskPayload, data_dir: str | None) -> list[dict[str, Any]]:
    """The records of a task's cells, from its :meth:`bench.run.grid.Task.payload` (what a
    worker receives), computed in this process."""
    return run_task(payload, data_dir)


def lost_task(task: Task, error: str) -> list[dict[str, Any]]:
    """The records of a task that could not run: every cell ``failed`` with ``error`` for the
    fractions it was to compute (retried on the next run).

    The one place that turns a lost task into records: the local executor calls it with the
    task it sent and why it was lost (``worker died: signal 9 (SIGKILL)``), the Dask executor
    with the cluster's error.
    """
    return [failed_record(cell, fractions, error) for cell, fractions in task.items]


def task_limit(task: Task, timeout: float) -> float:
    """A task's time limit, seconds: ``timeout`` per cell, for each of its cells (they run one
    after another in one worker)."""
    return timeout * len(task.items)
