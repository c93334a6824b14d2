"""The order tasks go out in (issue 22, item 8): the run's last tasks cut into cells, handed out
longest first by what the run measured, so that its workers finish together; and none of it
changes a number."""

from __future__ import annotations

from collections import deque

import pandas as pd
import pytest

import bench.run.orchestrate
from bench.core.store import read_table
from bench.run.config import parse_config
from bench.run.grid import Cell, Task, make_tasks
from bench.run.orchestrate import run_config
from bench.run.schedule import TAIL_TASKS_PER_WORKER, TailOrder, pieces, split_tail
from tests.tiny import tiny


def _cell(defense: str, seed: int, rate: float = 0.2) -> Cell:
    return Cell(
        {
            "dataset": {"name": "iris", "params": {}},
            "model": {"name": "logreg", "params": {}},
            "attack": {"name": "label_flip", "params": {"mode": "random"}},
            "rate": rate,
            "defense": [{"name": defense, "params": {}}],
            "seed": seed,
        }
    )


def _tasks(groups: int, defenses: tuple[str, ...] = ("none", "iforest", "oracle_filter")):
    todo = [(_cell(d, seed), (0.0, 0.5)) for seed in range(groups) for d in defenses]
    return make_tasks(todo)


def test_the_last_tasks_are_cut_into_cells_and_nothing_is_lost_or_repeated():
    tasks = _tasks(12)
    assert [len(t.items) for t in tasks] == [3] * 12
    split, tail = split_tail(tasks, workers=2)
    cut = 12 - TAIL_TASKS_PER_WORKER * 2
    assert tail == cut
    assert split[:cut] == tasks[:cut]  # the head as it was, in grid order
    assert all(len(t.items) == 1 for t in split[cut:])
    assert len(split) == cut + 3 * (12 - cut)
    before = [cell.cell_id for task in tasks for cell in task.cells]
    after = [cell.cell_id for task in split for cell in task.cells]
    assert after == before  # every cell once, in the same order
    assert all(t.plugins == tasks[0].plugins for t in split)


def test_cells_that_share_a_fit_or_a_first_step_stay_together():
    pipelines = [
        [{"name": "iforest", "params": {}}],
        [{"name": "iforest", "params": {}}, {"name": "label_smoothing", "params": {}}],
        [{"name": "oracle_filter", "params": {}}],
    ]
    cells = [Cell({**_cell("none", 0).spec, "defense": p}) for p in pipelines]
    task = Task(tuple((c, (0.0,)) for c in cells))
    assert [[c.spec["defense"][0]["name"] for c in t.cells] for t in pieces(task)] == [
        ["iforest", "iforest"],  # the second reuses the first's iforest output
        ["oracle_filter"],
    ]
    # a representation defense and the undefended cell share the first-pass model
    spectral = Cell(
        {**_cell("none", 0).spec, "defense": [{"name": "spectral_signature", "params": {}}]}
    )
    whole = Task(((_cell("none", 0), (0.0,)), (spectral, (0.0,))))
    assert pieces(whole) == [whole]
    # a backdoor's cells share the clean model their clean ASR is measured on
    backdoor = {"name": "backdoor", "params": {}}
    task = Task(tuple((Cell({**c.spec, "attack": backdoor}), (0.0,)) for c in cells))
    assert pieces(task) == [task]
    # early-stop cells share the clean reference
    task = Task(
        tuple((Cell({**c.spec, "early_stop": {"metric": "accuracy"}}), (0.0,)) for c in cells)
    )
    assert pieces(task) == [task]


def test_one_worker_or_one_task_is_left_as_it_is():
    tasks = _tasks(3)
    assert split_tail(tasks, workers=1) == (tasks, 3)
    assert split_tail(tasks[:1], workers=4) == (tasks[:1], 1)
    few, tail = split_tail(tasks, workers=4)  # fewer tasks than the tail: all become cells
    assert tail == 0 and len(few) == 9


def _record(cell: Cell, seconds: float, status: str = "ok") -> dict:
    return {"cell_id": cell.cell_id, "seconds": seconds, "status": status}


def test_the_tail_goes_out_longest_first_by_the_times_measured_so_far():
    tasks, tail = split_tail(_tasks(10), workers=2)
    order = TailOrder(tasks, tail)
    # what the head measured: iforest cells slow, the others fast
    for task in tasks[:tail]:
        for cell in task.cells:
            order.observe(_record(cell, 0.7 if "iforest" in str(cell.spec) else 0.05))
    head_left = deque(range(tail - 1, len(tasks)))
    order.arrange(head_left)  # a head task still to go: the tail waits, untouched
    assert list(head_left) == list(range(tail - 1, len(tasks)))
    todo = deque(range(tail, len(tasks)))
    order.arrange(todo)
    slow = [i for i in todo if "iforest" in str(tasks[i].cells[0].spec)]
    assert list(todo)[: len(slow)] == slow  # every slow cell before any fast one
    assert sorted(todo) == list(range(tail, len(tasks)))  # the same tasks, reordered
    assert order.expected(slow[0]) == pytest.approx(0.7)


def test_failed_cells_teach_nothing_and_unknown_kinds_keep_their_place_after_known_ones():
    tasks, tail = split_tail(_tasks(12), workers=2)
    order = TailOrder(tasks, tail)
    head_cells = [cell for task in tasks[:tail] for cell in task.cells]
    for cell in head_cells:
        if "oracle_filter" in str(cell.spec):
            order.observe(_record(cell, 0.3))
        elif "iforest" in str(cell.spec):
            order.observe(_record(cell, 9.0, status="failed"))  # a failure's time: not a cost
    todo = deque(range(tail, len(tasks)))
    order.arrange(todo)
    kinds = [tasks[i].cells[0].spec["defense"][0]["name"] for i in todo]
    n_oracle = kinds.count("oracle_filter")
    assert kinds[:n_oracle] == ["oracle_filter"] * n_oracle
    unknown = [i for i in todo if tasks[i].cells[0].spec["defense"][0]["name"] != "oracle_filter"]
    assert unknown == sorted(unknown)  # grid order among the unmeasured


def test_a_cut_tail_gives_the_same_table_as_whole_tasks_and_one_process(tmp_path, monkeypatch):
    config = parse_config(
        tiny(defenses=["none", "oracle_filter", "label_smoothing"], seeds=3, rates=[0, 0.2, 0.4])
    )
    whole = run_config(config, tmp_path / "one", jobs=1, progress=False)
    seen: list[tuple[list[Task], int]] = []

    def spy(tasks, workers):
        seen.append(split_tail(tasks, workers))
        return seen[-1]

    monkeypatch.setattr(bench.run.orchestrate, "split_tail", spy)
    cut = run_config(config, tmp_path / "two", jobs=2, progress=False)
    assert whole.n_failed == cut.n_failed == 0
    ((tasks, tail),) = seen
    assert tail < len(tasks) and all(len(t.items) == 1 for t in tasks[tail:])  # it was cut
    one, two = read_table(tmp_path / "one"), read_table(tmp_path / "two")
    volatile = [c for c in one.columns if c.startswith("t_")]
    pd.testing.assert_frame_equal(one.drop(columns=volatile), two.drop(columns=volatile))


def test_a_task_put_back_first_after_a_pool_break_stays_first():
    tasks, tail = split_tail(_tasks(12), workers=2)
    order = TailOrder(tasks, tail)
    for task in tasks[:tail]:
        for cell in task.cells:
            order.observe(_record(cell, 0.1))
    todo = deque([tail - 1, *range(tail, len(tasks))])  # a head task retried, first in line
    before = list(todo)
    order.arrange(todo)
    assert list(todo) == before
