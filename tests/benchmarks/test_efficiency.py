"""Efficiency of a run: the cells' own compute time ÷ workers ÷ the run's wall time.

``run.json`` states it for every run (``summary.efficiency``; the wall time runs from the
start of ``run_config`` to the table written: grid expansion, worker start-up, the cells, the
records and the table, not the report). Two grids on 2 workers, each run fresh in a
subprocess, as ``poisonbench run --jobs 2`` runs:

- ``configs/ci.yaml`` (the CI gate: filters, 105 cells): goal ≥ 0.85;
- the plain digits grid of the macro benchmark (no defense, 10 seeds, 8 fractions): ≥ 0.75.

The whole ``make gate`` process (``test_gate_efficiency``: the run with ``--no-report`` and then
``poisonbench compare`` against ``results/baseline/ci``, as the Makefile's recipe runs them)
counts everything, interpreter start-up, imports, the workers' start and the compare
included: the cells' compute ÷ 2 workers ÷ the two commands' wall time; goal ≥ 0.9.

Measure on 2 idle cores (``.venv/bin/pytest tests/benchmarks/test_efficiency.py -p no:xdist
--benchmark-enable -s``); on a busy machine each cell's own time grows with the load too, so
the ratio says more than either time alone, but the goals assume quiet cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
_spec = importlib.util.spec_from_file_location("naive_script", HERE / "naive_script.py")
naive_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(naive_script)

GOALS = {"ci": 0.85, "plain": 0.75}
#: the whole `make gate` process (run + compare)
GATE_GOAL = 0.9


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, Path]:
    path = tmp_path_factory.mktemp("efficiency")
    plain = path / "plain.yaml"
    plain.write_text(yaml.safe_dump(naive_script.GRID_PLAIN, sort_keys=False))
    return {"ci": ROOT / "configs" / "ci.yaml", "plain": plain}


@pytest.mark.parametrize("case", sorted(GOALS))
def test_efficiency(benchmark, configs, tmp_path, case):
    poisonbench = Path(sys.executable).parent / "poisonbench"
    out = tmp_path / case
    cmd = [str(poisonbench), "run", str(configs[case]), "--out", str(out), "--jobs", "2"]
    cmd += ["--fresh", "--quiet", "--no-report"]

    def run() -> float:
        started = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started

    process_seconds = benchmark.pedantic(run, rounds=1, iterations=1)
    summary = json.loads((out / "run.json").read_text())["summary"]
    benchmark.extra_info.update(summary=summary, process_seconds=process_seconds)
    print(
        f"\n{case}: efficiency {summary['efficiency']:.3f} (compute {summary['compute_seconds']:.1f}"
        f" s / {summary['workers']} workers / wall {summary['wall_seconds']:.1f} s); the whole "
        f"process {process_seconds:.1f} s; load average {os.getloadavg()[0]:.1f}"
    )
    assert summary["efficiency"] >= GOALS[case], summary


def test_gate_efficiency(benchmark, tmp_path):
    poisonbench = str(Path(sys.executable).parent / "poisonbench")
    out = tmp_path / "ci"
    run = [poisonbench, "run", str(ROOT / "configs" / "ci.yaml"), "--jobs", "2", "--out", str(out)]
    run += ["--fresh", "--quiet", "--no-report"]
    compare = [poisonbench, "compare", str(ROOT / "results" / "baseline" / "ci"), str(out)]
    compare += ["--markdown", str(out / "compare.md"), "--json", str(out / "compare.json")]
    codes: list[int] = []

    def gate() -> float:
        started = time.perf_counter()
        subprocess.run(run, check=True, stdout=subprocess.DEVNULL)
        codes.append(subprocess.run(compare, stdout=subprocess.DEVNULL).returncode)
        return time.perf_counter() - started

    seconds = benchmark.pedantic(gate, rounds=1, iterations=1)
    summary = json.loads((out / "run.json").read_text())["summary"]
    whole = summary["compute_seconds"] / summary["workers"] / seconds
    benchmark.extra_info.update(summary=summary, gate_seconds=seconds, gate_efficiency=whole)
    print(
        f"\nmake gate: efficiency {whole:.3f} (compute {summary['compute_seconds']:.1f} s / "
        f"{summary['workers']} workers / {seconds:.1f} s for run + compare; in the run "
        f"{summary['efficiency']:.3f}); load average {os.getloadavg()[0]:.1f}"
    )
    assert codes == [0], "compare found a regression against results/baseline/ci"
    assert whole >= GATE_GOAL, (whole, summary)
