"""The root of the project's errors, in a module that imports nothing: the CLI imports it
before anything else (so that its first step, starting the worker processes' fork server, waits
for no import), and :mod:`bench.core.types` re-exports it for the plug-ins."""

from __future__ import annotations


class PoisonBenchError(Exception):
    """Base class of every error the project raises on purpose (bad input, not bugs)."""
