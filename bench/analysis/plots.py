"""PNG plots for the report, drawn from the results table (matplotlib, headless Agg backend).

Every function takes the long results table (and, where needed, the recovery curves of
:func:`bench.analysis.recovery.recovery_curves`), draws one figure with matplotlib's object API (no
pyplot global state, so plotting is safe in any process) and writes it to ``path``.
:func:`write_plots` draws all of them for every (dataset, model) configuration and returns what
it wrote. Lines and panels are configurations (ids), named by their unique labels.

A report of a cluster-sized grid would otherwise draw four PNGs for each of hundreds of pairs
(~0.4 s each): :func:`plot_pairs` picks at most :data:`MAX_PLOT_PAIRS` of them, the ones whose
worst undefended attack costs the most (see there); the report says how many it left out and
how to draw them all (``poisonbench report RUN --plot-pairs 0``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.document import Plot
from bench.analysis.recovery import recovery_curves
from bench.core.schema import NO_ATTACK_ID, NO_DEFENSE_ID, stable_hash
from bench.core.store import atomic_write

#: figure width per panel and height, inches
PANEL_W, PANEL_H = 4.2, 3.4
DPI = 100
#: at most this many (dataset, model) pairs get plots in a report by default (4 PNGs each; the
#: shipped configs have at most 6 pairs, so their reports keep every plot)
MAX_PLOT_PAIRS = 6


def _figure(n_panels: int, width: float = PANEL_W) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless: never open a window
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_panels, PANEL_H), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def slug(text: str) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``-``, ``_``, ``.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _ok0(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["status"] == "ok") & (df["extra_fraction"] == 0)]


def _for(df: pd.DataFrame, dataset: str, model: str) -> pd.DataFrame:
    return df[(df["dataset_id"] == dataset) & (df["model_id"] == model)]


def _heading(df: pd.DataFrame) -> str:
    return f"{df['dataset_label'].iloc[0]} / {df['model_label'].iloc[0]}" if len(df) else ""


def _attacks(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(attack_id, label) of the attacks in ``rows`` (not the clean reference), by label."""
    pairs = rows[rows["attack_id"] != NO_ATTACK_ID][["attack_id", "attack_label"]]
    return sorted(
        pairs.drop_duplicates("attack_id").itertuples(index=False, name=None), key=lambda t: t[1]
    )


def plot_accuracy_vs_rate(
    df: pd.DataFrame, dataset: str, model: str, path: Path, metric: str = "accuracy"
) -> None:
    """One panel per attack: ``metric`` (mean ± std over seeds, f = 0) against the poison rate,
    one line per defense configuration; rate 0 is each defense's clean cell (attack ``none``).
    ``dataset`` and ``model`` are ids."""
    rows = _ok0(_for(df, dataset, model))
    attacks = _attacks(rows)
    clean = rows[rows["attack_id"] == NO_ATTACK_ID]
    fig, axes = _figure(max(len(attacks), 1))
    for ax, (attack_id, attack_label) in zip(axes, attacks, strict=False):
        sub = pd.concat([clean, rows[rows["attack_id"] == attack_id]])
        for defense_id, g in sub.groupby("defense_id", sort=False):
            label = g["defense_label"].iloc[0]
            stats = g.groupby("rate")[metric].agg(["mean", "std"]).fillna(0.0)
            none = defense_id == NO_DEFENSE_ID
            ax.errorbar(
                stats.index * 100,
                stats["mean"],
                yerr=stats["std"],
                label=label,
                linestyle="--" if none else "-",
                marker="o",
                markersize=3,
                capsize=2,
                linewidth=2.2 if none else 1.2,
            )
        ax.set_title(attack_label, fontsize=9)
        ax.set_xlabel("poison rate (% of eligible rows)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{_heading(rows)}: {metric} vs poison rate", fontsize=10)
    _save(fig, path)


def plot_recovery_curves(
    curves: pd.DataFrame,
    references: dict[tuple[str, str], float],
    dataset: str,
    model: str,
    path: Path,
    metric: str = "accuracy",
    tolerance: float = 0.005,
    defense: str = NO_DEFENSE_ID,
) -> None:
    """One panel per attack: ``metric`` against the extra clean fraction, one line per rate
    (defense id ``defense``), with the clean reference as a horizontal line and its tolerance
    band. ``dataset``, ``model`` and ``references``' keys are ids."""
    sub = _for(curves, dataset, model)
    sub = sub[(sub["defense_id"] == defense) & (sub["attack_id"] != NO_ATTACK_ID)]
    attacks = _attacks(sub)
    fig, axes = _figure(max(len(attacks), 1))
    ref = references.get((dataset, model), np.nan)
    for ax, (attack_id, attack_label) in zip(axes, attacks, strict=False):
        g = sub[sub["attack_id"] == attack_id]
        for rate, c in g.groupby("rate", sort=True):
            ax.errorbar(
                c["extra_fraction"],
                c["mean"],
                yerr=c["std"],
                marker="o",
                markersize=3,
                capsize=2,
                label=f"{rate:.0%}",
            )
        if np.isfinite(ref):
            ax.axhline(ref, color="black", linewidth=1.2, label="clean reference")
            lo, hi = (
                (ref - tolerance, ref)
                if metric != "attack_success_rate"
                else (ref, ref + tolerance)
            )
            ax.axhspan(lo, hi, color="grey", alpha=0.2)
        ax.set_title(attack_label, fontsize=9)
        ax.set_xlabel("extra clean data (× n_train)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="poison rate", title_fontsize=7, loc="lower right")
    label = sub["defense_label"].iloc[0] if len(sub) else "none"
    fig.suptitle(f"{_heading(sub)}: recovery with extra clean data (defense: {label})", fontsize=10)
    _save(fig, path)


def _summed(rows: pd.DataFrame, column: str) -> np.ndarray | None:
    values = [np.asarray(json.loads(v), dtype=float) for v in rows[column].dropna()]
    return np.sum(values, axis=0) if values else None


def plot_confusion_pair(
    df: pd.DataFrame, dataset: str, model: str, attack: str, path: Path
) -> None:
    """Row-normalised confusion matrices summed over seeds (f = 0, no defense): the clean model
    beside the most poisoned one (largest rate) of the attack with id ``attack``."""
    rows = _ok0(_for(df, dataset, model))
    rows = rows[rows["defense_id"] == NO_DEFENSE_ID]
    clean = rows[rows["attack_id"] == NO_ATTACK_ID]
    attacked = rows[rows["attack_id"] == attack]
    worst = attacked["rate"].max()
    label = attacked["attack_label"].iloc[0] if len(attacked) else attack
    pair = [("clean", clean), (f"{label} at {worst:.0%}", attacked[attacked["rate"] == worst])]
    fig, axes = _figure(2, width=PANEL_W + 0.4)
    image = None
    for ax, (title, sub) in zip(axes, pair, strict=True):
        m = _summed(sub, "confusion")
        if m is None:
            ax.set_axis_off()
            continue
        norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        k = len(norm)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.tick_params(labelsize=7)
        if k <= 10:
            for i in range(k):
                for j in range(k):
                    if norm[i, j] >= 0.01:
                        color = "white" if norm[i, j] > 0.5 else "black"
                        ax.text(
                            j,
                            i,
                            f"{norm[i, j]:.2f}",
                            ha="center",
                            va="center",
                            fontsize=6,
                            color=color,
                        )
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="share of the true class")
    fig.suptitle(f"{_heading(rows)}: confusion, clean vs most poisoned", fontsize=10)
    _save(fig, path)


def plot_prediction_distribution(
    df: pd.DataFrame, dataset: str, model: str, attack: str, path: Path
) -> None:
    """Share of test rows predicted as each class (f = 0, no defense, summed over seeds): the
    clean model and each rate of the attack with id ``attack``, as grouped bars."""
    rows = _ok0(_for(df, dataset, model))
    rows = rows[rows["defense_id"] == NO_DEFENSE_ID]
    series = [("clean", rows[rows["attack_id"] == NO_ATTACK_ID])]
    attacked = rows[rows["attack_id"] == attack]
    series += [
        (f"{r:.0%}", attacked[attacked["rate"] == r]) for r in sorted(attacked["rate"].unique())
    ]
    fig, axes = _figure(1, width=max(PANEL_W * 1.6, 6.0))
    ax = axes[0]
    counts = [(name, _summed(sub, "pred_distribution")) for name, sub in series]
    counts = [(name, c) for name, c in counts if c is not None]
    width = 0.8 / max(len(counts), 1)
    for i, (name, c) in enumerate(counts):
        share = c / max(c.sum(), 1)
        ax.bar(np.arange(len(c)) + i * width - 0.4 + width / 2, share, width=width, label=name)
    if counts:
        ax.set_xticks(range(len(counts[0][1])))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("share of test rows")
    ax.legend(fontsize=7, title="poison rate", title_fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    label = attacked["attack_label"].iloc[0] if len(attacked) else attack
    fig.suptitle(f"{_heading(rows)}: predictions under {label}", fontsize=10)
    _save(fig, path)


def plot_pairs(
    df: pd.DataFrame, metric: str = "accuracy", limit: int | None = MAX_PLOT_PAIRS
) -> tuple[list[tuple[str, str]], int]:
    """The (dataset_id, model_id) pairs to draw plots for, and how many pairs have finished
    rows.

    All of them when there are at most ``limit`` (``None`` or 0: no limit). Otherwise the
    ``limit`` most informative: ranked by the largest cost of an undefended attack, the clean
    model's mean ``metric`` minus the lowest mean of an (attack, rate) at f = 0 (for a
    lower-is-better metric, the other way round), ties and pairs without such a cost by
    label. Returned in label order.
    """
    ok = _ok0(df) if {"status", "extra_fraction"} <= set(df.columns) else df.iloc[0:0]
    if ok.empty or metric not in ok:
        return [], 0
    keys = ["dataset_id", "model_id"]
    labels = ok.drop_duplicates(keys)[[*keys, "dataset_label", "model_label"]]
    order = labels.sort_values(["dataset_label", "model_label"], kind="stable")
    pairs = [(d, m) for d, m in order[keys].itertuples(index=False, name=None)]
    if not limit or len(pairs) <= limit:
        return pairs, len(pairs)
    undefended = ok[ok["defense_id"] == NO_DEFENSE_ID]
    means = undefended.groupby([*keys, "attack_id", "rate"], sort=False)[metric].mean()
    means = means.reset_index()
    clean = means[means["attack_id"] == NO_ATTACK_ID].groupby(keys)[metric].mean()
    attacked = means[means["attack_id"] != NO_ATTACK_ID].groupby(keys)[metric]
    sign = -1.0 if metric in ("attack_success_rate", "log_loss", "backdoor_asr") else 1.0
    worst = attacked.min() if sign > 0 else attacked.max()
    cost = (sign * (clean - worst)).reindex(pd.MultiIndex.from_tuples(pairs, names=keys))
    rank = pd.DataFrame({"cost": cost.to_numpy(float), "position": range(len(pairs))})
    rank["cost"] = rank["cost"].fillna(-np.inf)
    chosen = rank.sort_values(["cost", "position"], ascending=[False, True], kind="stable")
    keep = sorted(chosen["position"].iloc[:limit])
    return [pairs[i] for i in keep], len(pairs)


def _within(frame: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """The rows of ``frame`` whose (dataset_id, model_id) is one of ``pairs``."""
    if frame.empty or not pairs:
        return frame.iloc[0:0]
    keys = pd.MultiIndex.from_frame(frame[["dataset_id", "model_id"]])
    return frame[keys.isin(pairs)]


def pairs_note(drawn: int, total: int) -> str | None:
    """The report's sentence on the pairs :func:`plot_pairs` left out (None when none)."""
    if drawn >= total:
        return None
    return (
        f"Plots are drawn for {drawn} of the {total} (dataset, model) pairs: the {drawn} whose "
        f"worst undefended attack costs the most (at most {MAX_PLOT_PAIRS} by default). "
        f"`poisonbench report RUN_DIR --plot-pairs 0` draws all {total} (four PNGs each)."
    )


def write_plots(
    df: pd.DataFrame,
    out_dir: str | Path,
    curves: pd.DataFrame | None = None,
    references: dict[tuple[str, str], float] | None = None,
    metric: str = "accuracy",
    tolerance: float = 0.005,
    pairs: list[tuple[str, str]] | None = None,
) -> list[Plot]:
    """Draw every plot for every (dataset, model) configuration into ``out_dir``; returns what
    was written (nothing when no cell finished).

    curves: :func:`bench.analysis.recovery.recovery_curves` of ``df`` (computed when None).
    references: clean reference per (dataset_id, model_id) (the mean f = 0 clean value when
    None).
    pairs: draw only these (dataset_id, model_id) pairs (e.g. :func:`plot_pairs`); None: all.
    """

    out = Path(out_dir)
    ok = df[df["status"] == "ok"] if "status" in df else df.iloc[0:0]
    if ok.empty or "extra_fraction" not in df or metric not in ok:
        return []
    if pairs is not None:  # (every figure then selects its rows from these pairs' only)
        df, ok = _within(df, pairs), _within(ok, pairs)
        curves = None if curves is None else _within(curves, pairs)
        if ok.empty:
            return []
    if curves is None:
        curves = recovery_curves(df, metric)
    if references is None:
        clean = _ok0(df[(df["attack_id"] == NO_ATTACK_ID) & (df["defense_id"] == NO_DEFENSE_ID)])
        references = {
            k: float(v) for k, v in clean.groupby(["dataset_id", "model_id"])[metric].mean().items()
        }
    plots: list[Plot] = []
    stems: set[str] = set()
    for (dataset, model), rows in ok.groupby(["dataset_id", "model_id"], sort=True):
        heading = _heading(rows)
        stem = f"{slug(rows['dataset_label'].iloc[0])}-{slug(rows['model_label'].iloc[0])}"
        if stem in stems:  # two labels that slug alike: keep the files apart
            stem = f"{stem}-{stable_hash([dataset, model], 6)}"
        stems.add(stem)
        attacks = _attacks(rows)
        if not attacks:
            continue
        name = f"{stem}-{metric}-vs-rate.png"
        plot_accuracy_vs_rate(df, dataset, model, out / name, metric)
        plots.append(Plot(f"{heading}: {metric} vs poison rate", name, "rate"))
        name = f"{stem}-recovery.png"
        plot_recovery_curves(curves, references, dataset, model, out / name, metric, tolerance)
        plots.append(Plot(f"{heading}: recovery curves (no defense)", name, "recovery"))
        targeted = (
            rows.loc[rows["attack_success_rate"].notna(), ["attack_id", "attack_label"]]
            if ("attack_success_rate" in rows)
            else rows.iloc[0:0][["attack_id", "attack_label"]]
        )
        if len(targeted):
            focus = sorted(
                targeted.drop_duplicates("attack_id").itertuples(index=False, name=None),
                key=lambda t: t[1],
            )[0][0]
        else:  # no targeted flip: show the attack that hurts most at its largest rate
            worst = _ok0(
                rows[(rows["attack_id"] != NO_ATTACK_ID) & (rows["defense_id"] == NO_DEFENSE_ID)]
            )
            if worst.empty:
                continue
            top = worst[worst["rate"] == worst["rate"].max()]
            focus = top.groupby("attack_id")[metric].mean().idxmin()
        focus_label = rows.loc[rows["attack_id"] == focus, "attack_label"].iloc[0]
        name = f"{stem}-confusion.png"
        plot_confusion_pair(df, dataset, model, focus, out / name)
        plots.append(Plot(f"{heading}: confusion, clean vs {focus_label}", name, "confusion"))
        name = f"{stem}-predictions.png"
        plot_prediction_distribution(df, dataset, model, focus, out / name)
        plots.append(Plot(f"{heading}: predicted classes under {focus_label}", name, "predictions"))
    return plots
