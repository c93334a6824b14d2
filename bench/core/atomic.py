"""Atomic file writes: one temporary-name scheme for every file the harness writes, and the one
pattern that finds what a killed writer left behind.

A writer puts its bytes in ``.NAME.RANDOM.tmp`` beside ``NAME`` and renames it over ``NAME``
(``os.replace``, atomic on POSIX): readers see the old file or the new one, never half of
one. Only a regular file (or a path that does not exist yet) is ever replaced: a symlink is
written through to what it points to (the link stays), a character device or a FIFO that has
a reader is written through (``/dev/null``, ``/dev/stdout``, a shell's ``>(...)``), and any
other special file is refused (:func:`output_target`). A process killed mid-write (kill -9, power loss) leaves the temporary file; every such
file matches :data:`TEMP_GLOB`, whatever wrote it (records, tables, ``report.md``, plots), and
:func:`remove_temporaries` deletes them (call it while holding the run lock).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
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
    path, kind = output_target(path)
    if kind != "file":
        with _written_through(path, kind) as tmp:
            yield tmp
        return
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


# --- special targets (issue 22, item 2): never replace what is not a regular file ----------


def output_target(path: str | Path) -> tuple[Path, str]:
    """Where a write to ``path`` goes, and how: ``(target, kind)``.

    ``target`` is ``path`` itself, or for a symlink (a chain of them) the path it finally names,
    so that the link is kept and what it points to is written. ``kind`` is ``"file"`` (a
    regular file or nothing yet: replaced atomically), ``"device"`` (a character device such
    as ``/dev/null``) or ``"fifo"`` (a named or anonymous pipe): both written through, never
    replaced. A symlink loop, a block device, a socket or a FIFO with no reader (writing would
    block forever) is a :class:`WriteError` in one line.
    """
    path = Path(path)
    target = path
    if path.is_symlink():
        kind = _through_link(path)
        if kind is not None:  # /dev/stdout to a pipe: /proc's link names no path to resolve
            return path, kind
        try:
            target = path.resolve(strict=True)
        except FileNotFoundError:
            target = path.resolve()  # a dangling link: create what it names
        except (RuntimeError, OSError) as exc:  # ELOOP (RuntimeError before Python 3.13)
            if isinstance(exc, OSError) and exc.errno != errno.ELOOP:
                raise WriteError.from_os_error(path, exc) from None
            raise WriteError(path, "a symlink loop (refused)") from None
        if target.is_symlink():  # resolve() stopped at a link it could not follow
            raise WriteError(path, "a symlink loop (refused)")
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target, "file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise WriteError(path, "a symlink loop (refused)") from None
        raise WriteError.from_os_error(path, exc) from None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # a folder fails as before, naming it
        return target, "file"
    if stat.S_ISCHR(mode):
        return target, "device"
    if stat.S_ISFIFO(mode):
        return target, "fifo"
    what = "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else None
    raise WriteError(path, f"{what or 'a special file'}, not a regular file (refused)")


def _through_link(path: Path) -> str | None:
    """``"device"`` or ``"fifo"`` when the symlink ``path`` leads to one (opening the link
    reaches it even where, as for ``/proc/self/fd/N`` of a pipe, its target is no path), else
    None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISCHR(mode):
        return "device"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return None


def special_kind(path: str | Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder (``"a FIFO (named
    pipe)"``, ``"a character device"``, ``"a block device"``, ``"a socket"``, ``"a symlink
    loop"``), else None (also when it does not exist). Readers call it before they open a data
    or config file: reading a FIFO with no writer, or a device, would block or never end."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symlink loop"
        return None  # unreadable: the reader says why
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "a socket" if stat.S_ISSOCK(mode) else "a special file"


def _open_through(path: Path, kind: str) -> int:
    """Open a device or FIFO for writing without blocking: a FIFO with no reader is refused."""
    flags = os.O_WRONLY | getattr(os, "O_NOCTTY", 0)
    try:
        if kind == "fifo":
            fd = os.open(path, flags | os.O_NONBLOCK)
            os.set_blocking(fd, True)
            return fd
        return os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise WriteError(path, "a FIFO with no reader (refused: writing would block)") from None
        raise WriteError.from_os_error(path, exc) from None


@contextlib.contextmanager
def _written_through(path: Path, kind: str) -> Iterator[Path]:
    """Yield a private temporary path; when the block ends normally, copy what was written
    there into the device or FIFO ``path`` (opened first, so a refusal comes before any work)."""
    fd = _open_through(path, kind)
    try:
        with tempfile.TemporaryDirectory(prefix="poisonbench-out-") as folder:
            tmp = Path(folder) / f".{path.name}{TEMP_SUFFIX}"
            tmp.touch()
            yield tmp
            try:
                data = tmp.read_bytes()
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                raise WriteError.from_os_error(path, exc) from None
    finally:
        os.close(fd)


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
        output_target(root / name)  # a symlink loop, a socket or a block device: refused now
