"""The one step that turns a cell spec into plug-in objects (bench.run.resolve), and what the
identity columns do with a stored spec that no longer builds."""

from __future__ import annotations

import copy

import pytest
from tiny import tiny

from bench.core.types import ParamError, UnknownNameError
from bench.data.datasets import load_dataset
from bench.run.config import parse_config
from bench.run.grid import Cell, expand
from bench.run.resolve import bound, resolve
from bench.run.runner import failed_rows, identity_columns
from defenses import DEFENSES


@pytest.fixture(scope="module")
def targeted_cell() -> Cell:
    config = parse_config(
        tiny(
            attacks=[{"name": "label_flip", "mode": "targeted", "source": 1, "target": 2}],
            defenses=["none", "iforest"],
        )
    )
    cells = [c for c in expand(config).cells if c.spec["rate"] > 0]
    return next(c for c in cells if c.spec["defense"][0]["name"] == "iforest")


def test_resolve_binds_the_attack_to_the_data_and_keeps_the_steps(targeted_cell):
    info = load_dataset("iris").info
    resolved = resolve(targeted_cell.spec, info)
    facts = resolved.facts()
    assert (facts["source_class"], facts["target_class"]) == (1, 2)
    assert facts["n_classes"] == 3
    assert [step.name for step in resolved.steps] == ["iforest"]
    assert resolved.bound_step(0).name == "iforest"
    assert resolved.labels()["dataset_label"] == "iris"
    # without the data there is nothing to bind the pair to
    unbound = resolve(targeted_cell.spec).facts()
    assert unbound["source_class"] is None and unbound["n_classes"] is None


def test_a_stored_spec_whose_plugin_is_gone_still_labels_its_failed_rows(targeted_cell):
    spec = copy.deepcopy(targeted_cell.spec)
    spec["defense"] = [{"name": "no_such_defense", "params": {}}]
    with pytest.raises(UnknownNameError, match="no_such_defense"):
        resolve(spec)
    rows = failed_rows(Cell(spec), [0.0, 0.5], "gone")
    assert [r["extra_fraction"] for r in rows] == [0.0, 0.5]
    assert {r["defense_label"] for r in rows} == {"no_such_defense"}
    assert "theory" not in rows[0]  # the plug-in facts need the plug-in


def test_parameters_that_no_longer_build_fall_back_to_names(targeted_cell):
    spec = copy.deepcopy(targeted_cell.spec)
    spec["model"]["params"] = {**spec["model"]["params"], "C": -1.0}
    with pytest.raises(ParamError):
        resolve(spec)
    row = identity_columns(Cell(spec))
    assert row["model_label"] == "logreg" and row["cell_id"] == Cell(spec).cell_id


def test_bound_names_the_entry_that_cannot_take_the_data():
    info = load_dataset("iris").info
    with pytest.raises(ParamError) as caught:
        bound(DEFENSES, "iforest", {"contamination": 2.0}, info, "defenses[3]")
    assert caught.value.field.startswith("defenses[3]")
