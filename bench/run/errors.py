"""The execution layer's error for an invalid config, below both the config parser and the
plug-in loading that reports through it."""

from __future__ import annotations

from bench.core.types import ParamError


class ConfigError(ParamError):
    """The config is not valid; ``field`` is the path of the offending entry."""
