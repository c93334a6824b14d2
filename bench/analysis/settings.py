"""Which setting a defense was compared at, in words, from the results table (issue 25).

A defense compared at an arbitrary setting compares settings, not defenses; so wherever the
report names a defense as the best one, it also says at which setting: the threshold rule a
filter used and the share it removed (``threshold_rule``, ``contamination_used``), and what
tuning chose (``tuned_setting``, per seed). Reads table columns only.
"""

from __future__ import annotations

import pandas as pd


def setting_note(frame: pd.DataFrame, defense_id: str) -> str:
    """`` [setting: ...]`` for ``defense_id``'s rows of ``frame`` (empty when the table holds
    no setting columns for it): the threshold rule, the mean share removed (% of the rows the
    filter judged) and the tuned choices with their seed counts, e.g.
    `` [setting: auto: pythresh dsn, removed 12.3 %; tuned: {"contamination":0.2} in 4 of 5
    seeds]``."""
    rows = frame[frame["defense_id"] == defense_id]
    if "extra_fraction" in rows and (rows["extra_fraction"] == 0).any():
        rows = rows[rows["extra_fraction"] == 0]  # one row per seed
    parts = []
    if "threshold_rule" in rows:
        rules = rows["threshold_rule"].dropna().astype(str).unique()
        if len(rules):
            text = " / ".join(sorted(rules))
            if "contamination_used" in rows:
                used = pd.to_numeric(rows["contamination_used"], errors="coerce").dropna()
                if len(used):
                    text += f", removed {100 * used.mean():.1f} %"
            parts.append(text)
    if "tuned_setting" in rows:
        choices = rows["tuned_setting"].dropna().astype(str)
        if len(choices):
            counts = choices.value_counts()
            parts.append(
                "tuned: "
                + ", ".join(f"{c} in {n} of {len(choices)} seeds" for c, n in counts.items())
            )
    return f" [setting: {'; '.join(parts)}]" if parts else ""
