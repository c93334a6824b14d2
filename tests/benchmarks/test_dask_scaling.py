"""Dask scaling: a CPU-bound grid on a LocalCluster with 2 workers vs 1 worker.

Goal on a 2-core machine: >= 1.7× (``POISONBENCH_SCALING_GOAL`` overrides it; on a shared
machine other processes eat into the second core, so measure when it is quiet). Each timing
excludes cluster start-up: the cluster is started, warmed (one cell per worker, so imports and
the dataset load are paid), and only then is the grid timed.

    .venv/bin/pytest tests/benchmarks/test_dask_scaling.py -p no:xdist --benchmark-enable -s
"""

from __future__ import annotations

import os
import time

import pytest

from bench.run.config import parse_config
from bench.run.executors import local_cluster, run_dask
from bench.run.grid import Task, expand

GRID = {
    "name": "scaling",
    "datasets": [{"name": "digits", "split": {"train": 600, "test": 0.25}}],
    "models": [{"name": "logreg", "max_iter": 300}],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.1, 0.2, 0.3],
    "defenses": ["none", "iforest"],
    "seeds": 4,
    "recovery": {"fractions": [0, 0.25, 0.5]},
}  # 4 poisonings × 2 defenses × 4 seeds = 32 cells, each a few hundred ms of BLAS-free CPU


def _tasks(cells) -> list:
    """One task per cell (the scaling of independent cells, not of stage sharing)."""
    return [Task(((cell, tuple(GRID["recovery"]["fractions"])),)) for cell in cells]


def _timed_run(workers: int, cells) -> tuple[float, float]:
    """Wall seconds for the grid, and its concurrency: cell-seconds per wall second (how many
    workers were busy on average; on a contended machine each cell simply takes longer)."""
    pytest.importorskip("distributed")
    with local_cluster(workers) as cluster:
        list(run_dask(_tasks(cells[:workers]), scheduler=cluster.scheduler_address))  # warm-up
        started = time.perf_counter()
        batches = list(run_dask(_tasks(cells), scheduler=cluster.scheduler_address))
        elapsed = time.perf_counter() - started
    records = [r for batch in batches for r in batch]
    assert len(records) == len(cells) and all(r["status"] == "ok" for r in records)
    return elapsed, sum(r["seconds"] for r in records) / elapsed


def test_dask_two_workers_vs_one(benchmark):
    cells = expand(parse_config(GRID)).cells
    goal = float(os.environ.get("POISONBENCH_SCALING_GOAL", "1.7"))
    times: dict[int, list[float]] = {1: [], 2: []}
    busy: dict[int, list[float]] = {1: [], 2: []}
    rounds = int(os.environ.get("POISONBENCH_SCALING_ROUNDS", "2"))

    def measure() -> float:
        for workers in (1, 2) * rounds:  # interleaved: a busy spell hits both sides
            elapsed, concurrency = _timed_run(workers, cells)
            times[workers].append(elapsed)
            busy[workers].append(concurrency)
        return min(times[1]) / min(times[2])

    ratio = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(
        cells=len(cells),
        seconds_1_worker=times[1],
        seconds_2_workers=times[2],
        scaling=ratio,
        concurrency_1_worker=busy[1],
        concurrency_2_workers=busy[2],
        cpus=os.cpu_count(),
        load_average=os.getloadavg(),
    )
    print(
        f"\n{len(cells)} cells: 1 worker {min(times[1]):.1f} s, 2 workers {min(times[2]):.1f} s "
        f"-> {ratio:.2f}x; concurrency {max(busy[1]):.2f} vs {max(busy[2]):.2f} busy workers "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    assert ratio >= goal, f"2 workers are {ratio:.2f}x faster than 1, goal {goal}x"
