"""The best use of a clean-data budget: appended, learnt from by a defense, or both.

Some defenses learn from trusted clean pool rows (``trusted_filter``, ``glc``, ``roni``, ...);
the rows they read count against the same budget as the rows the recovery curve appends, so
every comparison is at equal clean data. :func:`budget_uses` lists every use of every budget
the table measured with its paired gain over the undefended model; :func:`budget_verdicts`
says which use of each budget wins, by how much, and how many appended rows would match it.
Pure functions of the results table; the report's section
(:mod:`bench.analysis.report.clean_budget`) only formats them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.formats import fmt_rate
from bench.analysis.recovery import (
    crossing_point,
)
from bench.analysis.settings import setting_note
from bench.analysis.stats import PairedDifference, difference_text, paired_difference
from bench.core.schema import (
    DEFAULT_METRIC,
    NO_ATTACK_ID,
    NO_DEFENSE_ID,
    higher_is_better,
)

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


def _paired(a: pd.Series, b: pd.Series, sign: float) -> PairedDifference:
    """:func:`bench.analysis.stats.paired_difference` of two per-seed series (aligned by
    seed), signed so that positive means ``a`` is better."""
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
    (:func:`bench.analysis.stats.paired_difference`, 95 % t-interval); ``as_good_as_rows``: the
    appended rows that match the use's mean on the append curve (the append uses' means over seeds by
    number of rows; linear interpolation at the first crossing,
    :func:`bench.analysis.recovery.crossing_point`; ``inf`` beyond the measured curve).
    """
    rows = [u.row for _, uses in _budget_cases(df, metric) for u in uses]
    return pd.DataFrame(rows, columns=list(BUDGET_USE_COLUMNS))


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
            out.append(_verdict(ctx, at, sign, metric))
    return pd.DataFrame(out, columns=list(BUDGET_VERDICT_COLUMNS))


def _verdict(ctx: _Case, at: list[_Use], sign: float, metric: str) -> dict[str, Any]:
    """One row of :func:`budget_verdicts`: the uses ``at`` of one budget, best first."""
    win = at[0]
    r = win.row
    runner = at[1] if len(at) > 1 else None
    append = next((u for u in at if u.row["kind"] == "append"), None)
    margin = _paired(win.values, runner.values, sign) if runner is not None else None
    over = None
    if runner is not None and append is not None and append is not win and append is not runner:
        over = _paired(win.values, append.values, sign)
    nan = math.nan
    n_train = r["n_train"]
    row: dict[str, Any] = {
        **{k: r[k] for k in BUDGET_CASE},
        "attack_label": r["attack_label"],
        "n_train": n_train,
        "budget_rows": r["budget_rows"],
        "winner": r["use"],
        "winner_mean": r["mean"],
        "runner_up": runner.row["use"] if runner is not None else None,
        "margin": margin.mean if margin else nan,
        "margin_low": margin.low if margin else nan,
        "margin_high": margin.high if margin else nan,
        "margin_n": margin.n if margin else 0,
        "over_append": over.mean if over else nan,
        "over_append_low": over.low if over else nan,
        "over_append_high": over.high if over else nan,
        "as_good_as_rows": r["as_good_as_rows"],
        "curve_max_rows": float(ctx.fractions.max()) * n_train if len(ctx.fractions) else nan,
    }
    over_use = append.row["use"] if over is not None and append is not None else ""
    row["sentence"] = verdict_sentence(row, metric, margin, over, over_use)
    return row


def verdict_sentence(
    verdict: dict[str, Any],
    metric: str,
    margin: PairedDifference | None,
    over: PairedDifference | None = None,
    over_use: str = "",
) -> str:
    """A verdict in words: which use of the budget wins, by how much against the runner-up
    (``margin``; "not distinguishable at N seeds" when its interval includes 0) and against
    appending (``over``, the use ``over_use``), and how many appended rows would match it."""
    v = verdict
    budget, n_train = v["budget_rows"], v["n_train"]
    where = (
        f"{v['attack_label']} at {fmt_rate(float(v['rate']))}, {budget} clean rows "
        f"(b = {budget / n_train:.2g})"
    )
    head = f"{where}: **{v['winner']}**"
    mean = f"{metric} {v['winner_mean']:.3f}"
    if margin is None:
        text = f"{head} is the only use measured ({mean})"
    elif margin.resolved:
        text = f"{head} wins ({mean}), by {difference_text(margin)} over {v['runner_up']}"
    else:
        text = (
            f"{head} has the best mean ({mean}) but is not distinguishable from "
            f"{v['runner_up']} at {margin.n} seeds ({difference_text(margin)})"
        )
    if over is not None:
        text += f"; over {over_use}: {difference_text(over)}"
    matched = v["as_good_as_rows"]
    if math.isnan(matched):
        text += "; no undefended curve to compare with"
    elif math.isinf(matched):
        text += (
            f"; better than appending any measured amount (up to {v['curve_max_rows']:.0f} rows)"
        )
    else:
        text += f"; as good as appending {matched:.0f} rows"
    return text + "."
