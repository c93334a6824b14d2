"""The regression gate: ``poisonbench compare`` finds injected regressions, passes identical and
reseeded reruns, and refuses unusable inputs with exit status 2.

Two kinds of injected degradation, both honest about what they test:

* *Table edits*: a copy of a real BASE table with one group's metric moved by a known amount.
  Cell identities stay the same, so this tests the judging (direction, tolerance, naming) with
  exact control over the size of the change.
* *End to end*: the same tiny config run again with a deliberately weakened model (logistic
  regression with ``C = 1e-4``). Alignment is by configuration and model hyperparameters are
  not part of it (they are what a team changes and wants gated), so the weakened cells line up
  with the baseline's and the gate must fail, naming them.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from bench.analysis.compare import (
    CompareError,
    Settings,
    compare,
    compare_tables,
    load_results,
    parse_floors,
    pooled_se,
)
from bench.interfaces.cli import main
from bench.run.config import parse_config
from bench.run.orchestrate import run_config

TINY = {
    "name": "tiny",
    "datasets": [{"name": "iris", "split": {"train": 0.4, "test": 0.3}}],
    "models": ["logreg"],
    "attacks": [
        {"name": "label_flip", "mode": "random"},
        {"name": "label_flip", "mode": "targeted", "source": 1, "target": 2},
    ],
    "rates": [0, 0.3],
    "defenses": ["none", "oracle_filter"],
    "seeds": 3,
    "recovery": {"fractions": [0, 0.25, 0.5], "bootstrap": 200},
}


def _run(tmp_path_factory, name: str, **changes) -> str:
    out = tmp_path_factory.mktemp(name)
    config = parse_config({**TINY, **changes})
    summary = run_config(config, out, jobs=1, progress=False)
    assert summary.n_failed == 0
    return str(out)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> str:
    return _run(tmp_path_factory, "base")


@pytest.fixture(scope="module")
def base_table(base_run) -> pd.DataFrame:
    return load_results(base_run)[0]


def _group(df: pd.DataFrame, attack_label: str, rate: float, defense: str) -> pd.Series:
    return (
        (df["attack_label"] == attack_label)
        & (df["rate"] == rate)
        & (df["defense_label"] == defense)
    )


def _json(capsys_or_path) -> dict:
    return json.loads(open(capsys_or_path).read())


# --- end to end -------------------------------------------------------------------------------


def test_identical_rerun_exits_0(tmp_path_factory, base_run, tmp_path, capsys):
    rerun = _run(tmp_path_factory, "rerun")
    summary = tmp_path / "summary.json"
    assert main(["compare", base_run, rerun, "--json", str(summary)]) == 0
    out = capsys.readouterr().out
    assert "no regression" in out
    data = _json(summary)
    assert data["exit_code"] == 0
    assert data["counts"]["regressions"] == data["counts"]["improvements"] == 0
    assert data["counts"]["common_cells"] == 18
    # every judged metric was actually compared, including the recovery headline
    judged = compare(base_run, rerun).checks
    assert set(judged["metric"]) == {
        "accuracy",
        "macro_f1",
        "attack_success_rate",
        "det_recall",
        "f_needed",
    }
    assert (judged["change"] == 0).all()


def test_weakened_model_exits_1_and_names_the_cells(tmp_path_factory, base_run, tmp_path, capsys):
    weak = _run(tmp_path_factory, "weak", models=[{"name": "logreg", "C": 1e-4}])
    md = tmp_path / "diff.md"
    summary = tmp_path / "summary.json"
    code = main(["compare", base_run, weak, "--markdown", str(md), "--json", str(summary)])
    assert code == 1
    text = md.read_text()
    assert text == capsys.readouterr().out
    assert "regression" in text.splitlines()[0]
    data = _json(summary)
    flagged = {
        (r["attack_label"], r["rate"], r["defense_label"], r["metric"]) for r in data["regressions"]
    }
    # the poisoned, undefended cells lose accuracy and the targeted flip succeeds more often
    assert ("label_flip(random)", 0.3, "none", "accuracy") in flagged
    assert ("label_flip(1→2)", 0.3, "none", "attack_success_rate") in flagged
    assert "| label_flip(random) |" in text.replace("  ", " ").replace("  ", " ")
    # the hyperparameter change is said, not hidden
    assert any("parameters differ" in n and "0.0001" in n for n in data["notes"])


def test_rerun_with_other_seeds_stays_within_tolerance(tmp_path_factory, base_run, capsys):
    other = _run(tmp_path_factory, "seeds", seeds=[3, 4, 5])
    assert main(["compare", base_run, other]) == 0
    out = capsys.readouterr().out
    result = compare(base_run, other)
    # no cell is common (seeds are part of identity), yet every group is judged over seeds
    assert result.n_common_cells == 0
    assert len(result.only_in_base) == len(result.only_in_new) == 18
    assert len(result.checks) > 0 and (result.checks["verdict"] == "ok").all()
    assert "Only in BASE" in out and "Only in NEW" in out
    # the seed-to-seed changes are real (not zero), the tolerance absorbs them
    assert (result.checks["change"].abs() > 0).any()


def test_write_baseline_refreshes_and_then_passes(tmp_path, base_run, capsys):
    dest = tmp_path / "baseline"
    assert main(["baseline", base_run, str(dest)]) == 0
    # small files only: the table and run metadata, never the cell records
    assert sorted(p.name for p in dest.iterdir()) == ["results.parquet", "run.json"]
    edited = load_results(base_run)[0]
    edited["accuracy"] = edited["accuracy"] - 0.2
    new = tmp_path / "new.parquet"
    edited.to_parquet(new)
    assert main(["compare", str(dest), str(new)]) == 1
    assert main(["compare", str(dest), str(new), "--write-baseline"]) == 0
    assert main(["compare", str(dest), str(new)]) == 0
    first = tmp_path / "first"
    assert main(["compare", str(first), base_run, "--write-baseline"]) == 0
    assert (first / "results.parquet").exists()
    capsys.readouterr()


# --- judging, on edited copies of a real table --------------------------------------------------


def test_injected_accuracy_drop_is_flagged_only_where_injected(base_table):
    new = base_table.copy()
    where = _group(new, "label_flip(random)", 0.3, "oracle_filter") & (new["extra_fraction"] == 0)
    new.loc[where, "accuracy"] -= 0.2
    result = compare_tables(base_table, new, Settings(metrics=("accuracy",)))
    assert result.exit_code == 1
    reg = result.regressions
    assert len(reg) == 1
    row = reg.iloc[0]
    assert (row["attack_label"], row["rate"], row["defense_label"]) == (
        "label_flip(random)",
        0.3,
        "oracle_filter",
    )
    assert row["change"] == pytest.approx(-0.2)
    assert "oracle_filter" in result.to_markdown()


@pytest.mark.parametrize(
    ("metric", "defense", "delta", "expected"),
    [
        ("accuracy", "none", +0.15, "improvement"),
        ("macro_f1", "none", -0.15, "regression"),
        ("attack_success_rate", "none", +0.4, "regression"),
        ("attack_success_rate", "none", -0.4, "improvement"),
        ("det_recall", "oracle_filter", -0.3, "regression"),
        ("accuracy", "none", -0.01, "ok"),  # below the 0.02 floor
    ],
)
def test_direction_of_each_metric(base_table, metric, defense, delta, expected):
    new = base_table.copy()
    key = ("label_flip(1→2)", 0.3, defense)
    new.loc[_group(new, *key), metric] += delta
    result = compare_tables(base_table, new, Settings(metrics=(metric,)))
    indexed = result.checks.set_index(["attack_label", "rate", "defense_label"])
    assert indexed.loc[key, "verdict"] == expected
    assert (indexed.drop(index=key)["verdict"] == "ok").all()
    assert result.exit_code == (1 if expected == "regression" else 0)


def test_extra_clean_data_needed_going_up_is_a_regression(base_table):
    # a curve that never comes back: the f = 0.5 accuracy of a group that recovered drops hard
    new = base_table.copy()
    where = _group(new, "label_flip(random)", 0.3, "oracle_filter")
    new.loc[where, "accuracy"] -= 0.3
    result = compare_tables(base_table, new, Settings(metrics=("f_needed",), n_boot=100))
    row = result.checks.set_index(["attack_label", "rate", "defense_label"]).loc[
        ("label_flip(random)", 0.3, "oracle_filter")
    ]
    assert row["new_mean"] > row["base_mean"]
    assert row["verdict"] == "regression"


def test_tolerance_is_the_larger_of_floor_and_k_standard_errors(base_table):
    new = base_table.copy()
    where = _group(new, "label_flip(random)", 0.3, "none") & (new["extra_fraction"] == 0)
    # spread the seeds widely around a small mean drop: floor says regression, k × SE does not
    idx = new.index[where]
    new.loc[idx, "accuracy"] = base_table.loc[idx, "accuracy"] - 0.05 + np.array([-0.2, 0, 0.2])
    loose = compare_tables(base_table, new, Settings(metrics=("accuracy",), k=3))
    tight = compare_tables(base_table, new, Settings(metrics=("accuracy",), k=0))
    assert loose.exit_code == 0 and tight.exit_code == 1
    assert loose.checks["tolerance"].max() > 0.02
    # a floor above the change silences even k = 0
    floored = compare_tables(
        base_table, new, Settings(metrics=("accuracy",), k=0, floors={"accuracy": 0.1})
    )
    assert floored.exit_code == 0


def test_newly_failed_cell_is_a_regression_and_one_sided_cells_are_listed(base_table):
    new = base_table.copy()
    where = _group(new, "label_flip(random)", 0.3, "none") & (new["seed"] == 1)
    new.loc[where, "status"] = "failed"
    new.loc[where, "error"] = "RuntimeError: boom"
    new = new[~(_group(new, "label_flip(1→2)", 0.3, "none") & (new["seed"] == 2))]
    result = compare_tables(base_table, new, Settings(metrics=("accuracy",)))
    assert result.exit_code == 1
    assert list(result.failed_in_new["seed"]) == [1]
    assert list(result.only_in_base["seed"]) == [2]
    assert result.only_in_new.empty
    md = result.to_markdown()
    assert "boom" in md and "Only in BASE" in md


def test_pooled_se():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0])
    # pooled variance 1, SE = sqrt(1/3 + 1/3)
    assert pooled_se(a, b) == pytest.approx(np.sqrt(2 / 3))
    assert np.isnan(pooled_se(np.array([1.0]), np.array([2.0])))
    assert pooled_se(np.ones(3), np.ones(3)) == 0


def test_parse_floors():
    assert parse_floors(["f_needed=0.5"]) == {"f_needed": 0.5}
    floors = parse_floors(["0.01"])
    assert floors["accuracy"] == floors["det_recall"] == 0.01 and "f_needed" not in floors
    with pytest.raises(CompareError, match="METRIC=NUMBER"):
        parse_floors(["accuracy=lots"])


# --- unusable inputs: exit 2 with the reason ----------------------------------------------------


def _exit2(capsys, *args: str) -> str:
    assert main(["compare", *args]) == 2
    return capsys.readouterr().err


def test_missing_input(tmp_path, base_run, capsys):
    assert "no such file" in _exit2(capsys, str(tmp_path / "nope"), base_run)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert "no results.parquet" in _exit2(capsys, base_run, str(empty))


def test_corrupt_parquet(tmp_path, base_run, capsys):
    bad = tmp_path / "results.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file")
    assert "cannot read results table" in _exit2(capsys, base_run, str(bad))


def test_missing_columns(tmp_path, base_table, base_run, capsys):
    path = tmp_path / "t.csv"
    base_table.drop(columns=["rate", "seed"]).to_csv(path, index=False)
    err = _exit2(capsys, base_run, str(path))
    assert "lacks columns rate, seed" in err


def test_no_common_cells(tmp_path, base_table, base_run, capsys):
    path = tmp_path / "other.parquet"
    other = base_table.copy()
    other["dataset_id"] = other["dataset_id"].str.replace("iris", "wine")
    other.to_parquet(path)
    assert "no common cells" in _exit2(capsys, base_run, str(path))


def test_bad_options(base_run, capsys):
    assert "valid: accuracy" in _exit2(capsys, base_run, base_run, "--metrics", "accuracy,speed")
    assert "abs-floor" in _exit2(capsys, base_run, base_run, "--abs-floor", "speed=1")
    assert "k:" in _exit2(capsys, base_run, base_run, "--k", "-1")


def test_copy_of_a_run_dir_compares_equal(tmp_path, base_run):
    copy = tmp_path / "copy"
    shutil.copytree(base_run, copy)
    assert compare(base_run, copy).exit_code == 0


# --- no holes: NaN and missing metrics, paired seeds ------------------------------------------------


def test_a_metric_that_became_nan_everywhere_is_a_regression(base_table, tmp_path, capsys):
    new = base_table.copy()
    new["accuracy"] = np.nan
    result = compare_tables(base_table, new, Settings(metrics=("accuracy",)))
    assert result.exit_code == 1
    judged = base_table[base_table["extra_fraction"] == 0].groupby(
        ["attack_id", "rate", "defense_id"]
    )
    assert len(result.regressions) == judged.ngroups  # every configuration, none dropped
    assert result.regressions["reason"].str.contains("NaN in NEW for every seed").all()
    # through the CLI: exit 1, and the diff says how many checks ran
    path = tmp_path / "nan.parquet"
    new.to_parquet(path)
    base_path = tmp_path / "base.parquet"
    base_table.to_parquet(base_path)
    assert main(["compare", str(base_path), str(path), "--metrics", "accuracy"]) == 1
    out = capsys.readouterr().out
    assert f"**{len(result.checks)} checks ran**" in out


def test_one_seed_turning_nan_is_a_regression(base_table):
    new = base_table.copy()
    where = _group(new, "label_flip(random)", 0.3, "none") & (new["seed"] == 1)
    new.loc[where, "accuracy"] = np.nan
    result = compare_tables(base_table, new, Settings(metrics=("accuracy",)))
    assert result.exit_code == 1
    (row,) = result.regressions.to_dict("records")
    assert row["attack_label"] == "label_flip(random)" and "seed(s) 1" in row["reason"]


def test_a_metric_column_missing_from_new_is_unusable_input(base_table, tmp_path, capsys):
    path = tmp_path / "no-accuracy.parquet"
    base_table.drop(columns=["accuracy"]).to_parquet(path)
    base_path = tmp_path / "base.parquet"
    base_table.to_parquet(base_path)
    err = _exit2(capsys, str(base_path), str(path))
    assert "lacks the metric column accuracy" in err


def test_skipped_checks_are_counted_with_their_reason(base_table):
    result = compare_tables(
        base_table, base_table.copy(), Settings(metrics=("attack_success_rate",))
    )
    # the attack success rate exists only for the targeted flip: the others are skipped, said
    assert len(result.checks) > 0 and len(result.skipped) > 0
    assert set(result.skipped["reason"]) == {"not defined in BASE"}
    counts = result.to_json()["counts"]
    assert counts["checks"] == len(result.checks) and counts["skipped"] == len(result.skipped)
    assert f"{len(result.skipped)} skipped" in result.to_markdown()


def test_same_seeds_are_compared_paired(base_table):
    # a constant shift on every seed: paired SE is 0, so only the floor decides
    new = base_table.copy()
    where = _group(new, "label_flip(random)", 0.3, "none") & (new["extra_fraction"] == 0)
    new.loc[where, "accuracy"] -= 0.03
    paired = compare_tables(base_table, new, Settings(metrics=("accuracy",), k=3))
    row = paired.checks.set_index(["attack_label", "rate", "defense_label"]).loc[
        ("label_flip(random)", 0.3, "none")
    ]
    assert bool(row["paired"]) and row["se"] == pytest.approx(0, abs=1e-12)
    assert row["verdict"] == "regression"  # 0.03 > the 0.02 floor
    # with other seeds the comparison cannot pair and the pooled SE absorbs the same shift
    reseeded = new.copy()
    reseeded["seed"] = reseeded["seed"] + 10
    unpaired = compare_tables(base_table, reseeded, Settings(metrics=("accuracy",), k=3))
    row = unpaired.checks.set_index(["attack_label", "rate", "defense_label"]).loc[
        ("label_flip(random)", 0.3, "none")
    ]
    assert not bool(row["paired"]) and row["se"] > 0
