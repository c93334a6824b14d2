"""End-to-end smoke test through the CLI on a tiny config."""

from __future__ import annotations

import pandas as pd

from bench.cli import main

TINY = """
name: tiny
datasets: [{name: iris, split: {train: 0.5, test: 0.3}}]
models: [logreg]
attacks: [{name: label_flip, mode: random}]
rates: [0, 0.2]
defenses: [none, iforest]
seeds: 2
recovery: {fractions: [0, 0.2]}
"""


def test_tiny_run_writes_table_and_rerun_is_cached(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    table = pd.read_parquet(out / "results.parquet")
    # 2 poisonings (clean, 20% flips) × 2 defenses × 2 seeds = 8 cells, × 2 fractions = 16 rows
    assert len(table) == 16
    assert set(table["status"]) == {"ok"}
    assert (out / "report.md").read_text().startswith("# poisonbench report")
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    assert "(0 run, 8 cached, 0 failed)" in capsys.readouterr().out
