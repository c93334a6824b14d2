"""The stop signals, and how they are held over a step that must not be split (one
definition for the CLI's handlers, the run loop and the baseline writer). Imports nothing from
the project: the CLI imports it first thing."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: the signals that stop a run cleanly: finished cells kept, the resume command printed (the
#: CLI's handlers, ``bench.interfaces.stops.stop_handlers``; a record's write and count are not split by
#: one, ``bench.run.orchestrate``). SIGHUP too: a closed terminal or ssh session stops the run
#: like SIGTERM (before, it ended the process with no resume hint)
STOP_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []),
)


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Within the block, a stop signal (SIGINT, SIGTERM, SIGHUP) is noted, and takes effect when the
    block ends: the block finishes first.

    Whatever the disposition the process inherited: a Python handler (the CLI's, or Python's
    KeyboardInterrupt) is called afterwards; the default action (``SIG_DFL``, e.g. SIGTERM
    through the Python API) is re-raised afterwards with the default restored, so the process
    still ends as the sender meant; an ignored signal stays ignored. Only holding callable
    handlers made the block hold nothing in a process started with SIGINT ignored (``cmd &``
    in a script), or after an earlier caller left SIG_DFL behind. Only in the main thread (the
    only one that may set handlers); elsewhere it holds nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {
        sig: handler for sig in STOP_SIGNALS if (handler := signal.getsignal(sig)) != signal.SIG_IGN
    }
    for sig in previous:
        signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    if held:
        handler = previous[held[0]]
        if callable(handler):
            handler(held[0], None)
        else:  # SIG_DFL (or a handler not set from Python): the default action, now
            signal.raise_signal(held[0])
