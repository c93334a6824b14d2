"""``poisonbench report``: (re)write a run directory's report.md and plots."""

from __future__ import annotations

import argparse
import signal
import sys

from bench.analysis.report import write_report
from bench.interfaces.stops import Stopped, exit_status, stop_handlers


def report(args: argparse.Namespace) -> int:
    """``poisonbench report``: 0 when report.md was written, 128 + the signal's number when one
    stopped it."""
    try:
        with stop_handlers():  # a stop signal unwinds: a half-written plot's temporary goes
            path = write_report(
                args.run_dir,
                metric=getattr(args, "metric", None),
                tolerance=getattr(args, "tolerance", None),
                out=getattr(args, "out", None) or None,
            )
    except Stopped as stop:
        print(
            f"\ninterrupted ({signal.Signals(stop.signum).name}): the report was not finished; "
            f"run `poisonbench report {args.run_dir}` again",
            file=sys.stderr,
        )
        return exit_status(stop.signum)
    print(f"report: {path}")
    return 0
