"""``poisonbench compare`` (the regression gate) and ``baseline``: commands over results
tables, without the report's imports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.analysis.baseline import write_baseline
from bench.analysis.compare import Comparison, compare, parse_floors
from bench.core.store import atomic_write_text
from bench.core.types import PoisonBenchError


def compare_runs(args: argparse.Namespace) -> int:
    """``poisonbench compare``: 0 no regression, 1 regression (2, unusable input, is raised)."""
    metrics = [m.strip() for m in ",".join(args.metrics).split(",") if m.strip()] or None
    if args.write_baseline and not Path(args.base).exists():
        for path in write_baseline(args.new, args.base, force=True):  # the first: no diff
            print(f"baseline: wrote {path}")
        return 0
    result = compare(args.base, args.new, metrics, args.k, parse_floors(args.abs_floor))
    write_comparison(result, args.markdown, args.json)
    if args.write_baseline:  # a deliberate refresh of an existing baseline
        for path in write_baseline(args.new, args.base, force=True):
            print(f"baseline: wrote {path}")
        return 0
    return result.exit_code


def write_comparison(
    result: Comparison, markdown: str | Path | None, json_path: str | Path | None
) -> None:
    """Print ``result``'s markdown diff; also write it to ``markdown`` and its JSON summary to
    ``json_path`` (each when given)."""
    text = result.to_markdown()
    print(text, end="")
    if markdown:
        _write_output(markdown, text)
    if json_path:
        _write_output(json_path, json.dumps(result.to_json(), indent=2, allow_nan=False))


def _write_output(path: str | Path, text: str) -> None:
    """Write a file the user asked for; a failure is a PoisonBenchError naming the path."""
    try:
        atomic_write_text(Path(path), text)
    except OSError as exc:
        raise PoisonBenchError(f"cannot write {path}: {exc.strerror or exc}") from None


def baseline(args: argparse.Namespace) -> int:
    """``poisonbench baseline``: copy a run's table into a baseline folder; 0."""
    for path in write_baseline(args.run_dir, args.dest, force=args.force):
        print(f"baseline: wrote {path}")
    return 0
