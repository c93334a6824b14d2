"""The local executor: tasks in worker processes on this machine (a loky pool that outlives
its workers), or in this process for ``jobs=1``.

A worker process that dies (kill -9, the OOM killer, a plug-in calling ``os._exit``) costs the
task it was running, its cells recorded as failed by
:func:`bench.run.executors.common.lost_task` (the next run retries them), never the run: see
:func:`run_tasks`.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import re
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from bench.data.datasets import load_dataset
from bench.run.executors.common import (
    ExecutorError,
    limit_threads,
    lost_task,
    run_payload,
    task_limit,
)
from bench.run.grid import Task
from bench.run.plugins import import_plugins
from bench.run.workers import prestart

P = TypeVar("P")
R = TypeVar("R")

#: pool breaks a task may live through on workers that did not die (it is rerun each time)
#: before it is given up as lost: a guard against a task that breaks the pool some other way
MAX_BREAKS = 3
#: pool breaks in a row before any task started: then the workers cannot start at all
MAX_BARREN_BREAKS = 3

_started: Any = None  # in a local worker: the queue on which it says which task it starts


def _exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """End this worker soon after the process that started the pool dies (e.g. kill -9):
    nothing else would, since the workers themselves hold the task queue's pipe open (and,
    when forked by the fork server, the pipe that tells the server its clients are gone).

    A worker forked by the fork server is not that process's child: it waits on the sentinel
    multiprocessing gives it (a pipe whose other end the pool's process holds). A worker that
    is its child (loky's start) watches for being orphaned."""
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) == "forkserver":
        watched = multiprocessing.parent_process()
        if watched is not None:
            watched.join()  # returns once that process is gone
            os._exit(1)
    while True:
        time.sleep(interval)
        if os.getppid() != parent:
            os._exit(1)


def _init_worker(threads: int, started: Any = None, environ: dict[str, str] | None = None) -> None:
    """Set up a local worker process: SIGINT ignored (Ctrl-C reaches the whole process group;
    only the parent handles it, by stopping the workers), exit when the parent dies, ``threads``
    BLAS threads, ``started``: the queue on which :func:`_call` reports each task, and
    ``environ``: the parent's environment when the pool started (a worker forked by the fork
    server would otherwise see the environment of the server's start)."""
    global _started
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    _keep_worker_on_growth()
    limit_threads(threads)
    _started = started
    gc.freeze()  # what the fork server imported: see _freeze_survivors
    # A crash is reported in one line (the cell's record says how the worker died); loky would
    # also dump every thread's stack to stderr. PYTHONFAULTHANDLER=1 brings the dump back.
    os.environ.setdefault("PYTHONFAULTHANDLER", "")


def _keep_worker_on_growth() -> None:
    """Turn off loky's memory-leak guard in this worker. Loky measures a worker's memory after
    its first task (here the warm-up) and stops the worker once it has grown by 300 MB: a
    worker's first ``import torch`` (~0.8 GB), a second dataset in the bounded dataset cache or
    the stage cache grow it that much by design. Loky then starts a replacement, which pays
    the imports again, and warns ``A worker stopped while some jobs were given to the
    executor`` on a healthy run. Our caches are bounded, so there is no leak to guard against;
    without psutil loky only runs ``gc.collect()`` once a second, which it still does."""
    with contextlib.suppress(ImportError):
        from joblib.externals.loky import process_executor

        process_executor._USE_PSUTIL = False


def _warm(
    datasets: Sequence[tuple[str, dict[str, Any]]],
    data_dir: str | None,
    plugins: Sequence[str] = (),
) -> None:
    """In a fresh worker: import the runner (scikit-learn, PyOD, the plug-ins, the config's
    ``plugins:`` modules) and load the datasets now, while the parent is still expanding the
    grid, not on the first task (importing this module imported the runner). Failures are
    left for the tasks to report."""
    if plugins:
        with contextlib.suppress(Exception):
            import_plugins(plugins)

    for name, params in datasets:
        with contextlib.suppress(Exception):  # a dataset that fails is the parent's to report
            load_dataset(name, data_dir, params)
    _freeze_survivors()


def start_pool(
    jobs: int,
    threads: int = 1,
    datasets: Sequence[tuple[str, dict[str, Any]]] = (),
    data_dir: str | None = None,
    plugins: Sequence[str] = (),
) -> _Pool:
    """A local worker pool started now, in the background, each worker importing the config's
    plug-ins and loading ``datasets`` (:func:`_warm`): hand it to :func:`execute` so that
    worker start-up overlaps the parent's grid expansion instead of following it.

    Returns at once: starting a worker waits for the fork server to finish its imports
    (:data:`bench.run.workers.PRELOAD`, ~2 s), which a helper thread does while the caller
    goes on (the first task submitted, or closing the pool, waits for it).
    """
    pool = _Pool(jobs, threads)

    def warm_up() -> None:
        for _ in range(jobs):
            with contextlib.suppress(Exception):  # a pool that cannot start says so when used
                pool.executor.submit(_warm, list(datasets), data_dir, list(plugins))

    pool.starting = threading.Thread(target=warm_up, name="poisonbench-pool-start", daemon=True)
    pool.starting.start()
    return pool


def _run_task(task: Task, data_dir: str | None) -> list[dict[str, Any]]:
    """The local executor's task: the records of one task's cells, computed in a worker."""
    return run_payload(task.payload(), data_dir)


def run_local(
    tasks: list[Task],
    data_dir: str | None = None,
    jobs: int = 1,
    threads: int = 1,
    pool: _Pool | None = None,
    timeout: float | None = None,
    arrange: Callable[[deque[int]], None] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Yield each task's records as it finishes, from ``jobs`` worker processes.

    ``jobs=1`` runs in this process (no start-up cost; a cell that kills its process ends the
    run). With more, see :func:`run_tasks`: a task whose worker process dies comes back as
    :func:`lost_task` records saying how the worker died, and the run goes on.

    ``timeout``: seconds per cell (None: no limit); a task past ``timeout`` × its cell count
    is ``failed`` (``timed out after N s``) and its worker replaced (:func:`run_tasks`). With a
    limit, ``jobs=1`` runs in one worker process too: only a process can be stopped.
    ``arrange``: see :func:`run_tasks` (one process runs the tasks in order).
    """
    if jobs <= 1 and timeout is None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads):
            for task in tasks:
                yield run_payload(task.payload(), data_dir)
        return
    yield from run_tasks(
        functools.partial(_run_task, data_dir=data_dir),
        tasks,
        lost=lost_task,
        jobs=jobs,
        threads=threads,
        pool=pool,
        limit=None if timeout is None else functools.partial(task_limit, timeout=timeout),
        arrange=arrange,
    )


def _call(fn: Callable[[Any], Any], index: int, payload: Any) -> Any:
    """In a worker: report that task ``index`` starts in this process (and when: the
    system-wide monotonic clock, for the time limit), then run it."""
    if _started is not None:
        _started.put((index, os.getpid(), time.monotonic()))
    try:
        return fn(payload)
    finally:
        _freeze_survivors()


def _freeze_survivors() -> None:
    """Collect a finished task's garbage, then move every object still alive (modules, the
    dataset cache) to the collector's permanent generation.

    Loky runs a full ``gc.collect()`` after each task that ends a second or more after its last
    one, i.e. after nearly every task here; with scikit-learn, SciPy and PyOD imported that
    walks ~170k objects, ~0.08 s per task on these cores, every worker idle meanwhile (~3 % of
    the CI gate's worker time). Frozen objects are not walked (nor ever collected: only what
    is alive once the task's cycles are collected is frozen), so this collection walks just
    what the task left behind, and loky's then walks next to nothing. Every
    :data:`THAW_EVERY` tasks the frozen objects are thawed first, so that a long-lived object
    that has since died in a cycle (an evicted cache entry) is collected after all.
    """
    global _frozen_tasks
    _frozen_tasks += 1
    if _frozen_tasks % THAW_EVERY == 0:
        gc.unfreeze()
    gc.collect()
    gc.freeze()


#: tasks between full collections of the frozen heap (:func:`_freeze_survivors`): one full walk
#: (~0.08 s) per this many tasks
THAW_EVERY = 50
_frozen_tasks = 0


def _alive(pid: int) -> bool:
    """Whether worker process ``pid`` is still running (a zombie is not)."""
    if hasattr(os, "waitid"):  # Linux; does not reap, so loky still can
        try:
            return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            pass  # not our child (the fork server's), or reaped already
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited but is not reaped yet (Linux's /proc; False elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])


def death_reason(error: BaseException) -> str:
    """Why tasks were lost, from the error of a broken pool: ``worker died: signal 9
    (SIGKILL)`` or ``worker died: exit code 3`` (loky's ``TerminatedWorkerError`` lists the
    exit codes of the workers it found dead), else ``worker pool broke: `` and the error's
    first line."""
    text = str(error)
    found = re.search(r"exit codes of the workers are \{([^}]*)\}", text)
    codes = sorted({int(c) for c in re.findall(r"\((-?\d+)\)", found.group(1))}) if found else []
    if not codes:  # broken some other way, e.g. a result that cannot be unpickled
        first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        return f"worker pool broke: {first}"
    parts = []
    for code in codes:
        if code < 0:
            try:
                parts.append(f"signal {-code} ({signal.Signals(-code).name})")
            except ValueError:
                parts.append(f"signal {-code}")
        else:
            parts.append(f"exit code {code}")
    return "worker died: " + " or ".join(parts)


class _Pool:
    """A loky process pool plus the channel on which its workers say which task they start.

    When a worker dies, loky marks the pool broken: it fails every pending future, running and
    queued alike, with the same error, and then kills the surviving workers. Loky does not say
    which task ran on the dead worker, so each worker reports ``(task, pid)`` as it starts a
    task, and the callback of the first failed future, which loky runs before it kills the
    survivors, notes which of those workers are already gone.
    """

    def __init__(self, jobs: int, threads: int) -> None:
        from joblib.externals.loky import ProcessPoolExecutor

        context = prestart()
        self._queue = context.SimpleQueue()  # a new one per pool: a killed writer may hold its lock
        self.executor = ProcessPoolExecutor(
            max_workers=jobs,
            context=context,
            initializer=_init_worker,
            initargs=(threads, self._queue, dict(os.environ)),
        )
        self.futures: dict[Future, int] = {}  # pending future -> task index
        self.started: dict[int, int] = {}  # task index -> pid of the worker that started it
        self.since: dict[int, float] = {}  # task index -> when it started (time.monotonic)
        self.dead: set[int] = set()  # worker pids found dead when the pool broke
        self.error: BaseException | None = None  # what broke the pool
        self._noted = threading.Event()
        self._lock = threading.Lock()
        #: the thread that starts the workers (:func:`start_pool`), until it is done
        self.starting: threading.Thread | None = None

    def started_up(self) -> None:
        """Wait until the workers started by :func:`start_pool` are up (or failed to start)."""
        if self.starting is not None:
            self.starting.join()
            self.starting = None

    def submit(self, fn: Callable[[Any], Any], index: int, payload: Any) -> None:
        self.started_up()  # the warm-ups first in the queue, one thread submitting at a time
        future = self.executor.submit(_call, fn, index, payload)
        self.futures[future] = index
        future.add_done_callback(self._on_done)

    def drain(self) -> None:
        """Read the workers' start reports (also so that their pipe never fills up)."""
        with self._lock:
            while not self._queue.empty():
                index, pid, since = self._queue.get()
                self.started[index] = pid
                self.since[index] = since

    def _on_done(self, future: Future) -> None:
        # Runs in loky's manager thread; for a broken pool, before it kills the survivors.
        if self._noted.is_set() or not self.broken(future):
            return
        self.error = future.exception()
        self.drain()
        self.dead = {pid for pid in set(self.started.values()) if not _alive(pid)}
        self._noted.set()

    @staticmethod
    def broken(future: Future) -> bool:
        """Whether a finished future failed because its pool broke."""
        return not future.cancelled() and isinstance(future.exception(), BrokenProcessPool)

    def settle(self) -> None:
        """Wait until a broken pool has failed every pending future and the dead are noted."""
        if self.futures:  # (a pool that broke with nothing pending runs no callback)
            wait(list(self.futures))
            self._noted.wait(timeout=30)
        self.drain()

    def close(self, kill: bool) -> None:
        """Shut the pool down; ``kill``: kill running workers now instead of waiting for them.

        Loky's shutdown with ``kill_workers`` drops its pending work items while ids of items
        not yet handed to a worker are still queued, and its manager thread then dies with a
        ``KeyError`` on one of them: harmless (the pool is going away), but the thread's
        traceback would be printed on stderr. It is silenced here, for the time of the
        shutdown only (``wait=True`` joins that thread)."""
        previous = threading.excepthook

        def quiet(args: Any) -> None:
            if not (
                args.exc_type is KeyError and "ExecutorManager" in getattr(args.thread, "name", "")
            ):
                previous(args)

        self.started_up()
        if kill:
            threading.excepthook = quiet
        try:
            with contextlib.suppress(Exception):
                self.executor.shutdown(wait=True, kill_workers=kill)
        finally:
            threading.excepthook = previous


def run_tasks(
    fn: Callable[[P], R],
    payloads: Sequence[P],
    lost: Callable[[P, str], R],
    jobs: int = 2,
    threads: int = 1,
    pool: _Pool | None = None,
    limit: Callable[[P], float | None] | None = None,
    arrange: Callable[[deque[int]], None] | None = None,
) -> Iterator[R]:
    """Yield ``fn(payload)`` for every payload, in the order they finish, from ``jobs`` worker
    processes; for a task whose worker process died under it, yield ``lost(payload, reason)``.

    ``limit``: a payload's time limit in seconds (None: no limit). A task still running that
    long after it started has its worker killed (SIGKILL: a hung plug-in may never return to
    the interpreter) and yields ``lost(payload, "timed out after N s")``; the pool is replaced
    and the tasks of the other workers are rerun (such a break is not counted against them).

    ``arrange``: called with the queue of payload indices still to hand out, before each
    hand-out; it may reorder them in place (e.g. :meth:`bench.run.schedule.TailOrder.arrange`).

    ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one); an
    exception it raises propagates. Workers are forked by the fork server (see
    :func:`bench.run.workers.worker_context`: never a fork of a process that holds BLAS or torch threads),
    limited to ``threads`` BLAS threads; they ignore SIGINT (the parent handles Ctrl-C) and
    exit when the parent dies. ``pool``: one :func:`start_pool` started earlier (closed here
    when done). At most ``2 × jobs`` tasks are in flight. When the caller stops early
    (Ctrl-C, ``close()``), running workers are killed at once, not waited for.

    When a worker dies (kill -9, the OOM killer, ``os._exit``), loky stops the whole pool. The
    task that was running on the dead worker yields ``lost(payload, "worker died: signal 9
    (SIGKILL)")``; the tasks running on the other workers and those still queued are submitted
    again, first in line, to a new pool, and the run goes on. A task caught in
    :data:`MAX_BREAKS` broken pools without its own worker dying is given up as lost too.
    """
    if not payloads:
        if pool is not None:
            pool.close(kill=True)
        return
    todo = deque(range(len(payloads)))
    breaks: Counter[int] = Counter()
    barren = 0  # pool breaks in a row before any task started
    pool = pool if pool is not None else _Pool(jobs, threads)
    timed_out: dict[int, float] = {}  # task index -> the limit it ran past (its worker killed)
    finished = False
    try:
        while todo or pool.futures:
            broken = False
            if arrange is not None:
                arrange(todo)
            try:
                while todo and len(pool.futures) < 2 * jobs:
                    pool.submit(fn, todo[0], payloads[todo[0]])
                    todo.popleft()
            except BrokenProcessPool:
                broken = True  # it broke while no task was pending (a worker died idle)
            if not broken:
                done, _ = wait(
                    list(pool.futures),
                    return_when=FIRST_COMPLETED,
                    timeout=None if limit is None else 0.5,
                )
                pool.drain()
                if limit is not None:
                    _kill_overdue(pool, payloads, limit, timed_out)
                for future in done:
                    if pool.broken(future):
                        broken = True
                        continue
                    timed_out.pop(pool.futures.pop(future), None)  # (done as it was killed)
                    barren = 0
                    yield future.result()  # raises what fn raised
                if not broken:
                    continue
            pool.settle()
            reason = death_reason(pool.error) if pool.error is not None else "worker died"
            retry: list[int] = []
            ours = bool(timed_out)  # the break is our kill of a hung task, not the others'
            for future, index in list(pool.futures.items()):
                del pool.futures[future]
                if not pool.broken(future):  # it finished before the break
                    timed_out.pop(index, None)
                    yield future.result()
                elif index in timed_out:
                    yield lost(payloads[index], f"timed out after {timed_out.pop(index):g} s")
                elif index not in pool.started:
                    retry.append(index)  # still queued: never ran
                elif pool.started[index] in pool.dead:
                    yield lost(payloads[index], reason)  # its worker died under it
                else:
                    breaks[index] += 0 if ours else 1  # alive: loky killed it afterwards
                    if breaks[index] < MAX_BREAKS:
                        retry.append(index)
                    else:
                        why = f"lost in {MAX_BREAKS} pool breaks (the last: {reason})"
                        yield lost(payloads[index], why)
            barren = 0 if pool.started else barren + 1
            if barren >= MAX_BARREN_BREAKS:
                raise ExecutorError(
                    f"the worker processes died {barren} times before running any task ({reason})"
                )
            pool.close(kill=True)
            pool = _Pool(jobs, threads)
            todo.extendleft(reversed(retry))
        finished = True
    finally:
        pool.close(kill=not finished)


def _kill_overdue(
    pool: _Pool,
    payloads: Sequence[P],
    limit: Callable[[P], float | None],
    timed_out: dict[int, float],
) -> None:
    """Kill the worker of every running task of ``pool`` past its time limit; note the task
    and its limit in ``timed_out`` (the kill breaks the pool: :func:`run_tasks` goes on)."""
    now = time.monotonic()
    for index in set(pool.futures.values()):
        seconds = limit(payloads[index])
        since = pool.since.get(index)
        if seconds is None or since is None or index in timed_out or now - since < seconds:
            continue
        timed_out[index] = seconds
        with contextlib.suppress(OSError):
            os.kill(pool.started[index], signal.SIGKILL)
