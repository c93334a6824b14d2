"""The "Certified robustness" section: certified accuracy by radius beside the grid's attacks.

Computed from the results table only (``certified_radii``, the per-test-row radii the runner
records for ``dpa`` and ``bagging``; see ``bench/core/certificates.py``). Per dataset and model:

- the **curve**: certified accuracy against the number of poisoned rows r, one per certified
  defense configuration (k, or N and s), from its clean cells (rate 0: the certificate is about
  changes to the clean training set), mean over seeds;
- the **points**: the accuracy the same ensemble keeps under each attack and rate of the grid,
  at that attack's ``n_poisoned``. Pairing a seed's attacked cell with the same seed's clean
  certificate at ``r = n_poisoned`` gives the guaranteed floor; the gap is how far the attack is
  from the worst case. The radius is in the certificate's unit: a label flip is one change for
  both (DPA hashes features only, bagging counts modified rows), a row whose features an
  attack changed is two for DPA (``certified_changes`` in the record);
- the **cost**: clean accuracy of the ensemble against the plain model (defense ``none``) at
  rate 0, paired by seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.document import Plot, Section, Table
from bench.analysis.formats import fmt_rate
from bench.analysis.plots import _figure, _save, slug
from bench.core.certificates import radius_grid
from bench.core.schema import NO_ATTACK_ID, NO_DEFENSE_ID, stable_hash

#: the certified-defense rows of a table are those that carry per-row radii
RADII = "certified_radii"


def _radii(value: Any) -> np.ndarray:
    """A ``certified_radii`` cell (JSON text, or a list in memory) as an int64 array."""
    if isinstance(value, str):
        value = json.loads(value)
    return np.asarray(value, dtype=np.int64)


def certified_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The ``ok`` rows at f = 0 that carry certified radii, with an ``_radii`` array column."""
    if RADII not in df or df.empty:
        return df.iloc[0:0].assign(_radii=None)
    rows = df[(df["status"] == "ok") & (df["extra_fraction"] == 0) & df[RADII].notna()].copy()
    rows["_radii"] = [_radii(v) for v in rows[RADII]]
    return rows


def _clean(rows: pd.DataFrame) -> pd.DataFrame:
    """Each (dataset, model, defense, seed)'s rate-0 row (one: every attack's rate 0 is one
    training set)."""
    clean = rows[rows["rate"] == 0]
    return clean.drop_duplicates(["dataset_id", "model_id", "defense_id", "seed"])


def certified_curves(df: pd.DataFrame, every_radius: bool = False) -> pd.DataFrame:
    """Certified accuracy by radius: one row per (dataset, model, certified defense, radius).

    Columns: the ids and labels, ``radius`` (0, 1, 2, 5, 10, ... up to the first radius no seed
    certifies; with ``every_radius`` every integer up to it, for plots), ``certified_accuracy``
    (mean over seeds of the share of test rows predicted right with radius >= r), ``seeds``.
    """
    columns = [
        "dataset_id", "model_id", "defense_id", "dataset_label", "model_label", "defense_label",
        "radius", "certified_accuracy", "seeds",
    ]  # fmt: skip
    clean = _clean(certified_rows(df))
    out = []
    for (dataset, model, defense), g in clean.groupby(
        ["dataset_id", "model_id", "defense_id"], sort=False
    ):
        top = max(int(r.max()) if len(r) else 0 for r in g["_radii"])
        for r in range(top + 2) if every_radius else radius_grid(top):
            share = [float(np.mean(radii >= r)) for radii in g["_radii"]]
            first = g.iloc[0]
            out.append(
                [dataset, model, defense, first["dataset_label"], first["model_label"],
                 first["defense_label"], r, float(np.mean(share)), len(share)]
            )  # fmt: skip
    return pd.DataFrame(out, columns=columns)


def _changes(row: pd.Series) -> int:
    """The attacked cell's size in the certificate's unit (``certified_changes``: a relabelled
    row is one change, a row whose features changed is two for dpa), else ``n_poisoned``."""
    value = row.get("certified_changes")
    return int(row["n_poisoned"]) if value is None or pd.isna(value) else int(value)


def certified_points(df: pd.DataFrame) -> pd.DataFrame:
    """The grid's attacks against the certified ensembles: one row per (dataset, model,
    defense, attack, rate > 0), means over the seeds that have both the attacked and the clean
    cell.

    Columns: ids and labels, ``rate``, ``n_poisoned`` (mean over seeds), ``changes`` (the same
    in the certificate's unit), ``accuracy`` (what the attack leaves), ``certified`` (the clean
    certificate's floor at r = the seed's changes), ``gap``
    (accuracy − certified), ``holds`` (accuracy >= certified in every seed), ``seeds``.
    """
    rows = certified_rows(df)
    clean = _clean(rows).set_index(["dataset_id", "model_id", "defense_id", "seed"])["_radii"]
    attacked = rows[(rows["rate"] > 0) & (rows["attack_id"] != NO_ATTACK_ID)]
    out = []
    keys = ["dataset_id", "model_id", "defense_id", "attack_id", "rate"]
    for key, g in attacked.groupby(keys, sort=False):
        acc, floor, n_poisoned, changes = [], [], [], []
        for _, row in g.iterrows():
            base = (row["dataset_id"], row["model_id"], row["defense_id"], row["seed"])
            if base not in clean.index:
                continue
            n = _changes(row)
            acc.append(float(row["accuracy"]))
            floor.append(float(np.mean(clean[base] >= n)))
            n_poisoned.append(int(row["n_poisoned"]))
            changes.append(n)
        if not acc:
            continue
        first = g.iloc[0]
        out.append(
            {
                **dict(zip(keys, key, strict=True)),
                "dataset_label": first["dataset_label"],
                "model_label": first["model_label"],
                "defense_label": first["defense_label"],
                "attack_label": first["attack_label"],
                "n_poisoned": float(np.mean(n_poisoned)),
                "changes": float(np.mean(changes)),
                "accuracy": float(np.mean(acc)),
                "certified": float(np.mean(floor)),
                "gap": float(np.mean(acc) - np.mean(floor)),
                "holds": bool(np.all(np.asarray(acc) >= np.asarray(floor))),
                "seeds": len(acc),
            }
        )
    return pd.DataFrame(out)


def clean_cost(df: pd.DataFrame) -> pd.DataFrame:
    """Clean accuracy (rate 0) of each certified defense against the plain model, paired by
    seed: columns ids, labels, ``accuracy``, ``plain_accuracy``, ``cost`` (plain − ensemble,
    points of accuracy as a fraction), ``median_radius`` (of the right predictions), ``seeds``."""
    rows = certified_rows(df)
    ok = df[(df["status"] == "ok") & (df["extra_fraction"] == 0) & (df["rate"] == 0)]
    plain = ok[ok["defense_id"] == NO_DEFENSE_ID].drop_duplicates(
        ["dataset_id", "model_id", "seed"]
    )
    plain = plain.set_index(["dataset_id", "model_id", "seed"])["accuracy"]
    out = []
    for (dataset, model, defense), g in _clean(rows).groupby(
        ["dataset_id", "model_id", "defense_id"], sort=False
    ):
        pairs = [
            (float(r["accuracy"]), float(plain[(dataset, model, r["seed"])]),
             float(r["certified_radius_median"]))
            for _, r in g.iterrows()
            if (dataset, model, r["seed"]) in plain.index
        ]  # fmt: skip
        if not pairs:
            continue
        ens, base, median = (np.asarray(v) for v in zip(*pairs, strict=True))
        first = g.iloc[0]
        out.append(
            {
                "dataset_id": dataset,
                "model_id": model,
                "defense_id": defense,
                "dataset_label": first["dataset_label"],
                "model_label": first["model_label"],
                "defense_label": first["defense_label"],
                "accuracy": float(ens.mean()),
                "plain_accuracy": float(base.mean()),
                "cost": float((base - ens).mean()),
                "median_radius": float(np.nanmean(median)),
                "seeds": len(pairs),
            }
        )
    return pd.DataFrame(out)


def _ordered(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """``frame`` with its defense labels in natural order (``dpa(k=10)`` before ``k=100``)."""
    import re

    def key(label: str) -> list[Any]:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(label))]

    order = sorted(frame[column].unique(), key=key)
    rank = {label: i for i, label in enumerate(order)}
    return frame.sort_values(column, key=lambda c: c.map(rank), kind="stable")


def curve_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Certified accuracy with one row per defense (label) and one column per radius."""
    if curves.empty:
        return pd.DataFrame()
    wide = curves.pivot_table(
        index="defense_label", columns="radius", values="certified_accuracy", aggfunc="first"
    )
    # a curve stops at its first radius with no certified row: beyond it the share is 0 too
    wide = wide.reindex(columns=sorted(wide.columns)).fillna(0.0)
    wide.columns = [f"r={r}" for r in wide.columns]
    return _ordered(wide.round(3).reset_index(names="defense"), "defense")


def gap_sentence(point: pd.Series) -> str:
    """One sentence: what the attack leaves, what the certificate guarantees, the gap."""
    verdict = (
        "the certificate holds in every seed"
        if point["holds"]
        else "**the accuracy fell below the certified floor in a seed** (a bagging certificate "
        "may fail with probability alpha; a DPA one never should)"
    )
    changes = point.get("changes", point["n_poisoned"])
    extra = f", {changes:g} changes" if changes != point["n_poisoned"] else ""
    head = (
        f"{point['defense_label']} under {point['attack_label']} at {fmt_rate(point['rate'])} "
        f"({point['n_poisoned']:g} poisoned rows{extra}): keeps {point['accuracy']:.3f} accuracy"
    )
    if point["certified"] == 0:
        return f"{head}; no test row is certified at that many rows, so the certificate says nothing here."
    return (
        f"{head}, the certificate guarantees {point['certified']:.3f} at that many rows, so the "
        f"attack is {point['gap']:.3f} above the worst case; {verdict}."
    )


def certified_section(df: pd.DataFrame, plots: list[Plot] | None = None) -> Section | None:
    """The "Certified robustness" section, or None when no cell ran a certified defense."""
    curves = certified_curves(df)
    if curves.empty:
        return None
    points, cost = certified_points(df), clean_cost(df)
    section = Section(
        "Certified robustness",
        paragraphs=[
            "Certified accuracy at radius r: the share of clean test rows the ensemble predicts "
            "right *and* provably keeps when any r training rows are inserted, deleted or "
            "relabelled (dpa: Levine & Feizi's partition-vote bound; bagging: Jia et al.'s "
            "binomial bound, which holds with probability 1 − alpha per row; both count a "
            "label flip as one change, and dpa counts a row whose features changed as two). "
            "Curves come from the clean cells (rate 0), means over seeds; the attacked rows "
            "give what the grid's attacks actually leave, beside the certified floor at their "
            "number of changes (same seed)."
        ],
    )
    images = {p.filename: p for p in (plots or []) if p.kind == "certified"}
    groups = curves.drop_duplicates(["dataset_id", "model_id"])
    for _, first in groups.iterrows():
        dataset, model = first["dataset_id"], first["model_id"]
        heading = f"{first['dataset_label']} / {first['model_label']}"
        sub = Section(heading, level=3)
        mine = curves[(curves["dataset_id"] == dataset) & (curves["model_id"] == model)]
        sub.tables.append(Table(curve_table(mine), title="Certified accuracy by radius"))
        c = (
            cost[(cost["dataset_id"] == dataset) & (cost["model_id"] == model)]
            if len(cost)
            else cost
        )
        if len(c):
            shown = c[["defense_label", "accuracy", "plain_accuracy", "cost", "median_radius"]]
            shown = shown.rename(
                columns={
                    "defense_label": "defense",
                    "accuracy": "clean accuracy",
                    "plain_accuracy": "plain model",
                    "cost": "cost",
                    "median_radius": "median radius (right rows)",
                }
            )
            sub.tables.append(Table(_ordered(shown, "defense").round(3), title="Clean cost"))
        p = (
            points[(points["dataset_id"] == dataset) & (points["model_id"] == model)]
            if len(points)
            else points
        )
        if len(p):
            shown = p[["defense_label", "attack_label", "rate", "n_poisoned", "changes",
                       "accuracy", "certified", "gap"]].copy()  # fmt: skip
            shown["rate"] = shown["rate"].map(fmt_rate)
            shown = _ordered(shown, "defense_label").round(3)
            sub.tables.append(Table(shown, title="The grid's attacks beside the certified floor"))
            gaps = Section("Gap to the worst case", level=4)
            gaps.bullets = [gap_sentence(row) for _, row in _ordered(p, "defense_label").iterrows()]
            sub.subsections.append(gaps)
        for name, plot in images.items():
            if plot.title.startswith(heading):
                sub.images.append((plot.title, name))
        section.subsections.append(sub)
    return section


def plot_certified(df: pd.DataFrame, out_dir: str | Path) -> list[Plot]:
    """Per dataset and model, certified accuracy against radius (one step curve per certified
    defense) with the attacked ensembles' accuracy as points at their n_poisoned."""

    curves = certified_curves(df, every_radius=True)
    if curves.empty:
        return []
    points = certified_points(df)
    plots = []
    for (dataset, model), mine in curves.groupby(["dataset_id", "model_id"], sort=False):
        heading = f"{mine['dataset_label'].iloc[0]} / {mine['model_label'].iloc[0]}"
        fig, (ax,) = _figure(1, width=6.0)
        here = (
            points[(points["dataset_id"] == dataset) & (points["model_id"] == model)]
            if len(points)
            else points
        )
        attacks = sorted(set(here["attack_id"])) if len(here) else []
        marker = {a: "osD^v<>"[i % 7] for i, a in enumerate(attacks)}
        labelled: set[str] = set()
        for defense, g in mine.groupby("defense_id", sort=False):
            (line,) = ax.step(
                g["radius"] + 0.5, g["certified_accuracy"], where="post",
                label=f"{g['defense_label'].iloc[0]} (certified)",
            )  # fmt: skip
            if not len(here):
                continue
            for _, q in here[here["defense_id"] == defense].iterrows():
                first = q["attack_id"] not in labelled
                labelled.add(q["attack_id"])
                ax.plot(
                    q["changes"] + 0.5, q["accuracy"], marker[q["attack_id"]],
                    color=line.get_color(), markersize=4,
                    label=f"{q['attack_label']} (measured)" if first else None,
                )  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("changes r: poisoned rows in the certificate's unit (+0.5, log scale)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")
        ax.set_title(f"{heading}: certified accuracy vs poisoned rows", fontsize=9)
        name = f"{slug(mine['dataset_label'].iloc[0])}-{slug(mine['model_label'].iloc[0])}"
        name = f"{name}-{stable_hash([dataset, model], 6)}-certified.png"
        _save(fig, Path(out_dir) / name)
        plots.append(Plot(f"{heading}: certified accuracy vs poisoned rows", name, "certified"))
    return plots
