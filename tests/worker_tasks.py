"""Tasks for the worker-pool tests of test_plumbing.py (picklable: module level)."""

from __future__ import annotations

import os
import time

import numpy as np

_held: list[np.ndarray] = []  # per worker process: what hold_memory keeps, as a cache would


def hold_memory(mb: int) -> int:
    """From this process's second call on, keep ``mb`` MiB more (written, so resident), as a
    worker's bounded caches or a first ``import torch`` do; wait 1.2 s (loky's leak check
    runs at most once a second); return this process's PID."""
    if getattr(hold_memory, "calls", 0) >= 1 and not _held:
        _held.append(np.ones(mb << 20, dtype=np.uint8))
    hold_memory.calls = getattr(hold_memory, "calls", 0) + 1
    time.sleep(1.2)
    return os.getpid()


class _Node:
    """An object that can sit in a reference cycle and be weakly referenced."""


_kept: list = []
_cycles: list = []  # per worker process: weak references to the cycles `worker_step` left


def worker_step(step: str) -> object:
    """One step of the worker-heap test, run in a worker (see test_plumbing.py):

    - ``"modules"``: the fork server's preload modules already imported in this process;
    - ``"cycle"``: leave a reference cycle behind, unreachable once this task returns;
    - ``"collected"``: whether the cycles left by earlier tasks were collected;
    - ``"heap"``: (objects frozen, objects the collector still tracks).
    """
    import gc
    import sys
    import weakref

    if step == "modules":
        from bench.run.workers import PRELOAD

        return [m for m in PRELOAD if m in sys.modules]
    if step == "cycle":
        node = _Node()
        node.me = node
        _cycles.append(weakref.ref(node))
        return True
    if step == "keep":  # a long-lived object in a cycle: frozen after this task
        node = _Node()
        node.me = node
        _kept.append(node)
        _cycles.append(weakref.ref(node))
        return True
    if step == "drop":  # it dies, frozen: only a thaw lets the collector see it
        _kept.clear()
        return True
    if step == "noop":
        return True
    if step == "collected":
        return bool(_cycles) and all(ref() is None for ref in _cycles)
    return gc.get_freeze_count(), len(gc.get_objects())
