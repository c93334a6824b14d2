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

#: how a temporary file of an atomic write ends; it also starts with a dot (hidden)
TEMP_SUFFIX = ".tmp"
#: the glob that matches every temporary file of an atomic write (``.NAME.RANDOM.tmp``)
TEMP_GLOB = f".*{TEMP_SUFFIX}"


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; when the block ends normally, the file
    written there is flushed to disk and replaces ``path`` atomically. When the block raises,
    the temporary file is removed and ``path`` is left as it was.

    ``mode``: the permission bits of the result (``mkstemp`` would make 0600; results are meant
    to be shared). Writers that want a file name (``DataFrame.to_parquet``, ``savefig``) write
    to the yielded path; say the format explicitly, since its suffix is :data:`TEMP_SUFFIX`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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
