"""Surviving kill -9, Ctrl-C, a second run on the same directory, and corrupt record files.

The subprocess tests run ``python -m bench.interfaces.cli run ...`` exactly as a user would run
``poisonbench run ...``; the final tables are compared with an uninterrupted run's after
dropping the timing columns (``t_*``).
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench.core.store import RunLock, RunLockedError, Store, record_checksum
from bench.interfaces.cli import main
from bench.run.config import parse_config
from bench.run.orchestrate import run_config

CLI = [sys.executable, "-m", "bench.interfaces.cli"]

SMALL = {
    "name": "small",
    "datasets": [{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.1, 0.2],
    "defenses": ["none", "random_filter", "oracle_filter"],
    "seeds": 2,
    "recovery": {"fractions": [0, 0.2]},
}  # (1 clean + 2 poisoned) × 3 defenses × 2 seeds = 18 cells

SLOWER = {
    **SMALL,
    "name": "slower",
    "datasets": [{"name": "digits", "split": {"train": 300, "test": 0.25}}],
    "seeds": 4,
}  # 36 cells of ~0.1-0.5 s: long enough to interrupt


def _comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table[[c for c in table.columns if not c.startswith("t_")]]


def _snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    """Every record file's modification time (ns) and bytes."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "cells").glob("*.json")}


def _write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _count(out: Path) -> int:
    return len(list((out / "cells").glob("*.json"))) if (out / "cells").exists() else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted in-process run of SMALL: (run dir, table)."""
    out = tmp_path_factory.mktemp("reference")
    run_config(parse_config(SMALL), out, progress=False)
    return out, pd.read_parquet(out / "results.parquet")


# ---------------------------------------------------------------------------------------------
# kill -9
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_loses_nothing(tmp_path, reference):
    import psutil

    rng = random.Random(6)  # seeded: the same kill points every time
    config = _write_config(tmp_path / "small.yaml", SMALL)
    out = tmp_path / "run"
    command = [*CLI, "run", str(config), "--out", str(out), "--quiet"]
    kills = 0
    ended = None  # (attempt, exit status, cells on disk) of a run that ended before its kill
    for attempt in range(4):
        before = _snapshot(out) if out.exists() else {}
        jobs = ["--jobs", "2"] if attempt == 2 else []  # orphaned workers must not matter
        # no pipes: a worker orphaned by kill -9 would hold them open
        proc = subprocess.Popen(
            [*command, *jobs], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if attempt == 0:
            # anywhere: imports, grid expansion, first cells; but by the third cell at the
            # latest, so that a fast machine still leaves cells for the later kills
            deadline = time.monotonic() + rng.uniform(0.0, 1.5)
            while proc.poll() is None and time.monotonic() < deadline and _count(out) < 3:
                time.sleep(0.005)
        else:
            target = len(before) + rng.randint(1, 4)  # a few cells into this run, then a bit more
            while proc.poll() is None and _count(out) < target:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))
        if proc.poll() is not None:
            ended = (attempt, proc.returncode, _count(out))
            break  # it finished first: nothing left to interrupt
        workers = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        _, alive = psutil.wait_procs(workers, timeout=20)
        assert not alive, "worker processes outlived their killed parent"
        after = _snapshot(out) if out.exists() else {}
        # cells finished before this run were neither rewritten nor removed
        assert {name: after.get(name) for name in before} == before
    assert kills >= 2, f"only {kills} kill(s): a run ended first (attempt, status, cells): {ended}"
    before = _snapshot(out)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    n_cells = 18
    assert f"({n_cells - len(before)} run, {len(before)} cached, 0 failed)" in done.stdout
    after = _snapshot(out)
    assert {name: after[name] for name in before} == before  # never recomputed
    assert not list(out.rglob("*.tmp"))  # half-written files of killed runs are cleaned up
    assert "warning" not in done.stderr  # no record was left corrupt by a kill

    _, expected = reference
    table = pd.read_parquet(out / "results.parquet")
    assert not table.duplicated(["cell_id", "extra_fraction"]).any()
    assert set(table["cell_id"]) == set(expected["cell_id"])  # no missing cell
    pd.testing.assert_frame_equal(_comparable(table), _comparable(expected))


# ---------------------------------------------------------------------------------------------
# A worker process dies: one failed cell, not a dead run
# ---------------------------------------------------------------------------------------------

#: the CLI with the defenses of tests/crash_plugins.py registered (in the workers too)
CRASH_CLI = [sys.executable, str(Path(__file__).with_name("crash_plugins.py"))]


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}


def _defense_of(record: dict) -> str:
    return "+".join(step["name"] for step in record["spec"]["defense"])


def _crash_run(tmp_path: Path, defense, **env: str) -> tuple[list[str], Path, dict[str, str]]:
    raw = {
        **SMALL,
        "name": "crash",
        "rates": [0, 0.1],
        "defenses": ["none", "random_filter", defense],
        "seeds": 1,
    }  # (1 clean + 1 poisoned) × 3 defenses × 1 seed = 6 cells, 2 with the crashing defense
    config = _write_config(tmp_path / "crash.yaml", raw)
    out = tmp_path / "run"
    command = [*CRASH_CLI, "run", str(config), "--out", str(out), "--quiet", "--jobs", "2"]
    return command, out, {**os.environ, **env}


def test_run_tasks_hands_tasks_whose_worker_died_to_lost_and_goes_on(capfd):
    """The generic pool: a task that ends its worker process is given to ``lost`` with the
    exit status; tasks that were running on the other worker or queued still run, once."""
    from crash_plugins import square_or_exit

    from bench.run.executors.local import run_tasks

    payloads = [1, 2, -3, 4, 5, 6, -11, 8, 9]
    out = list(run_tasks(square_or_exit, payloads, lost=lambda p, why: (p, why), jobs=2))
    assert sorted(r for r in out if isinstance(r, int)) == [1, 4, 16, 25, 36, 64, 81]
    assert sorted(r for r in out if isinstance(r, tuple)) == [
        (-11, "worker died: signal 11 (SIGSEGV)"),
        (-3, "worker died: exit code 3"),
    ]
    assert "Fatal Python error" not in capfd.readouterr().err  # one line, no stack dump


def test_a_task_that_breaks_the_pool_without_killing_its_worker_is_given_up():
    """A result that cannot be unpickled breaks loky's pool with no worker dead: the task is
    retried, and after MAX_BREAKS breaks it is given up, not retried forever."""
    from crash_plugins import unpicklable_result

    from bench.run.executors.local import MAX_BREAKS, run_tasks

    out = list(run_tasks(unpicklable_result, [1], lost=lambda p, why: (p, why), jobs=2))
    assert len(out) == 1 and out[0][0] == 1
    assert out[0][1].startswith(f"lost in {MAX_BREAKS} pool breaks (the last: worker pool broke")


def test_stopping_early_with_tasks_queued_prints_no_thread_traceback(monkeypatch):
    """Ctrl-C while tasks are queued shuts the pool down with its workers killed; loky's
    manager thread then trips over the dropped work items (a ``KeyError``), which must not
    reach stderr as an 'Exception in thread' traceback (it did, in CI, after a Ctrl-C)."""
    import threading

    from bench.run.executors.local import _Pool

    caught: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: caught.append(repr(args.exc_value)))
    for _ in range(3):
        pool = _Pool(jobs=2, threads=1)
        for index in range(8):  # more than the workers and loky's call queue take at once
            pool.submit(time.sleep, index, 1.0)
        time.sleep(1.5)  # workers up, two tasks running, the rest queued
        pool.close(kill=True)  # what run_tasks does when its consumer stops (Ctrl-C)
    assert caught == []


@pytest.mark.skipif(
    "forkserver" not in __import__("multiprocessing").get_all_start_methods(),
    reason="no fork server on this platform (workers are loky's fresh interpreters)",
)
def test_workers_come_from_the_fork_server_with_the_pools_environment(monkeypatch):
    """Workers are forked by the fork server (not this process), which imported the runner
    once; they see this process's environment as it is when the pool starts, not as it was
    when the server started (a data directory set in between must reach them)."""
    from crash_plugins import worker_facts

    from bench.run.executors.local import run_tasks
    from bench.run.workers import prestart

    prestart()  # the server runs with the environment of now...
    monkeypatch.setenv("POISONBENCH_PROBE", "set after the server started")  # ...this is later
    out = list(run_tasks(worker_facts, ["POISONBENCH_PROBE"], lost=lambda p, why: why, jobs=2))
    assert len(out) == 1
    value, preloaded, parent = out[0]
    assert value == "set after the server started"
    assert preloaded  # imported by the server, before the task
    assert parent != os.getpid()  # forked by the server


def test_liveness_of_workers_that_are_not_our_children():
    """When the pool breaks, each worker that started a task is checked: alive, or dead (its
    task is then the one lost). Workers forked by the fork server are not our children."""
    from bench.run.executors.local import _alive

    assert _alive(os.getpid())
    assert _alive(os.getppid())  # running, not our child
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # exited and reaped: gone
    assert not _alive(child.pid)


def test_an_error_raised_in_a_worker_reaches_the_caller_as_itself():
    from crash_plugins import raise_param_error

    from bench.core.types import ParamError
    from bench.run.executors.local import run_tasks

    with pytest.raises(ParamError) as info:
        list(run_tasks(raise_param_error, [5], lost=lambda p, why: pytest.fail(why), jobs=2))
    assert (info.value.field, info.value.message) == ("x[5]", "is bad")


@pytest.mark.slow
def test_kill_9_of_a_worker_fails_its_task_and_the_run_goes_on(tmp_path):
    marker = tmp_path / "worker.pid"
    command, out, env = _crash_run(
        tmp_path, "wait_to_be_killed", POISONBENCH_TEST_MARKER=str(marker)
    )
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), "no cell reached the waiting defense"
        victim = int(marker.read_text())
        assert victim != proc.pid
        os.kill(victim, signal.SIGKILL)  # the worker running that cell, mid-cell
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenProcessPool" not in stderr
    # The worker was running one task, and it alone is lost. The run's last tasks are cut
    # into one piece per defense (bench.run.schedule: these cells share no model fit), and
    # with 2 tasks on 2 workers that is every task: the lost one is the waiting cell alone.
    assert "(6 run, 0 cached, 1 failed)" in stdout
    assert (out / "results.parquet").exists() and (out / "report.md").exists()
    records = _records(out)
    failed = {k: r for k, r in records.items() if r["status"] == "failed"}
    assert len(records) == 6 and len(failed) == 1
    assert {_defense_of(r) for r in failed.values()} == {"wait_to_be_killed"}
    for record in failed.values():
        assert record["rows"][0]["error"] == "worker died: signal 9 (SIGKILL)"
    assert "failed: 1 cell(s): worker died: signal 9 (SIGKILL)" in stderr
    table = pd.read_parquet(out / "results.parquet")
    assert set(table.loc[table["status"] == "failed", "cell_id"]) == set(failed)

    # The rerun computes exactly the failed cells (the waiting defense now lets them through).
    finished = {k: v for k, v in _snapshot(out).items() if k[:-5] not in failed}
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert "(1 run, 5 cached, 0 failed)" in rerun.stdout
    after = _snapshot(out)
    assert {k: after[k] for k in finished} == finished
    assert all(_records(out)[cell_id]["status"] == "ok" for cell_id in failed)


@pytest.mark.slow
def test_a_defense_that_exits_its_process_fails_only_its_task(tmp_path):
    command, out, env = _crash_run(tmp_path, {"name": "exit_process", "code": 3})
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    # the exit_process cell at rate 0.1 lost its worker: its task alone (the run's last tasks
    # are cut into one piece per defense, bench.run.schedule: here every task)
    assert "(6 run, 0 cached, 1 failed)" in done.stdout
    assert (out / "results.parquet").exists() and (out / "report.md").exists()
    records = _records(out)
    assert len(records) == 6
    for record in records.values():  # the other tasks, which the pool break interrupted, ran
        if record["spec"]["rate"] > 0 and _defense_of(record) == "exit_process":
            assert record["status"] == "failed"
            assert record["rows"][0]["error"] == "worker died: exit code 3"
        else:
            assert record["status"] == "ok", record["rows"][0].get("error")
    finished = {k: v for k, v in _snapshot(out).items() if records[k[:-5]]["status"] == "ok"}
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert "(1 run, 5 cached, 1 failed)" in rerun.stdout  # exactly the failed one, again
    after = _snapshot(out)
    assert {k: after[k] for k in finished} == finished


# ---------------------------------------------------------------------------------------------
# Ctrl-C
# ---------------------------------------------------------------------------------------------


def _ignore_sigint() -> None:
    """Start the child as a non-interactive shell starts a background job (``cmd &``): with
    SIGINT ignored. Python then installs no KeyboardInterrupt handler of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "status", "inherit_ignored"),
    [(signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)],
    ids=["sigint-started-in-background", "sigterm"],
)
def test_stop_signal_stops_cleanly_and_prints_the_resume_command(
    tmp_path, signum, status, inherit_ignored
):
    import psutil

    config = _write_config(tmp_path / "slower.yaml", SLOWER)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [*CLI, "run", str(config), "--out", str(out), "--quiet", "--jobs", "2", "--fresh"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint if inherit_ignored else None,
    )
    # Wait for cells, not for time: on a busy machine start-up alone can take many seconds.
    deadline = time.monotonic() + 240
    while _count(out) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr
    assert "Traceback" not in stderr
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, "worker processes outlived the interrupted run"

    done = _count(out)
    assert done < 36, "the signal did not stop the run"
    match = re.search(
        rf"interrupted \({signal.Signals(signum).name}\): (\d+) of 36 cells done", stderr
    )
    assert match and int(match.group(1)) == done, stderr
    resume = stderr.split("to resume, run:")[1].strip().splitlines()[0]
    argv = shlex.split(resume)
    assert argv[0] == "poisonbench" and "--fresh" not in argv  # resuming must not recompute
    finished = _snapshot(out)
    rerun = subprocess.run([*CLI, *argv[1:]], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({36 - done} run, {done} cached, 0 failed)" in rerun.stdout
    after = _snapshot(out)
    assert {name: after[name] for name in finished} == finished


def test_stop_handlers_are_restored_after_an_in_process_run(tmp_path):
    """``main(["run", ...])`` called from Python leaves the caller's signal handlers as they were."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    config = _write_config(tmp_path / "small.yaml", SMALL)
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert {s: signal.getsignal(s) for s in before} == before


# ---------------------------------------------------------------------------------------------
# One run per directory
# ---------------------------------------------------------------------------------------------


def test_second_run_on_a_locked_directory_fails_at_once(tmp_path, capsys, monkeypatch):
    import bench.data.datasets

    loaded: list[str] = []
    load = bench.data.datasets.load_dataset

    def spy(name, *args, **kwargs):
        loaded.append(name)
        return load(name, *args, **kwargs)

    monkeypatch.setattr(bench.data.datasets, "load_dataset", spy)
    config = _write_config(tmp_path / "small.yaml", SMALL)
    out = tmp_path / "run"
    with RunLock(out):
        started = time.monotonic()
        assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
        assert time.monotonic() - started < 30  # failed, did not wait
    # Refused before any dataset was loaded (a big one takes many seconds to load and check).
    assert loaded == []
    err = capsys.readouterr().err
    assert str(out / ".lock") in err
    assert f"PID {os.getpid()}" in err
    assert not (out / "cells").exists()  # nothing was written
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0  # released


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from bench.core.store import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(120)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"PID {holder.pid}"):
            RunLock(out).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert (out / ".lock").exists()  # the stale file stays, but the kernel freed the lock
        with RunLock(out):
            assert (out / ".lock").read_text().split()[0] == str(os.getpid())
    finally:
        holder.kill()
        holder.wait()


def test_lock_message_names_the_real_holder_not_a_stale_pid(tmp_path, monkeypatch):
    """Something holds the lock (a copy of a run directory in use, a shell's ``flock``) but the
    lock file still names an earlier holder that is gone: the message must not blame that PID."""
    import socket

    out = tmp_path / "run"
    out.mkdir()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = int(gone.stdout)
    (out / ".lock").write_text(f"{stale} {socket.gethostname()}\n")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)",
            str(out / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError) as info:
            RunLock(out).acquire()
        message = str(info.value)
        assert str(out / ".lock") in message
        if f"PID {stale}" in message:  # only as the last recorded holder, said to be gone
            assert f"last recorded holder: PID {stale}" in message and "not running" in message
        if Path("/proc/locks").exists():  # Linux: the kernel says who holds it
            assert f"PID {holder.pid}" in message, message
        # Where the kernel does not say (no /proc/locks), the stale PID is named as such.
        import bench.core.store

        monkeypatch.setattr(bench.core.store, "_flock_holders", lambda fd: [])
        with pytest.raises(RunLockedError) as info:
            RunLock(out).acquire()
        assert f"last recorded holder: PID {stale}, not running" in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    with RunLock(out):  # and the lock file then names the new holder
        assert (out / ".lock").read_text().split()[0] == str(os.getpid())


def test_every_atomic_write_uses_a_temporary_name_the_cleanup_removes(tmp_path, monkeypatch):
    """A kill -9 in the middle of any write of a run (records, tables, run.json, config.yaml,
    report.md, plots) leaves that writer's temporary file; the next run must find and delete
    it, so every writer names it by the one scheme the cleanup matches."""
    renamed: list[tuple[Path, Path]] = []
    replace = os.replace

    def spy(src, dst, *args, **kwargs):
        renamed.append((Path(src), Path(dst)))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    config = _write_config(tmp_path / "small.yaml", SMALL)
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    monkeypatch.undo()
    written = {dst.name for _, dst in renamed}
    assert {"results.parquet", "results.csv", "run.json", "config.yaml", "report.md"} <= written
    assert any(name.endswith(".png") for name in written), written  # the report's plots
    assert sum(dst.parent == out / "cells" for _, dst in renamed) == 18
    for src, dst in renamed:
        assert src.parent == dst.parent, (src, dst)  # same folder: the rename is atomic
        src.write_bytes(b"half-written")  # what a kill -9 during this write would leave
    # The cleanup a run does under its lock (a rerun would rewrite only some of these names).
    assert Store(out).remove_temporaries() == len({src for src, _ in renamed})
    assert [src.name for src, _ in renamed if src.exists()] == []
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0


# ---------------------------------------------------------------------------------------------
# Corrupt or foreign records
# ---------------------------------------------------------------------------------------------


def _edit(path: Path, change, rehash: bool = True) -> None:
    record = json.loads(path.read_text())
    change(record)
    if rehash:
        record["checksum"] = record_checksum(record)
    path.write_text(json.dumps(record))


def _other(path: Path) -> Path:
    return next(p for p in sorted(path.parent.glob("*.json")) if p != path)


CORRUPTIONS = {
    "truncated": lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]),
    "empty": lambda p: p.write_text(""),
    "binary": lambda p: p.write_bytes(b"\x00\xff\xfe garbage \x80"),
    "array": lambda p: p.write_text("[1, 2, 3]"),
    "nan-literal": lambda p: p.write_text("NaN"),
    "deeply-nested": lambda p: p.write_text("[" * 200_000 + "]" * 200_000),
    "old-schema": lambda p: _edit(p, lambda r: r.update(schema_version=0)),
    "spec-edited": lambda p: _edit(p, lambda r: r["spec"].update(seed=99)),
    "id-edited": lambda p: _edit(p, lambda r: r.update(cell_id="0" * 16)),
    "metric-edited": lambda p: _edit(p, lambda r: r["rows"][0].update(accuracy=0.123456), False),
    "no-checksum": lambda p: _edit(p, lambda r: r.pop("checksum"), False),
    "bad-status": lambda p: _edit(p, lambda r: r.update(status="great")),
    "rows-not-list": lambda p: _edit(p, lambda r: r.update(rows={"a": 1})),
    "foreign-cell": lambda p: shutil.copyfile(_other(p), p),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_record_is_reported_and_recomputed(kind, reference, tmp_path):
    source, expected = reference
    out = tmp_path / "run"
    shutil.copytree(source, out)
    victim = sorted((out / "cells").glob("*.json"))[3]
    CORRUPTIONS[kind](victim)
    untouched = {k: v for k, v in _snapshot(out).items() if k != victim.name}

    warnings: list[str] = []
    summary = run_config(parse_config(SMALL), out, progress=False, on_warning=warnings.append)

    assert len(warnings) == 1 and str(victim) in warnings[0], warnings
    assert "recomputed" in warnings[0]
    assert (summary.n_run, summary.n_cached) == (1, 17)
    assert Store(out).read(victim.stem) is not None  # rewritten, valid
    after = _snapshot(out)
    assert {k: after[k] for k in untouched} == untouched
    table = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(_comparable(table), _comparable(expected))


def test_corrupt_record_warning_through_the_cli(reference, tmp_path, capsys):
    source, _ = reference
    out = tmp_path / "run"
    shutil.copytree(source, out)
    victim = sorted((out / "cells").glob("*.json"))[0]
    victim.write_text("{not json")
    config = _write_config(tmp_path / "small.yaml", SMALL)
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert f"warning: {victim}: unreadable" in captured.err
    assert "(1 run, 17 cached, 0 failed)" in captured.out


def test_stray_files_in_the_cells_directory_are_ignored(reference, tmp_path):
    source, expected = reference
    out = tmp_path / "run"
    shutil.copytree(source, out)
    (out / "cells" / "notes.txt").write_text("mine")
    (out / "cells" / "zzzz.json").write_text("{}")  # not a cell of this config
    (out / "cells" / ".abc.json.123.tmp").write_text('{"half": ')  # left by a killed run
    summary = run_config(parse_config(SMALL), out, progress=False)
    assert (summary.n_run, summary.n_cached) == (0, 18)
    assert (out / "cells" / "notes.txt").read_text() == "mine"
    assert not (out / "cells" / ".abc.json.123.tmp").exists()
    table = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(_comparable(table), _comparable(expected))


def test_store_refuses_a_record_naming_a_path():
    store = Store(Path("/nonexistent"))
    with pytest.raises(ValueError, match="not a cell id"):
        store.write({"cell_id": "../../etc/passwd", "rows": []})


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"PAR1 this is not parquet"),
        lambda p: p.write_bytes(p.read_bytes()[:100]),
        lambda p: p.write_bytes(b""),
    ],
    ids=["garbage", "truncated", "empty"],
)
def test_corrupt_results_table_is_a_clear_error(damage, reference, tmp_path, capsys):
    source, _ = reference
    out = tmp_path / "run"
    shutil.copytree(source, out)
    damage(out / "results.parquet")
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "results.parquet" in err
    assert "Traceback" not in err
    # a rerun rewrites the table from the records: the damage is repaired
    config = _write_config(tmp_path / "small.yaml", SMALL)
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    assert len(pd.read_parquet(out / "results.parquet")) == 36


@pytest.fixture
def sigint_disposition():
    """Set SIGINT's disposition for one test and restore the inherited one afterwards: the
    test must not depend on what the shell (``cmd &`` starts with SIGINT ignored) or an
    earlier test in the same worker left behind."""
    inherited = signal.getsignal(signal.SIGINT)

    def set_to(handler):
        signal.signal(signal.SIGINT, handler)

    yield set_to
    signal.signal(signal.SIGINT, inherited if inherited is not None else signal.SIG_DFL)


def test_a_stop_signal_during_a_record_write_takes_effect_after_its_count(sigint_disposition):
    """The run loop writes a record and counts it as one step: a signal that arrives in
    between (the cause of "2 of 36 cells done" printed with 3 records on disk) waits for it."""
    from bench.core.signals import held_signals

    sigint_disposition(signal.default_int_handler)
    steps = []
    with pytest.raises(KeyboardInterrupt), held_signals():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # Python runs a pending handler between bytecodes: here, unheld
        steps.append("counted")
    assert steps == ["counted"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_an_ignored_stop_signal_stays_ignored_while_held(sigint_disposition):
    """A process started with SIGINT ignored keeps ignoring it: holding must not turn an
    ignored signal into one that stops the run."""
    from bench.core.signals import held_signals

    sigint_disposition(signal.SIG_IGN)
    steps = []
    with held_signals():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        steps.append("counted")
    assert steps == ["counted"]
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_a_default_action_signal_is_held_then_takes_its_default_action(tmp_path):
    """SIGTERM at its default disposition (the Python API, no CLI handlers) used to be held by
    nothing: it killed the process between the record's write and its count. Now the block
    finishes, then the default action ends the process (status -SIGTERM)."""
    script = (
        "import os, signal, time\n"
        "from bench.core.signals import held_signals\n"
        "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
        "with held_signals():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(0.05)\n"
        "    print('counted', flush=True)\n"
        "print('after', flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.split() == ["counted"]
    assert proc.returncode == -signal.SIGTERM
