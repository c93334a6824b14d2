"""Write a baseline: a run's results table and its ``run.json``, copied into a folder of their
own (``poisonbench baseline RUN DEST``, ``compare --write-baseline``).

Two rules keep a baseline from destroying data or being half written:

* **Only into a baseline folder.** The destination may not be a run directory (one holding
  ``cells/``, ``config.yaml``, ``report.md`` or a run lock): ``baseline RUN_A RUN_B`` would
  replace run B's table. An existing baseline (a folder holding only ``results.parquet``,
  ``results.csv`` and ``run.json``) is replaced only when asked (``force``); a folder holding
  anything else is refused.
* **One step.** Both files are written under temporary names first and read back, then renamed
  over the old ones with the stop signals (``STOP_SIGNALS``) held, so a stop signal
  takes effect after the pair is in place: never the new table beside the old ``run.json``.
  (A kill -9 between the two renames can still split them; the temporary files it leaves
  are hidden ``.NAME.RANDOM.tmp`` files.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from bench.analysis.compare import load_results
from bench.analysis.errors import CompareError
from bench.core.atomic import TEMP_SUFFIX, atomic_path, output_target
from bench.core.signals import held_signals
from bench.core.store import LOCK_NAME, RUN_CONFIG, RUN_META
from bench.core.types import PoisonBenchError

#: the files a baseline folder holds
BASELINE_FILES = frozenset({"results.parquet", "results.csv", RUN_META})
#: what marks a run directory (never a baseline destination)
RUN_MARKERS = ("cells", RUN_CONFIG, "report.md", LOCK_NAME)


def _error(message: str) -> Exception:
    return CompareError(message)


def check_destination(folder: Path, target: Path, force: bool) -> None:
    """Raise CompareError unless a baseline may be written to ``target`` in ``folder``.

    ``folder`` may not be a run directory; existing baseline files are replaced only with
    ``force``; a directory destination that holds other files is refused.
    """
    if folder.exists() and not folder.is_dir():
        raise _error(f"cannot write baseline {target}: {folder} is a file, not a folder")
    if not folder.is_dir():
        return
    markers = [m for m in RUN_MARKERS if os.path.lexists(folder / m)]
    if markers:
        raise _error(
            f"cannot write baseline into {folder}: it is a run directory (it holds "
            f"{', '.join(markers)}), and a baseline there would replace that run's results; "
            "a baseline goes into a folder of its own, e.g. results/baseline/ci"
        )
    entries = sorted(e.name for e in os.scandir(folder) if not _is_temporary(e.name))
    if target.parent == folder and target.name not in BASELINE_FILES:  # a table file path
        present = [n for n in (target.name, RUN_META) if n in entries]
    else:
        others = [n for n in entries if n not in BASELINE_FILES]
        if others:
            shown = ", ".join(others[:5]) + (
                f", ... ({len(others)} in all)" if len(others) > 5 else ""
            )
            raise _error(
                f"cannot write baseline into {folder}: it holds files that are not a "
                f"baseline's ({shown}); a baseline folder holds only results.parquet, "
                "results.csv and run.json: choose an empty or new folder"
            )
        present = entries
    if present and not force:
        raise _error(
            f"{folder} already holds a baseline ({', '.join(present)}); add --force to replace it"
        )


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _temporary(folder: Path, name: str) -> Path:
    fd, path = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    os.chmod(path, 0o644)
    return Path(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_baseline(run: str | Path, dest: str | Path, force: bool = False) -> list[Path]:
    """Copy a run's results table (and its small run.json) into the baseline ``dest``.

    Parameters
    ----------
    run : path
        A run directory, or a results table (``.parquet``/``.csv``).
    dest : path
        The baseline folder (``results.parquet`` and ``run.json`` go in it), or a table file
        path ending in ``.parquet``/``.csv`` (``run.json`` goes beside it).
    force : bool
        Replace an existing baseline there (never a run directory).

    Returns the written paths. Raises CompareError (exit status 2 in the CLI) naming the
    destination when it may not be written, or when writing fails.
    """
    run = Path(run)
    table = load_results(run)[0]
    dest = Path(dest)
    if dest.suffix in (".parquet", ".csv"):
        target, folder = dest, dest.parent
    else:
        target, folder = dest / "results.parquet", dest
    check_destination(folder, target, force)
    run_json = (run if run.is_dir() else run.parent) / RUN_META
    meta = run_json.read_bytes() if run_json.is_file() else None
    final, kind = output_target(target)  # a symlink is kept and what it names written
    if kind != "file":  # a device or a FIFO: written through, never replaced (no two-step)
        with atomic_path(target) as through:
            if target.suffix == ".csv":
                through.write_text(table.to_csv(index=False))
            else:
                table.to_parquet(through, index=False)
        return [target]
    pending: list[tuple[Path, Path]] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = _temporary(final.parent, final.name)
        pending.append((tmp, final))
        if target.suffix == ".csv":
            tmp.write_text(table.to_csv(index=False))
        else:
            table.to_parquet(tmp, index=False)
        _fsync(tmp)
        _read_back(tmp, target.suffix)
        if meta is not None:
            tmp_meta = _temporary(folder, RUN_META)
            pending.append((tmp_meta, folder / RUN_META))
            tmp_meta.write_bytes(meta)
            _fsync(tmp_meta)
        stale = folder / RUN_META if meta is None and (folder / RUN_META).exists() else None
        with held_signals():
            for source, final in pending:
                os.replace(source, final)
            if stale is not None:  # the old baseline's run.json does not describe this table
                stale.unlink()
        pending = []
    except OSError as exc:
        raise _error(f"cannot write baseline {dest}: {exc.strerror or exc}") from None
    finally:
        for source, _ in pending:
            with contextlib.suppress(OSError):
                source.unlink()
    written = [target]
    if meta is not None:
        written.append(folder / RUN_META)
    return written


def _read_back(path: Path, suffix: str) -> None:
    """What was written must read back as a results table (CompareError if not)."""
    import pandas as pd

    try:
        pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pyarrow and pandas raise many kinds; all mean "unusable"
        raise PoisonBenchError(
            f"baseline {path}: written, but does not read back: {type(exc).__name__}: {exc}"
        ) from None
