"""The markdown report, generated from the results table and ``run.json`` (never hand-edited).

Data first, text second: :func:`build_report` computes every table (DataFrames) and sentence of
the report as values (a :class:`Report` of :class:`Section` objects, testable one by one), and
:func:`render_markdown` renders them through the template ``bench/analysis/templates/report.md.j2``.
:func:`write_report` draws the plots (PNG files beside ``report.md``) and writes the file.

Groups are configurations (``schema.GROUP_KEYS``: ids), shown by their labels (unique per id):
two settings of one defense are two columns, never one average.

Sections: run header (seeds behind each number, config, versions, dataset fingerprints, cells
run/cached/failed, wall and compute time, efficiency), summary in plain words, extra clean data
needed (with the defense value in rows and the label-noise theory line), the best use of a
clean-data budget (only when a defense learns from trusted rows), rule-of-thumb check,
accuracy, targeted-flip effect, filter quality, plots, skipped rows and failed cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.certified import certified_section, plot_certified
from bench.analysis.document import Plot, Report, Section, Table
from bench.analysis.findings import (
    answered_share,
    deployable,
    findings_table,
)
from bench.analysis.formats import (
    DASH,
    fmt_multiple,
    fmt_rate,
    fmt_recovery,
    fmt_rows,
    fmt_span,
)
from bench.analysis.plots import MAX_PLOT_PAIRS, pairs_note, plot_pairs, write_plots
from bench.analysis.recovery import (
    crossing_point,
    estimate_recovery,
    label_noise_multiplier,
    skip_reasons,
)
from bench.analysis.settings import setting_note
from bench.analysis.stats import paired_difference
from bench.core.schema import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_METRIC,
    DEFAULT_TOLERANCE,
    EARLY_STOP,
    GROUP_KEYS,
    NO_ATTACK_ID,
    NO_DEFENSE_ID,
    POOL_EXHAUSTED,
    RECOVERY_METRICS,
    SYMMETRIC_LABEL_NOISE,
    check_table,
    higher_is_better,
)
from bench.core.store import (
    atomic_write_text,
    read_columns,
    read_run_config,
    read_run_meta,
    read_table,
)
from bench.core.types import PoisonBenchError

#: The commonly quoted rule of thumb: poison rate → (low, high) extra clean data needed (× n).
#: "~10 %" at 5 % poisoning is read as the range 0.05–0.2×.
RULE_OF_THUMB: dict[float, tuple[float, float, str]] = {
    0.05: (0.05, 0.2, "~0.1×"),
    0.10: (0.3, 0.5, "0.3–0.5×"),
    0.50: (3.0, 5.0, "3–5×"),
}

# ---------------------------------------------------------------------------------------------
# The report as data
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Formatting helpers
# ---------------------------------------------------------------------------------------------


def mean_std(values: pd.Series) -> str:
    """``mean ± std`` over seeds (3 decimals); the value alone for one seed, ``–`` for none."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return DASH
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


# ---------------------------------------------------------------------------------------------
# Ordering and pivots (by id; displayed by label)
# ---------------------------------------------------------------------------------------------


def _labels(frame: pd.DataFrame, kind: str) -> dict[str, str]:
    """id → label for one kind (``defense``, ``attack``, ...) as the table records them."""
    id_col, label_col = f"{kind}_id", f"{kind}_label"
    pairs = frame[[id_col, label_col]].drop_duplicates(id_col)
    return dict(zip(pairs[id_col], pairs[label_col], strict=True))


def defense_order(frame: pd.DataFrame) -> list[str]:
    """Defense ids in display order: ``none`` first, deployable defenses by label, then the
    reference defenses (oracle, random filter: ``defense_reference``)."""
    labels = _labels(frame, "defense")
    reference = set()
    if "defense_reference" in frame:
        ref = frame[["defense_id", "defense_reference"]].drop_duplicates("defense_id")
        reference = set(ref.loc[ref["defense_reference"].fillna(False).astype(bool), "defense_id"])
    head = [d for d in labels if d == NO_DEFENSE_ID]
    tail = sorted((d for d in labels if d in reference and d not in head), key=labels.get)
    middle = sorted((d for d in labels if d not in head and d not in tail), key=labels.get)
    return head + middle + tail


def pivot_defenses(
    frame: pd.DataFrame, value: str, order: Sequence[str] | None = None
) -> pd.DataFrame:
    """``value`` with rows (attack, rate) and one column per defense configuration.

    Rows and columns are pivoted on the ids and shown with their labels, so two settings of one
    defense are two columns. ``frame`` has one row per (attack_id, rate, defense_id).
    """
    if frame.empty:
        return pd.DataFrame()
    order = list(order) if order is not None else defense_order(frame)
    attack_labels = _labels(frame, "attack")
    defense_labels = _labels(frame, "defense")
    wide = frame.pivot_table(
        index=["attack_id", "rate"], columns="defense_id", values=value, aggfunc="first"
    )
    wide = wide[[d for d in order if d in wide.columns]]
    wide.columns = [defense_labels[d] for d in wide.columns]
    wide = wide.reset_index()
    wide.insert(0, "attack", wide.pop("attack_id").map(attack_labels))
    wide["rate"] = wide["rate"].map(fmt_rate)
    wide = wide.sort_values(["attack"], kind="stable")
    return wide.fillna(DASH).reset_index(drop=True)


def _f0(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["status"] == "ok") & (df["extra_fraction"] == 0)]


def _pairs(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(dataset_id, model_id, "dataset / model" heading) in display order."""
    frame = df[["dataset_id", "model_id", "dataset_label", "model_label"]].drop_duplicates(
        ["dataset_id", "model_id"]
    )
    frame = frame.sort_values(["dataset_label", "model_label"])
    return [(d, m, f"{dl} / {ml}") for d, m, dl, ml in frame.itertuples(index=False, name=None)]


def _subset(frame: pd.DataFrame, dataset: str, model: str) -> pd.DataFrame:
    return frame[(frame["dataset_id"] == dataset) & (frame["model_id"] == model)]


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def accuracy_table(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """``metric`` mean ± std over seeds at f = 0: rows (attack, rate) of one dataset/model,
    columns defenses. The rate-0 clean cells (attack ``none``) come first."""
    ok = _f0(df)
    if ok.empty or metric not in ok:
        return pd.DataFrame()
    cells = ok.groupby(["attack_id", "rate", "defense_id"], sort=True)[metric].apply(mean_std)
    frame = cells.rename("cell").reset_index()
    frame = frame.merge(
        ok[["attack_id", "attack_label"]].drop_duplicates("attack_id"), on="attack_id"
    ).merge(
        ok[["defense_id", "defense_label", "defense_reference"]].drop_duplicates("defense_id")
        if "defense_reference" in ok
        else ok[["defense_id", "defense_label"]].drop_duplicates("defense_id"),
        on="defense_id",
    )
    table = pivot_defenses(frame, "cell")
    clean = table["attack"] == _labels(ok, "attack").get(NO_ATTACK_ID, "none")
    return pd.concat([table[clean], table[~clean]]).reset_index(drop=True)


def recovery_table(rec: pd.DataFrame) -> pd.DataFrame:
    """The headline table of one dataset/model: rows (attack, rate), columns defenses, cells
    like ``0.5× [0.25–1.0]``."""
    frame = rec[rec["attack_id"] != NO_ATTACK_ID].copy()
    if frame.empty:
        return pd.DataFrame()
    frame["cell"] = frame.apply(fmt_recovery, axis=1)
    return pivot_defenses(frame, "cell")


def defense_value_table(rec: pd.DataFrame) -> pd.DataFrame:
    """Clean rows each defense saves against no defense: rows (attack, rate), columns defenses."""
    frame = rec[(rec["attack_id"] != NO_ATTACK_ID) & (rec["defense_id"] != NO_DEFENSE_ID)].copy()
    if frame.empty:
        return pd.DataFrame()
    frame["cell"] = frame.apply(fmt_rows, axis=1)
    return pivot_defenses(frame, "cell")


def theory_table(rec: pd.DataFrame) -> pd.DataFrame:
    """Measured extra data (no defense) beside the label-noise theory lines, for attacks that
    declare the symmetric-label-noise line (random flips)."""
    frame = rec[
        (rec["defense_id"] == NO_DEFENSE_ID)
        & (rec["theory"] == SYMMETRIC_LABEL_NOISE)
        & rec["theory_f"].notna()
    ].copy()
    if frame.empty:
        return pd.DataFrame()
    return pd.DataFrame(
        {
            "attack": frame["attack_label"],
            "rate": frame["rate"].map(fmt_rate),
            "flipped share η": frame["poison_fraction"].map(lambda v: f"{v:.3f}"),
            "measured": frame.apply(fmt_recovery, axis=1),
            "1/(1−2η)² − 1": [
                f"{fmt_multiple(label_noise_multiplier(e, 2) - 1)}×"
                for e in frame["poison_fraction"]
            ],
            "K-class: 1/m² − 1": frame["theory_f"].map(lambda v: f"{fmt_multiple(v)}×"),
            "K-class, clean extra rows": frame["theory_f_mixed"].map(
                lambda v: f"{fmt_multiple(v)}×"
            ),
            "poison share after f_needed": frame["diluted_rate"].map(
                lambda v: DASH if math.isnan(v) else f"{v:.3f}"
            ),
        }
    ).reset_index(drop=True)


def rule_of_thumb_table(rec: pd.DataFrame) -> pd.DataFrame:
    """Measured extra data (no defense) beside the rule of thumb at 5, 10 and 50 % poisoning,
    with a verdict: ``holds`` when the interval overlaps the rule's range, ``needs less`` /
    ``needs more`` otherwise, ``unknown`` when the grid ends before the rule's range."""
    rows = []
    frame = rec[(rec["defense_id"] == NO_DEFENSE_ID) & (rec["attack_id"] != NO_ATTACK_ID)]
    for _, r in frame.iterrows():
        rule = next((v for k, v in RULE_OF_THUMB.items() if math.isclose(k, r["rate"])), None)
        if rule is None or math.isnan(float(r["f_needed"])):
            continue
        lo_rule, hi_rule, text = rule
        rows.append(
            {
                "attack": r["attack_label"],
                "rate": fmt_rate(r["rate"]),
                "rule of thumb": text,
                "measured": fmt_recovery(r),
                "verdict": rule_verdict(r, lo_rule, hi_rule),
            }
        )
    return pd.DataFrame(rows, columns=["attack", "rate", "rule of thumb", "measured", "verdict"])


def rule_verdict(r: pd.Series, lo_rule: float, hi_rule: float) -> str:
    """``holds``, ``needs less``, ``needs more`` or ``unknown (grid ends at X×)``."""
    f, f_max = float(r["f_needed"]), float(r["f_max"])
    lo, hi = float(r.get("f_low", math.nan)), float(r.get("f_high", math.nan))
    if math.isnan(lo) or math.isnan(hi):
        lo, hi = f, f
    if math.isinf(f):
        if f_max >= hi_rule:
            return "needs more"
        return f"unknown (grid ends at {fmt_multiple(f_max)}×)"
    if hi < lo_rule:
        return "needs less"
    if lo > hi_rule:
        return "needs more"
    return "holds"


def rule_summary(rule: pd.DataFrame) -> str:
    """One sentence: where the rule of thumb holds and where it does not."""
    if rule.empty:
        return "No measured rate matches the rule's 5, 10 or 50 %."
    counts = rule["verdict"].map(lambda v: v.split(" (")[0]).value_counts()
    holds = rule[rule["verdict"] == "holds"]
    text = f"The rule holds for {counts.get('holds', 0)} of {len(rule)} attack/rate pairs"
    if not holds.empty:
        text += " (" + ", ".join(f"{a} at {r}" for a, r in holds[["attack", "rate"]].values)
        text += ")"
    more = counts.get("needs more", 0)
    less = counts.get("needs less", 0)
    text += f"; the measured need is larger in {more} and smaller in {less}"
    unknown = counts.get("unknown", 0)
    if unknown:
        text += f", and {unknown} cannot be judged because the grid ends too early"
    return text + "."


def filter_table(df: pd.DataFrame) -> pd.DataFrame:
    """Filter quality at f = 0 (mean over seeds): rows (attack, rate), columns filters, cells
    ``precision / recall / ROC-AUC (clean rows removed)``; reference filters last."""
    if "det_precision" not in df:
        return pd.DataFrame()
    ok = _f0(df)
    ok = ok[ok["attack_id"] != NO_ATTACK_ID]
    filters = ok.loc[ok["det_precision"].notna() | ok["det_recall"].notna(), "defense_id"].unique()
    filt = ok[ok["defense_id"].isin(filters)]
    if filt.empty:
        return pd.DataFrame()
    stats = (
        filt.groupby(["attack_id", "rate", "defense_id"], sort=True)[
            ["det_precision", "det_recall", "det_roc_auc", "clean_removed"]
        ]
        .mean()
        .reset_index()
    )

    def cell(s: pd.Series) -> str:
        parts = [
            DASH if math.isnan(s[c]) else f"{s[c]:.2f}"
            for c in ("det_precision", "det_recall", "det_roc_auc")
        ]
        return f"{' / '.join(parts)} ({s['clean_removed']:.0f})"

    stats["cell"] = stats.apply(cell, axis=1)
    keep = ["attack_id", "attack_label", "defense_id", "defense_label", "defense_reference"]
    meta = filt[[c for c in keep if c in filt]]
    stats = stats.merge(
        meta.drop_duplicates(["attack_id", "defense_id"]), on=["attack_id", "defense_id"]
    )
    return pivot_defenses(stats, "cell", defense_order(filt))


def targeted_tables(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Source-class accuracy and attack success rate (mean ± std at f = 0) for targeted flips."""
    if "attack_success_rate" not in df:
        return pd.DataFrame(), pd.DataFrame()
    ok = _f0(df)
    targeted = ok[ok["attack_success_rate"].notna()]
    out = []
    for metric in ("source_accuracy", "attack_success_rate"):
        if targeted.empty:
            out.append(pd.DataFrame())
            continue
        cells = targeted.groupby(["attack_id", "rate", "defense_id"])[metric].apply(mean_std)
        frame = cells.rename("cell").reset_index()
        meta = targeted[
            [c for c in ("attack_id", "attack_label", "defense_id", "defense_label",
                         "defense_reference") if c in targeted]
        ]  # fmt: skip
        frame = frame.merge(
            meta.drop_duplicates(["attack_id", "defense_id"]), on=["attack_id", "defense_id"]
        )
        out.append(pivot_defenses(frame, "cell", defense_order(targeted)))
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# Paired comparisons (same seed, same split, same poison)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Best use of a clean-data budget
# ---------------------------------------------------------------------------------------------

#: the case keys of the clean-budget comparison (a dataset, model, attack and rate; ids)
BUDGET_CASE = ("dataset_id", "model_id", "attack_id", "rate")

#: the columns of :func:`budget_uses`
BUDGET_USE_COLUMNS = (
    *BUDGET_CASE,
    "dataset_label",
    "model_label",
    "attack_label",
    "n_train",
    "budget_rows",
    "budget",
    "kind",
    "use",
    "defense_id",
    "extra_fraction",
    "n_trusted_read",
    "n_seeds",
    "mean",
    "std",
    "gain",
    "gain_low",
    "gain_high",
    "gain_n",
    "as_good_as_rows",
)

#: the columns of :func:`budget_verdicts`
BUDGET_VERDICT_COLUMNS = (
    *BUDGET_CASE,
    "attack_label",
    "n_train",
    "budget_rows",
    "winner",
    "winner_mean",
    "runner_up",
    "margin",
    "margin_low",
    "margin_high",
    "margin_n",
    "over_append",
    "over_append_low",
    "over_append_high",
    "as_good_as_rows",
    "curve_max_rows",
    "sentence",
)


@dataclass(frozen=True)
class _Use:
    """One use of a budget in one case: its row of :func:`budget_uses` and per-seed values."""

    row: dict[str, Any]
    values: pd.Series  # metric by seed


def _budget_frame(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The ok rows with the pool columns as numbers (``_read``, ``_total``: clean rows used)."""
    need = {"n_trusted_read", "n_trusted_used", "n_extra", "n_train", metric, *BUDGET_CASE}
    if "status" not in df or not need <= set(df.columns):
        return df.iloc[0:0]
    ok = df[(df["status"] == "ok") & (df["attack_id"] != NO_ATTACK_ID)]
    read = pd.to_numeric(ok["n_trusted_read"], errors="coerce").fillna(0)
    used = pd.to_numeric(ok["n_trusted_used"], errors="coerce").fillna(0)
    extra = pd.to_numeric(ok["n_extra"], errors="coerce").fillna(0)
    if "defense_append_only" in ok:
        append = ok["defense_append_only"].astype("boolean").fillna(False).astype(bool)
    else:  # a table from before the column: only the undefended curve is known to append
        append = ok["defense_id"] == NO_DEFENSE_ID
    return ok.assign(
        _read=read.astype(int), _total=(used + extra).astype(int), _append=append.to_numpy()
    )


def has_budget_uses(df: pd.DataFrame) -> bool:
    """Whether the table holds a defense that learns from trusted pool rows on attacked data
    (``n_trusted_read > 0``): only then has the report a clean-budget section."""
    frame = _budget_frame(df, "n_train")
    return bool((frame["_read"] > 0).any()) if len(frame) else False


def _paired(a: pd.Series, b: pd.Series, sign: float) -> Any:
    """:func:`bench.analysis.stats.paired_difference` of two per-seed series (aligned by seed), signed so
    that positive means ``a`` is better."""
    seeds = a.index.union(b.index)
    return paired_difference(
        sign * a.reindex(seeds).to_numpy(float), sign * b.reindex(seeds).to_numpy(float)
    )


@dataclass(frozen=True)
class _Case:
    """What every use of one case is compared with: the undefended model's per-seed values
    without clean rows and the append curve (mean over seeds at each number of appended rows,
    as a fraction of n_train)."""

    common: dict[str, Any]  # the case's ids, labels and n_train
    base: pd.Series  # undefended metric by seed, no clean rows
    fractions: np.ndarray  # the append curve
    means: np.ndarray
    metric: str

    def use(self, group: pd.DataFrame, kind: str, label: str, budget: int) -> _Use:
        """One use: the rows of one configuration and extra fraction (one per seed)."""
        higher = higher_is_better(self.metric)
        values = group.groupby("seed")[self.metric].mean()
        diff = _paired(values, self.base, 1.0 if higher else -1.0)
        mean = float(values.mean())
        n_train = self.common["n_train"]
        rows_matched = math.nan
        if len(self.fractions) and math.isfinite(mean):
            rows_matched = crossing_point(self.fractions, self.means, mean, higher) * n_train
        first = group.iloc[0]
        n = int(values.notna().sum())
        row = {
            **self.common,
            "budget_rows": budget,
            "budget": budget / n_train if n_train else math.nan,
            "kind": kind,
            "use": label,
            "defense_id": first["defense_id"],
            "extra_fraction": float(first["extra_fraction"]),
            "n_trusted_read": int(first["_read"]),
            "n_seeds": n,
            "mean": mean,
            "std": float(values.std(ddof=1)) if n > 1 else math.nan,
            "gain": diff.mean,  # signed: positive is better
            "gain_low": diff.low,
            "gain_high": diff.high,
            "gain_n": diff.n,
            "as_good_as_rows": rows_matched,
        }
        return _Use(row, values)


def _append_curve(appending: pd.DataFrame, seeds: pd.Index, metric: str) -> pd.Series:
    """Mean ``metric`` over ``seeds`` at each number of appended clean rows (``_total``), from
    the append-only rows of a case; only totals every one of the seeds has (a curve the pool cut
    short ends there, as in :func:`bench.analysis.recovery.seed_curves`)."""
    wide = appending.groupby(["_total", "seed"])[metric].mean().unstack("seed")
    wide = wide.reindex(columns=seeds)
    return wide[wide.notna().all(axis=1)].mean(axis=1).sort_index()


def _budget_cases(df: pd.DataFrame, metric: str) -> list[tuple[_Case, list[_Use]]]:
    """Per case (dataset, model, attack, rate), every use of every budget the table holds."""
    frame = _budget_frame(df, metric)
    if frame.empty or not (frame["_read"] > 0).any():
        return []
    out = []
    learners = frame[frame["_read"] > 0]
    for case, learn in learners.groupby(list(BUDGET_CASE), sort=True):
        rows = frame
        for key, value in zip(BUDGET_CASE, case, strict=True):
            rows = rows[rows[key] == value]
        undefended = rows[rows["_append"]]  # none, extra_clean: plain appending
        base = undefended[undefended["_total"] == 0].groupby("seed")[metric].mean()
        curve = _append_curve(undefended, base.index, metric)
        first = rows.iloc[0]
        n_train = float(pd.to_numeric(rows["n_train"], errors="coerce").mean())
        ctx = _Case(
            common={
                **dict(zip(BUDGET_CASE, case, strict=True)),
                "dataset_label": first["dataset_label"],
                "model_label": first["model_label"],
                "attack_label": first["attack_label"],
                "n_train": n_train,
            },
            base=base,
            fractions=curve.index.to_numpy(dtype=float) / n_train,
            means=curve.to_numpy(dtype=float),
            metric=metric,
        )
        uses = []
        if not ctx.base.empty:
            bare = undefended[undefended["_total"] == 0]
            uses.append(ctx.use(bare, "undefended", UNDEFENDED_USE, 0))
        budgets = sorted(int(t) for t in learn.loc[learn["extra_fraction"] == 0, "_total"].unique())
        for budget in (t for t in budgets if t > 0):
            appended = undefended[undefended["_total"] == budget]
            if not appended.empty:
                uses.append(ctx.use(appended, "append", f"append {budget} rows", budget))
            at = learn[learn["_total"] == budget]
            for _, group in at.groupby(["defense_id", "extra_fraction"], sort=True):
                n_extra = int(round(float(group["n_extra"].iloc[0])))
                label = str(group["defense_label"].iloc[0])
                label += setting_note(group, str(group["defense_id"].iloc[0]))  # issue 25
                if n_extra:
                    label += f" + append {n_extra} rows"
                uses.append(ctx.use(group, "learn", label, budget))
        out.append((ctx, uses))
    return out


#: how the undefended model (no clean rows at all) is named in the clean-budget section
UNDEFENDED_USE = "undefended (no clean rows)"


def budget_uses(df: pd.DataFrame, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Every use of a clean-data budget the table measured, one row per (dataset, model, attack,
    rate, budget, use), with its paired gain over the undefended model.

    A budget is a number of clean pool rows, counted as ``n_trusted_used + n_extra`` (rows the
    defense steps read or appended, plus the rows the recovery curve appended), so every
    comparison is at equal clean data. The budgets are those the table's *learning* defenses
    spend at f = 0 (configurations whose steps read trusted rows to learn from:
    ``n_trusted_read > 0``; e.g. ``trusted_filter``, ``glc``, ``roni``, ``provenance`` with
    ``budget: b`` spend ``round(b × n_train)``). At budget T the uses (``kind``) are:

    - ``append``: the poisoned set with T pool rows appended and nothing else: any
      configuration of append-only steps (``defense_append_only``: the undefended model on its
      recovery curve at f = T / n_train, or an ``extra_clean(fraction = T / n_train)`` cell at
      f = 0). Both train on the same rows in the same order with the same model seed, so they
      are the same fit (tested); where a table holds both, their per-seed values are averaged
      (they are equal).
    - ``learn``: every learning configuration at the extra fraction where its clean rows total T:
      a defense of budget T at f = 0 (``trusted_filter`` with ``append: true`` learns from and
      appends the same T rows), one of budget T/2 with T/2 more rows appended by the curve, ...
    - ``undefended`` (once per case, budget 0): the poisoned model with no clean rows.

    Columns: the case ids and labels, ``n_train``, ``budget_rows`` (T), ``budget`` (T /
    n_train), ``kind``, ``use`` (display), ``defense_id``, ``extra_fraction``,
    ``n_trusted_read``, ``n_seeds``, ``mean`` and ``std`` of ``metric`` over seeds; ``gain``,
    ``gain_low``, ``gain_high``, ``gain_n``: the paired difference to the undefended model at
    f = 0 over the seeds both have, in the metric's units and signed so that positive is better
    (:func:`bench.analysis.stats.paired_difference`, 95 % t-interval); ``as_good_as_rows``: the appended
    rows that match the use's mean on the append curve (the append uses' means over seeds by
    number of rows; linear interpolation at the first crossing,
    :func:`bench.analysis.recovery.crossing_point`; ``inf`` beyond the measured curve).
    """
    rows = [u.row for _, uses in _budget_cases(df, metric) for u in uses]
    return pd.DataFrame(rows, columns=list(BUDGET_USE_COLUMNS))


def _margin_text(diff: Any, digits: int = 3) -> str:
    if diff.n == 0:
        return "no paired seeds"
    text = f"{diff.mean:+.{digits}f}"
    if not math.isfinite(diff.low):
        return f"{text} ({diff.n} seed{'s' if diff.n != 1 else ''}, no interval)"
    return f"{text} [{diff.low:+.{digits}f}, {diff.high:+.{digits}f}]"


def budget_verdicts(df: pd.DataFrame, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Which use of each budget wins, one row per (dataset, model, attack, rate, budget).

    The winner is the use with the best mean ``metric`` among the ``append`` and ``learn`` uses
    of that budget (:func:`budget_uses`). ``margin`` (``margin_low``, ``margin_high``,
    ``margin_n``): the paired difference winner − runner-up over the seeds both have (95 %
    t-interval; positive = the winner is better); ``over_append``: the same against appending
    the rows, when neither the winner nor the runner-up is appending; ``as_good_as_rows``: the
    appended rows that match the winner (see :func:`budget_uses`), ``curve_max_rows``: the most
    rows the undefended curve measured. ``sentence`` says it in words: which use wins, by how
    much ("not distinguishable at N seeds" when the interval includes 0), and how many appended
    rows would have matched it.
    """
    sign = 1.0 if higher_is_better(metric) else -1.0
    out = []
    for ctx, uses in _budget_cases(df, metric):
        spent = [u for u in uses if u.row["kind"] != "undefended"]
        for budget in sorted({u.row["budget_rows"] for u in spent}):
            at = sorted(
                (u for u in spent if u.row["budget_rows"] == budget),
                key=lambda u: -sign * u.row["mean"],
            )
            win = at[0]
            r = win.row
            n_train = r["n_train"]
            curve_max = float(ctx.fractions.max()) * n_train if len(ctx.fractions) else math.nan
            row: dict[str, Any] = {
                **{k: r[k] for k in BUDGET_CASE},
                "attack_label": r["attack_label"],
                "n_train": n_train,
                "budget_rows": budget,
                "winner": r["use"],
                "winner_mean": r["mean"],
                "runner_up": None,
                "as_good_as_rows": r["as_good_as_rows"],
                "curve_max_rows": curve_max,
            }
            for name in ("margin", "margin_low", "margin_high", "over_append"):
                row[name] = math.nan
            row.update(margin_n=0, over_append_low=math.nan, over_append_high=math.nan)

            where = (
                f"{r['attack_label']} at {fmt_rate(float(r['rate']))}, {budget} clean rows "
                f"(b = {budget / n_train:.2g})"
            )
            if len(at) == 1:
                text = (
                    f"{where}: **{r['use']}** is the only use measured ({metric} {r['mean']:.3f})"
                )
            else:
                runner = at[1]
                margin = _paired(win.values, runner.values, sign)
                row.update(
                    runner_up=runner.row["use"],
                    margin=margin.mean,
                    margin_low=margin.low,
                    margin_high=margin.high,
                    margin_n=margin.n,
                )
                if margin.resolved:
                    text = (
                        f"{where}: **{r['use']}** wins ({metric} {r['mean']:.3f}), by "
                        f"{_margin_text(margin)} over {runner.row['use']}"
                    )
                else:
                    text = (
                        f"{where}: **{r['use']}** has the best mean ({metric} {r['mean']:.3f}) "
                        f"but is not distinguishable from {runner.row['use']} at {margin.n} "
                        f"seeds ({_margin_text(margin)})"
                    )
                append = next((u for u in at if u.row["kind"] == "append"), None)
                if append is not None and append is not win and append is not runner:
                    over = _paired(win.values, append.values, sign)
                    row.update(
                        over_append=over.mean,
                        over_append_low=over.low,
                        over_append_high=over.high,
                    )
                    text += f"; over {append.row['use']}: {_margin_text(over)}"
            matched = r["as_good_as_rows"]
            if math.isnan(matched):
                text += "; no undefended curve to compare with"
            elif math.isinf(matched):
                text += f"; better than appending any measured amount (up to {curve_max:.0f} rows)"
            else:
                text += f"; as good as appending {matched:.0f} rows"
            row["sentence"] = text + "."
            out.append(row)
    return pd.DataFrame(out, columns=list(BUDGET_VERDICT_COLUMNS))


def budget_table(uses: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The clean-budget uses of one dataset/model as report cells: rows (attack, rate, budget,
    use), best use first within a budget."""
    if uses.empty:
        return pd.DataFrame()
    frame = uses.sort_values(
        ["attack_label", "rate", "budget_rows", "mean"],
        ascending=[True, True, True, not higher_is_better(metric)],
        kind="stable",
    )

    def gain(r: pd.Series) -> str:
        if r["kind"] == "undefended":
            return DASH
        text = f"{r['gain']:+.3f}"
        if math.isfinite(r["gain_low"]):
            text += f" [{r['gain_low']:+.3f}, {r['gain_high']:+.3f}]"
            if not (r["gain_low"] > 0 or r["gain_high"] < 0):
                text += " n.s."
        return text

    def matched(v: float) -> str:
        if math.isnan(v):
            return DASH
        return "beyond the curve" if math.isinf(v) else f"{v:.0f}"

    return pd.DataFrame(
        {
            "attack": frame["attack_label"],
            "rate": frame["rate"].map(fmt_rate),
            "clean rows": frame["budget_rows"].map(lambda v: f"{v:.0f}"),
            "use": frame["use"],
            "read by the defense": frame["n_trusted_read"].map(lambda v: f"{v:.0f}"),
            metric: [
                f"{m:.3f}" if not math.isfinite(s) else f"{m:.3f} ± {s:.3f}"
                for m, s in zip(frame["mean"], frame["std"], strict=True)
            ],
            "vs undefended": frame.apply(gain, axis=1),
            "as good as appending (rows)": frame["as_good_as_rows"].map(matched),
        }
    ).reset_index(drop=True)


BUDGET_TEXT = (
    "For each attack and rate: what a budget of clean pool rows buys when it is appended to the "
    "training set, when a defense learns from it (`trusted_filter`, `glc`, ...), or both, at "
    "**equal total clean rows** (rows the defense read or appended + rows appended after it). "
    "*Append N rows* is the poisoned set plus N clean rows and nothing else: the undefended "
    "model's recovery curve at f = N / n_train or an `extra_clean` cell of that fraction (the "
    "same rows, order and model seed, hence the same fit). `{metric}`: mean ± std over seeds; "
    "*vs undefended*: paired difference to the poisoned model without clean rows, same seeds "
    "[95 % t-interval], `n.s.` when it includes 0; *as good as appending*: the number of "
    "appended rows at which that append curve reaches the use's mean (linear interpolation "
    "between measured amounts). A use is a defense configuration at one extra fraction: "
    "`X + append N rows` learnt from part of the budget and appended the rest."
)


def budget_section(df: pd.DataFrame, metric: str = DEFAULT_METRIC) -> Section | None:
    """The "Best use of a clean-data budget" section, or None when the table holds no defense
    that learns from trusted rows (see :func:`budget_uses`, :func:`budget_verdicts`)."""
    if not has_budget_uses(df):
        return None
    uses = budget_uses(df, metric)
    verdicts = budget_verdicts(df, metric)
    section = Section(
        "Best use of a clean-data budget", paragraphs=[BUDGET_TEXT.format(metric=metric)]
    )
    for dataset, model, heading in _pairs(uses):
        sub = _subset(uses, dataset, model)
        said = _subset(verdicts, dataset, model) if not verdicts.empty else verdicts
        section.subsections.append(
            Section(
                heading,
                level=3,
                bullets=list(said["sentence"]) if not said.empty else [],
                tables=[Table(budget_table(sub, metric))],
            )
        )
    return section


# ---------------------------------------------------------------------------------------------
# Summary in plain words
# ---------------------------------------------------------------------------------------------


def summary_lines(
    df: pd.DataFrame,
    rec: pd.DataFrame,
    dataset: str,
    model: str,
    metric: str,
    tolerance: float,
    target: float = math.inf,
) -> list[str]:
    """At most four short bullets for one dataset/model (ids), each backed by a number of the
    findings table: the clean model, the costliest attack, how many headline cells answer, and
    the most valuable deployable defense (or that none is distinguishable from none).

    ``metric``: the metric ``rec`` was estimated on (e.g. ``backdoor_asr``, lower is better:
    a rise is the damage)."""
    higher = higher_is_better(metric)
    sign = 1.0 if higher else -1.0
    lines: list[str] = []
    ok0 = _f0(_subset(df, dataset, model))
    r = _subset(rec, dataset, model)
    if ok0.empty:
        return lines
    heading = f"{ok0['model_label'].iloc[0]} on {ok0['dataset_label'].iloc[0]}"
    clean = r[(r["attack_id"] == NO_ATTACK_ID) & (r["defense_id"] == NO_DEFENSE_ID)]
    n_train = int(ok0["n_train"].mean()) if "n_train" in ok0 else 0
    und = r[(r["defense_id"] == NO_DEFENSE_ID) & (r["attack_id"] != NO_ATTACK_ID)]
    if not clean.empty:
        c = clean.iloc[0]
        text = (
            f"**{heading}**: clean {metric} {c['reference']:.3f} ({c['n_seeds']} seeds, "
            f"{n_train} training rows)"
        )
        damage = sign * (und["reference"] - und["value_at_0"])
        if damage.notna().any():
            worst = und.loc[damage.idxmax()]
            text += (
                f"; the costliest attack is {worst['attack_label']} at {fmt_rate(worst['rate'])} "
                f"({damage.max() * 100:.1f} points {'lost' if higher else 'worse'}), which "
                f"needs {fmt_recovery(worst)} extra clean data"
            )
        lines.append(text + ".")
    answered, total = answered_share(und, target)
    if total:
        wide = "bounded" if math.isinf(target) else f"at most {fmt_multiple(target)}× wide"
        lines.append(
            f"{answered} of {total} headline cells on {heading} are answered ({wide} or > grid)"
            + ("." if answered == total else "; the findings table says what the rest need.")
        )
    value = r[deployable(r) & r["defense_value_rows"].notna() & (r["attack_id"] != NO_ATTACK_ID)]
    solid = value[value["defense_value_resolved"] | (value["defense_value_kind"] == "lower_bound")]
    if not solid.empty and solid["defense_value_rows"].max() > 0:
        best = solid.loc[solid["defense_value_rows"].idxmax()]
        bound = "at least " if best["defense_value_kind"] == "lower_bound" else ""
        lines.append(
            f"The most valuable deployable defense on {heading}: {best['defense_label']}, worth "
            f"{bound}{best['defense_value_rows']:.0f} clean rows at {fmt_rate(best['rate'])} "
            f"{best['attack_label']} ({fmt_rows(best)})."
        )
    elif not value.empty:
        lines.append(
            f"No deployable defense's clean-data saving on {heading} is distinguishable from "
            "zero at this seed count."
        )
    if r["pool_exhausted"].any():
        cut = r.loc[r["pool_exhausted"], "f_max"]
        lines.append(
            f"The clean pool ran out on {heading}: {len(cut)} of {len(r)} curves stop at "
            f"{fmt_span(cut.min(), cut.max())} (`> X×†`: not recovered within the pool)."
        )
    return lines


def precision_target(meta: dict[str, Any]) -> float:
    """The run's precision request (× n_train) from ``run.json``; ``inf`` when it made none."""
    precision = meta.get("precision") or {}
    target = precision.get("target") if isinstance(precision, dict) else None
    return float(target) if isinstance(target, int | float) and target > 0 else math.inf


def findings_section(
    df: pd.DataFrame,
    rec: pd.DataFrame,
    pairs: list[tuple[str, str, str]],
    target: float,
    metric: str,
    tolerance: float,
) -> Section:
    """The report's first section: one findings table per dataset and model."""
    wide = (
        "bounded"
        if math.isinf(target)
        else f"bounded and at most {fmt_multiple(target)}× n_train wide (the run's precision)"
    )
    section = Section(
        "Findings",
        paragraphs=[
            f"Per attack and rate, without a defense: the {metric} lost against the clean "
            "model, the extra clean data needed to get it back (× n_train, [95 % interval]), "
            "and the deployable defense that saves the most clean rows (paired over seeds; "
            "`n.s.`: not distinguishable from none). A headline is *answered* when its interval "
            f'is {wide}, or rules out everything but "not recovered within the grid"; '
            "otherwise the observed spread says roughly how many more seeds would answer it."
        ],
    )
    for dataset, model, heading in pairs:
        table = findings_table(
            _subset(rec, dataset, model), _subset(df, dataset, model), target, metric, tolerance
        )
        if not table.empty:
            section.subsections.append(Section(heading, level=3, tables=[Table(table)]))
    if not section.subsections:
        section.paragraphs.append("_No poisoned cell finished._")
    return section


# ---------------------------------------------------------------------------------------------
# Settings and header
# ---------------------------------------------------------------------------------------------


def report_settings(meta: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The recovery settings of a run: run.json over config.yaml over the schema defaults."""
    rec = {
        "metric": DEFAULT_METRIC,
        "tolerance": DEFAULT_TOLERANCE,
        "bootstrap": DEFAULT_BOOTSTRAP,
        "early_stop": False,
    }
    for where, source in (
        ("config.yaml", config.get("recovery")),
        ("run.json", meta.get("recovery")),
    ):
        if isinstance(source, dict):
            rec.update({k: v for k, v in source.items() if k in rec})
        elif source is not None:
            raise PoisonBenchError(f"{where}: recovery must be a mapping, got {source!r:.80}")
    try:
        rec["tolerance"] = float(rec["tolerance"])
        rec["bootstrap"] = int(rec["bootstrap"])
        if not (math.isfinite(rec["tolerance"]) and rec["tolerance"] >= 0):
            raise ValueError(rec["tolerance"])
    except (TypeError, ValueError):
        raise PoisonBenchError(
            f"run.json / config.yaml: recovery.tolerance must be a finite number >= 0 and "
            f".bootstrap an integer, got {rec['tolerance']!r:.40} and {rec['bootstrap']!r:.40}"
        ) from None
    if rec["metric"] not in RECOVERY_METRICS:
        raise PoisonBenchError(
            f"run.json / config.yaml: recovery.metric {rec['metric']!r:.40} is not one of "
            f"{', '.join(RECOVERY_METRICS)}"
        )
    return rec


def seeds_sentence(df: pd.DataFrame) -> str:
    """How many seeds back each number (the smallest and largest count over configurations)."""
    ok = _f0(df)
    if ok.empty:
        return "No cell finished, so no number below is backed by any seed."
    counts = ok.groupby(list(GROUP_KEYS), dropna=False)["seed"].nunique()
    low, high = int(counts.min()), int(counts.max())
    span = f"{low}" if low == high else f"{low}–{high}"
    text = (
        f"**Seeds: every mean, interval and comparison below is over {span} seed(s)** (paired: a "
        "seed fixes the split, the poison and the model initialization for every defense)."
    )
    if low < 3:
        text += " With fewer than 3 seeds an interval says little; read the per-seed spread."
    return text


def header_section(
    df: pd.DataFrame, meta: dict[str, Any], config: dict[str, Any], settings: dict[str, Any]
) -> Section:
    """The run header: counts, time and efficiency, seeds, settings, datasets, versions, config."""
    section = Section("Run")
    summary = meta.get("summary")
    numbers = ("cells", "run", "cached", "failed")
    if isinstance(summary, dict) and not all(
        isinstance(summary.get(k), int | float) for k in numbers
    ):
        summary = None  # a run.json of another shape: say nothing rather than something wrong
    if isinstance(summary, dict):
        text = (
            f"{summary['cells']} cells: **{summary['run']} run, {summary['cached']} cached, "
            f"{summary['failed']} failed**"
        )
        if summary.get("fits") is not None:
            text += (
                f"; {summary.get('fits_run', 0)} of {summary['fits']} fits computed, "
                f"{summary.get('fits_cached', 0)} cached"
            )
        wall = summary.get("wall_seconds")
        if isinstance(wall, int | float):
            text += f"; wall time {wall:.1f} s"
        compute = summary.get("compute_seconds")
        efficiency = summary.get("efficiency")
        if isinstance(compute, int | float) and isinstance(efficiency, int | float):
            text += (
                f"; the cells' compute {compute:.1f} s on {summary.get('workers', 1)} worker(s): "
                f"efficiency {summary['efficiency']:.2f} (compute / workers / wall)"
            )
        section.paragraphs.append(text + ".")
    else:
        section.paragraphs.append("_No run.json: counts and wall time unknown._")
    section.paragraphs.append(seeds_sentence(df))
    grid = sorted(df["extra_fraction"].dropna().unique()) if "extra_fraction" in df else []
    section.paragraphs.append(
        f"Recovery: metric `{settings['metric']}`, tolerance {float(settings['tolerance']):g}, "
        + (
            "intervals: 95 % t-test inversion over paired seeds (the per-seed range with fewer "
            "than 3 seeds)"
            if int(settings["bootstrap"]) > 0
            else "no intervals (recovery.bootstrap: 0)"
        )
        + ", early stop "
        f"{'on' if settings['early_stop'] else 'off'}; grid "
        f"{', '.join(fmt_multiple(f) for f in grid)} × n_train."
    )
    datasets = meta.get("datasets") if isinstance(meta.get("datasets"), dict) else {}
    rows = []
    if {"dataset_id", "n_train", "n_pool", "n_test"} <= set(df.columns):
        sizes = df.groupby("dataset_id")[["n_train", "n_pool", "n_test"]].mean()
        labels = _labels(df, "dataset")
        for ident, label in sorted(labels.items(), key=lambda t: t[1]):
            facts = datasets.get(ident, {}) if isinstance(datasets.get(ident), dict) else {}
            s = sizes.loc[ident]
            row = {
                "dataset": label,
                "fingerprint": facts.get("fingerprint", DASH),
                "classes": len(facts.get("class_names", []) or []) or DASH,
                "n_train": int(round(s["n_train"])) if pd.notna(s["n_train"]) else DASH,
                "n_pool": int(round(s["n_pool"])) if pd.notna(s["n_pool"]) else DASH,
                "n_test": int(round(s["n_test"])) if pd.notna(s["n_test"]) else DASH,
            }
            if pd.notna(s["n_train"]) and s["n_train"]:
                row["pool (× n_train)"] = f"{s['n_pool'] / s['n_train']:.2f}"
            notes = facts.get("notes") or []
            row["notes"] = "; ".join(notes) if notes else ""
            rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty and not frame["notes"].astype(bool).any():
        frame = frame.drop(columns=["notes"])
    section.subsections.append(Section("Datasets", level=3, tables=[Table(frame)]))
    versions = meta.get("versions")
    if isinstance(versions, dict) and versions:
        v = pd.DataFrame(
            {"package": list(versions), "version": [str(x) for x in versions.values()]}
        )
        section.subsections.append(Section("Versions", level=3, tables=[Table(v)]))
    if config:
        import yaml

        section.details = yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip()
    return section


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def build_report(
    df: pd.DataFrame,
    meta: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    plots: Sequence[Plot] = (),
    name: str = "run",
) -> Report:
    """The report of a results table as values (see the module docstring)."""
    meta = meta or {}
    config = config or {}
    settings = report_settings(meta, config)
    metric, tolerance = str(settings["metric"]), float(settings["tolerance"])
    title = str(meta.get("name") or config.get("name") or name)
    description = str(config.get("description") or "")
    header = header_section(df, meta, config, settings)
    report = Report(title=title, description=description, sections=[header])
    ok = df[df["status"] == "ok"] if "status" in df else df.iloc[0:0]
    if ok.empty or "extra_fraction" not in df:
        report.sections.append(
            Section("Results", paragraphs=["_No cell finished: there are no numbers to show._"])
        )
        report.sections += _skipped_and_failed(df)
        return report

    rec = estimate_recovery(df, metric, tolerance, n_boot=int(settings["bootstrap"]))
    acc_metric = metric if metric in ("accuracy", "macro_f1") else "accuracy"
    pairs = _pairs(ok)

    target = precision_target(meta)
    report.sections.append(findings_section(df, rec, pairs, target, metric, tolerance))
    summary = Section("Summary")
    for dataset, model, _ in pairs:
        summary.bullets += summary_lines(df, rec, dataset, model, metric, tolerance, target)
    rules = [
        (heading, rule_of_thumb_table(_subset(rec, dataset, model)))
        for dataset, model, heading in pairs
    ]
    report.sections.append(summary)

    needed = Section(
        "Extra clean data needed",
        paragraphs=[
            f"The smallest extra clean fraction f (× n_train, clean pool rows appended after the "
            f"defense) at which mean `{metric}` over seeds is back within {tolerance:g} of the "
            "clean model (no attack, no defense, f = 0), linearly interpolated between grid "
            "points; [95 % interval: the f where a t-test on the per-seed margins, paired by "
            "seed, does not reject recovery (simulated coverage ≈ 95 % at 3, 5 and 10 seeds); "
            "with fewer than 3 seeds the per-seed range]. `> X×` means not recovered by the "
            "largest fraction measured; `X+` in an interval means beyond the grid; † marks "
            "curves the clean pool cut short."
        ],
    )
    for dataset, model, heading in pairs:
        r = _subset(rec, dataset, model)
        sub = Section(heading, level=3, tables=[Table(recovery_table(r))])
        if r["pool_exhausted"].any():
            cut = r[r["pool_exhausted"]]
            sub.paragraphs.append(
                f"> **Clean pool exhausted on {heading}**: {len(cut)} of {len(r)} curves stop at "
                f"{fmt_span(cut['f_max'].min(), cut['f_max'].max())} instead of "
                f"{fmt_multiple(r['grid_max'].max())}× (see the skipped rows below)."
            )
        sub.subsections.append(
            Section(
                f"Defense value on {heading} (clean rows saved)",
                level=4,
                paragraphs=[
                    "Undefended f minus defended f, times n_train: positive means the defense "
                    "saves that many clean rows; [95 % interval, the two curves paired by seed]; "
                    "`n.s.` when the interval includes 0 (not distinguishable from no defense at "
                    "this seed count); `≥` is a lower bound (the undefended curve never "
                    "recovered); `–` when the defended curve never recovered."
                ],
                tables=[Table(defense_value_table(r))],
            )
        )
        theory = theory_table(r)
        if not theory.empty:
            sub.subsections.append(
                Section(
                    f"Theory line for random label flips on {heading}",
                    level=4,
                    paragraphs=[THEORY_TEXT],
                    tables=[Table(theory)],
                )
            )
        needed.subsections.append(sub)
    report.sections.append(needed)

    budget = budget_section(df, acc_metric)
    if budget is not None:
        report.sections.append(budget)

    rule_section = Section(
        "Rule-of-thumb check",
        paragraphs=[
            "A commonly quoted rule: 5 % poisoning needs ~10 % more clean data, 10 % needs "
            "30–50 %, 50 % needs 3–5×. Measured without a defense; `holds` when the interval "
            "overlaps the rule's range (~10 % read as 5–20 %). For targeted flips the rate is "
            "of the source class, so the poisoned share of the train set is much smaller."
        ],
    )
    for heading, rule in rules:
        rule_section.subsections.append(
            Section(heading, level=3, tables=[Table(rule)], paragraphs=[rule_summary(rule)])
        )
    report.sections.append(rule_section)

    acc = Section(f"{acc_metric.replace('_', ' ').capitalize()} (mean ± std over seeds, f = 0)")
    for dataset, model, heading in pairs:
        acc.subsections.append(
            Section(
                heading,
                level=3,
                tables=[Table(accuracy_table(_subset(df, dataset, model), acc_metric))],
            )
        )
    report.sections.append(acc)

    targeted = Section(
        "Targeted flips: source-class accuracy and attack success rate",
        paragraphs=[
            "Source-class accuracy (share of clean source-class test rows predicted correctly) "
            "and attack success rate (share predicted as the target), mean ± std over seeds, "
            "f = 0."
        ],
    )
    for dataset, model, heading in pairs:
        src, asr = targeted_tables(_subset(df, dataset, model))
        if src.empty:
            continue
        targeted.subsections.append(
            Section(f"{heading}: source-class accuracy", level=3, tables=[Table(src)])
        )
        targeted.subsections.append(
            Section(f"{heading}: attack success rate", level=3, tables=[Table(asr)])
        )
    if not targeted.subsections:
        targeted.paragraphs.append("_No targeted attack in this run._")
    report.sections.append(targeted)

    filters = Section(
        "Filter quality",
        paragraphs=[
            "Precision / recall of the removed rows and ROC-AUC of the outlier scores against "
            "the true poison mask, (clean rows removed), mean over seeds. The oracle filter "
            "(removes exactly the poisoned rows) is the ceiling, the random filter the floor."
        ],
    )
    for dataset, model, heading in pairs:
        ft = filter_table(_subset(df, dataset, model))
        if not ft.empty:
            filters.subsections.append(Section(heading, level=3, tables=[Table(ft)]))
    if not filters.subsections:
        filters.paragraphs.append("_No filter defense in this run._")
    report.sections.append(filters)

    certified = certified_section(df, list(plots))
    if certified is not None:
        report.sections.append(certified)

    plot_section = Section("Plots")
    for plot in plots:
        plot_section.images.append((plot.title, plot.filename))
    if not plots:
        plot_section.paragraphs.append("_No plots were drawn._")
    report.sections.append(plot_section)
    report.sections += _skipped_and_failed(df)
    return report


#: what the theory line is, and why plain ERM is expected to need more (issue 13)
THEORY_TEXT = (
    "A reference, not an estimate. The label-noise sample-complexity multiplier 1/(1−2η)² "
    "(binary; Angluin & Laird 1988) and its K-class form 1/m² with margin m = 1 − ηK/(K−1) are "
    "worst-case scalings for learners that *tolerate* symmetric noise (e.g. by minimizing "
    "disagreements under the noise model), read here as extra data f = multiplier − 1; the "
    "next column solves the same bound when the extra rows are clean (they dilute η). Plain "
    "empirical risk minimization on flipped labels (what the models here do) fits the wrong "
    "labels too, so it is expected to need more than the line. The last column is the poison "
    "share left after appending the measured f_needed × n_train clean rows."
)


def _skipped_and_failed(df: pd.DataFrame) -> list[Section]:
    sections = []
    if "status" not in df:
        return sections
    skipped = df[df["status"] == "skipped"]
    if not skipped.empty:
        reasons = skip_reasons(skipped)
        counts = (
            skipped.assign(reason=reasons.values)
            .groupby(["dataset_label", "reason"], sort=True)
            .agg(rows=("cell_id", "size"), from_fraction=("extra_fraction", "min"))
            .reset_index()
            .rename(columns={"dataset_label": "dataset"})
        )
        counts["from_fraction"] = counts["from_fraction"].map(lambda v: f"{fmt_multiple(v)}×")
        explain = {
            POOL_EXHAUSTED: "the clean pool ran out",
            EARLY_STOP: "early stop: already recovered at two grid points",
        }
        counts["reason"] = counts["reason"].map(lambda v: explain.get(v, v))
        sections.append(
            Section(
                "Skipped rows",
                paragraphs=[
                    "Rows of the grid that were not trained (extra fraction from which they start)."
                ],
                tables=[Table(counts)],
            )
        )
    failed = df[df["status"] == "failed"]
    if not failed.empty:
        reasons = failed_reasons(df)
        cols = [
            c
            for c in ("cell_id", "dataset_label", "model_label", "attack_label", "rate",
                      "defense_label", "seed", "extra_fraction", "error")
            if c in failed
        ]  # fmt: skip
        sections.append(
            Section(
                "Failed cells",
                paragraphs=[
                    f"{failed['cell_id'].nunique()} cell(s) failed ({len(failed)} row(s)); a "
                    "rerun of the same command retries them. The distinct reasons:"
                ],
                tables=[
                    Table(reasons),
                    Table(failed[cols].head(50), title="The first failed rows"),
                ],
            )
        )
    return sections


def failed_reasons(df: pd.DataFrame) -> pd.DataFrame:
    """The distinct reasons rows failed, with the count of cells and rows for each."""
    failed = df[df["status"] == "failed"]
    if failed.empty:
        return pd.DataFrame(columns=["reason", "cells", "rows"])
    errors = failed["error"].fillna("(no error recorded)").astype(str).str.slice(0, 300)
    frame = failed.assign(reason=errors)
    out = (
        frame.groupby("reason")
        .agg(cells=("cell_id", "nunique"), rows=("cell_id", "size"))
        .reset_index()
        .sort_values(["cells", "reason"], ascending=[False, True])
    )
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def render_markdown(report: Report) -> str:
    """The report's markdown, through the template ``bench/analysis/templates/report.md.j2``."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bench.analysis", "templates"),
        autoescape=False,  # markdown, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    text = env.get_template("report.md.j2").render(report=report)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"


#: columns no part of the report reads (nested JSON: per-class scores, per-source and GLC
#: details, removed rows per class; the dataset fingerprints): not decoded, the bulk of
#: reading a large table
UNREAD_COLUMNS = (
    "per_class", "removed_per_class", "per_source", "glc_corruption", "dataset_fingerprint"
)  # fmt: skip
#: nested JSON only the plots read (and, for the attack success rate, its clean reference):
#: write_report reads them for the plotted pairs' rows only
PLOT_COLUMNS = ("confusion", "pred_distribution")


def load_report_inputs(
    run_dir: str | Path, exclude: Sequence[str] = ()
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """A run directory's results table, ``run.json`` and ``config.yaml`` (PoisonBenchError
    naming the file when one is unusable). exclude: more columns not to read."""
    run_dir = Path(run_dir)
    table = read_table(run_dir, exclude=(*UNREAD_COLUMNS, *exclude))
    if not table.empty:
        check_table(table, where=str(run_dir))
        from bench.analysis.compare import check_unique_rows

        check_unique_rows(table, str(run_dir))
        finished = table["status"] == "ok"
        if finished.any() and DEFAULT_METRIC not in table.columns:
            raise PoisonBenchError(
                f"{run_dir}: results table lacks the metric column {DEFAULT_METRIC} though "
                f"{int(finished.sum())} rows finished (a damaged or hand-edited table?)"
            )
    return table, read_run_meta(run_dir), read_run_config(run_dir)


def render_report(run_dir: str | Path, plots: Sequence[Plot] | None = None) -> str:
    """The report's markdown for ``run_dir``. ``plots`` are linked in the plots section (by
    default, the PNG files an earlier :func:`write_report` drew there)."""
    run_dir = Path(run_dir)
    df, meta, config = load_report_inputs(run_dir)
    if plots is None:
        plots = [
            Plot(p.stem.replace("-", " "), p.name, "file") for p in sorted(run_dir.glob("*.png"))
        ]
    return render_markdown(build_report(df, meta, config, plots, name=run_dir.name))


def write_report(run_dir: str | Path, max_plot_pairs: int | None = MAX_PLOT_PAIRS) -> Path:
    """Draw the plots and write ``report.md`` in ``run_dir``; returns the report's path.

    max_plot_pairs: draw the plots of at most this many (dataset, model) pairs (0 or None:
    all; :func:`bench.analysis.plots.plot_pairs` says which); the plots section says how many
    were left out.
    """

    run_dir = Path(run_dir)
    df, meta, config = load_report_inputs(run_dir, exclude=PLOT_COLUMNS)
    settings = report_settings(meta, config)
    if settings["metric"] == "attack_success_rate":  # its clean reference: confusion matrices
        df = df.assign(**read_columns(run_dir, ["confusion"]))
    metric = settings["metric"] if settings["metric"] in ("accuracy", "macro_f1") else "accuracy"
    plots: list[Plot] = []
    note = None
    if not df.empty and "extra_fraction" in df and (df["status"] == "ok").any():
        pairs, n_pairs = plot_pairs(df, metric, max_plot_pairs)
        note = pairs_note(len(pairs), n_pairs)
        rows = pd.MultiIndex.from_frame(df[["dataset_id", "model_id"]]).isin(pairs)
        drawn = df[rows].reset_index(drop=True)
        nested = read_columns(run_dir, [c for c in PLOT_COLUMNS if c not in df], rows)
        drawn = drawn.assign(**{c: nested[c].to_numpy() for c in nested.columns})
        plots = write_plots(
            drawn, run_dir, metric=metric, tolerance=float(settings["tolerance"]), pairs=pairs
        )
        plots += plot_certified(df, run_dir)
    report = build_report(df, meta, config, plots, name=run_dir.name)
    if note is not None:
        report.section("Plots").paragraphs.insert(0, note)
    path = run_dir / "report.md"
    atomic_write_text(path, render_markdown(report))
    return path


__all__ = [
    "RULE_OF_THUMB",
    "Plot",
    "Report",
    "Section",
    "Table",
    "accuracy_table",
    "budget_section",
    "budget_uses",
    "budget_verdicts",
    "build_report",
    "defense_value_table",
    "failed_reasons",
    "filter_table",
    "mean_std",
    "recovery_table",
    "render_markdown",
    "render_report",
    "rule_of_thumb_table",
    "theory_table",
    "write_report",
]
