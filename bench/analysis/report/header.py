"""The run header: counts, time and efficiency, seeds, recovery settings, datasets, versions,
config; and the recovery settings of a run.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import yaml

from bench.analysis.document import Section, Table
from bench.analysis.formats import DASH, fmt_multiple
from bench.analysis.report.frames import (
    at_f0,
    id_labels,
)
from bench.core.schema import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_METRIC,
    DEFAULT_TOLERANCE,
    GROUP_KEYS,
    RECOVERY_METRICS,
)
from bench.core.types import ParamError, PoisonBenchError


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


def metric_choices(df: pd.DataFrame) -> list[str]:
    """The recovery metrics (``schema.RECOVERY_METRICS``) a finished row of ``df`` measured."""
    ok = df[df["status"] == "ok"] if "status" in df else df.iloc[0:0]
    return [
        m
        for m in RECOVERY_METRICS
        if m in ok and pd.to_numeric(ok[m], errors="coerce").notna().any()
    ]


def override_settings(
    df: pd.DataFrame,
    settings: dict[str, Any],
    metric: str | None = None,
    tolerance: float | None = None,
) -> dict[str, Any]:
    """``settings`` (:func:`report_settings`) with the recovery ``metric`` and ``tolerance``
    replaced where given (``poisonbench report --metric / --tolerance``), and the run's own
    under ``overrides`` (the header says they were overridden); ``settings`` unchanged when
    neither is given.

    Raises ParamError (``--metric``, ``--tolerance``) for a metric no finished row of ``df``
    measured (the message lists those it did) or a tolerance that is not a finite number
    >= 0."""
    if metric is None and tolerance is None:
        return settings
    out = dict(settings)
    if metric is not None:
        choices = metric_choices(df)
        if metric not in choices:
            known = "not measured in this run" if metric in RECOVERY_METRICS else "unknown"
            raise ParamError(
                "--metric",
                f"{metric!r} is {known}; choose one of {', '.join(choices) or '(none: no cell finished)'}",
            )
        out["metric"] = metric
        if tolerance is None and metric != settings["metric"]:
            # the run's tolerance is in its own metric's units (e.g. 0.02 of ASR): another
            # metric starts from the default, and the header says so
            tolerance = DEFAULT_TOLERANCE
    if tolerance is not None:
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
            raise ParamError("--tolerance", f"expected a number, got {tolerance!r}")
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise ParamError("--tolerance", f"must be a finite number >= 0, got {tolerance}")
        out["tolerance"] = float(tolerance)
    given = {"metric": metric, "tolerance": tolerance}
    out["overrides"] = {
        k: settings[k] for k, v in given.items() if v is not None and v != settings[k]
    }
    return out


def seeds_sentence(df: pd.DataFrame) -> str:
    """How many seeds back each number (the smallest and largest count over configurations)."""
    ok = at_f0(df)
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
    section = Section(
        "Run",
        paragraphs=[counts_sentence(meta), seeds_sentence(df), settings_sentence(df, settings)],
        subsections=[Section("Datasets", level=3, tables=[Table(datasets_table(df, meta))])],
    )
    versions = meta.get("versions")
    if isinstance(versions, dict) and versions:
        v = pd.DataFrame(
            {"package": list(versions), "version": [str(x) for x in versions.values()]}
        )
        section.subsections.append(Section("Versions", level=3, tables=[Table(v)]))
    if config:
        section.details = yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip()
    return section


def counts_sentence(meta: dict[str, Any]) -> str:
    """Cells run, cached and failed, fits, wall and compute time and the efficiency, from
    ``run.json``'s summary (a line saying they are unknown when it has none of that shape)."""
    summary = meta.get("summary")
    numbers = ("cells", "run", "cached", "failed")
    if not isinstance(summary, dict) or not all(
        isinstance(summary.get(k), int | float) for k in numbers
    ):  # no run.json, or one of another shape: say nothing rather than something wrong
        return "_No run.json: counts and wall time unknown._"
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
    return text + "."


def settings_sentence(df: pd.DataFrame, settings: dict[str, Any]) -> str:
    """The recovery settings the report was computed with, and the grid of extra fractions."""
    grid = sorted(df["extra_fraction"].dropna().unique()) if "extra_fraction" in df else []
    return (
        f"Recovery: metric `{settings['metric']}`, tolerance {float(settings['tolerance']):g}, "
        + (
            "intervals: 95 % t-test inversion over paired seeds (the per-seed range with fewer "
            "than 3 seeds)"
            if int(settings["bootstrap"]) > 0
            else "no intervals (recovery.bootstrap: 0)"
        )
        + ", early stop "
        f"{'on' if settings['early_stop'] else 'off'}; grid "
        f"{', '.join(fmt_multiple(f) for f in grid)} × n_train." + _override_note(settings)
    )


def _override_note(settings: dict[str, Any]) -> str:
    """What the report's metric and tolerance replace (empty when they are the run's own)."""
    run = settings.get("overrides")
    if not run:
        return ""
    parts = [
        f"{'metric' if k == 'metric' else 'tolerance'} "
        + (f"`{settings[k]}`" if k == "metric" else f"{float(settings[k]):g}")
        + " overrides the run's "
        + (f"`{v}`" if k == "metric" else f"{float(v):g}")
        for k, v in run.items()
    ]
    text = " **Overridden (`poisonbench report --metric/--tolerance`): " + "; ".join(parts) + ".**"
    if "tolerance" not in run:
        text += f" The tolerance {float(settings['tolerance']):g} is the run's."
    elif "metric" in run and "tolerance" in run:
        text += " Without `--tolerance` another metric is judged at the default tolerance."
    return text


def datasets_table(df: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
    """One row per dataset: fingerprint and classes (``run.json``), mean split sizes, the pool
    as a multiple of n_train, and the dataset's notes where any has one."""
    datasets = meta.get("datasets") if isinstance(meta.get("datasets"), dict) else {}
    rows = []
    if {"dataset_id", "n_train", "n_pool", "n_test"} <= set(df.columns):
        sizes = df.groupby("dataset_id")[["n_train", "n_pool", "n_test"]].mean()
        labels = id_labels(df, "dataset")
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
    return frame


def precision_target(meta: dict[str, Any]) -> float:
    """The run's precision request (× n_train) from ``run.json``; ``inf`` when it made none."""
    precision = meta.get("precision") or {}
    target = precision.get("target") if isinstance(precision, dict) else None
    return float(target) if isinstance(target, int | float) and target > 0 else math.inf
