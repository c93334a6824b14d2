"""The ``poisonbench`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

from bench.types import PoisonBenchError

DEFAULT_RESULTS = Path("results") / "runs"


def _cmd_run(args: argparse.Namespace) -> int:
    from bench.config import load_config
    from bench.orchestrate import run_config
    from bench.report import write_report

    config = load_config(args.config)
    if args.data_dir:
        config = dataclasses.replace(config, data_dir=args.data_dir)
    out = Path(args.out) if args.out else DEFAULT_RESULTS / config.name
    summary = run_config(config, out, jobs=args.jobs, fresh=args.fresh, progress=not args.quiet)
    for problem in summary.problems:
        print(f"warning: {problem}", file=sys.stderr)
    report = write_report(out)
    rate = summary.n_run / summary.wall_seconds if summary.wall_seconds else 0.0
    print(
        f"{config.name}: {summary.n_cells} cells ({summary.n_run} run, {summary.n_cached} cached, "
        f"{summary.n_failed} failed) in {summary.wall_seconds:.1f} s ({rate:.2f} cells/s)"
    )
    print(f"table:  {out / 'results.parquet'}\nreport: {report}")
    for failure in summary.failures[:5]:
        print(f"failed: {failure}", file=sys.stderr)
    return 0


def _describe(cls: type) -> list[str]:
    doc = (cls.__doc__ or "").strip().splitlines()
    lines = [f"  {cls.name:<18} {doc[0] if doc else ''}"]  # type: ignore[attr-defined]
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else []:
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        kind = str(hints.get(f.name, "")).replace("typing.", "")
        lines.append(f"      {f.name}: {kind} = {default!r}")
    return lines


def _cmd_list(args: argparse.Namespace) -> int:
    from attacks import ATTACKS
    from bench.datasets import DESCRIPTIONS
    from bench.models import MODELS
    from defenses import DEFENSES

    print("datasets:")
    for name, desc in sorted(DESCRIPTIONS.items()):
        print(f"  {name:<18} {desc}")
    for title, registry in (("models", MODELS), ("attacks", ATTACKS), ("defenses", DEFENSES)):
        print(f"{title}:")
        for _, cls in registry.items():
            print("\n".join(_describe(cls)))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from bench.report import write_report

    path = write_report(args.run_dir)
    print(f"report: {path}")
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
    run.set_defaults(func=_cmd_run)

    lst = sub.add_parser("list", help="datasets, models, attacks and defenses with parameters")
    lst.set_defaults(func=_cmd_list)

    rep = sub.add_parser("report", help="(re)write report.md for a run directory")
    rep.add_argument("run_dir")
    rep.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "jobs", 1) < 1:
        parser.error("--jobs must be >= 1")
    try:
        return args.func(args)
    except PoisonBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished cells are saved; run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
