"""How many worker processes a run starts: never more than it has tasks for.

``--jobs 100`` on a grid of 2 tasks once started 100 processes (~40 MB each before any import,
~0.2-0.8 GB after), and ``pb.run(jobs=10**9)`` had no bound at all. Workers beyond the task
count have nothing to do, so the count is capped there; above the machine's cores it is kept
(the user asked) with a warning, since BLAS-bound fits only slow each other down there.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any


def cpu_count() -> int:
    """The cores this process may use (its CPU affinity where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cap_workers(options: Any, n_tasks: int, warn: Callable[[str], None] | None = None) -> Any:
    """``options`` (a ``RunOptions``) with ``jobs`` and ``workers`` at most ``n_tasks`` (but
    not below 2 where more were asked).

    Parameters
    ----------
    options : RunOptions
        The run's options as asked for.
    n_tasks : int
        Tasks the run will execute (>= 0).
    warn : callable, optional
        Called with one line when the worker count (after the cap) is above the core count.
    """
    # at least 2 where more than 1 was asked: jobs=1 runs in this process, and a run asked
    # for workers keeps their isolation (a cell that kills its process fails alone)
    limit = max(2, n_tasks)
    jobs = min(options.jobs, limit)
    workers = None if options.workers is None else min(options.workers, limit)
    capped = dataclasses.replace(options, jobs=jobs, workers=workers)
    cores = cpu_count()
    if warn is not None and capped.n_workers > cores and n_tasks > 1:
        warn(
            f"{capped.n_workers} worker processes on {cores} cores: each fit runs slower when "
            f"they share cores; --jobs {cores} is usually faster"
        )
    return capped
