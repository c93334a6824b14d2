"""The ``poisonbench`` command line."""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import sys
import typing

from bench.core.errors import PoisonBenchError
from bench.interfaces.stops import exit_status
from bench.run.workers import prestart

#: subcommand -> "module:function" that runs it; only that module is imported (see
#: :mod:`bench.interfaces.commands` for why)
COMMANDS = {
    "run": "bench.interfaces.commands.run:run",
    "list": "bench.interfaces.commands.listing:list_plugins",
    "report": "bench.interfaces.commands.report:report",
    "compare": "bench.interfaces.commands.results:compare_runs",
    "gate": "bench.interfaces.commands.gate:gate",
    "baseline": "bench.interfaces.commands.results:baseline",
    "schema": "bench.interfaces.commands.schema:schema",
    "app": "bench.interfaces.commands.app:app",
}


def _command(name: str) -> typing.Callable[[argparse.Namespace], int]:
    """The function that runs subcommand ``name``, its module imported now."""
    module, _, function = COMMANDS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """How a grid runs: the options ``run`` and ``gate`` share."""
    parser.add_argument("--jobs", "-j", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--out", help="run directory (default results/runs/<config name>)")
    parser.add_argument("--data-dir", help="where image datasets live (default $POISONBENCH_DATA)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="time limit per cell: a cell past it is failed ('timed out after N s') and its "
        "worker replaced (default: the config's timeout:, else none; 0: none)",
    )
    parser.add_argument(
        "--executor",
        choices=("local", "dask", "dask-local"),
        default="local",
        help="local processes (--jobs), an existing Dask cluster (--scheduler) or a local "
        "Dask cluster (--workers); default local",
    )
    parser.add_argument(
        "--scheduler", help="Dask scheduler address for --executor dask, e.g. tcp://HOST:8786"
    )
    parser.add_argument(
        "--workers", type=int, help="worker processes for --executor dask-local (default --jobs)"
    )


def _add_compare_options(
    parser: argparse.ArgumentParser, markdown_default: str = "", json_default: str = ""
) -> None:
    """What a comparison judges and where its diff goes: the options ``compare`` and ``gate``
    share."""
    parser.add_argument(
        "--metrics",
        action="append",
        default=[],
        help="comma-separated metrics to judge (default: accuracy, macro_f1, "
        "attack_success_rate, det_recall, f_needed)",
    )
    parser.add_argument(
        "--abs-floor",
        action="append",
        default=[],
        metavar="[METRIC=]X",
        help="smallest change that counts: X for every [0, 1] metric, or METRIC=X "
        "(defaults 0.02; f_needed 0.25 × n_train); repeatable",
    )
    parser.add_argument(
        "--k", type=float, default=None, help="tolerance in pooled standard errors (default 3)"
    )
    parser.add_argument(
        "--markdown", help=f"also write the markdown diff to this file {markdown_default}".rstrip()
    )
    parser.add_argument(
        "--json", help=f"write the JSON summary to this file {json_default}".rstrip()
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poisonbench",
        description="Measure what training-data poisoning costs and what defenses buy back.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a config's grid (finished cells are skipped)")
    run.add_argument("config", help="YAML config, e.g. configs/quick.yaml")
    _add_run_options(run)
    run.add_argument("--fresh", action="store_true", help="recompute every cell")
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
        "--no-report",
        action="store_true",
        help="write the table only, not report.md and its plots (`poisonbench report` later)",
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

    gate = sub.add_parser(
        "gate",
        help="regression gate in one command: run CONFIG afresh, compare it with BASELINE "
        "(exit 0 ok, 1 regression, 2 unusable)",
    )
    gate.add_argument("config", help="YAML config, e.g. configs/ci.yaml")
    gate.add_argument("baseline", help="baseline run directory or results table (.parquet/.csv)")
    _add_run_options(gate)
    gate.add_argument(
        "--report",
        action="store_true",
        help="also write the run's report.md and plots (default: the table and the diff only)",
    )
    _add_compare_options(gate, "(default OUT/compare.md)", "(default OUT/compare.json)")

    lst = sub.add_parser(
        "list",
        help="datasets, models, attacks and defenses with parameters and where each comes from",
    )
    lst.add_argument(
        "--config", help="also import this config's plugins: modules (their code runs)"
    )

    rep = sub.add_parser("report", help="(re)write report.md for a run directory")
    rep.add_argument("run_dir")
    rep.add_argument(
        "--metric",
        help="the recovery metric of the headline instead of the config's (one the table "
        "measured: accuracy, macro_f1, attack_success_rate, backdoor_asr)",
    )
    rep.add_argument(
        "--tolerance",
        type=float,
        help="how close to the clean model counts as recovered, in the metric's units, instead "
        "of the config's (0.005: half a point)",
    )
    rep.add_argument(
        "--out",
        metavar="PATH",
        help="write the report there instead of RUN_DIR/report.md (the plots beside it), "
        "e.g. RUN_DIR/report-accuracy.md",
    )
    rep.add_argument(
        "--plot-pairs",
        type=_non_negative_int,
        metavar="N",
        help="draw the plots of at most N (dataset, model) pairs, those whose worst "
        "undefended attack costs most (0: all; default: bench.analysis.plots.MAX_PLOT_PAIRS, 6)",
    )

    cmp = sub.add_parser(
        "compare",
        help="regression gate: compare NEW results with BASE (exit 0 ok, 1 regression, 2 unusable)",
    )
    cmp.add_argument("base", help="baseline run directory or results table (.parquet/.csv)")
    cmp.add_argument("new", help="new run directory or results table")
    _add_compare_options(cmp)
    cmp.add_argument(
        "--write-baseline",
        action="store_true",
        help="after showing the diff, copy NEW's table into BASE (a deliberate refresh)",
    )

    base = sub.add_parser("baseline", help="copy a run's results table into a baseline folder")
    base.add_argument("run_dir")
    base.add_argument("dest", help="e.g. results/baseline/ci (never a run directory)")
    base.add_argument(
        "--force", action="store_true", help="replace the baseline that DEST already holds"
    )

    sch = sub.add_parser(
        "schema",
        help="print the JSON Schema of configs (editor completion; installed plug-ins included)",
    )
    sch.add_argument("--config", help="also import this config's plugins: modules")

    app = sub.add_parser(
        "app", help="interactive explorer (Streamlit, optional extra 'app') on 127.0.0.1"
    )
    app.add_argument("run_dir", nargs="?", help="run directory to open in the results explorer")
    app.add_argument("--port", type=int, default=8501, help="TCP port (default 8501)")
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
    if args.command in ("run", "gate") and args.executor == "local" and args.jobs > 1:
        prestart()  # before the command's imports: the fork server's imports overlap them
    try:
        return _command(args.command)(args)
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


def console() -> None:
    """The ``poisonbench`` executable: :func:`main`, then exit with its status.

    Before the interpreter exits, every object still alive is moved to the collector's
    permanent generation (:func:`gc.freeze`), which its last collections skip: with pandas,
    scikit-learn and SciPy loaded they walked some 300k objects, ~0.17 s of every command on
    these cores, after its work was done (the CI gate's whole-process efficiency counts it).
    Nothing is lost by it: the files are closed, and ``atexit`` and ``weakref.finalize``
    clean-ups (the worker pool's, temporary directories) still run. Only here, not in
    :func:`main`, which tests and scripts call many times in one process.
    """
    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    console()
