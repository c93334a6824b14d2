"""Scale benchmark: ``poisonbench report`` and ``compare`` on a 1-million-row results table.

A cluster-sized grid is simulated from the committed CI baseline (``results/baseline/ci``: 105
cells × 5 extra-clean fractions = 525 rows of one dataset and model): its rows are replicated
``DATASETS × MODELS × SEED_BLOCKS`` times, each copy with its own configuration identity (a
dataset id with another train size, a model id with another ``C``, the seeds shifted by a block
of 5), its own cell ids and labels, and its metrics jittered a little (seeded) so that the
seeds differ. 8 × 8 × 30 copies give 1,008,000 rows, 64 (dataset, model) pairs and 150 seeds
per configuration. The table is written in the store's format (``store.write_parquet`` of a
table with the schema's dtypes, beside the baseline's ``run.json`` and ``config.yaml``); the
CSV copy the store also writes is left out (nothing reads it when the parquet is there, and it
would take longer to write than both commands take to run).

Then, each as a subprocess of the CLI, timed, with its peak RSS (``os.wait4``: that child's own
``ru_maxrss``):

- ``poisonbench report RUN`` on the 1M-row run; goal < 30 s on 2 cores;
- ``poisonbench compare BASE RUN`` with a 60-row baseline (12 cells of the CI grid, 5
  fractions, the copy whose ids are the CI baseline's); goal < 30 s.

``POISONBENCH_SCALE_ROWS`` sets another size (e.g. 100000 for a quick try; the goals are only
asserted at the full size). Run on a quiet machine:
``.venv/bin/pytest tests/benchmarks/test_scale.py -p no:xdist --benchmark-enable -s``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).parents[2]
TEMPLATE = ROOT / "results" / "baseline" / "ci"
FULL_ROWS = 1_000_000
ROWS = int(os.environ.get("POISONBENCH_SCALE_ROWS", FULL_ROWS))
#: replication factors: 8 datasets × 8 models (64 pairs), the rest in blocks of seeds
DATASETS, MODELS = 8, 8
GOAL_SECONDS = 30.0
#: the baseline's cells (12 cells × 5 fractions = 60 rows)
BASE_CELLS = 12


def scale_table(rows: int = ROWS) -> pd.DataFrame:
    """The CI baseline's table replicated to at least ``rows`` rows with distinct identities."""
    from bench.core.schema import coerce_table
    from bench.core.store import read_table

    template = read_table(TEMPLATE)
    copies = max(1, math.ceil(rows / len(template)))
    pairs = min(copies, DATASETS * MODELS)
    blocks = math.ceil(copies / pairs)
    n = len(template)
    index = np.arange(pairs * blocks).repeat(n)
    pair, block = index % pairs, index // pairs
    d, m = pair // MODELS, pair % MODELS
    df = pd.concat([template] * (pairs * blocks), ignore_index=True)
    seeds_per_block = int(template["seed"].max()) + 1

    dataset = json.loads(template["dataset_id"].iloc[0])
    model = json.loads(template["model_id"].iloc[0])

    def dataset_id(i: int) -> str:
        train = dataset["split"]["train"] + 10 * i
        return json.dumps({**dataset, "split": {**dataset["split"], "train": train}},
                          sort_keys=True, separators=(",", ":"))  # fmt: skip

    def model_id(i: int) -> str:
        c = model["params"]["C"] * 2.0 ** (i - 0)
        return json.dumps({**model, "params": {**model["params"], "C": c}},
                          sort_keys=True, separators=(",", ":"))  # fmt: skip

    datasets = [dataset_id(i) if i else template["dataset_id"].iloc[0] for i in range(DATASETS)]
    models = [model_id(i) if i else template["model_id"].iloc[0] for i in range(MODELS)]
    df["dataset_id"] = pd.Series(np.asarray(datasets, dtype=object)[d], dtype="string")
    df["model_id"] = pd.Series(np.asarray(models, dtype=object)[m], dtype="string")
    train = dataset["split"]["train"] + 10 * d
    df["dataset_label"] = pd.Series(
        np.where(d == 0, "digits", np.char.add("digits(train=", np.char.add(train.astype(str), ")"))),
        dtype="string",
    )  # fmt: skip
    df["model_label"] = pd.Series(
        np.where(m == 0, "logreg", np.char.add("logreg(C=", np.char.add((2.0**m).astype(str), ")"))),
        dtype="string",
    )  # fmt: skip
    df["n_train"] = (df["n_train"].astype("int64") + 10 * d).astype("Int64")
    df["seed"] = df["seed"].astype("int64") + seeds_per_block * block
    # one cell id per (copy, cell): a hash of the template's id and the copy
    keys = (df["cell_id"].astype(str) + ":" + pd.Series(index, dtype="int64").astype(str)).unique()
    ids = {k: hashlib.sha256(k.encode()).hexdigest()[:16] for k in keys}
    df["cell_id"] = pd.Series(
        (df["cell_id"].astype(str) + ":" + pd.Series(index).astype(str)).map(ids), dtype="string"
    )
    rng = np.random.default_rng(0)
    jitter = np.where(index == 0, 0.0, rng.normal(0.0, 0.004, len(df)))
    for column in ("accuracy", "macro_f1", "reference_accuracy"):
        df[column] = (df[column] + jitter).clip(0.0, 1.0)
    return coerce_table(df)


def write_scale_run(path: Path, rows: int = ROWS) -> pd.DataFrame:
    """A run directory at ``path`` holding the scale table (see the module doc)."""
    from bench.core.store import write_parquet

    df = scale_table(rows)
    path.mkdir(parents=True, exist_ok=True)
    write_parquet(df, path / "results.parquet")
    meta = json.loads((TEMPLATE / "run.json").read_text())
    meta["name"] = "scale"
    (path / "run.json").write_text(json.dumps(meta))
    config = ROOT / "configs" / "ci.yaml"
    shutil.copy(config, path / "config.yaml")
    return df


def write_small_baseline(path: Path, cells: int = BASE_CELLS) -> pd.DataFrame:
    """A baseline of ``cells`` cells of the CI grid (every fraction): 60 rows for 12 cells."""
    from bench.core.store import read_table, write_parquet

    template = read_table(TEMPLATE)
    keep = template["cell_id"].drop_duplicates().iloc[:: max(1, 105 // cells)].iloc[:cells]
    df = template[template["cell_id"].isin(keep)].reset_index(drop=True)
    path.mkdir(parents=True, exist_ok=True)
    write_parquet(df, path / "results.parquet")
    shutil.copy(TEMPLATE / "run.json", path / "run.json")
    return df


def run_measured(cmd: list[str]) -> tuple[float, float, int]:
    """Run ``cmd``; (wall seconds, peak RSS of that process in MiB, exit status)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if err.strip():
        print(err[-2000:], file=sys.stderr)
    return seconds, usage.ru_maxrss / 1024, proc.returncode


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory) -> tuple[Path, Path]:
    path = tmp_path_factory.mktemp("scale")
    started = time.perf_counter()
    df = write_scale_run(path / "run")
    base = write_small_baseline(path / "base")
    print(
        f"\nscale run: {len(df):,} rows, {df['cell_id'].nunique():,} cells, "
        f"{df[['dataset_id', 'model_id']].drop_duplicates().shape[0]} (dataset, model) pairs, "
        f"{(path / 'run' / 'results.parquet').stat().st_size / 2**20:.0f} MiB parquet; baseline "
        f"{len(base)} rows; generated in {time.perf_counter() - started:.1f} s"
    )
    return path / "run", path / "base"


def _cli() -> list[str]:
    return [sys.executable, "-m", "bench.interfaces.cli"]


@pytest.mark.parametrize("command", ["report", "compare"])
def test_scale(benchmark, scale_run, tmp_path, command):
    run, base = scale_run
    rows = len(pd.read_parquet(run / "results.parquet", columns=["seed"]))
    if command == "report":
        cmd = [*_cli(), "report", str(run)]
    else:
        cmd = [*_cli(), "compare", str(base), str(run), "--json", str(tmp_path / "c.json")]
        cmd += ["--markdown", str(tmp_path / "c.md")]
    result: dict[str, float] = {}

    def go() -> float:
        seconds, rss, code = run_measured(cmd)
        result.update(seconds=seconds, rss_mib=rss, exit=code)
        return seconds

    benchmark.pedantic(go, rounds=1, iterations=1)
    benchmark.extra_info.update(rows=rows, **result)
    print(
        f"\n{command} on {rows:,} rows: {result['seconds']:.1f} s, peak RSS "
        f"{result['rss_mib']:.0f} MiB, exit {result['exit']}; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    # compare exits 1 when it finds a regression; 2 is unusable input
    assert result["exit"] in ((0,) if command == "report" else (0, 1)), result
    if command == "report":
        pngs = list(run.glob("*.png"))
        assert (run / "report.md").exists()
        print(f"report: {len(pngs)} PNGs")
    if ROWS >= FULL_ROWS:
        assert result["seconds"] < GOAL_SECONDS, result
