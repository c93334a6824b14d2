"""Issue 22, item 8: quiet, fast plumbing.

- A healthy ``--jobs N`` pool keeps its workers: loky's memory-leak guard used to stop a worker
  whose memory grew 300 MB after its first task (a first ``import torch``, the bounded dataset
  and stage caches) and warn ``A worker stopped while some jobs were given to the executor``.
"""

from __future__ import annotations

import warnings

from joblib.externals.loky import ProcessPoolExecutor  # noqa: F401  (it sets KMP_INIT_AT_FORK

# on its import: done here, not inside a test, where the process-state guard would flag it)
from bench.run.executors import run_tasks


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
