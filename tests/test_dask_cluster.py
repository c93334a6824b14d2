"""Issue 22, items 4 and 7, on a real cluster: a ``dask scheduler`` and a ``dask worker
--nworkers 2 --nthreads 1`` started as their own processes on 127.0.0.1 (not a LocalCluster).

- The run counts the cluster's worker threads (2), in its summary line and in ``run.json``.
- A Dask worker killed with SIGKILL mid-task costs nothing: its nanny restarts it, the task
  is rerun, and every record is there.
- A hung cell past ``--timeout`` is ``failed`` (``timed out after N s``), its worker restarted,
  and the run goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import require

from tests.tiny import tiny

pytestmark = [pytest.mark.dask, pytest.mark.slow]  # a real cluster starts: ~25 s a test here

HERE = Path(__file__).parent
CLI = [sys.executable, "-m", "bench.interfaces.cli"]

TINY = tiny(
    name="cluster",
    datasets=[{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
    recovery={"fractions": [0], "bootstrap": 0},
)  # 2 cells, well under a second


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dask() -> list[str]:
    found = shutil.which("dask", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("the dask command is not installed")
    return [found]


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """``(tcp://127.0.0.1:PORT, marker path)``: a scheduler with 2 single-thread workers
    (their own processes, under one nanny each), all stopped afterwards; the workers'
    ``$HOSTILE_TARGET`` is the marker path (``await_kill`` writes its PID there)."""
    require("distributed")
    from distributed import Client

    folder = tmp_path_factory.mktemp("cluster")
    address = f"tcp://127.0.0.1:{_free_port()}"
    port = address.rsplit(":", 1)[1]
    log = (folder / "cluster.log").open("w")
    env = {**_env(), "HOSTILE_TARGET": str(folder / "pid")}  # for await_kill, on the workers
    common = dict(stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
    procs = [
        subprocess.Popen(
            [*_dask(), "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
            **common,
        )
    ]
    try:
        time.sleep(1)
        procs.append(
            subprocess.Popen(
                [
                    *_dask(),
                    "worker",
                    address,
                    "--nworkers",
                    "2",
                    "--nthreads",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--local-directory",
                    str(folder / "scratch"),
                ],
                **common,
            )
        )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, folder / "pid"
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _config(tmp_path: Path, **raw) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**TINY, **raw}))
    return path


def _run(config: Path, out: Path, scheduler: tuple[str, Path], *extra: str):
    command = [*CLI, "run", str(config), "--out", str(out), "--quiet", "--no-report"]
    command += ["--executor", "dask", "--scheduler", scheduler[0], *extra]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )


def _records(out: Path) -> dict[tuple[float, str], dict]:
    rows = {}
    for path in (out / "cells").glob("*.json"):
        record = json.loads(path.read_text())
        spec = record["spec"]
        rows[(float(spec["rate"]), "+".join(s["name"] for s in spec["defense"]))] = record
    return rows


def test_a_real_cluster_counts_its_worker_threads(scheduler, tmp_path):
    out = tmp_path / "run"
    proc = _run(_config(tmp_path), out, scheduler)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    assert "on 2 worker(s)" in stdout, stdout
    assert json.loads((out / "run.json").read_text())["summary"]["workers"] == 2
    assert {r["status"] for r in _records(out).values()} == {"ok"}


def test_a_dask_worker_killed_mid_task_loses_nothing(scheduler, tmp_path):
    marker = scheduler[1]
    config = _config(
        tmp_path,
        defenses=["none", {"name": "hostile", "action": "await_kill"}],
        plugins=["hostile_plugins"],
    )
    out = tmp_path / "run"
    proc = _run(config, out, scheduler)
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), proc.communicate(timeout=10)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    records = _records(out)
    assert len(records) == 4 and {r["status"] for r in records.values()} == {"ok"}, records
    assert "4 cells (4 run, 0 cached, 0 failed)" in stdout


def test_a_hung_cell_on_a_real_cluster_times_out_and_the_run_goes_on(scheduler, tmp_path):
    config = _config(
        tmp_path,
        defenses=["none", {"name": "hostile", "action": "sleep"}],
        plugins=["hostile_plugins"],
    )
    out = tmp_path / "run"
    started = time.perf_counter()
    proc = _run(config, out, scheduler, "--timeout", "2")
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    records = _records(out)
    assert len(records) == 4
    assert records[(0.2, "hostile")]["rows"][0]["error"] == "timed out after 4 s"
    assert records[(0.0, "hostile")]["status"] == "ok"
    assert records[(0.0, "none")]["status"] == "ok"
    assert time.perf_counter() - started < 120
    from distributed import Client

    with Client(scheduler[0], timeout=30) as client:  # the hung worker was replaced
        client.wait_for_workers(2, timeout=60)
        assert sum(client.nthreads().values()) == 2
