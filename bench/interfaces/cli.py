"""The ``poisonbench`` command line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import signal
import sys
import threading
import typing
from collections.abc import Iterator
from pathlib import Path

from bench.core.types import STOP_SIGNALS, PoisonBenchError, init_fields


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM or SIGHUP: ``STOP_SIGNALS``) arrived; ``signum`` says
    which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(signum: int) -> int:
    """The shell's status for a process stopped by ``signum``: 128 + its number (130, 143)."""
    return 128 + int(signum)


@contextlib.contextmanager
def stop_handlers() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread, once.

    Set explicitly, not inherited: a process started in the background by a non-interactive
    shell (``cmd &`` in a script, a CI runner) inherits SIGINT as *ignored*, and Python then
    installs no KeyboardInterrupt handler at all, so ``kill -INT`` was silently lost and the
    run went on to the end. After the first signal both are ignored while the workers are
    stopped and the resume command is printed (a second Ctrl-C must not cut that short).
    """

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (e.g. the CLI called from a thread)
        return

    def stop(signum: int, frame: object) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _cmd_run(args: argparse.Namespace) -> int:
    if args.executor == "local" and args.jobs > 1:
        from bench.run.executors import prestart

        prestart()  # the workers' imports overlap ours (config, plug-ins, datasets)
    with stop_handlers():
        return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    from bench.run.config import load_config
    from bench.run.orchestrate import RunInterrupted
    from bench.run.session import prepare, run_directory, run_session

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
        resume = shlex.join(["poisonbench", *(a for a in args.argv if a != "--fresh")])
        print(
            f"\ninterrupted ({signal.Signals(stop.signum).name}): {done} of "
            f"{stop.summary.n_cells} cells done (saved in {out / 'cells'}); to resume, run:\n"
            f"  {resume}",
            file=sys.stderr,
        )
        return exit_status(stop.signum)
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
    return 0


def _mlflow_tracker(args: argparse.Namespace, config: typing.Any, out: Path) -> typing.Any:
    """The MLflow tracker asked for by ``--mlflow`` (started), or None."""
    if args.mlflow is None:
        return None
    from bench.interfaces.tracking import MlflowTracker

    tracker = MlflowTracker(
        out, args.mlflow or None, log_models=args.mlflow_log_models, data_dir=config.data_dir
    )
    tracker.start(config)
    return tracker


def _cmd_schema(args: argparse.Namespace) -> int:
    from bench.run.config_schema import schema_text

    if args.config:
        _import_config_plugins(args.config)
    sys.stdout.write(schema_text())
    return 0


def _cmd_app(args: argparse.Namespace) -> int:
    from bench.interfaces.app import launch

    return launch(args.run_dir, port=args.port)


def _describe(cls: type, origin: str = "builtin") -> list[str]:
    doc = (cls.__doc__ or "").strip().splitlines()
    lines = [f"  {cls.name:<18} {doc[0] if doc else ''} [{origin}]"]  # type: ignore[attr-defined]
    hints = typing.get_type_hints(cls)
    for f in init_fields(cls) if dataclasses.is_dataclass(cls) else []:
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        hint = hints.get(f.name, "")
        # A plain class prints as "<class 'float'>": show its name, like the annotation.
        kind = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
        lines.append(f"      {f.name}: {kind} = {default!r}")
    return lines


def _cmd_list(args: argparse.Namespace) -> int:
    from attacks import ATTACKS
    from bench.data.datasets import DATASETS
    from bench.models import MODELS
    from defenses import DEFENSES

    if args.config:
        with stop_handlers():  # a plug-in's own KeyboardInterrupt is its error, as in `run`
            _import_config_plugins(args.config)
    broken = []
    for title, registry in (
        ("datasets", DATASETS),
        ("models", MODELS),
        ("attacks", ATTACKS),
        ("defenses", DEFENSES),
    ):
        print(f"{title}:")
        for name, cls in registry.items():
            print("\n".join(_describe(cls, registry.origin(name))))
        broken += registry.entry_point_errors.values()
    for error in broken:  # the others are listed; these are named, one line each
        print(f"error: {error}", file=sys.stderr)
    return 2 if broken else 0


def _import_config_plugins(path: str) -> None:
    """Import the ``plugins:`` modules of the config at ``path`` (nothing else is checked)."""
    from bench.run.config import parse_plugins, read_config

    raw = read_config(path)
    if isinstance(raw, dict):
        parse_plugins(raw.get("plugins"))


def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _cmd_report(args: argparse.Namespace) -> int:
    from bench.analysis.report import write_report

    try:
        with stop_handlers():  # a stop signal unwinds: a half-written plot's temporary goes
            limit = {} if args.plot_pairs is None else {"max_plot_pairs": args.plot_pairs}
            path = write_report(args.run_dir, **limit)
    except Stopped as stop:
        print(
            f"\ninterrupted ({signal.Signals(stop.signum).name}): the report was not finished; "
            f"run `poisonbench report {args.run_dir}` again",
            file=sys.stderr,
        )
        return exit_status(stop.signum)
    print(f"report: {path}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from bench.analysis.baseline import write_baseline
    from bench.analysis.compare import compare, parse_floors

    metrics = [m.strip() for m in ",".join(args.metrics).split(",") if m.strip()] or None
    if args.write_baseline and not Path(args.base).exists():
        for path in write_baseline(args.new, args.base, force=True):  # the first: no diff
            print(f"baseline: wrote {path}")
        return 0
    result = compare(args.base, args.new, metrics, args.k, parse_floors(args.abs_floor))
    text = result.to_markdown()
    print(text, end="")
    if args.markdown:
        _write_output(args.markdown, text)
    if args.json:
        import json

        _write_output(args.json, json.dumps(result.to_json(), indent=2, allow_nan=False))
    if args.write_baseline:  # a deliberate refresh of an existing baseline
        for path in write_baseline(args.new, args.base, force=True):
            print(f"baseline: wrote {path}")
        return 0
    return result.exit_code


def _write_output(path: str, text: str) -> None:
    """Write a file the user asked for; a failure is a PoisonBenchError naming the path."""
    from bench.core.store import atomic_write_text

    try:
        atomic_write_text(Path(path), text)
    except OSError as exc:
        raise PoisonBenchError(f"cannot write {path}: {exc.strerror or exc}") from None


def _cmd_baseline(args: argparse.Namespace) -> int:
    from bench.analysis.baseline import write_baseline

    for path in write_baseline(args.run_dir, args.dest, force=args.force):
        print(f"baseline: wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poisonbench",
        description="Measure what training-data poisoning costs and what defenses buy back.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a config's grid (finished cells are skipped)")
    run.add_argument("config", help="YAML config, e.g. configs/quick.yaml")
    run.add_argument("--jobs", "-j", type=int, default=1, help="worker processes (default 1)")
    run.add_argument("--out", help="run directory (default results/runs/<config name>)")
    run.add_argument("--fresh", action="store_true", help="recompute every cell")
    run.add_argument("--data-dir", help="where image datasets live (default $POISONBENCH_DATA)")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    run.add_argument(
        "--precision",
        type=float,
        metavar="W",
        help="add seeds in rounds until every headline interval is at most W × n_train wide "
        "(the config's seeds run first; as seeds: {precision: W} in the config)",
    )
    run.add_argument(
        "--max-seeds",
        type=int,
        metavar="N",
        help="the most seeds a group gets with --precision (default: the config's, else 20)",
    )
    run.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="time limit per cell: a cell past it is failed ('timed out after N s') and its "
        "worker replaced (default: the config's timeout:, else none; 0: none)",
    )
    run.add_argument(
        "--no-report",
        action="store_true",
        help="write the table only, not report.md and its plots (`poisonbench report` later)",
    )
    run.add_argument(
        "--executor",
        choices=("local", "dask", "dask-local"),
        default="local",
        help="local processes (--jobs), an existing Dask cluster (--scheduler) or a local "
        "Dask cluster (--workers); default local",
    )
    run.add_argument(
        "--scheduler", help="Dask scheduler address for --executor dask, e.g. tcp://HOST:8786"
    )
    run.add_argument(
        "--workers", type=int, help="worker processes for --executor dask-local (default --jobs)"
    )
    run.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        metavar="TRACKING_URI",
        help="log every cell to MLflow, nested under one run for the grid (default store: "
        "sqlite:///OUT/mlflow.db, artifacts in OUT/mlartifacts); put it after CONFIG",
    )
    run.add_argument(
        "--mlflow-log-models",
        action="store_true",
        help="with --mlflow: also log each cell's f=0 model (refit once per cell)",
    )
    run.set_defaults(func=_cmd_run)

    lst = sub.add_parser(
        "list",
        help="datasets, models, attacks and defenses with parameters and where each comes from",
    )
    lst.add_argument(
        "--config", help="also import this config's plugins: modules (their code runs)"
    )
    lst.set_defaults(func=_cmd_list)

    rep = sub.add_parser("report", help="(re)write report.md for a run directory")
    rep.add_argument("run_dir")
    rep.add_argument(
        "--plot-pairs",
        type=_non_negative_int,
        metavar="N",
        help="draw the plots of at most N (dataset, model) pairs, those whose worst "
        "undefended attack costs most (0: all; default: bench.analysis.plots.MAX_PLOT_PAIRS, 6)",
    )
    rep.set_defaults(func=_cmd_report)

    cmp = sub.add_parser(
        "compare",
        help="regression gate: compare NEW results with BASE (exit 0 ok, 1 regression, 2 unusable)",
    )
    cmp.add_argument("base", help="baseline run directory or results table (.parquet/.csv)")
    cmp.add_argument("new", help="new run directory or results table")
    cmp.add_argument(
        "--metrics",
        action="append",
        default=[],
        help="comma-separated metrics to judge (default: accuracy, macro_f1, "
        "attack_success_rate, det_recall, f_needed)",
    )
    cmp.add_argument(
        "--abs-floor",
        action="append",
        default=[],
        metavar="[METRIC=]X",
        help="smallest change that counts: X for every [0, 1] metric, or METRIC=X "
        "(defaults 0.02; f_needed 0.25 × n_train); repeatable",
    )
    cmp.add_argument(
        "--k", type=float, default=None, help="tolerance in pooled standard errors (default 3)"
    )
    cmp.add_argument("--markdown", help="also write the markdown diff to this file")
    cmp.add_argument("--json", help="write the JSON summary to this file")
    cmp.add_argument(
        "--write-baseline",
        action="store_true",
        help="after showing the diff, copy NEW's table into BASE (a deliberate refresh)",
    )
    cmp.set_defaults(func=_cmd_compare)

    base = sub.add_parser("baseline", help="copy a run's results table into a baseline folder")
    base.add_argument("run_dir")
    base.add_argument("dest", help="e.g. results/baseline/ci (never a run directory)")
    base.add_argument(
        "--force", action="store_true", help="replace the baseline that DEST already holds"
    )
    base.set_defaults(func=_cmd_baseline)

    sch = sub.add_parser(
        "schema",
        help="print the JSON Schema of configs (editor completion; installed plug-ins included)",
    )
    sch.add_argument("--config", help="also import this config's plugins: modules")
    sch.set_defaults(func=_cmd_schema)

    app = sub.add_parser(
        "app", help="interactive explorer (Streamlit, optional extra 'app') on 127.0.0.1"
    )
    app.add_argument("run_dir", nargs="?", help="run directory to open in the results explorer")
    app.add_argument("--port", type=int, default=8501, help="TCP port (default 8501)")
    app.set_defaults(func=_cmd_app)
    #: the subcommands' parsers, so that an error in one prints that one's usage
    parser.commands = dict(sub.choices)  # type: ignore[attr-defined]
    return parser


def _open_closed_std_streams() -> None:
    """Point a closed stdout or stderr (``>&-``, ``2>&-``) at /dev/null.

    Output is optional, the run is not: with stderr closed Python sets ``sys.stderr`` to None
    and the progress bar crashed before any cell; and the next file opened would take the
    free descriptor 1 or 2, so whatever a library writes to it would land in that file.
    """
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "w", closefd=False, errors="backslashreplace"))  # noqa: SIM115


def main(argv: list[str] | None = None) -> int:
    _open_closed_std_streams()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    command = parser.commands[args.command]  # type: ignore[attr-defined]
    if extra:  # in the subcommand's own usage, not the top level's
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if getattr(args, "jobs", 1) < 1:
        command.error("--jobs must be >= 1")
    if getattr(args, "workers", None) is not None and args.workers < 1:
        command.error("--workers must be >= 1")
    if getattr(args, "mlflow_log_models", False) and args.mlflow is None:
        command.error("--mlflow-log-models needs --mlflow")
    try:
        return args.func(args)
    except PoisonBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(
            "\ninterrupted: finished cells are saved; run the same command again to resume",
            file=sys.stderr,
        )
        return exit_status(getattr(exc, "signum", signal.SIGINT))
    except BrokenPipeError:
        # `poisonbench list | head`: the reader left early; not an error, and no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # A filesystem fault nobody wrapped: still one line naming the path, never a traceback.
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line and exit 2 (for compare, 1 is "regression")
        if os.environ.get("POISONBENCH_DEBUG"):
            import traceback

            traceback.print_exc()
        print(
            f"error: internal error: {type(exc).__name__}: {exc} (a bug in poisonbench: please "
            "report it with the command; POISONBENCH_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
