"""The order in which a run hands its tasks to the workers: so that they finish together.

Tasks go out in grid order, a few at a time. A run's wall time is its last worker's finish,
so what costs is the end: a worker that takes a long last task while the others have nothing
left keeps them idle for most of it. On the CI gate's 35 three-cell tasks on 2 workers that
was one task, ~0.8 s of a 16 s run, every run. Two steps bound it:

- :func:`split_tail` cuts the run's last tasks into pieces (one per first defense step, where
  the cells share no model fit), so that the last wave is short;
- :class:`TailOrder` hands those pieces out longest first (the classic LPT rule), by what the
  run has measured so far: the mean time of the finished cells of the same kind (the same
  dataset, model, attack and defense at another seed or rate). The gate's ``iforest`` cells
  take ~0.7 s and its others ~0.05 s; started last, one of them left a worker idle ~0.6 s.

Neither changes a number: a cell's results depend on its identity only (see
:mod:`bench.run.grid`), not on which worker runs it or when.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any

from attacks import ATTACKS
from attacks.base import Attack
from bench.core.schema import canonical_json
from bench.run.backdoor import needs_representation
from bench.run.grid import Cell, Task

#: keys of a cell's spec that leave its cost about the same: its seed and poison rate
COST_FREE_KEYS = ("seed", "rate")


#: tasks per worker cut at the end of a run (:func:`split_tail`): enough short pieces that the
#: long ones, handed out first, can be evened out by them
TAIL_TASKS_PER_WORKER = 4


def split_tail(tasks: Sequence[Task], workers: int) -> tuple[list[Task], int]:
    """``tasks`` with the last ``TAIL_TASKS_PER_WORKER × workers`` of them cut into the pieces
    :func:`pieces` allows, which follow the others; and the index of the first of them.

    What a cut costs: the pieces of a task no longer share its split and attack output, so
    each is made again by every worker that runs a piece (for the built-in attacks, a few
    milliseconds); whatever else is shared is never cut apart (see :func:`pieces`).
    """
    if workers <= 1 or len(tasks) <= 1:
        return list(tasks), len(tasks)
    cut = max(0, len(tasks) - TAIL_TASKS_PER_WORKER * workers)
    return [*tasks[:cut], *(piece for task in tasks[cut:] for piece in pieces(task))], cut


def pieces(task: Task) -> list[Task]:
    """``task`` cut into tasks that share nothing but the split and the attack's output: its
    cells grouped by their first defense step (cells whose pipelines start alike share that
    step's output, and the steps after it; :mod:`bench.run.runner`), in grid order.

    A task is left whole when its cells share a fit: representation defenses and the
    undefended cell share the first-pass model, a backdoor's cells the clean model their
    ``backdoor_asr_clean`` is measured on, and early-stop cells the clean reference.
    """
    cells = task.cells
    if any(_shares_a_fit(cell) for cell in cells):
        return [task]
    groups: dict[str, list[tuple[Cell, tuple[float, ...]]]] = {}
    for item in task.items:
        groups.setdefault(canonical_json(item[0].spec["defense"][:1]), []).append(item)
    return [Task(tuple(items), task.plugins) for items in groups.values()]


def _shares_a_fit(cell: Cell) -> bool:
    """Whether ``cell`` reads a model fit that other cells of its task reuse (see
    :func:`pieces`); True for a plug-in the registries cannot say this of."""
    spec = cell.spec
    if spec.get("early_stop") or needs_representation(spec["defense"]):
        return True
    attack = ATTACKS.get(spec["attack"]["name"])
    return getattr(attack, "backdoor_target", None) is not Attack.backdoor_target


def cost_kinds(cell: Cell) -> tuple[str, str]:
    """A cell's two cost keys, most specific first: its spec without seed and rate, and its
    (dataset, model, defense) alone."""
    spec = cell.spec
    kind = {k: v for k, v in spec.items() if k not in COST_FREE_KEYS}
    coarse = [spec.get("dataset"), spec.get("model"), spec.get("defense")]
    return canonical_json(kind), canonical_json(coarse)


class TailOrder:
    """Orders the tasks at the end of ``tasks`` (from ``tail`` on) longest first, by the
    seconds measured for cells of the same kind earlier in the run (a task's: its cells').

    The orchestrator tells it each record (:meth:`observe`); the executor calls
    :meth:`arrange` on its queue of task indices before it hands out the next ones. Tasks with
    a cell of no measured kind keep their place after the others (nothing is known about
    them; grid order is as good a guess as any).
    """

    def __init__(self, tasks: Sequence[Task], tail: int) -> None:
        self.tail = tail
        self._cell_kinds = {cell.cell_id: cost_kinds(cell) for task in tasks for cell in task.cells}
        self._kinds = {
            index: [self._cell_kinds[cell.cell_id] for cell in tasks[index].cells]
            for index in range(tail, len(tasks))
        }
        self._seconds: dict[str, list[float]] = defaultdict(list)

    def observe(self, record: dict[str, Any]) -> None:
        """Note a finished cell's time (``record["seconds"]``), unless it failed."""
        kinds = self._cell_kinds.get(str(record.get("cell_id")))
        seconds = record.get("seconds")
        if kinds is None or record.get("status") != "ok" or seconds is None:
            return
        for kind in kinds:
            self._seconds[kind].append(float(seconds))

    def _cell_expected(self, kinds: tuple[str, str]) -> float | None:
        for kind in kinds:
            seen = self._seconds.get(kind)
            if seen:
                return sum(seen) / len(seen)
        return None

    def expected(self, index: int) -> float | None:
        """The expected seconds of tail task ``index``, or None when one of its cells is of a
        kind nothing has measured."""
        times = [self._cell_expected(kinds) for kinds in self._kinds.get(index, ())]
        if not times or any(t is None for t in times):
            return None
        return float(sum(t for t in times if t is not None))

    def arrange(self, todo: deque[int]) -> None:
        """Put the tail tasks in ``todo`` longest expected first, once nothing before the tail
        is left to hand out (a task put back first in line after a pool break stays first)."""
        if not todo or todo[0] < self.tail:
            return
        expected = {i: self.expected(i) for i in todo}
        order = sorted(todo, key=lambda i: (expected[i] is None, -(expected[i] or 0.0), i))
        todo.clear()
        todo.extend(order)
