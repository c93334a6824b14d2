"""Run a whole config: expand the grid, skip finished cells, execute the rest, write the table."""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from bench.config import Config
from bench.grid import expand
from bench.store import Store, atomic_write_text, records_to_table, write_table

PACKAGES = ("poisonbench", "numpy", "scikit-learn", "pyod", "pandas", "torch", "torchvision")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


@dataclass
class RunSummary:
    out_dir: Path
    n_cells: int
    n_run: int = 0
    n_cached: int = 0
    n_failed: int = 0
    wall_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cells": self.n_cells,
            "run": self.n_run,
            "cached": self.n_cached,
            "failed": self.n_failed,
            "wall_seconds": round(self.wall_seconds, 3),
        }


def run_config(
    config: Config,
    out_dir: str | Path,
    jobs: int = 1,
    fresh: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Run every unfinished cell of ``config`` into ``out_dir`` and write the results table."""
    from bench.executors import run_local

    started = time.perf_counter()
    out = Path(out_dir)
    store = Store(out)
    cells = expand(config)
    ids = [c.cell_id for c in cells]
    done = {} if fresh else store.finished(ids)
    todo = [c for c in cells if c.cell_id not in done]
    summary = RunSummary(out_dir=out, n_cells=len(cells), n_cached=len(done))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / "config.yaml", yaml.safe_dump(config.raw or {"name": config.name}, sort_keys=False)
    )

    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(
            total=len(todo), desc=config.name, unit="cell", file=sys.stderr, dynamic_ncols=True
        )
    try:
        for record in run_local(todo, config.data_dir, jobs=jobs):
            store.write(record)
            summary.n_run += 1
            if record["status"] != "ok":
                summary.n_failed += 1
                summary.failures.append(f"{record['cell_id']}: {record['rows'][0].get('error')}")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(failed=summary.n_failed, refresh=False)
    finally:
        if bar is not None:
            bar.close()
        summary.problems = list(store.problems)
        summary.wall_seconds = time.perf_counter() - started
    records = store.records(ids)
    table = records_to_table(records)
    write_table(table, out)
    meta = {
        "name": config.name,
        "summary": summary.as_dict(),
        "versions": package_versions(),
        "datasets": {c.spec["dataset"]["name"]: c.spec["dataset"]["fingerprint"] for c in cells},
        "recovery": {
            "fractions": list(config.recovery.fractions),
            "metric": config.recovery.metric,
            "tolerance": config.recovery.tolerance,
            "bootstrap": config.recovery.bootstrap,
        },
    }
    atomic_write_text(out / "run.json", json.dumps(meta, indent=2))
    return summary
