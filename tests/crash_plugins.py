"""Tasks and defenses that end their worker process, for the worker-death tests in
test_reliability.py.

Run as a script, this is the ``poisonbench`` command line with two more defenses registered::

    python tests/crash_plugins.py run CONFIG --jobs 2

Worker processes run the main script again (as ``__mp_main__``, as multiprocessing's spawn
does), so they register the same defenses: the way a user's own script that registers
plug-ins and then calls ``bench.interfaces.cli.main`` works too. Imported as a module (by a test), it
registers nothing: a defense that ends its process must never reach the contract tests.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.core.types import DefenseContext, ParamError, StepResult, TrainingSet, check_range

#: environment variable naming the file through which ``wait_to_be_killed`` gives its PID
MARKER_ENV = "POISONBENCH_TEST_MARKER"


def square_or_exit(x: int) -> int:
    """``x²``; for a negative ``x``, end this process at once with exit code ``-x``, except
    ``-11``: a segmentation fault (SIGSEGV), as a crashing C extension would."""
    if x == -11:
        os.kill(os.getpid(), signal.SIGSEGV)
    if x < 0:
        os._exit(-x)
    time.sleep(0.05)
    return x * x


def _refuse() -> None:
    raise RuntimeError("this result cannot be unpickled")


class Unpicklable:
    """A value that pickles but cannot be unpickled: it breaks a pool without killing a worker."""

    def __reduce__(self) -> tuple:
        return (_refuse, ())


def unpicklable_result(x: int) -> Unpicklable:
    """A result the parent cannot unpickle."""
    return Unpicklable()


def raise_param_error(x: int) -> int:
    """Raise a ParamError naming ``x[X]`` (a task error that must reach the caller as itself)."""
    raise ParamError(f"x[{x}]", "is bad")


def worker_facts(name: str) -> tuple[str | None, bool, int]:
    """In a worker: the environment variable ``name``, whether the runner was imported before
    this task (by the fork server), and the worker's parent process."""
    return os.environ.get(name), "bench.run.runner" in sys.modules, os.getppid()


def register() -> None:
    """Register the defenses ``exit_process`` and ``wait_to_be_killed``."""
    from defenses.base import DEFENSES, Defense

    @DEFENSES.register("exit_process")
    @dataclass(frozen=True)
    class ExitProcess(Defense):
        """Ends its process at once with ``os._exit(code)``, as a crashing extension would,
        when the training set holds poisoned rows (a clean cell goes on undefended)."""

        code: int = 3

        def __post_init__(self) -> None:
            check_range(self.code, "code", 1, 255)

        def apply(
            self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
        ) -> StepResult:
            if train.mask.any():
                os._exit(self.code)
            return StepResult(train=train)

    @DEFENSES.register("wait_to_be_killed")
    @dataclass(frozen=True)
    class WaitToBeKilled(Defense):
        """The first cell to get here writes its process's PID to the file named by
        ``$POISONBENCH_TEST_MARKER`` and waits to be killed; every other cell, then and in
        later runs, goes on undefended."""

        def apply(
            self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
        ) -> StepResult:
            marker = Path(os.environ[MARKER_ENV])
            try:
                fd = os.open(marker.with_suffix(".claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return StepResult(train=train)
            os.close(fd)
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(str(os.getpid()))
            tmp.replace(marker)
            time.sleep(600)
            raise RuntimeError("wait_to_be_killed was not killed within 600 s")


if __name__ in ("__main__", "__mp_main__"):
    register()

if __name__ == "__main__":
    from bench.interfaces.cli import main

    sys.exit(main())
