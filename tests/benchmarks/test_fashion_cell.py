"""One full Fashion-MNIST cell: train on all 60,000 training images (cnn, 1 epoch), test on
10,000, targeted flip Shirt → T-shirt/top at 25%: wall time and peak memory of a fresh process
(so torch's import and the dataset load are counted, as in a worker).

Run: ``.venv/bin/pytest tests/benchmarks/test_fashion_cell.py -p no:xdist --benchmark-enable -s``.
Skipped when Fashion-MNIST is not available offline (``apt-get install dataset-fashion-mnist``,
or the torchvision files under ``$POISONBENCH_DATA/FashionMNIST/raw``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    started = time.perf_counter()
    from bench.run.config import parse_config
    from bench.run.grid import expand
    from bench.run.runner import run_cell
    config = parse_config({
        "datasets": [{"name": "fashion-mnist", "split": {"train": 60000, "test": 10000}}],
        "models": [{"name": "cnn", "epochs": 1, "device": "cpu"}],
        "attacks": [{"name": "label_flip", "mode": "targeted", "source": 6, "target": 0}],
        "rates": [0.25], "defenses": ["none"], "seeds": [0],
        "recovery": {"fractions": [0]},
    })
    cells = [c for c in expand(config) if c.spec["rate"] > 0]
    t_cell = time.perf_counter()
    record = run_cell(cells[0])
    done = time.perf_counter()
    row = record["rows"][0]
    print(json.dumps({
        "status": record["status"], "error": row.get("error"),
        "process_s": done - started, "cell_s": done - t_cell,
        "t_fit": row.get("t_fit"), "n_fit": row.get("n_fit"), "accuracy": row.get("accuracy"),
        "attack_success_rate": row.get("attack_success_rate"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))
    """
)


def test_full_fashion_mnist_cell(benchmark, monkeypatch):
    pytest.importorskip("torch")
    from bench.data.datasets import DatasetError, load_dataset

    try:
        load_dataset("fashion-mnist")
    except DatasetError as exc:
        pytest.skip(f"Fashion-MNIST not available offline: {str(exc).splitlines()[0]}")
    monkeypatch.setenv("POISONBENCH_THREADS", "1")  # one worker's share of the machine

    def run() -> dict:
        out = subprocess.run(
            [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=1800, check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(
        f"\nfashion-mnist 60k cell (cnn, 1 epoch, 1 thread): cell {result['cell_s']:.1f} s "
        f"(fit {result['t_fit']:.1f} s = {result['n_fit'] / result['t_fit']:,.0f} images/s), "
        f"process {result['process_s']:.1f} s, peak RSS {result['peak_rss_mb']:,.0f} MB, "
        f"accuracy {result['accuracy']:.3f}, attack success {result['attack_success_rate']:.3f}"
    )
    assert result["status"] == "ok", result["error"]
    assert result["n_fit"] == 60_000
    assert result["accuracy"] > 0.6
