"""``poisonbench gate``: the regression gate in one command and one process.

It runs a config afresh and compares the run with a baseline, as ``poisonbench run CONFIG
--fresh --no-report`` followed by ``poisonbench compare BASELINE OUT`` would, and exits as
``compare`` does: 0 no regression, 1 regression, 2 unusable input (or a failed run), 128 + N
when signal N stopped the run. What one process saves: the second interpreter's start and
imports (~0.5 s of the CI gate's ~17 s), which kept its whole-process efficiency below 0.9.

The baseline is read before the run, so a missing or damaged baseline costs no run. The run
is always fresh: a gate judges the numbers the code computes now, never cells cached by
another version of it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.analysis.compare import load_base, parse_floors
from bench.interfaces.commands.results import write_comparison
from bench.interfaces.commands.run import run_grid
from bench.interfaces.stops import stop_handlers
from bench.run.workers import prestart

#: where the diff goes without --markdown / --json: beside the run's table
MARKDOWN_NAME = "compare.md"
JSON_NAME = "compare.json"


def gate(args: argparse.Namespace) -> int:
    """``poisonbench gate CONFIG BASELINE``: 0 no regression, 1 regression (2, unusable input,
    is raised; a stopped run returns 128 + the signal's number)."""
    metrics = [m.strip() for m in ",".join(args.metrics).split(",") if m.strip()] or None
    base = load_base(args.baseline, metrics, args.k, parse_floors(args.abs_floor))
    if args.executor == "local" and args.jobs > 1:
        prestart()  # a no-op when the CLI started the fork server first (cli.main)
    run_args = argparse.Namespace(
        **vars(args),
        fresh=True,
        no_report=not args.report,
        precision=None,
        max_seeds=None,
        mlflow=None,
        mlflow_log_models=False,
    )
    with stop_handlers():
        status, out = run_grid(run_args)
    if status != 0:
        return status
    sys.stdout.flush()  # the run's summary before the diff
    result = base.against(out)
    write_comparison(
        result,
        Path(args.markdown) if args.markdown else out / MARKDOWN_NAME,
        Path(args.json) if args.json else out / JSON_NAME,
    )
    return result.exit_code
