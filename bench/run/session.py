"""One run entry for the command line and the Python API: what ``poisonbench run`` and
``poisonbench.run`` both do, with their differences reduced to presentation (the CLI prints,
the API warns and returns a ``Run``).

:func:`run_session` applies the run options to the config (data root, precision request),
chooses the run directory, runs the grid (:func:`bench.run.orchestrate.run_config`), reports
each problem and each distinct failure reason once through ``on_warning``, and writes the report.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.analysis.report import write_report
from bench.run.config import Config, parse_timeout, with_precision
from bench.run.orchestrate import RunOptions, RunSummary, run_config

#: where a run goes when no directory is given: ``results/runs/<config name>``
DEFAULT_RESULTS = Path("results") / "runs"


def run_directory(out: str | os.PathLike | None, config: Config) -> Path:
    """The run directory: ``out``, or the default for the config's name when ``out`` is None or
    empty (``--out ''`` and ``out=""`` both mean the default, never the current directory)."""
    if out is None or not os.fspath(out):
        return DEFAULT_RESULTS / config.name
    return Path(out)


def once(report: Callable[[str], None]) -> Callable[[str], None]:
    """``report`` called at most once per distinct message (problems repeat across records)."""
    seen: set[str] = set()

    def say(message: str) -> None:
        if message not in seen:
            seen.add(message)
            report(message)

    return say


@dataclasses.dataclass
class SessionResult:
    """What a run session did: the run's summary, its directory and its report (or None)."""

    summary: RunSummary
    out: Path
    report: Path | None


def prepare(
    config: Config,
    data_dir: str | os.PathLike | None = None,
    precision: float | None = None,
    max_seeds: int | None = None,
    timeout: float | None = None,
) -> Config:
    """``config`` with the run's options applied: the data root, a precision request and a
    per-cell time limit (which wins over the config's ``timeout:``; 0 turns it off)."""
    config = with_precision(config, precision, max_seeds)
    if data_dir:
        config = dataclasses.replace(config, data_dir=os.fspath(data_dir))
    if timeout is not None:  # the option wins over the config's timeout: (0: no limit)
        config = dataclasses.replace(config, timeout=parse_timeout(timeout, "--timeout"))
    return config


def run_session(
    config: Config,
    out: str | os.PathLike | None = None,
    *,
    report: bool = True,
    on_warning: Callable[[str], None] | None = None,
    failure_text: Callable[[str, int], str] | None = None,
    **options: Any,
) -> SessionResult:
    """Run ``config`` (already through :func:`prepare`) into its run directory, then write
    the report.

    options: :class:`RunOptions` fields (jobs, fresh, progress, executor, scheduler, workers,
    on_record, ...). on_warning: called once per distinct problem found in stored records; with
    ``failure_text``, also once per distinct failure reason (``failure_text(reason, count)``
    says it). Raises what :func:`run_config` raises (``RunInterrupted`` on a stop signal).
    """
    warn = once(on_warning) if on_warning is not None else None
    directory = run_directory(out, config)
    summary = run_config(config, directory, RunOptions(on_warning=warn, **options))
    if warn is not None:
        for problem in summary.problems:
            warn(problem)
        if failure_text is not None:
            for reason, count in summary.failure_reasons():
                warn(failure_text(reason, count))
    written = write_report(directory) if report else None
    return SessionResult(summary=summary, out=directory, report=written)
