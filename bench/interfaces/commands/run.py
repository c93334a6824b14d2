"""``poisonbench run``: a config's grid, with the resume hint when a stop signal ends it."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import typing
from pathlib import Path

from bench.interfaces.stops import exit_status, stop_handlers
from bench.interfaces.tracking import MlflowTracker
from bench.run.config import load_config
from bench.run.orchestrate import RunInterrupted
from bench.run.session import prepare, run_directory, run_session
from bench.run.workers import prestart


def run(args: argparse.Namespace) -> int:
    """``poisonbench run``: 0 when the grid ran, 128 + the signal's number when one stopped it."""
    if args.executor == "local" and args.jobs > 1:
        prestart()  # a no-op when the CLI started the fork server first (cli.main)
    with stop_handlers():
        return run_grid(args)[0]


def run_grid(args: argparse.Namespace) -> tuple[int, Path]:
    """Run ``args.config`` as ``poisonbench run`` does, printing its summary (or the resume
    hint); returns the exit status (0, or 128 + the number of the signal that stopped it) and
    the run directory. Call it inside :func:`bench.interfaces.stops.stop_handlers`."""
    config = prepare(
        load_config(args.config),
        args.data_dir,
        args.precision,
        args.max_seeds,
        args.timeout,
    )
    out = run_directory(args.out, config)
    tracker = _mlflow_tracker(args, config, out)  # None without --mlflow
    try:
        session = run_session(
            config,
            out,
            report=not args.no_report,
            on_warning=lambda problem: print(f"warning: {problem}", file=sys.stderr),
            jobs=args.jobs,
            fresh=args.fresh,
            progress=not args.quiet,
            executor=args.executor,
            scheduler=args.scheduler,
            workers=args.workers,
            on_record=tracker.submit if tracker else None,
        )
    except BaseException as exc:
        if tracker is not None:
            tracker.abort("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        if not isinstance(exc, RunInterrupted):
            raise
        stop = exc
        done = stop.summary.n_cached + stop.summary.n_run
        again = shlex.join(["poisonbench", *(a for a in args.argv if a != "--fresh")])
        what = (
            "to resume, run"
            if getattr(args, "command", "run") == "run"
            else "to run it again (afresh), run"
        )
        print(
            f"\ninterrupted ({signal.Signals(stop.signum).name}): {done} of "
            f"{stop.summary.n_cells} cells done (saved in {out / 'cells'}); {what}:\n"
            f"  {again}",
            file=sys.stderr,
        )
        return exit_status(stop.signum), out
    summary, report = session.summary, session.report
    if tracker is not None:
        tracker.finish()  # logs cached cells, the report and the table on the parent run
        print(f"mlflow: {tracker.tracking_uri} (experiment {tracker.experiment_name!r})")
    print(
        f"{config.name}: {summary.n_cells} cells ({summary.n_run} run, {summary.n_cached} cached, "
        f"{summary.n_failed} failed); {summary.fits_run} of {summary.n_fits} fits computed, "
        f"{summary.fits_cached} cached; {summary.wall_seconds:.1f} s wall"
        + (
            f", {summary.compute_seconds:.1f} s compute on {summary.workers} worker(s), "
            f"efficiency {summary.efficiency:.2f}"
            if summary.fits_run
            else ""
        )
    )
    print(f"table:  {out / 'results.parquet'}")
    if report is not None:
        print(f"report: {report}")
    reasons = summary.failure_reasons()
    for reason, count in reasons[:10]:
        print(f"failed: {count} cell(s): {reason}", file=sys.stderr)
    if len(reasons) > 10:
        print(f"failed: ... and {len(reasons) - 10} other reasons (see report.md)", file=sys.stderr)
    return 0, out


def _mlflow_tracker(args: argparse.Namespace, config: typing.Any, out: Path) -> typing.Any:
    """The MLflow tracker asked for by ``--mlflow`` (started), or None."""
    if args.mlflow is None:
        return None
    tracker = MlflowTracker(
        out, args.mlflow or None, log_models=args.mlflow_log_models, data_dir=config.data_dir
    )
    tracker.start(config)
    return tracker
