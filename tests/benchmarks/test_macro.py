"""Macro benchmarks: ``poisonbench run`` against naive sequential scripts on the same grids.

Two baselines, both in ``naive_script.py`` (one process, one BLAS thread, plain loops),
each reproducing the harness's stage seeding so that the two must produce the *same* accuracy
for every (attack, rate, defense, seed, fraction):

- **naive** (``GRID``: digits, logistic regression, random flips and uniform noise at
  0/10/20/40 %, no defense and Isolation Forest, 10 seeds, 8 fractions): *everything* is redone
  for every extra-clean fraction, the filter included. The harness must be ≥ 10× faster.
- **plain** (``GRID_PLAIN``: digits, logistic regression, random flips and uniform noise at
  5/10/20/50 %, no defense, 10 seeds, fractions 0–4): split and attack once per seed, only the
  fits repeated, what a careful user writes. Here the harness can only win by using the second
  core well and by spending less per fit: it must be ≥ 1.6× faster.

Each pair runs in one session, harness first, then the script, so the ratio is measured under
the same machine load: measure on a quiet machine. ``make benchmark`` saves the
pytest-benchmark JSON under results/runs/benchmarks. ``POISONBENCH_MACRO_SEEDS=2`` shrinks the
grids for a quick try (the speed targets are only asserted on the full grids).
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

JOBS = os.cpu_count() or 2
#: (grid, speed-up the harness must reach, script flags)
CASES = {
    "naive": (naive_script.GRID, 10.0, []),
    "plain": (naive_script.GRID_PLAIN, 1.6, ["--plain"]),
}
TIMES: dict[str, float] = {}
CPU: dict[str, float] = {}


def _seeds(grid: dict) -> int:
    return int(os.environ.get("POISONBENCH_MACRO_SEEDS", grid["seeds"]))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("macro")
    for case, (grid, _, _) in CASES.items():
        (path / f"{case}.yaml").write_text(
            yaml.safe_dump({**grid, "seeds": _seeds(grid)}, sort_keys=False)
        )
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


@pytest.mark.parametrize("case", sorted(CASES))
def test_harness(benchmark, workdir, case):
    """``poisonbench run`` on the grid: worker processes, shared work, store and table."""
    poisonbench = Path(sys.executable).parent / "poisonbench"
    cmd = [str(poisonbench), "run", str(workdir / f"{case}.yaml"), "--out", str(workdir / case)]
    # the table only: the scripts write no report either (`poisonbench report` draws it later)
    cmd += ["--jobs", str(JOBS), "--fresh", "--quiet", "--no-report"]
    benchmark.pedantic(_timed, args=(f"harness-{case}", cmd), rounds=1, iterations=1)
    benchmark.extra_info.update(
        seconds=TIMES[f"harness-{case}"], cpu_seconds=CPU[f"harness-{case}"], jobs=JOBS
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_script(benchmark, workdir, case):
    """The naive script on the same grid: one process, one BLAS thread."""
    grid, _, flags = CASES[case]
    cmd = [sys.executable, str(HERE / "naive_script.py"), str(workdir / f"{case}.csv")]
    cmd += ["--seeds", str(_seeds(grid)), *flags]
    benchmark.pedantic(_timed, args=(f"script-{case}", cmd), rounds=1, iterations=1)
    benchmark.extra_info.update(seconds=TIMES[f"script-{case}"], cpu_seconds=CPU[f"script-{case}"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_numbers_and_speedup(workdir, capsys, case):
    if not {f"harness-{case}", f"script-{case}"} <= set(TIMES):
        pytest.skip("needs test_harness and test_script of this case from the same session")
    grid, target, _ = CASES[case]
    harness = pd.read_parquet(workdir / case / "results.parquet")
    script = pd.read_csv(workdir / f"{case}.csv")
    key = ["attack", "rate", "defense", "seed", "extra_fraction"]
    merged = script.merge(harness[[*key, "accuracy", "status"]], on=key, suffixes=("", "_h"))
    # every script fit has its harness row (rate-0 rows appear once per attack in the script)
    assert len(merged) == len(script) > 0
    assert (merged["status"] == "ok").all()
    assert (merged["accuracy"] == merged["accuracy_h"]).all(), "the two disagree"
    ratio = TIMES[f"script-{case}"] / TIMES[f"harness-{case}"]
    with capsys.disabled():
        print(
            f"\nmacro ({case}): script {TIMES[f'script-{case}']:.1f} s, harness "
            f"{TIMES[f'harness-{case}']:.1f} s (--jobs {JOBS}): {ratio:.2f}× faster; "
            f"{len(merged)} fits agree. CPU: script {CPU[f'script-{case}']:.1f} s, harness "
            f"{CPU[f'harness-{case}']:.1f} s; load average {os.getloadavg()[0]:.1f}"
        )
    if grid["seeds"] == _seeds(grid):
        assert ratio >= target, f"harness only {ratio:.2f}× faster than the {case} script"
