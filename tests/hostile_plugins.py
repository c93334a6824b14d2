"""A defense that misbehaves on purpose, for test_hostile.py (issue 22, items 4 and 5).

Imported through a config's ``plugins: [hostile_plugins]`` by a ``poisonbench run`` in a
subprocess only (its tests put this folder on PYTHONPATH): a defense that hangs or exits must
never reach the contract tests of the test process's registry.

``hostile(action=...)`` leaves a clean training set alone (so the rate-0 cells go on) and, on a
poisoned one: ``sleep`` hangs for 1000 s, ``exit`` calls ``sys.exit(3)``, ``keyboard`` raises
``KeyboardInterrupt`` and ``base`` a ``BaseException`` subclass; ``rmtree`` removes the folder
named by ``$HOSTILE_TARGET`` (the run directory) and ``relock`` replaces its ``.lock`` file, as
a user's ``rm -rf`` (or a second run's cleanup) mid-run would, then the cell goes on;
``await_kill``: the first cell to get here (claiming ``$HOSTILE_TARGET.claim``) writes its
process's PID to ``$HOSTILE_TARGET`` and waits to be killed; every later cell goes on.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.core.types import DefenseContext, ParamError, StepResult, TrainingSet
from defenses.base import DEFENSES, Defense

ACTIONS = ("sleep", "exit", "keyboard", "base", "rmtree", "relock", "await_kill")


class Escape(BaseException):
    """Not an Exception: what a careless plug-in might raise to 'get out'."""


@DEFENSES.register("hostile")
@dataclass(frozen=True)
class Hostile(Defense):
    """Misbehaves (``action``: one of :data:`ACTIONS`) when the training set is poisoned."""

    action: str = "sleep"

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ParamError("action", f"{self.action!r} (valid: {', '.join(ACTIONS)})")

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        if train.mask.any():
            if self.action == "sleep":
                time.sleep(1000)
            if self.action == "exit":
                sys.exit(3)
            if self.action == "keyboard":
                raise KeyboardInterrupt
            target = Path(os.environ.get("HOSTILE_TARGET", "/nonexistent"))
            if self.action == "rmtree":
                shutil.rmtree(target, ignore_errors=True)
                return StepResult(train=train)
            if self.action == "await_kill":
                try:
                    fd = os.open(f"{target}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return StepResult(train=train)
                os.close(fd)
                Path(f"{target}.tmp").write_text(str(os.getpid()))
                os.replace(f"{target}.tmp", target)
                time.sleep(600)
            if self.action == "relock":
                (target / ".lock").unlink()
                (target / ".lock").write_text("")
                return StepResult(train=train)
            raise Escape("out of here")
        return StepResult(train=train)
