"""Issue 22, item 8: quiet, fast plumbing.

- A healthy ``--jobs N`` pool keeps its workers: loky's memory-leak guard used to stop a worker
  whose memory grew 300 MB after its first task (a first ``import torch``, the bounded dataset
  and stage caches) and warn ``A worker stopped while some jobs were given to the executor``.
- Workers start with scikit-learn and PyOD imported (by the fork server, once), the pool starts
  while the parent expands the grid, and a worker's collector walks only what a task left
  behind: the whole ``make gate`` process at efficiency >= 0.9 (tests/benchmarks).
"""

from __future__ import annotations

import warnings

import pytest

from bench.run.executors.local import run_tasks


def test_a_worker_whose_memory_grows_is_kept_and_nothing_is_warned(capfd):
    from worker_tasks import hold_memory

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pids = list(run_tasks(hold_memory, [320] * 6, lost=lambda p, why: why, jobs=2))
    assert all(isinstance(pid, int) for pid in pids), pids
    assert len(set(pids)) == 2, f"workers were replaced: {pids}"
    stopped = [w for w in caught if "A worker stopped" in str(w.message)]
    assert not stopped
    assert "A worker stopped" not in capfd.readouterr().err


# --- start-up: `poisonbench list` and `report` import only what they use -----------------------

TINY = {
    "name": "plumbing",
    "datasets": [{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.2],
    "defenses": ["none", "random_filter"],
    "seeds": 2,
    "recovery": {"fractions": [0, 0.2], "bootstrap": 0},
}

PROBE = """
import contextlib, io, sys
from bench.interfaces.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
heavy = ("sklearn", "scipy.stats", "torch", "pyod", "matplotlib")
print(code, *[m for m in heavy if m in sys.modules])
"""


def _probe(*args: str) -> list[str]:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_list_and_report_import_only_what_they_use(tmp_path):
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    assert _probe("list") == ["0"]  # no scikit-learn, scipy.stats, torch, PyOD or matplotlib
    assert _probe("run", str(config), "--out", str(out), "--quiet", "--no-report")[0] == "0"
    # the report's paired t-intervals need scipy.special only; matplotlib draws its plots
    assert _probe("report", str(out)) == ["0", "matplotlib"]


# --- worker start-up and the collector: the whole `make gate` at efficiency >= 0.9 ------------


@pytest.mark.skipif(
    "forkserver" not in __import__("multiprocessing").get_all_start_methods(),
    reason="no fork server on this platform (workers are loky's fresh interpreters)",
)
def test_workers_start_with_the_libraries_the_built_in_plugins_import():
    """The fork server imports scikit-learn and PyOD once (bench.run.workers.PRELOAD), not each
    worker on its first task, while the parent expands the grid."""
    from worker_tasks import worker_step

    from bench.run.workers import PRELOAD

    (found,) = run_tasks(worker_step, ["modules"], lost=lambda p, why: why, jobs=2)
    assert found == list(PRELOAD)
    assert "sklearn.linear_model" in found and "pyod.models.base" in found


def test_a_worker_collects_each_tasks_garbage_and_freezes_what_lives_on():
    """After every task a worker collects what the task left (a reference cycle is freed, not
    frozen for good) and freezes the rest, so loky's collection after each task no longer walks
    the whole heap of scikit-learn, SciPy and PyOD (~0.08 s a task)."""
    from worker_tasks import worker_step

    steps = ["cycle", "collected", "heap"]  # one worker: in this order, in one process
    results = list(run_tasks(worker_step, steps, lost=lambda p, why: why, jobs=1))
    out = dict(zip(steps, results, strict=True))
    assert out["collected"] is True
    frozen, tracked = out["heap"]
    assert frozen > 10_000  # the runner's imports at least
    assert tracked < frozen / 10


def test_a_frozen_object_that_dies_in_a_cycle_is_collected_at_the_next_thaw():
    """Freezing after every task must not leak: a long-lived object (frozen) that later dies in
    a reference cycle is collected within THAW_EVERY tasks."""
    from worker_tasks import worker_step

    from bench.run.executors.local import THAW_EVERY

    steps = ["keep", "noop", "drop", *["noop"] * THAW_EVERY, "collected"]
    results = list(run_tasks(worker_step, steps, lost=lambda p, why: why, jobs=1))
    assert results[-1] is True


def test_a_pool_closed_while_its_workers_start_leaves_no_thread_behind():
    """start_pool returns while a helper thread starts the workers (the fork server may still
    be importing); closing the pool at once (an invalid config, Ctrl-C) waits for it."""
    import threading

    from bench.run.executors.local import start_pool

    pool = start_pool(2)
    pool.close(kill=True)
    assert pool.starting is None
    assert not [t for t in threading.enumerate() if t.name == "poisonbench-pool-start"]
