"""Atomic file writes: one temporary-name scheme for every file the harness writes, and the one
pattern that finds what a killed writer left behind.

A writer puts its bytes in ``.NAME.RANDOM.tmp`` beside ``NAME`` and renames it over ``NAME``
(``os.replace``, atomic on POSIX): readers see the old file or the new one, never half of
one. A process killed mid-write (kill -9, power loss) leaves the temporary file; every such
file matches :data:`TEMP_GLOB`, whatever wrote it (records, tables, ``report.md``, plots), and
:func:`remove_temporaries` deletes them (call it while holding the run lock).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.core.types import PoisonBenchError


class WriteError(PoisonBenchError):
    """A file could not be written (disk full, file-size limit, read-only or immutable folder,
    a folder where a file should be or the reverse): ``cannot write PATH: REASON``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot write {path}: {reason}")

    @classmethod
    def from_os_error(cls, path: str | Path, exc: OSError) -> WriteError:
        return cls(path, exc.strerror or type(exc).__name__)


#: how a temporary file of an atomic write ends; it also starts with a dot (hidden)
TEMP_SUFFIX = ".tmp"
#: the glob that matches every temporary file of an atomic write (``.NAME.RANDOM.tmp``)
TEMP_GLOB = f".*{TEMP_SUFFIX}"


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; when the block ends normally, the file
        written there is flushed to disk and replaces ``path`` atomically. When the block raises,
        the temporary file is removed and ``path`` is left as it was. A filesystem fault (disk full,
    file-size limit, read-only folder, a folder in the way) is a :class:`WriteError` naming
    ``path``.

        ``mode``: the permission bits of the result (``mkstemp`` would make 0600; results are meant
        to be shared). Writers that want a file name (``DataFrame.to_parquet``, ``savefig``) write
        to the yielded path; say the format explicitly, since its suffix is :data:`TEMP_SUFFIX`.
    """
    path = Path(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise WriteError(path, f"Not a directory ({path.parent} is a file)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as exc:
        raise WriteError.from_os_error(path, exc) from None
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, mode)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError.from_os_error(path, exc) from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_temporaries(folder: str | Path) -> int:
    """Delete the temporary files that killed writers left directly in ``folder``; return how
    many were deleted. Only call it while no writer is active there (under the run lock)."""
    count = 0
    for tmp in Path(folder).glob(TEMP_GLOB):
        with contextlib.suppress(OSError):
            tmp.unlink()
            count += 1
    return count


#: the files a run writes at the top of its directory (checked before any cell runs)
RUN_FILES = ("config.yaml", "results.parquet", "results.csv", "run.json", "report.md")


def check_writable(root: str | Path, subdirs: tuple[str, ...] = ("cells",)) -> None:
    """Raise :class:`WriteError` unless a run can write in ``root``: the folder and its
    ``subdirs`` can be created and written (a probe file is created and removed in each), and
    none of :data:`RUN_FILES` is a folder. Called before any cell runs, so a fault that would
    stop the run at its first write stops it before any work is done."""
    root = Path(root)
    for folder in (root, *(root / d for d in subdirs)):
        if folder.exists() and not folder.is_dir():
            raise WriteError(folder, "a file is in the way (a folder is expected here)")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe.", suffix=TEMP_SUFFIX)
            try:
                os.write(fd, b"x")
            finally:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(probe)
        except OSError as exc:
            raise WriteError.from_os_error(folder, exc) from None
    for name in RUN_FILES:
        if (root / name).is_dir():
            raise WriteError(root / name, "Is a directory (a file is expected here)")
