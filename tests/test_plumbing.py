"""Issue 22, item 8: quiet, fast plumbing.

- A healthy ``--jobs N`` pool keeps its workers: loky's memory-leak guard used to stop a worker
  whose memory grew 300 MB after its first task (a first ``import torch``, the bounded dataset
  and stage caches) and warn ``A worker stopped while some jobs were given to the executor``.
"""

from __future__ import annotations

import warnings

from bench.run.executors.local import run_tasks


def test_a_worker_whose_memory_grows_is_kept_and_nothing_is_warned(capfd):
    from worker_tasks import hold_memory

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pids = list(run_tasks(hold_memory, [320] * 6, lost=lambda p, why: why, jobs=2))
    assert all(isinstance(pid, int) for pid in pids), pids
    assert len(set(pids)) == 2, f"workers were replaced: {pids}"
    stopped = [w for w in caught if "A worker stopped" in str(w.message)]
    assert not stopped
    assert "A worker stopped" not in capfd.readouterr().err


# --- start-up: `poisonbench list` and `report` import only what they use -----------------------

TINY = {
    "name": "plumbing",
    "datasets": [{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.2],
    "defenses": ["none", "random_filter"],
    "seeds": 2,
    "recovery": {"fractions": [0, 0.2], "bootstrap": 0},
}

PROBE = """
import contextlib, io, sys
from bench.interfaces.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
heavy = ("sklearn", "scipy.stats", "torch", "pyod", "matplotlib")
print(code, *[m for m in heavy if m in sys.modules])
"""


def _probe(*args: str) -> list[str]:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_list_and_report_import_only_what_they_use(tmp_path):
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    assert _probe("list") == ["0"]  # no scikit-learn, scipy.stats, torch, PyOD or matplotlib
    assert _probe("run", str(config), "--out", str(out), "--quiet", "--no-report")[0] == "0"
    # the report's paired t-intervals need scipy.special only; matplotlib draws its plots
    assert _probe("report", str(out)) == ["0", "matplotlib"]
