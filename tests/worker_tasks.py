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
