"""``poisonbench report``: (re)write a run directory's report.md and plots."""

from __future__ import annotations

import argparse
import signal
import sys

from bench.analysis.report import write_report
from bench.core.atomic import output_target
from bench.interfaces.stops import Stopped, exit_status, stop_handlers


def report(args: argparse.Namespace) -> int:
    """``poisonbench report``: 0 when report.md (or ``--out``) was written, 128 + the signal's
    number when one stopped it; ``--metric``/``--tolerance`` override the run's recovery
    settings (a metric the table does not measure: ParamError, exit 2); ``--plot-pairs N``
    draws the plots of at most N (dataset, model) pairs (0: all)."""
    try:
        with stop_handlers():  # a stop signal unwinds: a half-written plot's temporary goes
            limit = {} if args.plot_pairs is None else {"max_plot_pairs": args.plot_pairs}
            path = write_report(
                args.run_dir,
                metric=args.metric,
                tolerance=args.tolerance,
                out=args.out or None,
                **limit,
            )
    except Stopped as stop:
        print(
            f"\ninterrupted ({signal.Signals(stop.signum).name}): the report was not finished; "
            f"run `poisonbench report {args.run_dir}` again",
            file=sys.stderr,
        )
        return exit_status(stop.signum)
    # a report written to stdout (``--out /dev/stdout``) is not followed there by this line
    special = args.out and output_target(args.out)[1] != "file"
    print(f"report: {path}", file=sys.stderr if special else sys.stdout)
    return 0
