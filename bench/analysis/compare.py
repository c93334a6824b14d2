"""Compare two results tables: the regression gate.

``compare(base, new)`` aligns cells by *configuration*: the ids of dataset, model, attack, rate,
defense and the seed and extra-clean fraction (``schema.SEED_KEYS``), never by code version,
display label or ``cell_id`` (which also hashes dataset fingerprints). One exception keeps the
gate useful when a team retunes its model: a model id found on one side only is paired with the
single unmatched model *of the same name* on the other side (per dataset), and the diff says
that their parameters differ; anything less clear-cut is listed as one-sided, never merged.

Each configuration (``schema.GROUP_KEYS``) is judged over its seeds, metric by metric:

* ``accuracy``, ``macro_f1`` (at ``extra_fraction = 0``): a drop is a regression;
* ``attack_success_rate`` (targeted flips, ``f = 0``): a rise is a regression;
* ``backdoor_asr`` (backdoors: the triggered test rows predicted as the target, ``f = 0``): a
  rise is a regression;
* ``det_recall`` (filters, ``f = 0``): a drop is a regression;
* ``f_needed`` (extra clean data needed, from :func:`bench.analysis.recovery.estimate_recovery`): a rise
  is a regression, including a curve that no longer recovers within the grid (``inf``).

A change counts only beyond ``tolerance = max(abs_floor, k × SE)``. When both sides hold the
same seeds the comparison is **paired** (a seed fixes the split, the poison and the model
initialization on both sides): SE is the standard error of the mean per-seed difference. Other
seeds: the pooled two-sample standard error of the difference of the means. For ``f_needed``
the SE comes from the two t-intervals (half-width / the t quantile at the seed count); when an
interval is open (the data cannot rule out "not recovered") or there are fewer than 3 seeds
there is no SE, and the change counts only when it passes the floor and the two intervals do
not overlap.

**No holes**: a metric that is a number in BASE and NaN (or absent for that configuration) in
NEW is a regression; a metric column missing from NEW's table entirely is unusable input
(exit 2). The diff says how many checks ran and why any were skipped. Cells on one side only
are listed, never dropped silently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.errors import CompareError
from bench.analysis.recovery import estimate_recovery
from bench.analysis.stats import MIN_SEEDS_FOR_INTERVAL, t_quantile
from bench.core.schema import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_METRIC,
    DEFAULT_TOLERANCE,
    DIRECTIONS,
    GROUP_KEYS,
    NESTED_COLUMNS,
    NO_ATTACK_ID,
    NO_DEFENSE_ID,
    REQUIRED_COLUMNS,
    SEED_KEYS,
    SchemaError,
    check_table,
)
from bench.core.store import plain_strings, read_run_meta, read_table
from bench.core.types import PoisonBenchError

#: the metrics the gate can judge, each with its direction (schema.DIRECTIONS)
JUDGED = (
    "accuracy", "macro_f1", "attack_success_rate", "backdoor_asr", "det_recall", "f_needed"
)  # fmt: skip
DEFAULT_METRICS = JUDGED
#: absolute floors: 2 points for the [0, 1] metrics, 0.25 × n_train for extra clean data
DEFAULT_FLOORS = {
    "accuracy": 0.02,
    "macro_f1": 0.02,
    "attack_success_rate": 0.02,
    "backdoor_asr": 0.02,
    "det_recall": 0.02,
    "f_needed": 0.25,
}
DEFAULT_K = 3.0
#: the fraction at which per-seed metrics are judged (the curve is judged through f_needed)
JUDGED_FRACTION = 0.0
#: columns every compared table must have
REQUIRED = REQUIRED_COLUMNS


@dataclass(frozen=True)
class Settings:
    """How the comparison judges changes."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    k: float = DEFAULT_K
    floors: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FLOORS))
    recovery_metric: str = DEFAULT_METRIC
    recovery_tolerance: float = DEFAULT_TOLERANCE
    n_boot: int = DEFAULT_BOOTSTRAP

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in JUDGED]
        if unknown or not self.metrics:
            raise CompareError(
                f"metrics: {', '.join(unknown) or '(empty)'} not comparable "
                f"(valid: {', '.join(JUDGED)})"
            )
        if not (math.isfinite(self.k) and self.k >= 0):
            raise CompareError(f"k: must be a finite number >= 0, got {self.k}")
        for metric, floor in self.floors.items():
            if metric not in JUDGED:
                raise CompareError(
                    f"abs-floor: {metric!r} is not a metric (valid: {', '.join(JUDGED)})"
                )
            if not (math.isfinite(floor) and floor >= 0):
                raise CompareError(f"abs-floor: {metric} must be a finite number >= 0")


#: the columns of a check (one judged configuration and metric)
CHECK_COLUMNS = [
    *GROUP_KEYS,
    "dataset_label",
    "model_label",
    "attack_label",
    "defense_label",
    "metric",
    "base_mean",
    "base_n",
    "new_mean",
    "new_n",
    "paired",
    "change",
    "se",
    "tolerance",
    "verdict",
    "reason",
]
#: the columns of a skipped check
SKIP_COLUMNS = [*GROUP_KEYS, "attack_label", "defense_label", "metric", "reason"]
#: the columns listing a cell on one side only
LISTED = ["dataset_label", "model_label", "attack_label", "rate", "defense_label", "seed"]


@dataclass
class Comparison:
    """The outcome: judged checks, skipped checks, one-sided cells, and the exit status."""

    checks: pd.DataFrame
    skipped: pd.DataFrame
    only_in_base: pd.DataFrame
    only_in_new: pd.DataFrame
    failed_in_new: pd.DataFrame
    n_common_cells: int
    notes: list[str]
    settings: Settings
    base_name: str = "BASE"
    new_name: str = "NEW"

    @property
    def regressions(self) -> pd.DataFrame:
        return self.checks[self.checks["verdict"] == "regression"]

    @property
    def improvements(self) -> pd.DataFrame:
        return self.checks[self.checks["verdict"] == "improvement"]

    @property
    def exit_code(self) -> int:
        """0: no regression; 1: a regression (a metric beyond tolerance, a metric that became
        NaN, or a newly failed cell)."""
        return 1 if len(self.regressions) or len(self.failed_in_new) else 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary (NaN and inf written as null and strings)."""

        rows = _json_rows
        return {
            "status": "regression" if self.exit_code else "ok",
            "exit_code": self.exit_code,
            "base": self.base_name,
            "new": self.new_name,
            "counts": self._counts(),
            "skipped_reasons": self._skipped_reasons(),
            "settings": asdict(self.settings),
            "regressions": rows(self.regressions),
            "improvements": rows(self.improvements),
            "failed_in_new": rows(self.failed_in_new),
            "only_in_base": rows(self.only_in_base),
            "only_in_new": rows(self.only_in_new),
            "skipped": rows(self.skipped),
            "notes": self.notes,
        }

    def _skipped_reasons(self) -> dict[str, int]:
        reasons = self.skipped["reason"].value_counts().to_dict() if len(self.skipped) else {}
        return {str(k): int(v) for k, v in reasons.items()}

    def _counts(self) -> dict[str, int]:
        return {
            "checks": len(self.checks),
            "skipped": len(self.skipped),
            "paired_checks": int(self.checks["paired"].sum()) if len(self.checks) else 0,
            "regressions": len(self.regressions),
            "improvements": len(self.improvements),
            "within_tolerance": int((self.checks["verdict"] == "ok").sum()),
            "common_cells": self.n_common_cells,
            "only_in_base": len(self.only_in_base),
            "only_in_new": len(self.only_in_new),
            "failed_in_new": len(self.failed_in_new),
        }

    def to_markdown(self, max_rows: int = 50) -> str:
        """A markdown diff for a CI log or a pull-request comment."""
        c = self._counts()
        verdict = "❌ regression" if self.exit_code else "✅ no regression"
        lines = [
            f"## poisonbench compare: {verdict}",
            "",
            f"`{self.base_name}` → `{self.new_name}`: {c['regressions']} regression(s), "
            f"{c['improvements']} improvement(s), {c['within_tolerance']} check(s) within "
            f"tolerance; {c['common_cells']} common cells, {c['only_in_base']} only in "
            f"BASE, {c['only_in_new']} only in NEW, {c['failed_in_new']} failed in NEW.",
            "",
            f"**{c['checks']} checks ran** ({c['paired_checks']} paired by seed)"
            + (
                f"; {c['skipped']} skipped: "
                + ", ".join(f"{n} {r}" for r, n in self._skipped_reasons().items())
                if c["skipped"]
                else "; none skipped"
            )
            + ".",
            "",
            f"Tolerance = max(floor, {self.settings.k:g} × SE of the change; paired by seed "
            "where both sides have the same seeds); floors: "
            + ", ".join(f"{m} {self.settings.floors.get(m, 0):g}" for m in self.settings.metrics)
            + ".",
        ]
        for title, df in (("Regressions", self.regressions), ("Improvements", self.improvements)):
            if len(df):
                lines += ["", f"### {title}", "", _markdown(_display(df), max_rows)]
        if len(self.failed_in_new):
            lines += ["", "### Cells that failed in NEW", ""]
            lines.append(_markdown(self.failed_in_new, max_rows))
        for title, df in (("Only in BASE", self.only_in_base), ("Only in NEW", self.only_in_new)):
            if len(df):
                lines += ["", f"### {title} (listed, not judged)", "", _markdown(df, max_rows)]
        if self.notes:
            lines += ["", "### Notes", ""] + [f"- {n}" for n in self.notes]
        if len(self.skipped):
            lines += ["", f"<details><summary>{len(self.skipped)} skipped checks</summary>", ""]
            shown = self.skipped[["attack_label", "rate", "defense_label", "metric", "reason"]]
            lines += [_markdown(shown, 500), "", "</details>"]
        if len(self.checks):
            lines += ["", f"<details><summary>All {len(self.checks)} checks</summary>", ""]
            shown = _display(self.checks)
            shown["verdict"] = self.checks["verdict"].to_numpy()
            lines += [_markdown(shown, 500), "", "</details>"]
        return "\n".join(lines) + "\n"


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is pd.NA:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def _json_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """``df``'s rows as JSON-able dicts (column by column: a listing of one-sided cells of a
    large run has 10⁵ rows)."""
    columns = [[_json_value(v) for v in df[c].tolist()] for c in df.columns]
    names = [str(c) for c in df.columns]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _markdown(df: pd.DataFrame, max_rows: int) -> str:
    text = df.head(max_rows).to_markdown(index=False)
    if len(df) > max_rows:
        text += f"\n\n… and {len(df) - max_rows} more (see the JSON summary)."
    return text


def _fmt(value: float) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.4g}"


def _display(df: pd.DataFrame) -> pd.DataFrame:
    out = df[["dataset_label", "model_label", "attack_label", "rate", "defense_label", "metric"]]
    out = out.rename(
        columns={
            "dataset_label": "dataset",
            "model_label": "model",
            "attack_label": "attack",
            "defense_label": "defense",
        }
    ).copy()
    out["base"] = [f"{_fmt(m)} (n={n})" for m, n in zip(df["base_mean"], df["base_n"], strict=True)]
    out["new"] = [f"{_fmt(m)} (n={n})" for m, n in zip(df["new_mean"], df["new_n"], strict=True)]
    out["change"] = [
        (f"{d:+.4g}" if np.isfinite(d) else ("→ > grid" if d > 0 else "→ recovered"))
        if not (isinstance(d, float) and math.isnan(d))
        else str(r)
        for d, r in zip(df["change"], df["reason"], strict=True)
    ]
    out["tolerance"] = [_fmt(t) for t in df["tolerance"]]
    out["paired"] = ["yes" if p else "no" for p in df["paired"]]
    return out


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def unread_columns(recovery_metric: str = DEFAULT_METRIC) -> tuple[str, ...]:
    """The columns a comparison never reads: the nested JSON columns, except the confusion
    matrices when the extra clean data needed is estimated for the attack success rate (its
    clean reference is read from the clean model's confusion matrix)."""
    keep = {"confusion"} if recovery_metric == "attack_success_rate" else set()
    return tuple(c for c in NESTED_COLUMNS if c not in keep)


def load_results(
    path: str | Path, exclude: Iterable[str] = (), categories: bool = False
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The results table at ``path`` (run directory, .parquet or .csv) and its run.json metadata
    ({} when absent). Raises :class:`CompareError` saying why the input is unusable.

    exclude, categories: see :func:`bench.core.store.read_table` (``compare`` leaves out
    :func:`unread_columns` and reads text as categories; :func:`compare_tables` takes either).
    """
    path = Path(path)
    if not path.exists():
        raise CompareError(f"{path}: no such file or directory")
    try:
        table = read_table(path, exclude=exclude, categories=categories)
        meta = read_run_meta(path)
        check_table(table, REQUIRED, str(path))
    except SchemaError as exc:
        raise CompareError(str(exc)) from None
    except PoisonBenchError as exc:
        raise CompareError(str(exc)) from None
    if table.empty:
        raise CompareError(f"{path}: results table has no rows")
    return table, meta


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def pooled_se(base: np.ndarray, new: np.ndarray) -> float:
    """Pooled two-sample standard error of mean(new) − mean(base); NaN with < 3 values in all
    (no spread can be estimated), 0 when every value is identical."""
    n1, n2 = len(base), len(new)
    if n1 + n2 < 3 or n1 == 0 or n2 == 0:
        return float("nan")
    ss = ((base - base.mean()) ** 2).sum() + ((new - new.mean()) ** 2).sum()
    var = ss / (n1 + n2 - 2)
    return float(math.sqrt(var * (1 / n1 + 1 / n2)))


def paired_se(diff: np.ndarray) -> float:
    """Standard error of the mean of per-seed differences; NaN with fewer than 2 seeds."""
    if len(diff) < 2:
        return float("nan")
    return float(diff.std(ddof=1) / math.sqrt(len(diff)))


def _verdict(worse: float, tolerance: float) -> str:
    if worse > tolerance:
        return "regression"
    if -worse > tolerance:
        return "improvement"
    return "ok"


def _labels_of(group: pd.DataFrame) -> dict[str, Any]:
    first = group.iloc[0]
    return {
        c: first.get(c) for c in ("dataset_label", "model_label", "attack_label", "defense_label")
    }


def _seed_checks(
    base: pd.DataFrame, new: pd.DataFrame, settings: Settings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Checks of the per-seed metrics at f = 0, one per (configuration, metric) that BASE
    defines; and the checks skipped, with the reason."""
    checks, skipped = [], []
    metrics = [m for m in settings.metrics if m != "f_needed"]
    read = [*GROUP_KEYS, "seed", "dataset_label", "model_label", "attack_label", "defense_label"]
    read += metrics

    def judged(df: pd.DataFrame) -> pd.DataFrame:  # (a slim copy: groups copy every column)
        rows = df[(df["extra_fraction"] == JUDGED_FRACTION) & (df["status"] == "ok")]
        return rows[[c for c in dict.fromkeys(read) if c in rows]]

    b, n = judged(base), judged(new)
    b_groups = dict(tuple(b.groupby(list(GROUP_KEYS), sort=True, dropna=False)))
    n_groups = dict(tuple(n.groupby(list(GROUP_KEYS), sort=True, dropna=False)))
    for key in sorted(set(b_groups) & set(n_groups), key=str):
        gb, gn = b_groups[key], n_groups[key]
        ident = {**dict(zip(GROUP_KEYS, key, strict=True)), **_labels_of(gn)}
        by_seed_b, by_seed_n = gb.set_index("seed"), gn.set_index("seed")
        for metric in metrics:
            if metric not in gb:
                skipped.append({**ident, "metric": metric, "reason": "not in BASE's table"})
                continue
            sb = pd.to_numeric(by_seed_b[metric], errors="coerce").dropna()
            if sb.empty:  # e.g. attack success rate of an untargeted attack: not defined
                skipped.append({**ident, "metric": metric, "reason": "not defined in BASE"})
                continue
            sn = pd.to_numeric(by_seed_n[metric], errors="coerce")
            common = sb.index.intersection(sn.index)
            lost = [s for s in common if pd.isna(sn.loc[s])]
            sn = sn.dropna()
            row = {
                **ident,
                "metric": metric,
                "base_mean": float(sb.mean()),
                "base_n": len(sb),
                "new_mean": float(sn.mean()) if len(sn) else math.nan,
                "new_n": len(sn),
            }
            if sn.empty or lost:
                which = "every seed" if sn.empty else f"seed(s) {', '.join(map(str, lost))}"
                checks.append(
                    {
                        **row,
                        "paired": False,
                        "change": math.nan,
                        "se": math.nan,
                        "tolerance": math.nan,
                        "verdict": "regression",
                        "reason": f"NaN in NEW for {which} (a number in BASE)",
                    }
                )
                continue
            both = sb.index.intersection(sn.index)
            paired = len(both) == len(sb) == len(sn) and len(both) >= 2
            if paired:
                diff = (sn.loc[both] - sb.loc[both]).to_numpy(float)
                change, se = float(diff.mean()), paired_se(diff)
            else:
                change = float(sn.mean() - sb.mean())
                se = pooled_se(sb.to_numpy(float), sn.to_numpy(float))
            floor = settings.floors.get(metric, 0.0)
            tolerance = max(floor, settings.k * se) if np.isfinite(se) else floor
            worse = -DIRECTIONS[metric] * change
            checks.append(
                {
                    **row,
                    "paired": paired,
                    "change": change,
                    "se": se,
                    "tolerance": tolerance,
                    "verdict": _verdict(worse, tolerance),
                    "reason": "",
                }
            )
    return checks, skipped


def _interval_se(low: float, high: float, n_seeds: int) -> float:
    """A standard error from the 95 % t-interval of ``n_seeds`` seeds (half-width over the t
    quantile; inf when the interval is open or there are too few seeds for one)."""

    if not (np.isfinite(low) and np.isfinite(high)) or n_seeds < MIN_SEEDS_FOR_INTERVAL:
        return float("inf")
    return (high - low) / (2 * t_quantile(n_seeds - 1, 0.95))


def _recovery_checks(
    base: pd.DataFrame, new: pd.DataFrame, settings: Settings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Checks of the extra clean data needed, one per configuration BASE estimates."""

    kwargs = {
        "metric": settings.recovery_metric,
        "tolerance": settings.recovery_tolerance,
        "n_boot": settings.n_boot,
        "seed": 0,
    }
    rb = estimate_recovery(base, **kwargs)
    rn = estimate_recovery(new, **kwargs)
    if rb.empty or rn.empty:
        return [], []
    merged = rb.merge(rn, on=list(GROUP_KEYS), suffixes=("_b", "_n"))
    floor = settings.floors.get("f_needed", 0.0)
    out, skipped = [], []
    for rec in merged.to_dict("records"):
        ident = {
            **{g: rec[g] for g in GROUP_KEYS},
            **{c: rec.get(f"{c}_n") for c in ("dataset_label", "model_label", "attack_label",
                                              "defense_label")},
        }  # fmt: skip
        fb, fn = float(rec["f_needed_b"]), float(rec["f_needed_n"])
        if math.isnan(fb):
            skipped.append({**ident, "metric": "f_needed", "reason": "not estimable in BASE"})
            continue
        row = {
            **ident,
            "metric": "f_needed",
            "base_mean": fb,
            "base_n": int(rec.get("n_seeds_b", 0) or 0),
            "new_mean": fn,
            "new_n": int(rec.get("n_seeds_n", 0) or 0),
            "paired": False,
        }
        if math.isnan(fn):
            out.append(
                {**row, "change": math.nan, "se": math.nan, "tolerance": math.nan,
                 "verdict": "regression", "reason": "not estimable in NEW (a number in BASE)"}
            )  # fmt: skip
            continue
        se = math.hypot(
            _interval_se(float(rec["f_low_b"]), float(rec["f_high_b"]), row["base_n"]),
            _interval_se(float(rec["f_low_n"]), float(rec["f_high_n"]), row["new_n"]),
        )
        low_b, high_b = float(rec["f_low_b"]), float(rec["f_high_b"])
        low_n, high_n = float(rec["f_low_n"]), float(rec["f_high_n"])
        change = 0.0 if math.isinf(fb) and math.isinf(fn) else fn - fb
        if np.isfinite(se):
            tolerance = max(floor, settings.k * se)
            verdict = _verdict(change, tolerance)
        else:
            # An open interval (some resamples never recover) has no usable SE, and censoring
            # is a jump, not a shift: judge by the intervals themselves. Worse only when the
            # change passes the floor and the two 95% intervals do not overlap.
            tolerance = floor
            if change > floor and low_n > high_b:
                verdict = "regression"
            elif -change > floor and low_b > high_n:
                verdict = "improvement"
            else:
                verdict = "ok"
        out.append({**row, "change": change, "se": se, "tolerance": tolerance,
                    "verdict": verdict, "reason": ""})  # fmt: skip
    return out, skipped


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------


def _cells(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (the f = 0 row, or the first row of a failed cell): the columns that
    identify and list it, as plain strings."""
    columns = [*SEED_KEYS, *LISTED, "extra_fraction", "status", "error"]
    cells = df[[c for c in dict.fromkeys(columns) if c in df]]
    cells = cells.sort_values("extra_fraction", kind="stable").drop_duplicates(list(SEED_KEYS))
    return plain_strings(cells)


def _groups(df: pd.DataFrame) -> set[tuple[Any, ...]]:
    """The configurations (``GROUP_KEYS`` tuples) of ``df``'s rows."""
    return set(map(tuple, df[list(GROUP_KEYS)].drop_duplicates().to_numpy().tolist()))


def _narrow(df: pd.DataFrame, groups: set[tuple[Any, ...]]) -> pd.DataFrame:
    """The rows of the configurations ``groups`` (``GROUP_KEYS`` tuples) and the clean
    reference rows (attack and defense ``none``) of their (dataset, model) pairs, as plain
    strings: all that the checks of those configurations read (each configuration's
    estimate depends only on its own rows and its pair's clean references)."""
    keys = list(GROUP_KEYS)
    pairs = {g[:2] for g in groups}
    near = df[
        df["dataset_id"].isin({p[0] for p in pairs}) & df["model_id"].isin({p[1] for p in pairs})
    ]
    near = plain_strings(near)
    if near.empty:
        return near
    in_groups = pd.MultiIndex.from_frame(near[keys]).isin(list(groups))
    in_pairs = pd.MultiIndex.from_frame(near[keys[:2]]).isin(list(pairs))
    clean = (near["attack_id"] == NO_ATTACK_ID) & (near["defense_id"] == NO_DEFENSE_ID)
    return near[in_groups | (clean.to_numpy() & in_pairs)]


def align_models(base: pd.DataFrame, new: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``new`` with a retuned model's id replaced by BASE's, where that is unambiguous.

    Per dataset and model name: when exactly one model id of that name is in NEW only and
    exactly one in BASE only, they are paired (the team changed the model's parameters and
    wants the change gated) and a note says so. Ids on both sides are never touched.
    """
    notes: list[str] = []
    if "model" not in base or "model" not in new:
        return new, notes
    b_ids = base[["dataset_id", "model", "model_id", "model_label"]].drop_duplicates()
    n_ids = new[["dataset_id", "model", "model_id", "model_label"]].drop_duplicates()
    copied = False
    for (dataset, name), nb in n_ids.groupby(["dataset_id", "model"]):
        bb = b_ids[(b_ids["dataset_id"] == dataset) & (b_ids["model"] == name)]
        only_n = sorted(set(nb["model_id"]) - set(bb["model_id"]))
        only_b = sorted(set(bb["model_id"]) - set(nb["model_id"]))
        if len(only_n) == 1 and len(only_b) == 1:
            old_label = bb.loc[bb["model_id"] == only_b[0], "model_label"].iloc[0]
            new_label = nb.loc[nb["model_id"] == only_n[0], "model_label"].iloc[0]
            if not copied:  # (text read as categories takes no new value: plain text first)
                new, copied = new.copy(), True
                for column in ("model_id", "model_label"):
                    if isinstance(new[column].dtype, pd.CategoricalDtype):
                        new[column] = new[column].astype(new[column].cat.categories.dtype)
            rows = (new["dataset_id"] == dataset) & (new["model_id"] == only_n[0])
            new.loc[rows, "model_id"] = only_b[0]
            new.loc[rows, "model_label"] = old_label
            notes.append(
                f"model {name}: parameters differ (BASE {json.loads(only_b[0])['params']}; "
                f"NEW {json.loads(only_n[0])['params']}); NEW's {new_label} is compared with "
                f"BASE's {old_label} as the same configuration"
            )
    return new, notes


def check_unique_rows(df: pd.DataFrame, name: str) -> None:
    """CompareError when rows repeat a (configuration, seed, extra-clean fraction): a
    concatenated or doubled table, which no run writes."""
    key = [*SEED_KEYS, "extra_fraction"]
    repeated = df.duplicated(key, keep=False)
    if repeated.any():
        first = df[repeated].iloc[0]
        raise CompareError(
            f"{name}: {int(repeated.sum())} rows repeat a configuration, seed and extra-clean "
            f"fraction (e.g. {first.get('attack_label', '?')}, rate {first['rate']}, "
            f"{first.get('defense_label', '?')}, seed {first['seed']}, f = "
            f"{first['extra_fraction']}); a run writes each once (a concatenated table?)"
        )


def _failed_metrics_as_nan(
    base: pd.DataFrame, new: pd.DataFrame, metrics: Sequence[str]
) -> pd.DataFrame:
    """``new`` with the metric columns BASE has added as NaN when no row of NEW finished: a
    run whose every cell failed writes no metric column, and that is a regression (every
    number went missing), not a table of another shape."""
    if (new["status"] == "ok").any():
        return new
    missing = [m for m in dict.fromkeys(metrics) if m in base.columns and m not in new.columns]
    return new.assign(**dict.fromkeys(missing, math.nan)) if missing else new


def compare_tables(
    base: pd.DataFrame,
    new: pd.DataFrame,
    settings: Settings | None = None,
    base_name: str = "BASE",
    new_name: str = "NEW",
) -> Comparison:
    """Align ``base`` and ``new`` by configuration and judge every group; see the module doc."""
    settings = settings or Settings()
    for name, df in ((base_name, base), (new_name, new)):
        try:
            check_table(df, REQUIRED, name)
        except SchemaError as exc:
            raise CompareError(str(exc)) from None
    for name, df in ((base_name, base), (new_name, new)):
        check_unique_rows(df, name)
    wanted = [m for m in settings.metrics if m != "f_needed"]
    new = _failed_metrics_as_nan(base, new, [*wanted, settings.recovery_metric])
    for metric in wanted:
        in_base = (
            metric in base.columns and pd.to_numeric(base[metric], errors="coerce").notna().any()
        )
        if in_base and metric not in new.columns:
            raise CompareError(
                f"{new_name}: results table lacks the metric column {metric} that {base_name} "
                "has numbers for (a table of another shape?)"
            )
    if "f_needed" in settings.metrics:
        for name, df in ((base_name, base), (new_name, new)):
            if settings.recovery_metric not in df.columns:
                raise CompareError(
                    f"{name}: results table lacks the column {settings.recovery_metric}, which "
                    "the extra clean data needed (f_needed) is estimated from"
                )
    new, notes = align_models(base, new)
    key = list(SEED_KEYS)
    # NEW may be a cluster-sized grid against a small BASE: the steps on whole tables work on
    # one row per cell (_cells); the statistics see only the configurations both sides have.
    cells_b, cells_n = _cells(base), _cells(new)
    ids_b = cells_b.set_index(key).index
    ids_n = cells_n.set_index(key).index
    in_both = ids_b.isin(ids_n)
    only_b = cells_b[~in_both][LISTED].reset_index(drop=True)
    only_n = cells_n[~ids_n.isin(ids_b)][LISTED].reset_index(drop=True)

    common = cells_b[in_both][[*key, "status"]].merge(
        cells_n[[*key, "status", *(["error"] if "error" in cells_n else [])]],
        on=key,
        suffixes=("_base", "_new"),
    )
    newly_failed = common[(common["status_base"] == "ok") & (common["status_new"] == "failed")]
    failed_in_new = cells_n.merge(newly_failed[key], on=key)[
        LISTED + (["error"] if "error" in cells_n else [])
    ].reset_index(drop=True)

    groups_b = _groups(base[base["status"] == "ok"])
    groups_n = _groups(new)
    if not groups_b & groups_n:
        raise CompareError(
            f"no common cells: {base_name} and {new_name} share no configuration (dataset, "
            "model, attack, rate, defense); are they runs of the same config?"
        )
    common_groups = _groups(base) & groups_n
    base, new = _narrow(base, common_groups), _narrow(new, common_groups)
    ok_b = base[base["status"] == "ok"]
    ok_n = new[new["status"] == "ok"]

    checks, skipped = _seed_checks(base, new, settings)
    # A configuration BASE finished that NEW ran but finished no row of: every metric BASE
    # defines there went missing, a hole the gate must not pass.
    groups_ok_n = _groups(ok_n)
    for gkey in sorted((groups_b & groups_n) - groups_ok_n, key=str):
        gb = ok_b[(ok_b[list(GROUP_KEYS)] == pd.Series(gkey, index=list(GROUP_KEYS))).all(axis=1)]
        gb = gb[gb["extra_fraction"] == JUDGED_FRACTION]
        for metric in wanted:
            values = pd.to_numeric(gb[metric], errors="coerce").dropna() if metric in gb else []
            if len(values):
                checks.append(
                    {**dict(zip(GROUP_KEYS, gkey, strict=True)), **_labels_of(gb),
                     "metric": metric, "base_mean": float(values.mean()), "base_n": len(values),
                     "new_mean": math.nan, "new_n": 0, "paired": False, "change": math.nan,
                     "se": math.nan, "tolerance": math.nan, "verdict": "regression",
                     "reason": "no finished row in NEW (a number in BASE)"}
                )  # fmt: skip
    if "f_needed" in settings.metrics:
        more, more_skipped = _recovery_checks(base, new, settings)
        checks += more
        skipped += more_skipped
    table = pd.DataFrame(checks, columns=CHECK_COLUMNS)
    if not table.empty:
        order = {"regression": 0, "improvement": 1, "ok": 2}
        table = table.sort_values(
            by=["verdict", "dataset_label", "model_label", "attack_label", "rate",
                "defense_label", "metric"],
            key=lambda s: s.map(order) if s.name == "verdict" else s,
            kind="stable",
        ).reset_index(drop=True)  # fmt: skip
    return Comparison(
        checks=table,
        skipped=pd.DataFrame(skipped, columns=SKIP_COLUMNS),
        only_in_base=only_b,
        only_in_new=only_n,
        failed_in_new=failed_in_new,
        n_common_cells=int(in_both.sum()),
        notes=notes,
        settings=settings,
        base_name=base_name,
        new_name=new_name,
    )


def settings_from(
    meta: dict[str, Any],
    metrics: Sequence[str] | None = None,
    k: float | None = None,
    floors: dict[str, float] | None = None,
) -> Settings:
    """Settings with the recovery metric and tolerance of a run's ``run.json`` (``meta``)."""
    recovery = meta.get("recovery", {})
    if not isinstance(recovery, dict):
        raise CompareError(f"run.json: recovery must be a mapping, got {recovery!r:.80}")
    merged = dict(DEFAULT_FLOORS)
    merged.update(floors or {})
    try:
        tolerance = float(recovery.get("tolerance", DEFAULT_TOLERANCE))
    except (TypeError, ValueError):
        raise CompareError(f"run.json: recovery.tolerance is not a number: {recovery}") from None
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise CompareError(
            f"run.json: recovery.tolerance must be a finite number >= 0, got {tolerance:g}"
        )
    return Settings(
        metrics=tuple(metrics) if metrics else DEFAULT_METRICS,
        k=DEFAULT_K if k is None else float(k),
        floors=merged,
        recovery_metric=str(recovery.get("metric", DEFAULT_METRIC)),
        recovery_tolerance=tolerance,
    )


def compare(
    base: str | Path,
    new: str | Path,
    metrics: Sequence[str] | None = None,
    k: float | None = None,
    floors: dict[str, float] | None = None,
) -> Comparison:
    """Compare the results at ``base`` with those at ``new`` (run directories or tables).

    The recovery metric and tolerance come from BASE's ``run.json`` when present, so both sides
    are estimated the same way.
    """
    return load_base(base, metrics, k, floors).against(new)


@dataclass
class Base:
    """A baseline read and ready to be compared with (:func:`load_base`)."""

    path: str
    table: pd.DataFrame
    settings: Settings

    def against(self, new: str | Path) -> Comparison:
        """The comparison of the results at ``new`` (a run directory or table) with this."""
        unread = unread_columns(self.settings.recovery_metric)
        table, _ = load_results(new, unread, categories=True)
        return compare_tables(self.table, table, self.settings, self.path, str(new))


def load_base(
    base: str | Path,
    metrics: Sequence[str] | None = None,
    k: float | None = None,
    floors: dict[str, float] | None = None,
) -> Base:
    """Read the baseline at ``base`` and the settings it is judged with (see :func:`compare`):
    ``poisonbench gate`` reads it before its run, so that an unusable baseline costs no run."""
    try:
        meta_b = read_run_meta(base) if Path(base).exists() else {}
    except PoisonBenchError as exc:
        raise CompareError(str(exc)) from None
    settings = settings_from(meta_b, metrics, k, floors)
    # Only what a comparison reads, text as categories: a million-row NEW reads in seconds
    # (compare_tables narrows it to BASE's configurations before any statistics).
    table, _ = load_results(base, unread_columns(settings.recovery_metric), categories=True)
    return Base(str(base), table, settings)


def parse_floors(values: Iterable[str]) -> dict[str, float]:
    """``["0.01", "f_needed=0.5"]`` → floors: a bare number applies to every [0, 1] metric."""
    floors: dict[str, float] = {}
    for value in values:
        metric, _, number = value.rpartition("=")
        try:
            x = float(number)
        except ValueError:
            raise CompareError(
                f"abs-floor: {value!r} is not a number or METRIC=NUMBER "
                f"(metrics: {', '.join(JUDGED)})"
            ) from None
        targets = [metric] if metric else [m for m in JUDGED if m != "f_needed"]
        for m in targets:
            floors[m] = x
    return floors
