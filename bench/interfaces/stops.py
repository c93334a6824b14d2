"""Stop signals in the CLI: SIGINT, SIGTERM and SIGHUP raise :class:`Stopped` in the main
thread, and the process's exit status says which one stopped it."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from bench.core.signals import STOP_SIGNALS


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM or SIGHUP: ``STOP_SIGNALS``) arrived; ``signum`` says
    which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(signum: int) -> int:
    """The shell's status for a process stopped by ``signum``: 128 + its number (130, 143)."""
    return 128 + int(signum)


@contextlib.contextmanager
def stop_handlers() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread, once.

    Set explicitly, not inherited: a process started in the background by a non-interactive
    shell (``cmd &`` in a script, a CI runner) inherits SIGINT as *ignored*, and Python then
    installs no KeyboardInterrupt handler at all, so ``kill -INT`` was silently lost and the
    run went on to the end. After the first signal both are ignored while the workers are
    stopped and the resume command is printed (a second Ctrl-C must not cut that short).
    """

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (e.g. the CLI called from a thread)
        return

    def stop(signum: int, frame: object) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
