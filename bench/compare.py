"""Compare two results tables: the regression gate.

``compare(base, new)`` aligns cells by *identity* (their configuration: dataset, model, attack
and its parameters, rate, defense steps and their parameters, seed, extra-clean fraction), never
by code version or ``cell_id`` (which also hashes dataset fingerprints and the fraction grid).
Model hyperparameters are deliberately *not* part of the alignment key: the model is what a team
changes and wants gated, so a weakened ``C`` is compared against the baseline's cells, and the
difference in parameters is reported beside the verdict.

Each group (dataset, model, attack, rate, defense) is judged over its seeds, metric by metric:

* ``accuracy``, ``macro_f1`` (at ``extra_fraction = 0``): a drop is a regression;
* ``attack_success_rate`` (targeted flips, ``f = 0``): a rise is a regression;
* ``det_recall`` (filters, ``f = 0``): a drop is a regression;
* ``f_needed`` (extra clean data needed, from :func:`bench.recovery.estimate_recovery`): a rise
  is a regression, including a curve that no longer recovers within the grid (``inf``).

A change counts only beyond ``tolerance = max(abs_floor, k × SE)``, where SE is the pooled
two-sample standard error of the difference of the seed means. For ``f_needed`` the SE comes from
the two seed-bootstrap 95% intervals (half-width / 1.96 each); when an interval is open (some
resamples never recover) there is no SE, and the change counts only when it passes the floor and
the two intervals do not overlap: censoring is a jump, and with a handful of seeds a single test
row can make it. Changes as large in the good direction are reported as improvements.
Cells on one side only are listed, never dropped silently.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.store import ROW_KEY
from bench.types import PoisonBenchError

#: the columns that align a row of BASE with a row of NEW (configuration, not code version)
IDENTITY = ROW_KEY
#: a judged group: seeds are pooled inside it
GROUP = ("dataset", "model", "attack_label", "rate", "defense")
#: metric → +1 when higher is better, -1 when lower is better
DIRECTIONS = {
    "accuracy": 1,
    "macro_f1": 1,
    "attack_success_rate": -1,
    "det_recall": 1,
    "f_needed": -1,
}
DEFAULT_METRICS = tuple(DIRECTIONS)
#: absolute floors: 2 points for the [0, 1] metrics, 0.25 × n_train for extra clean data
DEFAULT_FLOORS = {
    "accuracy": 0.02,
    "macro_f1": 0.02,
    "attack_success_rate": 0.02,
    "det_recall": 0.02,
    "f_needed": 0.25,
}
DEFAULT_K = 3.0
#: the fraction at which per-seed metrics are judged (the curve is judged through f_needed)
JUDGED_FRACTION = 0.0
_Z95 = 1.959963984540054


class CompareError(PoisonBenchError):
    """The inputs cannot be compared (missing file, unreadable table, no common cells...)."""


@dataclass(frozen=True)
class Settings:
    """How the comparison judges changes."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    k: float = DEFAULT_K
    floors: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FLOORS))
    recovery_metric: str = "accuracy"
    recovery_tolerance: float = 0.005
    n_boot: int = 1000

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in DIRECTIONS]
        if unknown or not self.metrics:
            raise CompareError(
                f"metrics: {', '.join(unknown) or '(empty)'} not comparable "
                f"(valid: {', '.join(DIRECTIONS)})"
            )
        if not (math.isfinite(self.k) and self.k >= 0):
            raise CompareError(f"k: must be a finite number >= 0, got {self.k}")
        for metric, floor in self.floors.items():
            if metric not in DIRECTIONS:
                raise CompareError(
                    f"abs-floor: {metric!r} is not a metric (valid: {', '.join(DIRECTIONS)})"
                )
            if not (math.isfinite(floor) and floor >= 0):
                raise CompareError(f"abs-floor: {metric} must be a finite number >= 0")


@dataclass
class Comparison:
    """The outcome: judged checks, one-sided cells, and what it means for the exit status."""

    checks: pd.DataFrame
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
        """0: no regression; 1: a regression (a metric beyond tolerance or a newly failed cell)."""
        return 1 if len(self.regressions) or len(self.failed_in_new) else 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary (NaN and inf written as null and strings)."""

        def rows(df: pd.DataFrame) -> list[dict[str, Any]]:
            return [{k: _json_value(v) for k, v in rec.items()} for rec in df.to_dict("records")]

        return {
            "status": "regression" if self.exit_code else "ok",
            "exit_code": self.exit_code,
            "base": self.base_name,
            "new": self.new_name,
            "counts": {
                "checks": len(self.checks),
                "regressions": len(self.regressions),
                "improvements": len(self.improvements),
                "within_tolerance": int((self.checks["verdict"] == "ok").sum()),
                "common_cells": self.n_common_cells,
                "only_in_base": len(self.only_in_base),
                "only_in_new": len(self.only_in_new),
                "failed_in_new": len(self.failed_in_new),
            },
            "settings": asdict(self.settings),
            "regressions": rows(self.regressions),
            "improvements": rows(self.improvements),
            "failed_in_new": rows(self.failed_in_new),
            "only_in_base": rows(self.only_in_base),
            "only_in_new": rows(self.only_in_new),
            "notes": self.notes,
        }

    def to_markdown(self, max_rows: int = 50) -> str:
        """A markdown diff for a CI log or a pull-request comment."""
        c = self.to_json()["counts"]
        verdict = "❌ regression" if self.exit_code else "✅ no regression"
        lines = [
            f"## poisonbench compare: {verdict}",
            "",
            f"`{self.base_name}` → `{self.new_name}`: {c['regressions']} regression(s), "
            f"{c['improvements']} improvement(s), {c['within_tolerance']} check(s) within "
            f"tolerance; {c['common_cells']} common cells, {c['only_in_base']} only in "
            f"BASE, {c['only_in_new']} only in NEW, {c['failed_in_new']} failed in NEW.",
            "",
            f"Tolerance = max(floor, {self.settings.k:g} × pooled SE); floors: "
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
        if len(self.checks):
            lines += ["", f"<details><summary>All {len(self.checks)} checks</summary>", ""]
            shown = _display(self.checks)
            shown["verdict"] = self.checks["verdict"].to_numpy()
            lines += [_markdown(shown, 500), "", "</details>"]
        return "\n".join(lines) + "\n"


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def _markdown(df: pd.DataFrame, max_rows: int) -> str:
    text = df.head(max_rows).to_markdown(index=False)
    if len(df) > max_rows:
        text += f"\n\n… and {len(df) - max_rows} more (see the JSON summary)."
    return text


def _fmt(value: float) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.4g}"


def _display(df: pd.DataFrame) -> pd.DataFrame:
    out = df[[*GROUP, "metric"]].copy()
    out["base"] = [f"{_fmt(m)} (n={n})" for m, n in zip(df["base_mean"], df["base_n"], strict=True)]
    out["new"] = [f"{_fmt(m)} (n={n})" for m, n in zip(df["new_mean"], df["new_n"], strict=True)]
    out["change"] = [
        f"{d:+.4g}" if np.isfinite(d) else ("→ > grid" if d > 0 else "→ recovered")
        for d in df["change"]
    ]
    out["tolerance"] = [_fmt(t) for t in df["tolerance"]]
    return out


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_results(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The results table at ``path`` (run directory, .parquet or .csv) and its run.json metadata
    ({} when absent). Raises :class:`CompareError` saying why the input is unusable."""
    from bench.store import read_table

    path = Path(path)
    if not path.exists():
        raise CompareError(f"{path}: no such file or directory")
    try:
        table = read_table(path)
    except PoisonBenchError as exc:
        raise CompareError(str(exc)) from None
    meta: dict[str, Any] = {}
    run_json = (path if path.is_dir() else path.parent) / "run.json"
    if run_json.exists():
        try:
            meta = json.loads(run_json.read_text())
        except (OSError, json.JSONDecodeError):
            meta = {}
    required = {*IDENTITY, *GROUP, "status"}
    missing = sorted(required - set(table.columns))
    if missing:
        raise CompareError(f"{path}: results table lacks columns {', '.join(missing)}")
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
    if n1 + n2 < 3:
        return float("nan")
    ss = ((base - base.mean()) ** 2).sum() + ((new - new.mean()) ** 2).sum()
    var = ss / (n1 + n2 - 2)
    return float(math.sqrt(var * (1 / n1 + 1 / n2)))


def _verdict(worse: float, tolerance: float) -> str:
    if worse > tolerance:
        return "regression"
    if -worse > tolerance:
        return "improvement"
    return "ok"


def _seed_checks(base: pd.DataFrame, new: pd.DataFrame, settings: Settings) -> list[dict[str, Any]]:
    """Checks of the per-seed metrics at f = 0, one per (group, metric) with values both sides."""
    out = []
    metrics = [m for m in settings.metrics if m != "f_needed"]
    b = base[base["extra_fraction"] == JUDGED_FRACTION]
    n = new[new["extra_fraction"] == JUDGED_FRACTION]
    b_groups = dict(tuple(b.groupby(list(GROUP), sort=True, dropna=False)))
    n_groups = dict(tuple(n.groupby(list(GROUP), sort=True, dropna=False)))
    for key in sorted(set(b_groups) & set(n_groups), key=str):
        gb, gn = b_groups[key], n_groups[key]
        for metric in metrics:
            if metric not in gb or metric not in gn:
                continue
            vb = pd.to_numeric(gb[metric], errors="coerce").dropna().to_numpy(float)
            vn = pd.to_numeric(gn[metric], errors="coerce").dropna().to_numpy(float)
            if len(vb) == 0 or len(vn) == 0:
                continue  # e.g. attack success rate of an untargeted attack: not defined
            change = float(vn.mean() - vb.mean())
            se = pooled_se(vb, vn)
            floor = settings.floors.get(metric, 0.0)
            tolerance = max(floor, settings.k * se) if np.isfinite(se) else floor
            worse = -DIRECTIONS[metric] * change
            out.append(
                {
                    **dict(zip(GROUP, key, strict=True)),
                    "metric": metric,
                    "base_mean": float(vb.mean()),
                    "base_n": len(vb),
                    "new_mean": float(vn.mean()),
                    "new_n": len(vn),
                    "change": change,
                    "se": se,
                    "tolerance": tolerance,
                    "verdict": _verdict(worse, tolerance),
                }
            )
    return out


def _interval_se(low: float, high: float) -> float:
    """A standard error from a 95% bootstrap interval (inf when the interval is open)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return float("inf")
    return (high - low) / (2 * _Z95)


def _recovery_checks(
    base: pd.DataFrame, new: pd.DataFrame, settings: Settings
) -> list[dict[str, Any]]:
    """Checks of the extra clean data needed, one per group with an estimate on both sides."""
    from bench.recovery import estimate_recovery

    kwargs = {
        "metric": settings.recovery_metric,
        "tolerance": settings.recovery_tolerance,
        "n_boot": settings.n_boot,
        "seed": 0,
    }
    rb = estimate_recovery(base, **kwargs)
    rn = estimate_recovery(new, **kwargs)
    if rb is None or rn is None or rb.empty or rn.empty:
        return []
    merged = rb.merge(rn, on=list(GROUP), suffixes=("_b", "_n"))
    floor = settings.floors.get("f_needed", 0.0)
    out = []
    for rec in merged.to_dict("records"):
        fb, fn = float(rec["f_needed_b"]), float(rec["f_needed_n"])
        if math.isnan(fb) or math.isnan(fn):
            continue
        se = math.hypot(
            _interval_se(float(rec["f_low_b"]), float(rec["f_high_b"])),
            _interval_se(float(rec["f_low_n"]), float(rec["f_high_n"])),
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
        out.append(
            {
                **{g: rec[g] for g in GROUP},
                "metric": "f_needed",
                "base_mean": fb,
                "base_n": int(rec.get("n_seeds_b", 0) or 0),
                "new_mean": fn,
                "new_n": int(rec.get("n_seeds_n", 0) or 0),
                "change": change,
                "se": se,
                "tolerance": tolerance,
                "verdict": verdict,
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------

CHECK_COLUMNS = [
    *GROUP,
    "metric",
    "base_mean",
    "base_n",
    "new_mean",
    "new_n",
    "change",
    "se",
    "tolerance",
    "verdict",
]
_LISTED = ["dataset", "model", "attack_label", "rate", "defense", "seed"]


def _cells(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell identity (the f = 0 row, or the first row of a failed cell)."""
    key = [c for c in IDENTITY if c != "extra_fraction"]
    return df.sort_values("extra_fraction", kind="stable").drop_duplicates(key)


def compare_tables(
    base: pd.DataFrame,
    new: pd.DataFrame,
    settings: Settings | None = None,
    base_name: str = "BASE",
    new_name: str = "NEW",
) -> Comparison:
    """Align ``base`` and ``new`` by cell identity and judge every group; see the module doc."""
    settings = settings or Settings()
    for name, df in ((base_name, base), (new_name, new)):
        missing = sorted({*IDENTITY, *GROUP, "status"} - set(df.columns))
        if missing:
            raise CompareError(f"{name}: results table lacks columns {', '.join(missing)}")
    wanted = [m for m in settings.metrics if m != "f_needed"]
    if wanted and not any(m in base.columns and m in new.columns for m in wanted):
        raise CompareError(f"neither table pair has any of the metric columns {', '.join(wanted)}")
    key = [c for c in IDENTITY if c != "extra_fraction"]
    cells_b, cells_n = _cells(base), _cells(new)
    ids_b = cells_b.set_index(key).index
    ids_n = cells_n.set_index(key).index
    in_both = ids_b.isin(ids_n)
    only_b = cells_b[~in_both][_LISTED].reset_index(drop=True)
    only_n = cells_n[~ids_n.isin(ids_b)][_LISTED].reset_index(drop=True)

    common = cells_b[in_both][[*key, "status"]].merge(
        cells_n[[*key, "status", *(["error"] if "error" in cells_n else [])]],
        on=key,
        suffixes=("_base", "_new"),
    )
    newly_failed = common[(common["status_base"] == "ok") & (common["status_new"] == "failed")]
    failed_in_new = cells_n.merge(newly_failed[key], on=key)[
        _LISTED + (["error"] if "error" in cells_n else [])
    ].reset_index(drop=True)

    ok_b = base[base["status"] == "ok"]
    ok_n = new[new["status"] == "ok"]
    groups_b = set(map(tuple, ok_b[list(GROUP)].drop_duplicates().to_numpy().tolist()))
    groups_n = set(map(tuple, ok_n[list(GROUP)].drop_duplicates().to_numpy().tolist()))
    if not groups_b & groups_n and not len(failed_in_new):
        raise CompareError(
            f"no common cells: {base_name} and {new_name} share no (dataset, model, attack, "
            "rate, defense) with finished rows; are they runs of the same config?"
        )

    checks = _seed_checks(ok_b, ok_n, settings)
    notes: list[str] = []
    if "f_needed" in settings.metrics:
        try:
            checks += _recovery_checks(base, new, settings)
        except ImportError:
            notes.append("f_needed not judged: bench.recovery is not available")
    table = pd.DataFrame(checks, columns=CHECK_COLUMNS)
    if not table.empty:
        order = {"regression": 0, "improvement": 1, "ok": 2}
        table = table.sort_values(
            by=["verdict", *GROUP, "metric"],
            key=lambda s: s.map(order) if s.name == "verdict" else s,
            kind="stable",
        ).reset_index(drop=True)
    notes += _param_notes(base, new)
    return Comparison(
        checks=table,
        only_in_base=only_b,
        only_in_new=only_n,
        failed_in_new=failed_in_new,
        n_common_cells=int(in_both.sum()),
        notes=notes,
        settings=settings,
        base_name=base_name,
        new_name=new_name,
    )


def _param_notes(base: pd.DataFrame, new: pd.DataFrame) -> list[str]:
    """Say when a model's hyperparameters differ: they are compared, not aligned on."""
    if "model_params" not in base or "model_params" not in new:
        return []
    notes = []
    for model in sorted(set(base["model"]) & set(new["model"])):
        pb = sorted(set(base.loc[base["model"] == model, "model_params"].astype(str)))
        pn = sorted(set(new.loc[new["model"] == model, "model_params"].astype(str)))
        if pb != pn:
            notes.append(
                f"model {model}: parameters differ (BASE {', '.join(pb)}; NEW {', '.join(pn)}); "
                "its cells are compared as the same configuration"
            )
    return notes


def settings_from(
    meta: dict[str, Any],
    metrics: Sequence[str] | None = None,
    k: float | None = None,
    floors: dict[str, float] | None = None,
) -> Settings:
    """Settings with the recovery metric and tolerance of a run's ``run.json`` (``meta``)."""
    recovery = meta.get("recovery") or {}
    merged = dict(DEFAULT_FLOORS)
    merged.update(floors or {})
    return Settings(
        metrics=tuple(metrics) if metrics else DEFAULT_METRICS,
        k=DEFAULT_K if k is None else float(k),
        floors=merged,
        recovery_metric=str(recovery.get("metric", "accuracy")),
        recovery_tolerance=float(recovery.get("tolerance", 0.005)),
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
    table_b, meta_b = load_results(base)
    table_n, _ = load_results(new)
    settings = settings_from(meta_b, metrics, k, floors)
    return compare_tables(table_b, table_n, settings, str(base), str(new))


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
                f"(metrics: {', '.join(DIRECTIONS)})"
            ) from None
        targets = [metric] if metric else [m for m in DIRECTIONS if m != "f_needed"]
        for m in targets:
            floors[m] = x
    return floors


def write_baseline(run: str | Path, dest: str | Path) -> list[Path]:
    """Copy a run's results table (and its small run.json) into the baseline folder ``dest``.

    Only small files: ``results.parquet`` and ``run.json``, never the cell records. Returns the
    written paths.
    """
    from bench.atomic import atomic_path, atomic_write_text
    from bench.store import read_table

    run = Path(run)
    table = load_results(run)[0]
    dest = Path(dest)
    if dest.suffix in (".parquet", ".csv"):
        dest.parent.mkdir(parents=True, exist_ok=True)
        target, folder = dest, dest.parent
    else:
        dest.mkdir(parents=True, exist_ok=True)
        target, folder = dest / "results.parquet", dest
    if target.suffix == ".csv":
        atomic_write_text(target, table.to_csv(index=False))
    else:
        with atomic_path(target) as tmp:
            table.to_parquet(tmp, index=False)
    read_table(target)  # what was written must read back
    written = [target]
    run_json = (run if run.is_dir() else run.parent) / "run.json"
    if run_json.exists() and run_json.resolve() != (folder / "run.json").resolve():
        shutil.copyfile(run_json, folder / "run.json")
        written.append(folder / "run.json")
    return written
