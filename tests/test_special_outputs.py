"""Issue 22, item 2: an output path that is not a regular file is never replaced.

A character device is written through (``/dev/null`` discards, ``/dev/full`` is ``No space
left on device`` in one line), a FIFO with a reader is written through and one without a reader
is refused at once (never a hang), a symlink is written through to what it points to (the link
stays), and a symlink loop, a block device or a socket is refused. Every output path goes
through :func:`bench.core.atomic.atomic_path`; each is tried here: ``compare --markdown`` and
``--json``, the baseline destination (``baseline`` and ``compare --write-baseline``), the run
directory ``--out``, the table, ``report.md`` and a plot.

Device nodes are made with ``mknod`` (root only; those cases skip otherwise).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import threading
from pathlib import Path

import pytest
import yaml

from bench.core.atomic import WriteError, atomic_write_text
from bench.interfaces.cli import main
from tests.tiny import tiny

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mknod needs root")

TINY = tiny(
    name="outputs",
    datasets=[{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
    recovery={"fractions": [0], "bootstrap": 0},
)  # 2 cells, well under a second


def _char_device(path: Path, minor: int) -> Path:
    """A character device node: minor 3 is a null device, 7 a full one (Linux's mem major 1)."""
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    return path


def _kind(path: Path) -> str:
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISCHR(mode):
        return "char"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "file" if stat.S_ISREG(mode) else "other"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("outputs")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    assert main(["run", str(config), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


# --- the write itself ------------------------------------------------------------------------


def test_a_fifo_without_a_reader_is_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(WriteError, match="a FIFO with no reader"):
        atomic_write_text(fifo, "x")
    assert _kind(fifo) == "fifo"
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temporary left beside it


def test_a_fifo_with_a_reader_is_written_through(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    ready = threading.Event()

    def read() -> None:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        ready.set()
        os.set_blocking(fd, True)
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                if chunks:
                    break
                continue  # no writer yet
            chunks.append(chunk)
        os.close(fd)
        got.append(b"".join(chunks))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait(5)
    atomic_write_text(fifo, "hello " * 20000)  # more than a pipe buffer
    reader.join(10)
    assert got == [("hello " * 20000).encode()]
    assert _kind(fifo) == "fifo"


def test_a_symlink_is_written_through_and_kept(tmp_path):
    real = tmp_path / "real.md"
    real.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    atomic_write_text(link, "new")
    assert _kind(link) == "link" and os.readlink(link) == str(real)
    assert real.read_text() == "new"
    dangling = tmp_path / "dangling.md"
    dangling.symlink_to(tmp_path / "made.md")
    atomic_write_text(dangling, "made")
    assert _kind(dangling) == "link" and (tmp_path / "made.md").read_text() == "made"


def test_a_symlink_loop_is_refused(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(WriteError, match="symlink loop"):
        atomic_write_text(tmp_path / "a", "x")
    assert _kind(tmp_path / "a") == "link" and _kind(tmp_path / "b") == "link"


def test_a_socket_is_refused(tmp_path):
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(WriteError, match="a socket, not a regular file"):
            atomic_write_text(path, "x")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


@needs_root
def test_a_character_device_is_written_through_never_replaced(tmp_path):
    null = _char_device(tmp_path / "null", 3)
    atomic_write_text(null, "discarded")
    assert _kind(null) == "char"
    full = _char_device(tmp_path / "full", 7)
    with pytest.raises(WriteError, match="No space left on device"):
        atomic_write_text(full, "x")
    assert _kind(full) == "char"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "null"]


@needs_root
def test_a_block_device_is_refused(tmp_path):
    node = tmp_path / "blk"
    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(7, 200))  # a loop device minor, never opened
    with pytest.raises(WriteError, match="a block device, not a regular file"):
        atomic_write_text(node, "x")
    assert stat.S_ISBLK(os.lstat(node).st_mode)


# --- every output path of the CLI ------------------------------------------------------------


def _special(kind: str, path: Path, target: Path) -> None:
    """Make ``path`` a special file of ``kind`` (``target``: where a symlink points)."""
    if kind == "full":
        _char_device(path, 7)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        target.write_text("old")
        path.symlink_to(target)


def _check(kind: str, path: Path, target: Path, code: int, err: str) -> None:
    """A device or FIFO: one ``error:`` line naming it, exit 2, and it is still what it was;
    a symlink: still a link, and its target was written."""
    if kind == "link":
        assert code in (0, 1), err  # compare may exit 1 (regression) but must have written
        assert _kind(path) == "link" and target.read_bytes() != b"old"
        return
    reason = "No space left on device" if kind == "full" else "a FIFO with no reader"
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and str(path) in lines[0] and reason in lines[0], err
    assert "Traceback" not in err
    assert _kind(path) == ("char" if kind == "full" else "fifo")


KINDS = [pytest.param("full", marks=needs_root), "fifo", "link"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flag", ["--markdown", "--json"])
def test_compare_outputs(run_dir, tmp_path, capsys, kind, flag):
    out, target = tmp_path / "out", tmp_path / "target"
    _special(kind, out, target)
    code = main(["compare", str(run_dir), str(run_dir), flag, str(out)])
    _check(kind, out, target, code, capsys.readouterr().err)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["baseline", "write-baseline"])
def test_baseline_destination(run_dir, tmp_path, capsys, kind, how):
    dest = tmp_path / "base.parquet"
    target = tmp_path / "target.parquet"
    _special(kind, dest, target)
    if how == "baseline":
        # an existing destination is replaced only with --force (issue 28): the node stays
        code = main(["baseline", str(run_dir), str(dest), "--force"])
    else:
        code = main(["compare", str(dest), str(run_dir), "--write-baseline"])
    err = capsys.readouterr().err
    if kind == "link" and how == "baseline":
        assert code == 0, err
        assert _kind(dest) == "link"
        assert target.stat().st_size > 1000  # a parquet table now, not "old"
    elif kind == "link":  # "old" is no table: compare refuses the baseline, and changes nothing
        assert code == 2 and _kind(dest) == "link" and target.read_text() == "old", err
    elif how == "write-baseline":  # a device or FIFO is no table either: refused, kept
        assert code == 2 and "Traceback" not in err, err
        assert _kind(dest) == ("char" if kind == "full" else "fifo")
    else:
        _check(kind, dest, target, code, err)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["report.md", "iris-logreg-recovery.png"])
def test_report_and_plot_outputs(run_dir, tmp_path, capsys, kind, name):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, symlinks=True)
    (run / name).unlink()
    target = tmp_path / "target"
    _special(kind, run / name, target)
    code = main(["report", str(run)])
    _check(kind, run / name, target, code, capsys.readouterr().err)


@pytest.mark.parametrize("kind", KINDS)
def test_the_table_of_a_run(run_dir, tmp_path, capsys, kind):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, symlinks=True)
    (run / "results.csv").unlink()
    target = tmp_path / "target.csv"
    _special(kind, run / "results.csv", target)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    code = main(["run", str(config), "--out", str(run), "--quiet", "--no-report"])
    _check(kind, run / "results.csv", target, code, capsys.readouterr().err)


@pytest.mark.parametrize("kind", KINDS)
def test_the_run_directory(tmp_path, capsys, kind):
    out, target = tmp_path / "out", tmp_path / "target"
    _special(kind, out, target)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    code = main(["run", str(config), "--out", str(out), "--quiet", "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.startswith(f"error: cannot write {out}"), err
    assert _kind(out) == {"full": "char", "fifo": "fifo", "link": "link"}[kind]
    if kind == "link":  # a link to a file: the file is in the way, and left as it was
        assert target.read_text() == "old"


def test_a_link_to_an_anonymous_pipe_is_written_through(tmp_path):
    # /dev/stdout when stdout is a pipe: /proc/self/fd/N names "pipe:[...]", which is no path
    read_fd, write_fd = os.pipe()
    try:
        link = tmp_path / "stdout"
        link.symlink_to(f"/proc/self/fd/{write_fd}")
        atomic_write_text(link, "through the pipe\n")
        os.close(write_fd)
        write_fd = -1
        assert os.read(read_fd, 1024) == b"through the pipe\n"
        assert link.is_symlink()
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
