"""``compare`` and ``report`` never crash: every unusable input is exit 2 with the reason on
stderr (for ``compare``, exit 1 only ever means "regression"), never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.interfaces.cli import main
from bench.run.config import parse_config
from bench.run.orchestrate import run_config

TINY = {
    "name": "bad-inputs",
    "datasets": [{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.2],
    "defenses": ["none"],
    "seeds": 2,
    "recovery": {"fractions": [0, 0.2], "bootstrap": 0},
}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("good") / "run"
    run_config(parse_config(TINY), out, progress=False)
    return out


@pytest.fixture
def copy(good, tmp_path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(good, out)
    return out


def _exit2(capsys, *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err and "internal error" not in err
    return err


def _table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path / "results.parquet")


TABLE_DAMAGE = {
    "metric-as-text": (
        lambda t: t.assign(accuracy=["high"] * len(t)),
        "column accuracy must hold numbers, found 'high'",
    ),
    "rate-as-text": (lambda t: t.assign(rate="lots"), "column rate must hold numbers"),
    "another-shape": (lambda t: pd.DataFrame({"a": [1, 2], "b": [3, 4]}), "lacks columns"),
    "schema-1": (
        lambda t: t.drop(columns=["attack_id"]).assign(attack_params="{}"),
        "written before configuration ids",
    ),
}


@pytest.mark.parametrize("kind", sorted(TABLE_DAMAGE))
def test_a_damaged_table_is_exit_2_for_report_and_compare(kind, good, copy, capsys):
    damage, message = TABLE_DAMAGE[kind]
    damage(_table(copy)).to_parquet(copy / "results.parquet")
    assert message in _exit2(capsys, "report", str(copy))
    assert message in _exit2(capsys, "compare", str(good), str(copy))
    assert message in _exit2(capsys, "compare", str(copy), str(good))


META_DAMAGE = {
    "not-json": ("run.json", "{not json", "cannot read"),
    "a-list": ("run.json", "[1, 2, 3]", "expected a JSON object"),
    "bad-tolerance": ("run.json", json.dumps({"recovery": {"tolerance": "abc"}}), "tolerance"),
    "bad-recovery": ("run.json", json.dumps({"recovery": "x"}), "recovery must be a mapping"),
    "yaml-garbage": ("config.yaml", "a: [unclosed", "cannot read"),
    "yaml-list": ("config.yaml", "- 1\n- 2\n", "expected a YAML mapping"),
}


@pytest.mark.parametrize("kind", sorted(META_DAMAGE))
def test_damaged_run_metadata_is_exit_2_naming_the_file(kind, good, copy, capsys):
    name, text, message = META_DAMAGE[kind]
    (copy / name).write_text(text)
    err = _exit2(capsys, "report", str(copy))
    assert message in err and (name in err or "run.json / config.yaml" in err)
    if name == "run.json":  # compare reads BASE's run.json for its recovery settings
        err = _exit2(capsys, "compare", str(copy), str(good))
        assert message in err


def test_a_run_json_of_another_shape_is_tolerated_where_it_can_be(good, copy, capsys):
    """Fields the report only displays (counts, versions) are left out when malformed."""
    (copy / "run.json").write_text(json.dumps({"summary": {"cells": "many"}, "versions": 3}))
    assert main(["report", str(copy)]) == 0
    assert "_No run.json: counts and wall time unknown._" in (copy / "report.md").read_text()


@pytest.mark.parametrize("option", ["--markdown", "--json"])
def test_unwritable_compare_outputs_are_exit_2(option, good, tmp_path, capsys):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    err = _exit2(capsys, "compare", str(good), str(good), option, str(folder))
    assert f"cannot write {folder}" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = _exit2(capsys, "compare", str(good), str(good), option, str(blocker / "out.md"))
    assert "cannot write" in err and "Not a directory" in err


def test_compare_of_a_run_with_itself_is_exit_0(good, capsys):
    assert main(["compare", str(good), str(good)]) == 0
