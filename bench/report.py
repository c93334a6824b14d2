"""The markdown report, generated from the results table and ``run.json`` (never hand-edited).

``write_report(run_dir)`` draws the plots (PNG files beside ``report.md``) and writes
``report.md``; ``render_report(run_dir, plots)`` returns the markdown text. Sections: run header
(config, versions, dataset fingerprints, cells run/cached/failed, wall time), summary in plain
words, extra clean data needed (with the defense value in rows and the label-noise theory line),
rule-of-thumb check, accuracy, targeted-flip effect, filter quality, plots, skipped and failed
cells. Every table is a ``DataFrame.to_markdown()``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bench.plots import Plot, write_plots
from bench.recovery import (
    EARLY_STOP,
    POOL_EXHAUSTED,
    estimate_recovery,
    label_models,
    label_noise_multiplier,
    recovery_curves,
    skip_reasons,
)
from bench.store import atomic_write_text, read_table

#: The commonly quoted rule of thumb: poison rate → (low, high) extra clean data needed (× n).
#: "~10 %" at 5 % poisoning is read as the range 0.05–0.2×.
RULE_OF_THUMB: dict[float, tuple[float, float, str]] = {
    0.05: (0.05, 0.2, "~0.1×"),
    0.10: (0.3, 0.5, "0.3–0.5×"),
    0.50: (3.0, 5.0, "3–5×"),
}

#: defenses that are measuring sticks, not defenses one can deploy
BASELINES = ("oracle_filter", "random_filter")

DASH = "–"


# ---------------------------------------------------------------------------------------------
# Formatting helpers


def mean_std(values: pd.Series) -> str:
    """``mean ± std`` over seeds (3 decimals); the value alone for one seed, ``–`` for none."""
    values = values.dropna()
    if values.empty:
        return DASH
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def fmt_multiple(f: float) -> str:
    """An extra fraction as a multiple of n_train: ``0.25``, ``1.5``, ``12`` (no unit)."""
    if not math.isfinite(f):
        return "∞"
    if f == 0:
        return "0"
    if f < 10:
        return f"{f:.2g}" if f < 1 else f"{f:.1f}".rstrip("0").rstrip(".")
    return f"{f:.0f}"


def fmt_recovery(row: pd.Series) -> str:
    """A headline cell: ``0.5× [0.25–1.0]``; ``> 2×`` when censored (``†`` when the clean pool
    ended the grid); the interval's upper end reads ``2+`` when it lies beyond the grid."""
    f, f_max = row["f_needed"], row["f_max"]
    if not isinstance(f, float) or math.isnan(f):
        return DASH
    dagger = "†" if row.get("pool_exhausted", False) else ""
    if math.isinf(f):
        return f"> {fmt_multiple(f_max)}×{dagger}"
    text = f"{fmt_multiple(f)}×"
    lo, hi = row.get("f_low", math.nan), row.get("f_high", math.nan)
    if isinstance(lo, float) and not math.isnan(lo):
        hi_text = f"{fmt_multiple(f_max)}+" if math.isinf(hi) else fmt_multiple(hi)
        lo_text = f"{fmt_multiple(f_max)}+" if math.isinf(lo) else fmt_multiple(lo)
        text += f" [{lo_text}–{hi_text}]"
    return text + dagger


def fmt_rows(row: pd.Series) -> str:
    """A defense-value cell in clean rows saved: ``+120``, ``≥ +300`` (lower bound), ``–``."""
    value, kind = row["defense_value_rows"], row["defense_value_kind"]
    if not isinstance(value, float) or math.isnan(value):
        return DASH
    text = f"{value:+.0f}"
    return f"≥ {text}" if kind == "lower_bound" else text


def _span(low: float, high: float) -> str:
    """``0.5×`` or ``0–0.25×``."""
    if low == high:
        return f"{fmt_multiple(low)}×"
    return f"{fmt_multiple(low)}–{fmt_multiple(high)}×"


def _rate(rate: float) -> str:
    return f"{rate:.0%}" if rate * 100 == round(rate * 100) else f"{rate:.1%}"


def _defense_order(defenses: list[str]) -> list[str]:
    """``none`` first, deployable defenses alphabetically, then the oracle and random baselines."""
    head = [d for d in defenses if d == "none"]
    tail = [d for d in BASELINES if d in defenses]
    middle = sorted(d for d in defenses if d not in head and d not in tail)
    return head + middle + tail


def _pivot(frame: pd.DataFrame, value: str, index: list[str]) -> pd.DataFrame:
    table = frame.pivot_table(index=index, columns="defense", values=value, aggfunc="first")
    table = table[[d for d in _defense_order(list(table.columns))]]
    table.columns.name = None
    return table.fillna(DASH)


def _md(frame: pd.DataFrame, index: bool = False) -> str:
    if frame.empty:
        return "_(no rows)_"
    frame = frame.reset_index() if index else frame
    frame = frame.rename(columns={"attack_label": "attack"})
    if "rate" in frame:
        frame["rate"] = frame["rate"].map(_rate)
    return frame.to_markdown(index=False)


# ---------------------------------------------------------------------------------------------
# Tables


def accuracy_table(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """``metric`` mean ± std over seeds at f = 0: rows (dataset, model, attack, rate), columns
    defenses. The rate-0 clean cells (attack ``none``) head each dataset and model."""
    ok = df[(df["status"] == "ok") & (df["extra_fraction"] == 0)]
    table = (
        ok.groupby(["dataset", "model", "attack_label", "rate", "defense"], sort=True)[metric]
        .apply(mean_std)
        .unstack("defense")
        .fillna(DASH)
    )
    table = table[_defense_order(list(table.columns))]
    table.columns.name = None
    return table


def recovery_table(rec: pd.DataFrame) -> pd.DataFrame:
    """The headline table of one dataset/model: rows (attack, rate), columns defenses, cells
    like ``0.5× [0.25–1.0]``."""
    frame = rec[rec["attack"] != "none"].copy()
    frame["cell"] = frame.apply(fmt_recovery, axis=1)
    return _pivot(frame, "cell", ["attack_label", "rate"])


def defense_value_table(rec: pd.DataFrame) -> pd.DataFrame:
    """Clean rows each defense saves against no defense: rows (attack, rate), columns defenses."""
    frame = rec[(rec["attack"] != "none") & (rec["defense"] != "none")].copy()
    frame["cell"] = frame.apply(fmt_rows, axis=1)
    return _pivot(frame, "cell", ["attack_label", "rate"])


def theory_table(rec: pd.DataFrame) -> pd.DataFrame:
    """Measured extra data (no defense) beside the label-noise theory lines, random flips only."""
    frame = rec[(rec["defense"] == "none") & rec["theory_f"].notna()].copy()
    if frame.empty:
        return frame
    out = pd.DataFrame(
        {
            "attack": frame["attack_label"],
            "rate": frame["rate"],
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
    )
    return out


def rule_of_thumb_table(rec: pd.DataFrame) -> pd.DataFrame:
    """Measured extra data (no defense) beside the rule of thumb at 5, 10 and 50 % poisoning,
    with a verdict: ``holds`` when the bootstrap interval overlaps the rule's range, ``needs
    less`` / ``needs more`` otherwise, ``unknown`` when the grid ends before the rule's range."""
    rows = []
    frame = rec[(rec["defense"] == "none") & (rec["attack"] != "none")]
    for _, r in frame.iterrows():
        rule = next((v for k, v in RULE_OF_THUMB.items() if math.isclose(k, r["rate"])), None)
        if rule is None or not isinstance(r["f_needed"], float) or math.isnan(r["f_needed"]):
            continue
        lo_rule, hi_rule, text = rule
        rows.append(
            {
                "attack": r["attack_label"],
                "rate": r["rate"],
                "rule of thumb": text,
                "measured": fmt_recovery(r),
                "verdict": rule_verdict(r, lo_rule, hi_rule),
            }
        )
    return pd.DataFrame(rows, columns=["attack", "rate", "rule of thumb", "measured", "verdict"])


def rule_verdict(r: pd.Series, lo_rule: float, hi_rule: float) -> str:
    """``holds``, ``needs less``, ``needs more`` or ``unknown (grid ends at X×)``."""
    f, f_max = r["f_needed"], r["f_max"]
    lo, hi = r.get("f_low", math.nan), r.get("f_high", math.nan)
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


def filter_table(df: pd.DataFrame) -> pd.DataFrame:
    """Filter quality at f = 0 (mean over seeds): rows (attack, rate), columns filters, cells
    ``precision / recall / ROC-AUC (clean rows removed)``; oracle and random filters last."""
    if "det_precision" not in df:
        return pd.DataFrame()
    ok = df[(df["status"] == "ok") & (df["extra_fraction"] == 0) & (df["attack"] != "none")]
    filt = ok[ok["defense"].isin(ok.loc[ok["det_precision"].notna(), "defense"].unique())]
    if filt.empty:
        return pd.DataFrame()
    stats = filt.groupby(["attack_label", "rate", "defense"], sort=True)[
        ["det_precision", "det_recall", "det_roc_auc", "clean_removed"]
    ].mean()

    def cell(s: pd.Series) -> str:
        parts = [
            DASH if math.isnan(s[c]) else f"{s[c]:.2f}"
            for c in ("det_precision", "det_recall", "det_roc_auc")
        ]
        return f"{' / '.join(parts)} ({s['clean_removed']:.0f})"

    frame = stats.apply(cell, axis=1).rename("cell").reset_index()
    table = frame.pivot_table(
        index=["attack_label", "rate"], columns="defense", values="cell", aggfunc="first"
    )
    order = [d for d in _defense_order(list(table.columns)) if d != "oracle_filter"]
    if "oracle_filter" in table.columns:
        order = ["oracle_filter", *[d for d in order if d != "oracle_filter"]]
    table = table[order]
    table.columns.name = None
    return table.fillna(DASH)


def targeted_tables(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Source-class accuracy and attack success rate (mean ± std at f = 0) for targeted flips."""
    if "attack_success_rate" not in df:
        return pd.DataFrame(), pd.DataFrame()
    ok = df[(df["status"] == "ok") & (df["extra_fraction"] == 0)]
    targeted = ok[ok["attack_success_rate"].notna()]
    out = []
    for metric in ("source_accuracy", "attack_success_rate"):
        if targeted.empty:
            out.append(pd.DataFrame())
            continue
        t = (
            targeted.groupby(["attack_label", "rate", "defense"], sort=True)[metric]
            .apply(mean_std)
            .unstack("defense")
        )
        t = t[_defense_order(list(t.columns))]
        t.columns.name = None
        out.append(t.fillna(DASH))
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# Summary in plain words


def _best_defense(acc: pd.DataFrame, attack: str, rate: float) -> tuple[str, float] | None:
    sub = acc[(acc["attack_label"] == attack) & (acc["rate"] == rate)]
    base = sub[sub["defense"] == "none"]["mean"]
    if base.empty:
        return None
    real = sub[~sub["defense"].isin(("none", *BASELINES))]
    if real.empty:
        return None
    best = real.loc[real["mean"].idxmax()]
    return str(best["defense"]), float(best["mean"] - base.iloc[0])


def summary_lines(
    df: pd.DataFrame, rec: pd.DataFrame, dataset: str, model: str, metric: str, tolerance: float
) -> list[str]:
    """Plain-language bullet points for one dataset/model, generated from the numbers."""
    lines: list[str] = []
    ok0 = df[
        (df["status"] == "ok")
        & (df["extra_fraction"] == 0)
        & (df["dataset"] == dataset)
        & (df["model"] == model)
    ]
    r = rec[(rec["dataset"] == dataset) & (rec["model"] == model)]
    clean = r[(r["attack"] == "none") & (r["defense"] == "none")]
    n_train = int(ok0["n_train"].mean()) if "n_train" in ok0 and len(ok0) else 0
    if not clean.empty:
        c = clean.iloc[0]
        lines.append(
            f"The clean {model} on {dataset} reaches {metric} {c['reference']:.3f} "
            f"(mean of {c['n_seeds']} seeds, {n_train} training rows)."
        )
    acc = ok0.groupby(["attack_label", "rate", "defense"], as_index=False)[metric].mean()
    acc = acc.rename(columns={metric: "mean"})
    for attack in sorted(a for a in ok0["attack_label"].unique() if a != "none"):
        rates = sorted(ok0.loc[ok0["attack_label"] == attack, "rate"].unique())
        if not rates:
            continue
        top = rates[-1]
        und = r[(r["attack_label"] == attack) & (r["rate"] == top) & (r["defense"] == "none")]
        parts = []
        if not und.empty:
            u = und.iloc[0]
            drop = (u["reference"] - u["value_at_0"]) * 100
            change = f"{drop:.1f} points lost" if drop >= 0 else f"{-drop:.1f} points gained"
            parts.append(
                f"**{attack}** at {_rate(top)} takes {metric} from {u['reference']:.3f} to "
                f"{u['value_at_0']:.3f} ({change}) without a defense"
            )
        # how many labels were flipped
        if attack.startswith("label_flip"):
            flips = ok0[(ok0["attack_label"] == attack) & (ok0["defense"] == "none")]
            counts = flips.groupby("rate")[["n_poisoned", "n_eligible"]].mean()
            text = ", ".join(
                f"{row.n_poisoned:.0f} of {n_train} at {_rate(rate)}"
                + (
                    f" ({row.n_poisoned / n_train:.1%} of the train set)"
                    if row.n_eligible < n_train
                    else ""
                )
                for rate, row in counts.iterrows()
            )
            parts.append(f"labels flipped: {text}")
        helped, none_helps = [], []
        for rate in rates:
            best = _best_defense(acc, attack, rate)
            if best is None:
                continue
            name, gain = best
            if gain > tolerance:
                helped.append(f"{name} at {_rate(rate)} (+{gain * 100:.1f} points)")
            else:
                none_helps.append(_rate(rate))
        if helped:
            parts.append("the best deployable defense: " + ", ".join(helped))
        if none_helps:
            parts.append(
                f"no deployable defense gains more than {tolerance * 100:g} points at "
                + ", ".join(none_helps)
            )
        if parts:
            lines.append("; ".join(parts) + ".")
    # headline numbers without defense
    und = r[(r["defense"] == "none") & (r["attack"] != "none") & r["f_needed"].notna()]
    if not und.empty:
        cells = [
            f"{row.attack_label} at {_rate(row.rate)}: {fmt_recovery(pd.Series(row._asdict()))}"
            for row in und.itertuples()
        ]
        lines.append(
            "Extra clean data needed without a defense (× the train set): " + "; ".join(cells) + "."
        )
    value = r[(r["defense"] != "none") & r["defense_value_rows"].notna() & (r["attack"] != "none")]
    value = value[~value["defense"].isin(BASELINES)]
    if not value.empty:
        best = value.loc[value["defense_value_rows"].idxmax()]
        if best["defense_value_rows"] > 0:
            bound = "at least " if best["defense_value_kind"] == "lower_bound" else ""
            lines.append(
                f"The most valuable deployable defense: {best['defense']} is worth {bound}"
                f"{best['defense_value_rows']:.0f} clean rows at {_rate(best['rate'])} "
                f"{best['attack_label']}."
            )
    if r["pool_exhausted"].any():
        n_pool = int(ok0["n_pool"].mean()) if "n_pool" in ok0 and len(ok0) else 0
        cut = r.loc[r["pool_exhausted"], "f_max"]
        lines.append(
            f"**The clean pool ran out** on {dataset}: it leaves {n_pool} pool rows "
            f"({n_pool / max(n_train, 1):.2f}× the train set), so {len(cut)} of {len(r)} curves "
            f"stop at {_span(cut.min(), cut.max())} instead of "
            f"{fmt_multiple(r['grid_max'].max())}× (defenses that add pool rows themselves stop "
            "earliest); a `> X×†` cell means not recovered *within the pool*, not that recovery "
            "is impossible."
        )
    return lines


def rule_summary(rule: pd.DataFrame) -> str:
    """One sentence: where the rule of thumb holds and where it does not."""
    if rule.empty:
        return "No measured rate matches the rule's 5, 10 or 50 %."
    counts = rule["verdict"].map(lambda v: v.split(" (")[0]).value_counts()
    holds = rule[rule["verdict"] == "holds"]
    text = f"The rule holds for {counts.get('holds', 0)} of {len(rule)} attack/rate pairs"
    if not holds.empty:
        text += " (" + ", ".join(f"{a} at {_rate(r)}" for a, r in holds[["attack", "rate"]].values)
        text += ")"
    more = counts.get("needs more", 0)
    less = counts.get("needs less", 0)
    text += f"; the measured need is larger in {more} and smaller in {less}"
    unknown = counts.get("unknown", 0)
    if unknown:
        text += f", and {unknown} cannot be judged because the grid ends too early"
    return text + "."


# ---------------------------------------------------------------------------------------------
# The report


def _load_meta(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _load_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    loaded = yaml.safe_load(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def _settings(meta: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    rec = {"metric": "accuracy", "tolerance": 0.005, "bootstrap": 1000, "early_stop": False}
    rec.update({k: v for k, v in (config.get("recovery") or {}).items() if k in rec})
    rec.update({k: v for k, v in (meta.get("recovery") or {}).items() if k in rec})
    return rec


def _header(
    run_dir: Path, df: pd.DataFrame, meta: dict[str, Any], config: dict[str, Any]
) -> list[str]:
    lines = []
    summary = meta.get("summary")
    if summary:
        lines += [
            "## Run",
            "",
            f"{summary['cells']} cells: **{summary['run']} run, {summary['cached']} cached, "
            f"{summary['failed']} failed**; wall time {summary['wall_seconds']:.1f} s.",
            "",
        ]
    else:
        lines += ["## Run", "", "_No run.json: counts and wall time unknown._", ""]
    settings = _settings(meta, config)
    lines.append(
        f"Recovery: metric `{settings['metric']}`, tolerance {settings['tolerance']:g}, "
        f"{settings['bootstrap']} seed-bootstrap resamples, early stop "
        f"{'on' if settings['early_stop'] else 'off'}; grid "
        f"{', '.join(fmt_multiple(f) for f in sorted(df['extra_fraction'].unique()))} × n_train."
    )
    lines.append("")
    datasets = meta.get("datasets", {})
    notes = meta.get("dataset_notes", {})
    sizes = (
        df.groupby("dataset")[["n_train", "n_pool", "n_test"]].mean().round().astype("Int64")
        if {"n_train", "n_pool", "n_test"} <= set(df.columns)
        else pd.DataFrame()
    )
    ds_rows = []
    for name in sorted(set(datasets) | set(df["dataset"].unique())):
        row = {"dataset": name, "fingerprint": datasets.get(name, DASH)}
        if any(notes.values()):  # what loading did to a file: one-hot encoding, imputation
            row["loaded with"] = "; ".join(notes.get(name, [])) or DASH
        if name in sizes.index:
            s = sizes.loc[name]
            row.update(n_train=s["n_train"], n_pool=s["n_pool"], n_test=s["n_test"])
            row["pool (× n_train)"] = f"{s['n_pool'] / s['n_train']:.2f}"
        ds_rows.append(row)
    lines += ["### Datasets", "", pd.DataFrame(ds_rows).to_markdown(index=False), ""]
    versions = meta.get("versions", {})
    if versions:
        v = pd.DataFrame({"package": list(versions), "version": list(versions.values())})
        lines += ["### Versions", "", v.to_markdown(index=False), ""]
    if config:
        lines += [
            "<details><summary>Config</summary>",
            "",
            "```yaml",
            yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip(),
            "```",
            "",
            "</details>",
            "",
        ]
    return lines


def render_report(run_dir: str | Path, plots: list[Plot] | None = None) -> str:
    """The report's markdown for ``run_dir`` (reads ``results.parquet`` / ``.csv``, ``run.json``
    and ``config.yaml``). ``plots`` are linked in the plots section (see :func:`write_report`)."""
    run_dir = Path(run_dir)
    df = label_models(read_table(run_dir))
    meta = _load_meta(run_dir)
    config = _load_config(run_dir)
    settings = _settings(meta, config)
    metric, tolerance = settings["metric"], float(settings["tolerance"])
    title = meta.get("name", config.get("name", run_dir.name))
    lines = [f"# poisonbench report: {title}", ""]
    if config.get("description"):
        lines += [str(config["description"]), ""]
    lines += _header(run_dir, df, meta, config)
    if df.empty or "extra_fraction" not in df:
        lines += ["_The results table is empty._"]
        return "\n".join(lines) + "\n"

    rec = estimate_recovery(df, metric, tolerance, n_boot=int(settings["bootstrap"]))
    acc_metric = metric if metric in ("accuracy", "macro_f1") else "accuracy"
    pairs = sorted({(d, m) for d, m in df[["dataset", "model"]].itertuples(index=False)})

    lines += ["## Summary", ""]
    for dataset, model in pairs:
        for line in summary_lines(df, rec, dataset, model, acc_metric, tolerance):
            lines.append(f"- {line}")
    rule_parts = []
    for dataset, model in pairs:
        rule = rule_of_thumb_table(rec[(rec["dataset"] == dataset) & (rec["model"] == model)])
        rule_parts.append((dataset, model, rule))
        lines.append(f"- Rule of thumb on {dataset}/{model}: {rule_summary(rule)}")
    lines.append("")

    lines += [
        "## Extra clean data needed",
        "",
        f"The smallest extra clean fraction f (× n_train, clean pool rows appended after the "
        f"defense) at which mean `{metric}` over seeds is back within {tolerance:g} of the clean "
        "model (no attack, no defense, f = 0), linearly interpolated between grid points; "
        "[95 % seed-bootstrap interval]. `> X×` means not recovered by the largest fraction "
        "measured; `X+` in an interval means beyond the grid; † marks curves the clean pool cut "
        "short.",
        "",
    ]
    for dataset, model in pairs:
        r = rec[(rec["dataset"] == dataset) & (rec["model"] == model)]
        lines += [f"### {dataset} / {model}", "", _md(recovery_table(r), index=True), ""]
        if r["pool_exhausted"].any():
            cut = r[r["pool_exhausted"]]
            lines += [
                f"> **Clean pool exhausted on {dataset}**: {len(cut)} of {len(r)} curves stop at "
                f"{_span(cut['f_max'].min(), cut['f_max'].max())} "
                f"instead of {fmt_multiple(r['grid_max'].max())}× (see the skipped rows below).",
                "",
            ]
        lines += [
            f"#### Defense value on {dataset} / {model} (clean rows saved)",
            "",
            "Undefended f minus defended f, times n_train: positive means the defense saves that "
            "many clean rows; `≥` is a lower bound (the undefended curve never recovered); `–` "
            "when the defended curve never recovered.",
            "",
            _md(defense_value_table(r), index=True),
            "",
        ]
        theory = theory_table(r)
        if not theory.empty:
            lines += [
                f"#### Theory line for random label flips on {dataset} / {model}",
                "",
                "The label-noise sample-complexity multiplier 1/(1−2η)² (binary) and its K-class "
                "form 1/m² with margin m = 1 − ηK/(K−1), read as extra data f = multiplier − 1; "
                "the last theory column solves the same bound when the extra rows are clean "
                "(they dilute η). The plain dilution is the poison share left after appending "
                "the measured f_needed × n_train clean rows.",
                "",
                _md(theory),
                "",
            ]

    lines += [
        "## Rule-of-thumb check",
        "",
        "A commonly quoted rule: 5 % poisoning needs ~10 % more clean data, 10 % needs 30–50 %, "
        "50 % needs 3–5×. Measured without a defense; `holds` when the bootstrap interval "
        "overlaps the rule's range (~10 % read as 5–20 %). For targeted flips the rate is of "
        "the source class, so the poisoned share of the train set is much smaller.",
        "",
    ]
    for dataset, model, rule in rule_parts:
        lines += [f"### {dataset} / {model}", "", _md(rule), "", rule_summary(rule), ""]

    lines += [f"## {acc_metric.replace('_', ' ').capitalize()} (mean ± std over seeds, f = 0)", ""]
    acc = accuracy_table(df, acc_metric)
    for dataset, model in pairs:
        try:
            sub = acc.loc[(dataset, model)]
        except KeyError:
            continue
        lines += [f"### {dataset} / {model}", "", _md(sub, index=True), ""]

    lines += [
        "## Targeted flips: source-class accuracy and attack success rate",
        "",
        "Source-class accuracy (share of clean source-class test rows predicted correctly) and "
        "attack success rate (share predicted as the target), mean ± std over seeds, f = 0.",
        "",
    ]
    any_targeted = False
    for dataset, model in pairs:
        src, asr = targeted_tables(df[(df["dataset"] == dataset) & (df["model"] == model)])
        if src.empty:
            continue
        any_targeted = True
        lines += [
            f"### {dataset} / {model}: source-class accuracy",
            "",
            _md(src, index=True),
            "",
            f"### {dataset} / {model}: attack success rate",
            "",
            _md(asr, index=True),
            "",
        ]
    if not any_targeted:
        lines += ["_No targeted attack in this run._", ""]

    lines += [
        "## Filter quality",
        "",
        "Precision / recall of the removed rows and ROC-AUC of the outlier scores against the "
        "true poison mask, (clean rows removed), mean over seeds. The oracle filter (removes "
        "exactly the poisoned rows) is the ceiling, the random filter the floor.",
        "",
    ]
    for dataset, model in pairs:
        ft = filter_table(df[(df["dataset"] == dataset) & (df["model"] == model)])
        if not ft.empty:
            lines += [f"### {dataset} / {model}", "", _md(ft, index=True), ""]
    if "det_precision" not in df:
        lines += ["_No filter defense in this run._", ""]

    lines += ["## Plots", ""]
    if plots is None:  # link what an earlier write_report drew
        plots = [
            Plot(p.stem.replace("-", " "), p.name, "file") for p in sorted(run_dir.glob("*.png"))
        ]
    if plots:
        for plot in plots:
            lines += [f"### {plot.title}", "", f"![{plot.title}]({plot.filename})", ""]
    else:
        lines += ["_No plots were drawn._", ""]

    lines += _skipped_and_failed(df)
    return "\n".join(lines).rstrip() + "\n"


def _skipped_and_failed(df: pd.DataFrame) -> list[str]:
    lines = []
    skipped = df[df["status"] == "skipped"]
    if not skipped.empty:
        reasons = skip_reasons(skipped)
        counts = (
            skipped.assign(reason=reasons.values)
            .groupby(["dataset", "reason"], sort=True)
            .agg(rows=("cell_id", "size"), from_fraction=("extra_fraction", "min"))
            .reset_index()
        )
        counts["from_fraction"] = counts["from_fraction"].map(lambda v: f"{fmt_multiple(v)}×")
        explain = {
            POOL_EXHAUSTED: "the clean pool ran out",
            EARLY_STOP: "early stop: already recovered at two grid points",
        }
        counts["reason"] = counts["reason"].map(lambda v: explain.get(v, v))
        lines += [
            "## Skipped rows",
            "",
            "Rows of the grid that were not trained (extra fraction from which they start).",
            "",
            counts.to_markdown(index=False),
            "",
        ]
    failed = df[df["status"] == "failed"]
    if not failed.empty:
        cols = [
            c for c in ("cell_id", "dataset", "attack_label", "rate", "defense", "seed", "error")
        ]
        lines += ["## Failed cells", "", failed[cols].to_markdown(index=False), ""]
    return lines


def _plot_settings(run_dir: Path, df: pd.DataFrame) -> tuple[str, float]:
    settings = _settings(_load_meta(run_dir), _load_config(run_dir))
    metric = settings["metric"] if settings["metric"] in ("accuracy", "macro_f1") else "accuracy"
    return metric, float(settings["tolerance"])


def write_report(run_dir: str | Path) -> Path:
    """Draw the plots and write ``report.md`` in ``run_dir``; returns the report's path."""
    run_dir = Path(run_dir)
    df = label_models(read_table(run_dir))
    metric, tolerance = _plot_settings(run_dir, df)
    plots: list[Plot] = []
    if not df.empty and "extra_fraction" in df:
        curves = recovery_curves(df, metric)
        plots = write_plots(df, run_dir, curves, metric=metric, tolerance=tolerance)
    path = run_dir / "report.md"
    atomic_write_text(path, render_report(run_dir, plots))
    return path


__all__ = [
    "RULE_OF_THUMB",
    "accuracy_table",
    "defense_value_table",
    "filter_table",
    "mean_std",
    "recovery_table",
    "render_report",
    "rule_of_thumb_table",
    "theory_table",
    "write_report",
]
