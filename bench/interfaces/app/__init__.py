"""``poisonbench app``: a Streamlit explorer (optional extra ``app``).

``main.py`` is the entry script Streamlit runs; ``pages/`` holds the two pages (the live
label-flip lab and the results explorer); ``lab.py`` and ``explorer.py`` compute what the pages
show as pure functions (no Streamlit import), ``charts.py`` builds their Altair charts and
``columns.py`` gives the results table's columns human names, so all are tested directly.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.core.types import PoisonBenchError

#: the entry script Streamlit runs
ENTRY = Path(__file__).with_name("main.py")
#: environment variable through which the CLI hands the run directory to the explorer page
RUN_DIR_ENV = "POISONBENCH_RUN_DIR"
#: the app binds here only: it trains models on request and must not be reachable from outside
ADDRESS = "127.0.0.1"


def require_streamlit() -> None:
    """Raise PoisonBenchError with the install command when Streamlit is not installed."""
    if importlib.util.find_spec("streamlit") is None:
        raise PoisonBenchError(
            "the app needs Streamlit, which is not installed: pip install 'poisonbench[app]'"
        )


def streamlit_command(port: int = 8501) -> list[str]:
    """The ``streamlit run`` command line: localhost only, headless, no usage statistics."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ENTRY),
        f"--server.address={ADDRESS}",
        f"--server.port={int(port)}",
        "--server.headless=true",
        "--server.fileWatcherType=none",
        "--browser.gatherUsageStats=false",
        "--client.toolbarMode=minimal",
        "--global.developmentMode=false",
    ]


def app_env(run_dir: str | Path | None) -> dict[str, str]:
    """The environment for the Streamlit process: ours plus the run directory, if any."""
    env = dict(os.environ)
    if run_dir is not None:
        env[RUN_DIR_ENV] = str(Path(run_dir).resolve())
    return env


def launch(run_dir: str | Path | None = None, port: int = 8501) -> int:
    """Run the app in the foreground on http://127.0.0.1:PORT until stopped; return Streamlit's
    exit status, 0 after Ctrl-C, or 128 + N after signal N (SIGTERM: 143, SIGHUP: 129), which
    stop the Streamlit server too. ``run_dir`` (optional) opens the results explorer on that
    run."""
    if not 1 <= int(port) <= 65535:
        raise PoisonBenchError(f"--port: {port} is not a TCP port (1..65535)")
    check_port_free(int(port))
    require_streamlit()
    if run_dir is not None and not Path(run_dir).is_dir():
        raise PoisonBenchError(f"run directory {run_dir} does not exist")
    print(f"poisonbench app: http://{ADDRESS}:{port}  (Ctrl-C stops it)", file=sys.stderr)
    child: subprocess.Popen | None = None
    with _stop_signals_raise():
        try:
            child = subprocess.Popen(
                streamlit_command(port),
                env=app_env(run_dir),
                preexec_fn=_die_with(os.getpid()) if sys.platform == "linux" else None,
            )
            return child.wait()
        except _Stopped as stop:
            # Pass it on: a signal sent to this process alone (kill PID) never reaches
            # Streamlit. Ctrl-C is the way to stop the app: status 0.
            if child is not None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(stop.signum)
            return 0 if stop.signum == signal.SIGINT else 128 + stop.signum
        finally:
            if child is not None:
                _stop_child(child)


def check_port_free(port: int) -> None:
    """Raise PoisonBenchError ``port P is in use`` when something listens on ADDRESS:port.

    Checked before Streamlit starts: it would otherwise log its own error line and exit 1,
    which reads like a crash of the app. (The port can still be taken in the moment between
    this check and Streamlit's bind; Streamlit then says so itself.)
    """
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as Streamlit's server binds: a connection in TIME_WAIT does not make the port busy
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ADDRESS, port))
        except OSError as exc:
            reason = "in use" if exc.errno == errno.EADDRINUSE else f"unusable ({exc.strerror})"
            raise PoisonBenchError(
                f"port {port} is {reason} on {ADDRESS}; choose another with --port"
            ) from None


class _Stopped(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


#: the signals that stop the app, and its Streamlit child with it
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise :class:`_Stopped` (in the main thread;
    elsewhere no handler can be set). Without this, SIGTERM ended this process at once and left
    the Streamlit server running, still listening on the port."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        for sig in STOP_SIGNALS:  # stopping the child must not be cut short by a second one
            signal.signal(sig, signal.SIG_IGN)
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


#: prctl option: the signal the kernel sends this process when its parent dies (linux/prctl.h)
PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` for the Streamlit child (Linux): the kernel sends it SIGTERM when the
    app's process dies, however it dies (kill -9 included), so the server never outlives it
    and keeps the port. If the parent is already gone when the child starts, it stops now."""

    def preexec() -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # died between the fork and the prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _stop_child(child: subprocess.Popen, grace: float = 5.0) -> None:
    """Wait up to ``grace`` seconds for ``child`` to end, then terminate it (SIGTERM) and wait
    as long again, then kill it."""
    for step in (None, child.terminate, child.kill):
        if step is not None:
            with contextlib.suppress(ProcessLookupError):
                step()
        try:
            child.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
        except _Stopped:
            continue
