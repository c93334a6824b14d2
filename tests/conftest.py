"""Shared fixtures. Optional dependencies skip locally but fail under CI=true (as PyOD does)."""

from __future__ import annotations

import importlib
import os
import signal
import sys

# scikit-learn sets KMP_DUPLICATE_LIB_OK and joblib's loky KMP_INIT_AT_FORK in os.environ when
# first imported. The harness imports them only where it fits (`poisonbench list` imports
# neither), so without this the process-state guard below would blame the first test that fits.
import joblib.externals.loky  # noqa: F401
import numpy as np
import pytest
import sklearn  # noqa: F401

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str):
    """Import ``module`` or skip the test; under CI=true a missing module fails instead."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if IN_CI:
            pytest.fail(f"{module} is required in CI but is not installed")
        pytest.skip(f"{module} is not installed")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def blobs():
    """Three well-separated Gaussian blobs in 4-d: 300 rows, labels 0..2 (float32, int64)."""
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=300, centers=3, n_features=4, cluster_std=1.0, random_state=0)
    return X.astype(np.float32), y.astype(np.int64)


_GUARDED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


#: environment variables third-party libraries set for themselves on first use, in the process
#: that uses them (torch's inductor cache dir, Streamlit's test runner's matplotlib backend,
#: MLflow's tracking URI, the variables a Dask LocalCluster sets for the workers it spawns).
#: The guard puts them back after every test like any other, but does not fail the test for them.
LIBRARY_ENV = frozenset(
    {
        "TORCHINDUCTOR_CACHE_DIR",
        "MPLBACKEND",
        "MLFLOW_TRACKING_URI",
        "MALLOC_TRIM_THRESHOLD_",
        "MKL_NUM_THREADS",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "PYTHONHASHSEED",
        "__DASK_PARENT_PID",
    }
)


def _process_state() -> dict[str, object]:
    return {
        "signals": {sig: signal.getsignal(sig) for sig in _GUARDED_SIGNALS},
        # pytest itself sets PYTEST_CURRENT_TEST per phase
        "environ": {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
        "cwd": os.getcwd(),
        "main": sys.modules.get("__main__"),
    }


@pytest.fixture(autouse=True)
def _tests_restore_process_state():
    """Every test leaves the process as it found it: signal dispositions, the environment and
    the working directory. A test that changes one and does not restore it fails here (and the
    state is put back), instead of breaking a later test in the same xdist worker: a SIGINT
    left at SIG_IGN made a later signal test fail only in some file orders."""
    before = _process_state()
    yield
    after = _process_state()
    changed = []
    for sig, handler in before["signals"].items():
        if after["signals"][sig] != handler:
            changed.append(f"{signal.Signals(sig).name}: {handler!r} -> {after['signals'][sig]!r}")
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    env_before, env_after = before["environ"], after["environ"]
    keys = sorted(
        k for k in env_before.keys() | env_after.keys() if env_before.get(k) != env_after.get(k)
    )
    if set(keys) - LIBRARY_ENV:
        changed.append(f"environment: {', '.join(k for k in keys if k not in LIBRARY_ENV)}")
    if keys:
        for key in keys:
            if key in env_before:
                os.environ[key] = env_before[key]
            else:
                os.environ.pop(key, None)
    if after["main"] is not before["main"]:
        # Streamlit's AppTest leaves its page script as __main__; a run's workers import
        # __main__ the way spawn does, so later runs in this process would start workers
        # that run the page and die (exit code 1). A library's doing: put back, not failed.
        sys.modules["__main__"] = before["main"]  # type: ignore[assignment]
    if after["cwd"] != before["cwd"]:
        changed.append(f"cwd: {before['cwd']} -> {after['cwd']}")
        os.chdir(before["cwd"])
    if changed:
        pytest.fail("the test left process-wide state changed: " + "; ".join(changed))
