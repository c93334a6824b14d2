"""Small ones of issue 28, item 13: SIGHUP stops a run like SIGTERM (resume hint, 129); a stop
signal during ``report`` leaves no temporary plot file; ``app --port P`` with P in use is
``error: port P is in use``, exit 2. (Dotfiles in image folders and ``NA`` class names are in
``test_wrong_data.py``.)"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

from bench.core.signals import STOP_SIGNALS
from bench.interfaces.cli import main
from bench.run.config import parse_config
from bench.run.orchestrate import run_config
from tests.tiny import tiny

ROOT = Path(__file__).resolve().parents[1]

TINY = tiny(seeds=2)


def child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=ROOT
    )


def test_sighup_stops_a_run_with_the_resume_hint(tmp_path):
    assert signal.SIGHUP in STOP_SIGNALS
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "run"
    done = child(
        "import os, signal, sys\n"
        "import bench.run.runner as runner\n"
        "real, calls = runner.run_cell, []\n"
        "def run_cell(*args, **kwargs):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2:  # the terminal closes while the second cell runs\n"
        "        os.kill(os.getpid(), signal.SIGHUP)\n"
        "    return real(*args, **kwargs)\n"
        "runner.run_cell = run_cell\n"
        "from bench.interfaces.cli import main\n"
        f"sys.exit(main(['run', {str(config)!r}, '--out', {str(out)!r}, '--quiet']))\n"
    )
    assert done.returncode == 128 + signal.SIGHUP, done.stderr[-2000:]
    assert "interrupted (SIGHUP): " in done.stderr and "to resume, run:" in done.stderr
    assert "Traceback" not in done.stderr
    assert "interrupted (SIGHUP): 1 of 4 cells done" in done.stderr
    assert len(list((out / "cells").glob("*.json"))) == 1


def test_a_stop_signal_during_report_leaves_no_temporary_plot(tmp_path):
    out = tmp_path / "run"
    run_config(parse_config(TINY), out, jobs=1, progress=False)
    done = child(
        "import os, signal, sys\n"
        "import matplotlib.figure\n"
        "def savefig(self, path, **kwargs):\n"
        "    open(path, 'wb').write(b'half a png')\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    for _ in range(10**7):\n"
        "        pass\n"
        "matplotlib.figure.Figure.savefig = savefig\n"
        "from bench.interfaces.cli import main\n"
        f"sys.exit(main(['report', {str(out)!r}]))\n"
    )
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-2000:]
    assert "interrupted (SIGTERM): the report was not finished" in done.stderr
    assert sorted(p.name for p in out.glob(".*.tmp")) == []
    assert not list(out.glob("*.png"))


def test_app_on_a_port_in_use_is_a_named_error(capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        capsys.readouterr()
        assert main(["app", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: port {port} is in use on 127.0.0.1")
