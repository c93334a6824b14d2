"""Efficiency of a run: the cells' own compute time ÷ workers ÷ the run's wall time.

``run.json`` states it for every run (``summary.efficiency``; the wall time runs from the
start of ``run_config`` to the table written: grid expansion, worker start-up, the cells, the
records and the table, not the report). Two grids on 2 workers, each run fresh in a
subprocess, as ``poisonbench run --jobs 2`` runs:

- ``configs/ci.yaml`` (the CI gate: filters, 105 cells): goal ≥ 0.85;
- the plain digits grid of the macro benchmark (no defense, 10 seeds, 8 fractions): ≥ 0.75.

The whole ``make gate`` process (``test_gate_efficiency``: ``poisonbench gate configs/ci.yaml
results/baseline/ci``, the run and the comparison in one process, as the Makefile's recipe runs
it) counts everything, interpreter start-up, imports, the workers' start, the compare and the
exit included: the cells' compute ÷ 2 workers ÷ the command's wall time; goal: a median of
≥ 0.9 over 5 rounds (one round varies by ±0.005 on these cores).

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
#: the whole `make gate` process (`poisonbench gate`: run + compare), the median of its rounds
GATE_GOAL = 0.9
GATE_ROUNDS = 5
BASELINE = Path("results") / "baseline" / "ci"


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
    gate = [poisonbench, "gate", str(ROOT / "configs" / "ci.yaml"), str(ROOT / BASELINE)]
    gate += ["--jobs", "2", "--out", str(out), "--quiet"]
    codes: list[int] = []
    rounds: list[tuple[float, dict]] = []  # (whole-process efficiency, run.json summary)

    def run_gate() -> float:
        started = time.perf_counter()
        codes.append(subprocess.run(gate, stdout=subprocess.DEVNULL).returncode)
        seconds = time.perf_counter() - started
        summary = json.loads((out / "run.json").read_text())["summary"]
        rounds.append((summary["compute_seconds"] / summary["workers"] / seconds, summary))
        return seconds

    benchmark.pedantic(run_gate, rounds=GATE_ROUNDS, iterations=1)
    efficiencies = sorted(e for e, _ in rounds)
    median = efficiencies[len(efficiencies) // 2]
    benchmark.extra_info.update(gate_efficiency=median, rounds=[e for e, _ in rounds])
    whole = ", ".join(f"{e:.3f}" for e, _ in rounds)
    in_run = ", ".join(f"{s['efficiency']:.3f}" for _, s in rounds)
    print(
        f"\nmake gate: efficiency median {median:.3f} of {len(rounds)} rounds ({whole}; in the "
        f"run {in_run}); load average {os.getloadavg()[0]:.1f}"
    )
    assert codes == [0] * GATE_ROUNDS, "the gate found a regression against results/baseline/ci"
    assert median >= GATE_GOAL, rounds
