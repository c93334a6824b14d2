"""Where a run may be written: checked before anything is computed or created.

A run directory is new, empty, or an earlier run's (it holds ``cells/`` or the run lock
``.lock``, which only a run creates). A folder holding anything else is refused (folders named
like a run's files, ``results.parquet/``, are left to the write to report): ``out=""``
once meant the current directory, and a run there replaced the user's own ``config.yaml`` and
``report.md``. Never inside the project's own packages (``bench``, ``attacks``, ``defenses``,
``poisonbench``), and never a path that cannot be written as UTF-8 (a non-UTF-8 byte in
``--out`` computed every cell and then failed to write the table, on every rerun).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from bench.core.store import LOCK_NAME, RUN_CONFIG, RUN_META
from bench.run.config import ConfigError

#: what only a run creates in its directory: one of them makes a folder an earlier run's
RUN_OWN = ("cells", LOCK_NAME)
#: what else a run writes in its directory (a folder of that name is in the way, not data)
RUN_FILES = frozenset(
    {RUN_CONFIG, RUN_META, "results.parquet", "results.csv", "report.md", "dask-scratch"}
)
#: the default MLflow store ``--mlflow`` keeps beside a run (created before the run starts)
TRACKING_FILES = frozenset({"mlflow.db", "mlartifacts"})
#: the project's packages: no run is written inside them
PACKAGES = ("bench", "attacks", "defenses", "poisonbench")
_MAX_SHOWN = 5


def package_dirs() -> list[Path]:
    """The folders of the project's packages as imported here (resolved)."""
    dirs = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            dirs.append(Path(location).resolve())
    return dirs


def check_run_destination(out: str | os.PathLike[str], field: str = "out") -> Path:
    """``out`` as a Path, if a run may be written there; else a ConfigError naming ``field``.

    Parameters
    ----------
    out : path
        The run directory asked for (``--out``, ``pb.run(out=...)``).
    field : str
        The option named in the error.

    Raises
    ------
    ConfigError
        The path is empty, is not valid UTF-8, lies inside one of the project's packages, or
        is a folder that holds files but no earlier run (no ``cells/``, no ``.lock``).
    """
    text = os.fspath(out)
    if not text:
        raise ConfigError(field, "an empty path (leave it out for results/runs/<config name>)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "backslashreplace").decode("ascii", "replace")
        raise ConfigError(
            field, f"{shown!r} is not valid UTF-8 (the results table cannot be written there)"
        ) from None
    path = Path(text)
    resolved = path.expanduser().resolve()
    for package in package_dirs():
        if resolved == package or resolved.is_relative_to(package):
            raise ConfigError(
                field,
                f"{text!r} is inside the {package.name} package ({package}); runs go to "
                "results/runs/<name> or another folder of their own",
            )
    if not path.is_dir():  # new; or a file in the way, which the write reports (WriteError)
        return path
    try:
        entries = sorted(os.listdir(path))
    except OSError:  # unreadable: the lock or the first write reports it (WriteError)
        return path
    foreign = [
        name
        for name in entries
        if name not in TRACKING_FILES
        and (name not in RUN_FILES or not (path / name).is_dir())  # a file a run would replace
    ]
    if foreign and not any(name in entries for name in RUN_OWN):
        shown = ", ".join(foreign[:_MAX_SHOWN])
        if len(foreign) > _MAX_SHOWN:
            shown += f", ... ({len(foreign)} in all)"
        raise ConfigError(
            field,
            f"{text!r} holds files but no run ({shown}); a run directory is new, empty or an "
            "earlier run's (with cells/): choose another folder",
        )
    return path
