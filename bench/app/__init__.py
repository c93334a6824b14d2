"""``poisonbench app``: a Streamlit explorer (optional extra ``app``).

``main.py`` is the entry script Streamlit runs; ``pages/`` holds the two pages (the live
label-flip lab and the results explorer); ``lab.py`` and ``explorer.py`` compute what the pages
show as pure functions (no Streamlit import), ``charts.py`` builds their Altair charts and
``columns.py`` gives the results table's columns human names, so all are tested directly.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from bench.types import PoisonBenchError

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
    """Run the app in the foreground on http://127.0.0.1:PORT until interrupted; return the
    exit status of Streamlit. ``run_dir`` (optional) opens the results explorer on that run."""
    require_streamlit()
    if not 1 <= int(port) <= 65535:
        raise PoisonBenchError(f"--port: {port} is not a TCP port (1..65535)")
    if run_dir is not None and not Path(run_dir).is_dir():
        raise PoisonBenchError(f"run directory {run_dir} does not exist")
    print(f"poisonbench app: http://{ADDRESS}:{port}  (Ctrl-C stops it)", file=sys.stderr)
    try:
        return subprocess.call(streamlit_command(port), env=app_env(run_dir))
    except KeyboardInterrupt:
        return 0
