"""Macro benchmark: ``poisonbench run`` against a naive sequential script on the same grid.

The grid (``naive_script.GRID``): digits, logistic regression, random label flips and uniform
feature noise, poison rates 0 / 0.1 / 0.2 / 0.4, defenses none and Isolation Forest, 10 seeds,
8 extra-clean fractions. The naive script (one process, library default threads, everything
recomputed for every fraction) reproduces the harness's stage seeding, so the two must produce
the *same* accuracy for every (attack, rate, defense, seed, fraction); the harness must be at
least 10× faster in wall time. Both run in the same session, one after the other, so the ratio
is measured under the same machine load.

Run with ``make benchmark`` (pytest-benchmark JSON is saved under results/runs/benchmarks; compare
two commits with ``--benchmark-compare``). ``POISONBENCH_MACRO_SEEDS=2`` shrinks the grid for a
quick try (the 10× target is only asserted on the full grid).
"""

from __future__ import annotations

import importlib.util
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

HERE = Path(__file__).parent
# naive_script is a script beside this file, not a package: load it by path
_spec = importlib.util.spec_from_file_location("naive_script", HERE / "naive_script.py")
naive_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(naive_script)
GRID = naive_script.GRID

SEEDS = int(os.environ.get("POISONBENCH_MACRO_SEEDS", GRID["seeds"]))
JOBS = os.cpu_count() or 2
TARGET = 10.0
TIMES: dict[str, float] = {}
CPU: dict[str, float] = {}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("macro")
    (path / "macro.yaml").write_text(yaml.safe_dump({**GRID, "seeds": SEEDS}, sort_keys=False))
    return path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(name: str, cmd: list[str]) -> None:
    """Run ``cmd``; record its wall time and the CPU time of it and its worker processes."""
    cpu, started = _children_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    TIMES[name] = time.perf_counter() - started
    CPU[name] = _children_cpu() - cpu


def test_harness(benchmark, workdir):
    """``poisonbench run`` on the grid: worker processes, shared work, store, table, report."""
    poisonbench = Path(sys.executable).parent / "poisonbench"
    cmd = [str(poisonbench), "run", str(workdir / "macro.yaml"), "--out", str(workdir / "run")]
    cmd += ["--jobs", str(JOBS), "--fresh", "--quiet"]
    benchmark.pedantic(_timed, args=("harness", cmd), rounds=1, iterations=1)
    benchmark.extra_info.update(
        seconds=TIMES["harness"], cpu_seconds=CPU["harness"], jobs=JOBS, seeds=SEEDS
    )


def test_naive(benchmark, workdir):
    """The naive script on the same grid: one process, default threads, nothing shared."""
    cmd = [sys.executable, str(HERE / "naive_script.py"), str(workdir / "naive.csv")]
    cmd += ["--seeds", str(SEEDS)]
    benchmark.pedantic(_timed, args=("naive", cmd), rounds=1, iterations=1)
    benchmark.extra_info.update(seconds=TIMES["naive"], cpu_seconds=CPU["naive"], seeds=SEEDS)


def test_same_numbers_and_speedup(workdir, capsys):
    if not {"harness", "naive"} <= set(TIMES):
        pytest.skip("needs test_harness and test_naive from the same session")
    harness = pd.read_parquet(workdir / "run" / "results.parquet")
    naive = pd.read_csv(workdir / "naive.csv")
    key = ["attack", "rate", "defense", "seed", "extra_fraction"]
    merged = naive.merge(harness[[*key, "accuracy", "status"]], on=key, suffixes=("", "_h"))
    # every naive fit has its harness row (rate-0 rows appear once per attack in the naive run)
    assert (
        len(merged)
        == len(naive)
        == len(GRID["attacks"])
        * len(GRID["rates"])
        * len(GRID["defenses"])
        * SEEDS
        * len(GRID["recovery"]["fractions"])
    )
    assert (merged["status"] == "ok").all()
    assert (merged["accuracy"] == merged["accuracy_h"]).all(), "the two disagree"
    ratio = TIMES["naive"] / TIMES["harness"]
    with capsys.disabled():
        print(
            f"\nmacro: naive {TIMES['naive']:.1f} s, harness {TIMES['harness']:.1f} s "
            f"(--jobs {JOBS}): {ratio:.1f}× faster; {len(merged)} fits agree. CPU time: "
            f"naive {CPU['naive']:.1f} s, harness {CPU['harness']:.1f} s "
            f"({CPU['naive'] / CPU['harness']:.1f}×); load average {os.getloadavg()[0]:.1f}"
        )
    if GRID["seeds"] == SEEDS:
        assert ratio >= TARGET, f"harness only {ratio:.1f}× faster than the naive script"
