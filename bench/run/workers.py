"""How many worker processes a run starts (never more than it has tasks for), and how they
start (:func:`worker_context`, :func:`prestart`: light, so the CLI can call it first thing).

``--jobs 100`` on a grid of 2 tasks once started 100 processes (~40 MB each before any import,
~0.2-0.8 GB after), and ``pb.run(jobs=10**9)`` had no bound at all. Workers beyond the task
count have nothing to do, so the count is capped there; above the machine's cores it is kept
(the user asked) with a warning, since BLAS-bound fits only slow each other down there.
"""

from __future__ import annotations

import contextlib
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


THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


#: what the fork server imports once, so that every worker forked from it starts with them
#: imported: the runner, and the scikit-learn and PyOD modules that the built-in datasets,
#: models and filters import lazily (so that ``poisonbench list`` needs none of them). Each
#: worker imported these itself on its first task (~1.1 s on these cores, the two workers
#: at once); the server does it once, while the parent process does its own imports. Never
#: torch: a worker that needs it imports it (~0.8 GB), one that does not stays light. Last,
#: the local executor (each worker runs its initializer) and :mod:`bench.run.executors.preloaded`,
#: which freezes the server's heap for the collector.
PRELOAD = (
    "bench.run.runner",
    "sklearn.datasets",
    "sklearn.linear_model",
    "sklearn.pipeline",
    "sklearn.ensemble",
    "pyod.models.base",
    "bench.run.executors.local",
    "bench.run.executors.preloaded",
)


def worker_context() -> Any:
    """How local workers start: forked from multiprocessing's fork server where the platform
    has one (Linux, macOS), else loky's fresh interpreters (Windows).

    The fork server is a fresh interpreter, started once per process (:func:`prestart`), that
    imports :data:`PRELOAD` and then forks a worker on each request: a worker starts in
    milliseconds instead of the ~2 s of its imports, and no worker is forked from a process
    that runs anything but that server. Either way a worker then imports the main script the
    way multiprocessing's ``spawn`` does, so plug-ins that a user's script registers exist in
    the workers too.
    """
    import multiprocessing

    from joblib.externals.loky.backend.context import get_context

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return get_context("loky_init_main")
    context = get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    return context


def prestart() -> Any:
    """Start the fork server now (if the platform has one; a no-op when it runs), so that its
    imports overlap the caller's own: the CLI calls it first thing for ``--jobs N``. Returns
    :func:`worker_context`.

    The server starts with one BLAS/OpenMP thread (:data:`THREAD_VARS`, set in this process's
    environment only while it starts), so that it holds no BLAS threads when it forks. It is
    started through the standard library before loky's context is imported (joblib, with
    numpy: ~0.1 s the server's start would otherwise wait for); both share the one server."""
    import multiprocessing
    from multiprocessing import forkserver

    if "forkserver" in multiprocessing.get_all_start_methods():
        saved = {var: os.environ.get(var) for var in THREAD_VARS}
        os.environ.update(dict.fromkeys(THREAD_VARS, "1"))
        try:
            forkserver.set_forkserver_preload(list(PRELOAD))
            with contextlib.suppress(Exception):  # a server that cannot start says so when used
                forkserver.ensure_running()
        finally:
            for var, value in saved.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value
    return worker_context()
