"""The analysis layer's errors."""

from __future__ import annotations

from bench.core.types import PoisonBenchError


class CompareError(PoisonBenchError):
    """The inputs cannot be compared (missing file, unreadable table, no common cells...)."""
