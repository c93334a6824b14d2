"""The fork server's last preload (:data:`bench.run.workers.PRELOAD`): freeze what it imported.

Importing this module calls :func:`gc.freeze`, so it is imported by the fork server only, once,
after the runner and the libraries. Every object the server then holds moves to the
collector's permanent generation:

- each worker forked from the server inherits that: its collections skip the shared heap
  (and so leave its pages shared instead of writing to them);
- the server's own exit, when the run's process ends, no longer walks ~170k objects in its
  final collection (~0.25 s of CPU on these cores, which overlapped the start of the next
  command: ``make gate``'s compare).
"""

from __future__ import annotations

import gc

gc.freeze()
