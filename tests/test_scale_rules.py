"""The rules that keep ``report`` and ``compare`` fast on cluster-sized tables give the same
answers: reading fewer columns or text as categories, comparing only the configurations both
sides have, and the cap on plotted (dataset, model) pairs.

The data is the committed CI baseline (525 rows of one dataset and model, no cell is run),
replicated into several (dataset, model) pairs with their own model ids and worse or better
accuracies, so that the ranking of pairs is known by construction.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.analysis.compare import Settings, compare, compare_tables, unread_columns
from bench.analysis.plots import pairs_note, plot_pairs
from bench.analysis.report import write_report
from bench.core.schema import NESTED_COLUMNS, NO_ATTACK_ID, NO_DEFENSE_ID
from bench.core.store import plain_strings, read_columns, read_table, write_parquet
from bench.core.types import PoisonBenchError

BASELINE = Path(__file__).parents[1] / "results" / "baseline" / "ci"


def _replicated(n_models: int, shifts: list[float]) -> pd.DataFrame:
    """The baseline with ``n_models`` model ids (C = 2**i); copy i's attacked rows lose
    ``shifts[i]`` accuracy (its clean rows stay), so copy i's worst attack costs that more."""
    base = read_table(BASELINE)
    model = json.loads(base["model_id"].iloc[0])
    copies = []
    for i in range(n_models):
        c = base.copy()
        if i:
            params = {**model["params"], "C": model["params"]["C"] * 2.0**i}
            mid = json.dumps({**model, "params": params}, sort_keys=True, separators=(",", ":"))
            c["model_id"] = mid
            c["model_label"] = f"logreg(C={2.0**i:g})"
            c["cell_id"] = c["cell_id"].str.slice(0, 14) + f"{i:02x}"
        attacked = (c["attack_id"] != NO_ATTACK_ID).to_numpy()
        c.loc[attacked, "accuracy"] = c.loc[attacked, "accuracy"] - shifts[i]
        copies.append(c)
    return pd.concat(copies, ignore_index=True)


def _worst_cost(df: pd.DataFrame) -> pd.Series:
    """Independent computation: per model id, clean mean accuracy minus the lowest mean of an
    undefended (attack, rate) at f = 0."""
    f0 = df[(df["status"] == "ok") & (df["extra_fraction"] == 0)]
    f0 = f0[f0["defense_id"] == NO_DEFENSE_ID]
    means = f0.groupby(["model_id", "attack_id", "rate"])["accuracy"].mean().reset_index()
    clean = means[means["attack_id"] == NO_ATTACK_ID].set_index("model_id")["accuracy"]
    worst = means[means["attack_id"] != NO_ATTACK_ID].groupby("model_id")["accuracy"].min()
    return clean - worst


def test_read_table_categories_and_exclude_give_the_same_table():
    full = read_table(BASELINE)
    categorical = read_table(BASELINE, categories=True)
    assert any(isinstance(t, pd.CategoricalDtype) for t in categorical.dtypes)
    # numbers are never read as categories
    assert pd.api.types.is_float_dtype(categorical["accuracy"])
    pd.testing.assert_frame_equal(plain_strings(categorical), full)
    nested = [c for c in NESTED_COLUMNS if c in full]
    assert nested
    slim = read_table(BASELINE, exclude=[*nested, "not_a_column"])
    assert not set(nested) & set(slim.columns)
    pd.testing.assert_frame_equal(slim, full.drop(columns=nested))


def test_compare_reads_less_and_judges_the_same(tmp_path):
    table = read_table(BASELINE)
    new = table.copy()
    worse = (new["attack"] == "feature_noise").to_numpy()
    new.loc[worse, "accuracy"] = new.loc[worse, "accuracy"] - 0.05  # a regression to find
    (tmp_path / "new").mkdir()
    write_parquet(new, tmp_path / "new" / "results.parquet")
    from_files = compare(BASELINE, tmp_path / "new")  # slim categorical reads
    meta = json.loads((BASELINE / "run.json").read_text())["recovery"]
    settings = Settings(recovery_metric=meta["metric"], recovery_tolerance=meta["tolerance"])
    in_memory = compare_tables(table, new, settings, str(BASELINE), str(tmp_path / "new"))
    assert from_files.exit_code == 1 and len(from_files.regressions)
    assert from_files.to_json() == in_memory.to_json()
    assert from_files.to_markdown() == in_memory.to_markdown()
    assert "confusion" not in unread_columns("attack_success_rate")
    assert "confusion" in unread_columns("accuracy")


def test_compare_against_a_larger_grid_judges_only_the_common_part():
    base = read_table(BASELINE)
    small_new = base.copy()
    small_new["accuracy"] = small_new["accuracy"] - 0.01
    # NEW also holds four more model ids (other pairs): listed as one-sided, never judged
    extra = _replicated(5, [0.0, 0.1, 0.2, 0.0, 0.3]).iloc[len(base) :]
    big_new = pd.concat([small_new, extra], ignore_index=True)
    settings = Settings(n_boot=200)
    small = compare_tables(base, small_new, settings).to_json()
    big = compare_tables(base, big_new, settings).to_json()
    n_extra_cells = extra.drop_duplicates("cell_id").shape[0]
    assert big["counts"]["only_in_new"] == n_extra_cells
    assert len(big.pop("only_in_new")) == n_extra_cells
    small.pop("only_in_new")
    big["counts"]["only_in_new"] = small["counts"]["only_in_new"]
    assert big == small


def test_plot_pairs_keeps_the_costliest_pairs_in_label_order():
    shifts = [0.0, 0.08, 0.02, 0.15, 0.05]
    df = _replicated(5, shifts)
    pairs, total = plot_pairs(df, "accuracy", limit=2)
    assert total == 5
    cost = _worst_cost(df).sort_values(ascending=False)
    expected = set(cost.index[:2])
    assert {m for _, m in pairs} == expected
    labels = df.drop_duplicates("model_id").set_index("model_id")["model_label"]
    assert [labels[m] for _, m in pairs] == sorted(labels[m] for _, m in pairs)
    assert plot_pairs(df, "accuracy", limit=0)[0] == plot_pairs(df, "accuracy", limit=None)[0]
    assert len(plot_pairs(df, "accuracy", limit=5)[0]) == 5
    assert pairs_note(5, 5) is None
    assert "2 of the 5" in pairs_note(2, 5)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_report_draws_plots_for_at_most_n_pairs_and_says_how_many_it_left_out(tmp_path):
    df = _replicated(3, [0.0, 0.1, 0.02])
    run = tmp_path / "run"
    run.mkdir()
    write_parquet(df, run / "results.parquet")
    shutil.copy(BASELINE / "run.json", run / "run.json")
    text = write_report(run, max_plot_pairs=1).read_text()
    pngs = sorted(p.name for p in run.glob("*.png"))
    assert len(pngs) == 4  # the four figures of one pair
    assert all(name.startswith("digits-logreg_C_2-") for name in pngs), pngs
    plots = text[text.index("## Plots") :]
    assert "Plots are drawn for 1 of the 3 (dataset, model) pairs" in plots
    assert "--plot-pairs 0" in plots
    assert plots.count("![") == 4
    # every other section is the same as with every plot drawn
    for png in run.glob("*.png"):
        png.unlink()
    full = write_report(run, max_plot_pairs=0).read_text()
    assert len(list(run.glob("*.png"))) == 12
    assert full[: full.index("## Plots")] == text[: text.index("## Plots")]
    assert "Plots are drawn for" not in full
    assert np.isfinite(_worst_cost(df)).all()


def test_read_columns_gives_the_rows_asked_for():
    full = read_table(BASELINE)
    rows = (full["attack_id"] == NO_ATTACK_ID).to_numpy()
    some = read_columns(BASELINE, ["confusion", "not_a_column"], rows)
    assert list(some.columns) == ["confusion"] and len(some) == rows.sum() > 0
    assert some["confusion"].tolist() == full.loc[rows, "confusion"].tolist()
    assert read_columns(BASELINE, ["confusion"])["confusion"].tolist() == full["confusion"].tolist()


def test_a_table_that_is_a_fifo_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "results.parquet"
    os.mkfifo(fifo)
    for read in (read_table, lambda p: read_columns(p, ["accuracy"])):
        with pytest.raises(PoisonBenchError, match="not a regular file"):
            read(fifo)


def test_plot_pairs_option_takes_a_whole_number_at_least_zero(capsys):
    from bench.interfaces.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["report", "RUN", "--plot-pairs", "2"]).plot_pairs == 2
    assert parser.parse_args(["report", "RUN"]).plot_pairs is None  # the default cap
    for bad in ("-1", "1.5", "x"):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(["report", "RUN", "--plot-pairs", bad])
        assert stop.value.code == 2
        assert "--plot-pairs" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_api_report_passes_plot_pairs_on(tmp_path):
    import poisonbench

    df = _replicated(2, [0.0, 0.1])
    run = tmp_path / "run"
    run.mkdir()
    write_parquet(df, run / "results.parquet")
    shutil.copy(BASELINE / "run.json", run / "run.json")
    text = poisonbench.load(run).report(plot_pairs=1).read_text()
    assert len(list(run.glob("*.png"))) == 4
    assert "Plots are drawn for 1 of the 2 (dataset, model) pairs" in text
