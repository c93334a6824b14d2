"""The Dask executors: same table as the local executor, resume across executors, clear errors.

One LocalCluster (2 worker processes, 1 thread each, bound to 127.0.0.1) serves the module's
``--executor dask --scheduler ADDRESS`` tests; one test starts its own via ``dask-local``.
"""

from __future__ import annotations

import os
import sys

import pandas as pd
import pytest
from conftest import require

from bench.interfaces.cli import main
from bench.run.config import parse_config
from bench.run.executors import ExecutorError, execute, local_cluster
from bench.run.grid import expand, make_tasks
from bench.run.orchestrate import run_config

pytestmark = pytest.mark.dask

RAW = {
    "name": "dask-tiny",
    "datasets": [{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.2],
    "defenses": ["none", "iforest"],
    "seeds": 2,
    "recovery": {"fractions": [0, 0.2]},
}


def _comparable(table: pd.DataFrame) -> pd.DataFrame:
    """The table without timing columns (``t_*``), which differ from run to run."""
    return table[[c for c in table.columns if not c.startswith("t_")]]


@pytest.fixture(scope="module")
def cluster():
    require("distributed")
    with local_cluster(2) as local:
        yield local


@pytest.fixture(scope="module")
def local_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    run_config(parse_config(RAW), out, progress=False)
    return pd.read_parquet(out / "results.parquet")


def test_dask_gives_the_same_table_as_local(cluster, local_table, tmp_path):
    out = tmp_path / "dask"
    summary = run_config(
        parse_config(RAW), out, progress=False, executor="dask", scheduler=cluster.scheduler_address
    )
    assert summary.n_run == summary.n_cells == 8 and summary.n_failed == 0
    dask_table = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(_comparable(dask_table), _comparable(local_table))
    assert set(dask_table["status"]) == {"ok"}


def test_dask_workers_are_limited_to_one_thread_and_load_data_once(cluster, tmp_path):
    distributed = require("distributed")
    from bench.data.datasets import load_dataset

    with distributed.Client(cluster) as client:
        client.run(load_dataset.cache_clear)
        run_config(
            parse_config({**RAW, "name": "threads"}),
            tmp_path,
            progress=False,
            executor="dask",
            scheduler=cluster.scheduler_address,
        )
        threads = client.run(os.getenv, "POISONBENCH_THREADS")
        loads = client.run(lambda: load_dataset.cache_info().misses)
    used = [w for w, v in threads.items() if v is not None]
    assert used, "no worker ran a cell"
    assert all(threads[w] == "1" for w in used)
    # each worker loaded iris at most once for its cells: data never travels per cell
    assert all(n <= 1 for n in loads.values()), loads
    assert sum(loads.values()) >= 1


def test_resume_across_executors(cluster, local_table, tmp_path):
    """Half the cells from the local executor, the rest on Dask: nothing recomputed twice."""
    out = tmp_path / "mixed"
    config = parse_config(RAW)
    run_config(config, out, progress=False)
    cells = sorted((out / "cells").glob("*.json"))
    kept = {p.name: p.stat().st_mtime_ns for p in cells[::2]}
    for path in cells[1::2]:
        path.unlink()
    summary = run_config(
        config, out, progress=False, executor="dask", scheduler=cluster.scheduler_address
    )
    assert (summary.n_cached, summary.n_run) == (len(kept), len(cells) - len(kept))
    assert {p: (out / "cells" / p).stat().st_mtime_ns for p in kept} == kept
    table = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(_comparable(table), _comparable(local_table))


def _listening_addresses() -> set[str]:
    """IP addresses this process and its children listen on (TCP)."""
    import psutil

    me = psutil.Process()
    addresses = set()
    for process in [me, *me.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.Error:
            continue
        addresses |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
    return addresses


def test_dask_local_through_the_cli(local_table, tmp_path, capsys, monkeypatch):
    """dask-local via the CLI: same table, localhost only, and the local executor resumes it."""
    require("distributed")
    import bench.run.executors

    seen: list[set[str]] = []
    original = bench.run.executors.run_dask

    def spying(*args, **kwargs):
        for record in original(*args, **kwargs):
            if not seen:
                seen.append(_listening_addresses())
            yield record

    monkeypatch.setattr(bench.run.executors, "run_dask", spying)
    config = tmp_path / "c.yaml"
    import yaml

    config.write_text(yaml.safe_dump(RAW))
    out = tmp_path / "run"
    argv = ["run", str(config), "--out", str(out), "--quiet"]
    assert main([*argv, "--executor", "dask-local", "--workers", "2"]) == 0
    assert "(8 run, 0 cached, 0 failed)" in capsys.readouterr().out
    assert seen and seen[0] and seen[0] <= {"127.0.0.1", "::1"}, seen  # no network beyond localhost
    table = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(_comparable(table), _comparable(local_table))
    assert main(argv) == 0  # and the local executor resumes it: everything cached
    assert "(0 run, 8 cached, 0 failed)" in capsys.readouterr().out


def test_dask_local_keeps_its_scratch_space_in_the_run_directory(tmp_path, capsys, monkeypatch):
    """dask-local workers' scratch space (spill files, locks) goes under the run directory, not
    the system temp dir, and is removed when the run ends."""
    require("distributed")
    import tempfile

    import yaml

    import bench.run.executors

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    out = tmp_path / "run"
    during: list[bool] = []
    original = bench.run.executors.run_dask

    def spying(*args, **kwargs):
        for record in original(*args, **kwargs):
            if not during:
                scratch = out / bench.run.executors.DASK_SCRATCH
                during.append(scratch.is_dir() and any(scratch.iterdir()))
            yield record

    monkeypatch.setattr(bench.run.executors, "run_dask", spying)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**RAW, "defenses": ["none"], "seeds": 1}))
    argv = ["run", str(config), "--out", str(out), "--quiet", "--executor", "dask-local"]
    assert main([*argv, "--workers", "1"]) == 0
    assert "(2 run, 0 cached, 0 failed)" in capsys.readouterr().out
    assert during == [True]  # the workers used it
    assert sorted(p.name for p in system_tmp.iterdir()) == []
    assert not (out / bench.run.executors.DASK_SCRATCH).exists()


def test_missing_dask_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    tasks = make_tasks([(cell, [0.0]) for cell in expand(parse_config(RAW))])
    with pytest.raises(ExecutorError, match=r"pip install 'poisonbench\[dask\]'"):
        execute(tasks, executor="dask-local")
    config = tmp_path / "c.yaml"
    import yaml

    config.write_text(yaml.safe_dump(RAW))
    code = main(
        ["run", str(config), "--out", str(tmp_path / "o"), "-q", "--executor", "dask-local"]
    )
    assert code == 2
    assert "dask.distributed" in capsys.readouterr().err
    assert not (tmp_path / "o" / "cells").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"executor": "dask"}, "needs --scheduler"),
        ({"executor": "local", "scheduler": "tcp://127.0.0.1:8786"}, "needs --executor dask"),
        ({"executor": "dask-local", "scheduler": "tcp://x:1"}, "not dask-local"),
        ({"executor": "ray"}, "unknown executor 'ray'"),
    ],
)
def test_executor_option_errors(kwargs, message):
    with pytest.raises(ExecutorError, match=message):
        execute([], **kwargs)


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    require("distributed")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import dask

    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(ExecutorError, match="cannot reach the Dask scheduler"),
    ):
        list(
            execute(
                make_tasks([(expand(parse_config(RAW)).cells[0], [0.0])]),
                executor="dask",
                scheduler=f"tcp://127.0.0.1:{port}",
            )
        )
