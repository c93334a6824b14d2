"""The real-data check of the headline interval, before and after the averaged reference.

``estimator-study.yaml`` (beside this file) runs digits/logreg with 60 seeds: random flips and
uniform feature noise at 5, 10 and 20 %, no defense, f up to 3× n_train, and a clean reference
averaged over 8 fits per seed (each clean row also keeps its single fit). The 60-seed estimate
of each group is the truth; disjoint 3-, 5- and 10-seed subsets are the experiments
(:func:`bench.analysis.seed_study.subset_study`). Printed: coverage, bounded share and median
width per seed count, for the single clean fit ("before") and the 8-fit average ("after"),
both judged against one truth (the averaged one, which has the smaller noise).

The run takes ~4 minutes on 2 idle cores the first time and is kept in
``results/runs/estimator-study`` (a rerun reuses it). Run it with
``.venv/bin/pytest tests/benchmarks/test_estimator.py -p no:xdist --benchmark-enable -s``.
Issue 24's goal was a 2× narrower median width at 5 and 10 seeds; measured (2026-12-03):
1.72 → 1.36 at 5 seeds (1.26×) and 1.03 → 0.77 at 10 (1.34×), bounded share 38 → 56 % at 3
seeds, coverage 94–100 %. The goal is not met by the reference alone, and the test asserts what
holds: narrower at 5 and 10 seeds, coverage within 5 points of 95 % (the subsets are few, so
the coverage's own SE, 2–4 points, is allowed for). Per-seed curve fits were tried and rejected
(see docs/statistics.md).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
OUT = ROOT / "results" / "runs" / "estimator-study"


def _table() -> pd.DataFrame:
    poisonbench = Path(sys.executable).parent / "poisonbench"
    cmd = [str(poisonbench), "run", str(HERE / "estimator-study.yaml"), "--out", str(OUT)]
    subprocess.run([*cmd, "--jobs", "2", "--quiet", "--no-report"], check=True)
    from bench.core.store import read_table

    return read_table(OUT)


def test_the_averaged_reference_narrows_the_headline_at_equal_coverage(benchmark):
    from bench.analysis.recovery import estimate_recovery
    from bench.analysis.seed_study import subset_study

    table = benchmark.pedantic(_table, rounds=1, iterations=1)
    truth = estimate_recovery(table)  # 60 seeds, averaged reference
    before, _ = subset_study(table, reference="single", truth=truth)
    after, _ = subset_study(table, reference="averaged", truth=truth)
    both = pd.concat([before, after])
    print()
    print(both.to_markdown(index=False, floatfmt=".3f"))
    poisoned = truth[truth["rate"] > 0]
    print(poisoned[["attack_label", "rate", "f_needed", "f_low", "f_high"]].to_markdown())
    b = before.set_index("k")
    a = after.set_index("k")
    for k in (5, 10):
        wb, wa = b.loc[k, "median_width"], a.loc[k, "median_width"]
        ratio = wb / wa if math.isfinite(wb) else math.inf
        print(f"k={k}: median width {wb:.3f} → {wa:.3f} ({ratio:.2f}× narrower)")
        assert ratio > 1.1, (k, wb, wa)
        se = math.sqrt(0.95 * 0.05 / a.loc[k, "experiments"])
        assert a.loc[k, "coverage"] >= 0.90 - 2 * se, a.loc[k]
