"""Issue 22, item 6: the Streamlit server that ``poisonbench app`` starts dies with it, even
when the app is killed with SIGKILL (no handler runs then: the kernel's parent-death signal,
``PR_SET_PDEATHSIG``, is what stops the child). Linux only."""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import require


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_the_app_stops_its_streamlit_child():
    if importlib.util.find_spec("streamlit") is None:  # (importing it would set MPLBACKEND)
        require("streamlit")  # skips here, fails under CI=true
    psutil = require("psutil")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.interfaces.cli", "app", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children = []
    try:
        deadline = time.monotonic() + 180
        while not _listening(port) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _listening(port), "the app did not start"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, "the Streamlit child outlived the app"
        assert not _listening(port)
    finally:
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        proc.kill()
        proc.wait()
