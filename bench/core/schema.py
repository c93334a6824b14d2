"""The results table's schema, defined once: columns and dtypes, group keys, metric directions,
recovery defaults, identities and display labels.

Everything downstream of the records (store, recovery, report, plots, compare, app, MLflow)
imports its rules from here; nothing here imports a plug-in, scikit-learn, PyOD or torch.

**Identity vs display.** Every row carries ``dataset_id``, ``model_id``, ``attack_id`` and
``defense_id``: the canonical JSON of the plug-in's name and *every* parameter (defaults filled
in; for the defense, the list of steps; for the dataset, its parameters and split sizes). Two
configurations that differ in any parameter have different ids, so the ids, never the labels,
are the group keys. The ``*_label`` columns are for display: short (the plug-in's own label,
e.g. ``iforest``), and unique within a table by construction: where two ids would share a
label, :func:`assign_labels` adds the parameters that differ (``iforest(contamination=0.05)``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.core.types import PoisonBenchError

#: bump when the meaning of a record's fields changes; records of another version are
#: recomputed (with a warning), never misread. 2: ids and labels, (cell, f) as the stored unit,
#: common random numbers for the model.
SCHEMA_VERSION = 2

# ---------------------------------------------------------------------------------------------
# Canonical JSON and stable hashes (identities)
# ---------------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the stable text that identities hash.

    Raises ValueError for NaN or infinity (they have no JSON form; configs reject them)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of the canonical JSON of ``obj`` (stable across processes and machines)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


#: types that :func:`jsonable` returns as they are (checked by exact type: the fast path for
#: records, which are mostly these)
_JSON_ATOMS = frozenset({str, int, bool, type(None)})


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars made plain and non-finite floats made None (JSON null,
    which reads back as NaN in a table). The one JSON cleaner for records and summaries."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind in _JSON_ATOMS:
        return value
    if kind is dict or isinstance(value, Mapping):  # (exact types first: ABC checks are slow)
        return {k: jsonable(v) for k, v in value.items()}
    if kind is list or isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# Columns
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of the results table: its name, pandas dtype, kind and meaning."""

    name: str
    dtype: str
    kind: str  # identity | label | size | metric | detection | step | fit | timing | status | meta
    #            | certified
    doc: str


def _columns(kind: str, dtype: str, items: Sequence[tuple[str, str]]) -> list[Column]:
    return [Column(name, dtype, kind, doc) for name, doc in items]


COLUMNS: tuple[Column, ...] = tuple(
    _columns(
        "identity",
        "string",
        [
            (
                "cell_id",
                "hash of the cell's canonical spec (dataset, model, attack, rate, "
                "defense, seed; 16 hex digits)",
            ),
            ("dataset_id", "canonical JSON of the dataset's name, parameters and split"),
            ("model_id", "canonical JSON of the model's name and every parameter"),
            ("attack_id", "canonical JSON of the attack's name and every parameter"),
            ("defense_id", "canonical JSON of the list of defense steps, each name + parameters"),
        ],
    )
    + _columns("identity", "float64", [("rate", "poison rate: fraction of eligible rows")])
    + _columns("identity", "int64", [("seed", "the seed")])
    + _columns("identity", "float64", [("extra_fraction", "extra clean rows appended, × n_train")])
    + _columns(
        "label",
        "string",
        [
            ("dataset", "dataset name"),
            ("model", "model name"),
            ("attack", "attack name (`none` for the clean reference)"),
            ("defense", "defense step names joined by `+`"),
            ("dataset_label", "display label of dataset_id, unique in the table"),
            ("model_label", "display label of model_id, unique in the table"),
            ("attack_label", "display label of attack_id, unique in the table"),
            ("defense_label", "display label of defense_id, unique in the table"),
        ],
    )
    + _columns(
        "meta",
        "string",
        [
            ("dataset_fingerprint", "content hash of the dataset's arrays (or file bytes)"),
            ("theory", "the theory line the attack declares (`symmetric_label_noise`) or null"),
        ],
    )
    + _columns(
        "meta",
        "Int64",
        [
            ("n_classes", "number of classes"),
            ("source_class", "targeted attacks: the source class index (null otherwise)"),
            ("target_class", "targeted attacks: the target class index (null otherwise)"),
        ],
    )
    + _columns(
        "meta",
        "boolean",
        [
            ("defense_reference", "the defense is a measuring stick (oracle, random filter)"),
            (
                "defense_append_only",
                "the defense only appends clean pool rows (`none`, `extra_clean`): the row is a "
                "point of the append curve at n_trusted_used + n_extra clean rows",
            ),
        ],
    )
    + _columns(
        "size",
        "Int64",
        [
            ("n_train", "rows of the (poisoned) train set"),
            ("n_pool", "rows of the clean pool"),
            ("n_test", "rows of the clean test set"),
            ("n_eligible", "rows the rate counts from"),
            ("n_poisoned", "rows the attack changed"),
            ("n_trusted_used", "pool rows the defense steps read or appended"),
            ("n_sources", "provenance: data sources the train set is split into (K)"),
            ("poisoned_sources", "provenance: sources the attack drew its rows from (J)"),
            ("n_removed", "rows the defense's filters removed"),
            ("clean_removed", "clean rows the filters removed"),
            ("n_extra", "extra clean pool rows appended for this fraction"),
            ("n_fit", "rows the model was fit on"),
        ],
    )
    + _columns("size", "float64", [("poison_fraction", "n_poisoned / n_train")])
    + _columns(
        "metric",
        "float64",
        [
            ("accuracy", "test accuracy"),
            ("macro_f1", "test macro-F1"),
            ("log_loss", "test log-loss"),
            ("source_accuracy", "targeted: share of source-class test rows predicted right"),
            (
                "attack_success_rate",
                "targeted: share of source-class test rows predicted as the target",
            ),
        ],
    )
    # --- the clean reference averaged over several fits (recovery.reference_fits) ----------
    + _columns(
        "metric",
        "float64",
        [
            (
                "reference_accuracy",
                "clean reference, f = 0: mean test accuracy of `reference_fits` fits (its own "
                "train set and same-size draws from the seed's train and pool rows)",
            ),
            ("reference_macro_f1", "clean reference, f = 0: mean macro-F1 of the same fits"),
            ("reference_log_loss", "clean reference, f = 0: mean log-loss of the same fits"),
        ],
    )
    + _columns("size", "Int64", [("reference_fits", "clean reference: fits averaged (null: one)")])
    # -- backdoors (attacks/backdoor.py): the declared trigger on the test rows whose true class
    # -- is not the target (bench/run/backdoor.py); null for attacks without a trigger
    + _columns(
        "metric",
        "float64",
        [
            (
                "backdoor_asr",
                "backdoor: share of the triggered test rows (true class not the target) "
                "predicted as the target",
            ),
            (
                "backdoor_robust_acc",
                "backdoor: share of the triggered test rows still predicted as their true class",
            ),
            (
                "backdoor_asr_clean",
                "backdoor: the clean model's backdoor_asr on the same triggered rows (the "
                "reference of backdoor_asr's recovery)",
            ),
        ],
    )
    + _columns(
        "detection",
        "float64",
        [
            ("det_precision", "filters: precision of the removed rows vs the poison mask"),
            ("det_recall", "filters: recall of the removed rows vs the poison mask"),
            ("det_f1", "filters: F1 of the removed rows vs the poison mask"),
            ("det_roc_auc", "filters: ROC-AUC of the outlier scores vs the poison mask"),
        ],
    )
    + _columns(
        "timing",
        "float64",
        [
            ("t_attack", "seconds: split and attack (0 when reused within the task)"),
            ("t_defense", "seconds: the defense steps (0 when reused within the task)"),
            ("t_fit", "seconds: fitting the model"),
            ("t_predict", "seconds: predicting the test set"),
        ],
    )
    + _columns(
        "status",
        "string",
        [
            ("status", "`ok`, `failed` (see `error`) or `skipped` (see `skip_reason`)"),
            ("error", "why a row failed or was skipped"),
            ("skip_reason", "`pool_exhausted` or `early_stop`"),
        ],
    )
    + _columns(
        "step",
        "Int64",
        [
            (
                "n_trusted_read",
                "pool rows the defense steps read to learn from (a subset of n_trusted_used; "
                "0 when no step learns from trusted rows)",
            ),
            (
                "pool_short",
                "pool rows the defense steps wanted but the pool no longer held (> 0: the "
                "cell's rows are `pool_exhausted`)",
            ),
            ("n_flagged", "trusted_filter: untrusted rows its judge flagged"),
            ("flagged_poisoned", "trusted_filter: flagged rows that were poisoned"),
            ("n_relabelled", "trusted_filter (relabel): rows whose label it changed"),
            ("n_unjudged", "trusted_filter: rows of a class its trusted rows lack (kept)"),
            ("n_rejected_chunks", "roni: chunks of rows it removed"),
            ("n_sources_dropped", "provenance: data sources it dropped whole"),
            ("n_poisoned_sources", "provenance: sources holding at least one poisoned row"),
            ("poisoned_sources_dropped", "provenance: dropped sources holding a poisoned row"),
        ],
    )
    + _columns(
        "step",
        "float64",
        [
            (
                "source_det_precision",
                "provenance: share of the dropped sources that hold poison (null: none dropped)",
            ),
            (
                "source_det_recall",
                "provenance: share of the poisoned sources dropped (null: none poisoned)",
            ),
            ("dp_max_grad_norm", "dp_sgd: per-row gradient clipping norm"),
            ("dp_target_epsilon", "dp_sgd: the ε asked for (null when noise_multiplier was)"),
        ],
    )
    + _columns(
        "step",
        "string",
        [
            (
                "per_source",
                "JSON, provenance: per source its id, rows, poisoned rows, leave-one-out effect "
                "on the trusted quiz set and whether it was dropped",
            ),
            (
                "glc_corruption",
                "JSON, glc: the estimated corruption matrix C[i][j] = p(given label j | true "
                "class i)",
            ),
        ],
    )
    + _columns(
        "fit",
        "float64",
        [
            ("dp_epsilon", "dp_sgd: the ε the fit achieved at dp_delta (RDP accountant)"),
            ("dp_noise_multiplier", "dp_sgd: the noise multiplier the fit used"),
            ("dp_delta", "dp_sgd: δ of (ε, δ)-DP"),
            ("dp_sample_rate", "dp_sgd: Poisson sampling rate of a step"),
            ("dp_steps", "dp_sgd: optimizer steps"),
        ],
    )
    + _columns(
        "metric",
        "string",
        [
            ("per_class", "JSON: per-class precision, recall, F1, support"),
            ("confusion", "JSON: confusion matrix (true × predicted)"),
            ("pred_distribution", "JSON: test predictions per class"),
            ("removed_per_class", "JSON: rows the filters removed per class"),
        ],
    )
    # -- certified defenses (dpa, bagging; issue 27): bench/core/certificates.py --------------
    + _columns(
        "certified",
        "string",
        [
            (
                "certified_radii",
                "JSON, dpa/bagging: per test row (test-set order), the certified radius of the "
                "ensemble's prediction where it is right, −1 where it is wrong or not certified",
            ),
            (
                "certified_accuracy",
                "JSON, dpa/bagging: {radius r: share of test rows predicted right with radius "
                ">= r} at r = 0, 1, 2, 5, 10, 20, 50, 100, ... up to the first r where it is 0",
            ),
            ("certified_unit", "dpa/bagging: what one change of the radius is (threat model)"),
        ],
    )
    + _columns(
        "certified",
        "float64",
        [
            (
                "certified_radius_median",
                "dpa/bagging: median certified radius of the correctly predicted test rows "
                "(−1 counts a right prediction bagging cannot certify)",
            ),
        ],
    )
    + _columns(
        "certified",
        "Int64",
        [
            (
                "certified_changes",
                "dpa/bagging: the cell's poisoning in the certificate's unit (a relabelled row "
                "counts 1; a row whose features changed 2 for dpa, 1 for bagging)",
            ),
        ],
    )
    + _columns(
        "fit",
        "Int64",
        [("ensemble_abstaining", "dpa/bagging: ensemble members without rows (no vote)")],
    )
    # -- end certified defenses ----------------------------------------------------------------
    # --- Defenses at honest settings (issue 25): what a filter's threshold rule chose and what
    # tuning chose; step columns (``Defense.recorded``), the last step's value in a pipeline.
    + _columns(
        "step",
        "float64",
        [
            (
                "contamination_used",
                "filters: share of the rows the step judged that it flagged, in [0, 1] (`auto` "
                "rules choose it from the data; a fixed contamination gives itself)",
            ),
            (
                "threshold_used",
                "filters: the score cut-off the step applied (trusted_filter: 1 - p(given label), "
                "the lowest score flagged; outlier filters with `per_class: false`: the "
                "detector-score threshold; null when per class or nothing flagged)",
            ),
            ("tune_score", "tuned steps: validation accuracy of the chosen setting"),
        ],
    )
    + _columns(
        "step",
        "Int64",
        [
            (
                "n_tune_rows",
                "tuned steps: clean-pool rows held out to select the setting on (part of "
                "n_trusted_used)",
            ),
        ],
    )
    + _columns(
        "step",
        "string",
        [
            (
                "threshold_rule",
                "filters: how the threshold was set (`fixed share 0.1`, `threshold 0.8`, "
                "`auto: ...` naming the data-driven method)",
            ),
            (
                "tuned_setting",
                "tuned steps: canonical JSON of the parameters tuning chose, e.g. "
                '`{"contamination":0.2}`',
            ),
            (
                "classes_flagged",
                "representation filters: JSON of the classes they flagged, class -> what they "
                "chose there (spectral_signature: epsilon; activation_clustering: the removed "
                "cluster's share of the class); `{}`: no class flagged",
            ),
        ],
    )
)

COLUMN_BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}

#: columns holding nested values (lists, dicts): JSON text in the tables
NESTED_COLUMNS = (
    "per_class",
    "confusion",
    "pred_distribution",
    "removed_per_class",
    "classes_flagged",
    "per_source",
    "glc_corruption",
    # certified defenses (issue 27)
    "certified_radii",
    "certified_accuracy",
)

#: Step-detail columns (kind ``step``) come from the ``details`` of defense steps: a defense
#: declares which of its details keys become which column (``Defense.recorded``) and the runner
#: copies them into every row of the cell. When several steps of a pipeline record one column,
#: the columns below add up over the steps; any other column keeps the last step's value.
STEP_SUMS = frozenset(
    {
        "n_trusted_read",
        "pool_short",
        "n_flagged",
        "flagged_poisoned",
        "n_relabelled",
        "n_unjudged",
        "n_rejected_chunks",
        "n_sources_dropped",
        "poisoned_sources_dropped",
        "n_tune_rows",  # issue 25: every tuned step holds out its own validation rows
    }
)
#: the pool accounting every row carries, 0 when no step records it
STEP_TOTALS = ("n_trusted_read", "pool_short")

#: the plug-in kinds that have an id and a label column (in table order)
KINDS = ("dataset", "model", "attack", "defense")
ID = {kind: f"{kind}_id" for kind in KINDS}
LABEL = {kind: f"{kind}_label" for kind in KINDS}

#: a configuration without the seed: the unit results are averaged over seeds in
GROUP_KEYS = ("dataset_id", "model_id", "attack_id", "rate", "defense_id")
#: one cell's rows (a configuration and a seed)
SEED_KEYS = (*GROUP_KEYS, "seed")
#: one row of the table; also its sort order
ROW_KEYS = (*SEED_KEYS, "extra_fraction")
#: the display labels of GROUP_KEYS, in the same order
GROUP_LABELS = ("dataset_label", "model_label", "attack_label", "rate", "defense_label")

# ---------------------------------------------------------------------------------------------
# Metrics and recovery defaults
# ---------------------------------------------------------------------------------------------

#: metric → +1 when higher is better, -1 when lower is better
DIRECTIONS: dict[str, int] = {
    "accuracy": 1,
    "macro_f1": 1,
    "log_loss": -1,
    "source_accuracy": 1,
    "attack_success_rate": -1,
    # backdoors
    "backdoor_asr": -1,
    "backdoor_robust_acc": 1,
    "backdoor_asr_clean": -1,
    "det_precision": 1,
    "det_recall": 1,
    "det_f1": 1,
    "det_roc_auc": 1,
    "source_det_precision": 1,
    "source_det_recall": 1,
    "f_needed": -1,
}

#: metrics a recovery curve can be measured on
RECOVERY_METRICS = ("accuracy", "macro_f1", "attack_success_rate", "backdoor_asr")
#: metrics whose clean reference may average several fits: metric → its averaged column
REFERENCE_COLUMNS = {m: f"reference_{m}" for m in ("accuracy", "macro_f1", "log_loss")}
#: metrics whose clean reference is recorded in each attacked row (the clean model measured on
#: that row's attack: the clean model, triggered), not read from the clean cell's rows
ROW_REFERENCES = {"backdoor_asr": "backdoor_asr_clean"}
#: metrics only some attacks measure (a backdoor's trigger): metric → the metric the headline of
#: the other attacks (no trigger, no value) is estimated on instead, at DEFAULT_TOLERANCE, so a
#: backdoor and the label flip at the same rate are in one report
FALLBACK_METRICS = {"backdoor_asr": "accuracy"}
DEFAULT_METRIC = "accuracy"
#: how close to the clean reference counts as recovered (0.005 = half a point of accuracy)
DEFAULT_TOLERANCE = 0.005
DEFAULT_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
DEFAULT_BOOTSTRAP = 1000

#: skip reasons
POOL_EXHAUSTED = "pool_exhausted"
EARLY_STOP = "early_stop"


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` are better (False for ASR, log-loss, f_needed)."""
    return DIRECTIONS.get(metric, 1) > 0


# ---------------------------------------------------------------------------------------------
# Identities
# ---------------------------------------------------------------------------------------------


def plugin_id(name: str, params: Mapping[str, Any]) -> str:
    """The id of a plug-in configuration: canonical JSON of ``{"name", "params"}``."""
    return canonical_json({"name": name, "params": dict(params)})


def defense_id(steps: Sequence[Mapping[str, Any]]) -> str:
    """The id of a defense pipeline: canonical JSON of its steps (each ``{name, params}``, and
    ``tune``, the search space, for a tuned step: see ``bench.run.tuning``)."""
    return canonical_json(
        [
            {"name": s["name"], "params": dict(s["params"])}
            | ({"tune": s["tune"]} if s.get("tune") is not None else {})
            for s in steps
        ]
    )


def dataset_id(spec: Mapping[str, Any]) -> str:
    """The id of a dataset configuration: name, parameters and split (not the fingerprint:
    the same configuration on a re-downloaded copy is still the same configuration)."""
    return canonical_json(
        {"name": spec["name"], "params": dict(spec.get("params") or {}), "split": spec["split"]}
    )


def spec_group(spec: Mapping[str, Any]) -> tuple[str, str, str, float, str]:
    """A cell spec's group (:data:`GROUP_KEYS`: dataset, model, attack, rate and defense ids),
    as the table's rows of that cell carry it."""
    return (
        dataset_id(spec["dataset"]),
        plugin_id(spec["model"]["name"], spec["model"]["params"]),
        plugin_id(spec["attack"]["name"], spec["attack"]["params"]),
        float(spec["rate"]),
        defense_id(spec["defense"]),
    )


#: the clean reference's attack and defense: no attack, the single step ``none``
NO_ATTACK_ID = plugin_id("none", {})
NO_DEFENSE_ID = defense_id([{"name": "none", "params": {}}])
#: the theory line an attack may declare (``Attack.theory_line``): symmetric label noise
SYMMETRIC_LABEL_NOISE = "symmetric_label_noise"


# ---------------------------------------------------------------------------------------------
# Labels: short, and unique within a table by construction
# ---------------------------------------------------------------------------------------------


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_value_text(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


def _with_params(base: str, params: Mapping[str, Any], keys: Iterable[str]) -> str:
    """``base`` with ``k=v`` for ``keys`` added inside its parentheses (or new ones)."""
    extra = ", ".join(f"{k}={_value_text(params.get(k))}" for k in keys)
    if not extra:
        return base
    if base.endswith(")") and "(" in base:
        return f"{base[:-1]}, {extra})"
    return f"{base}({extra})"


def _steps(kind: str, ident: str) -> list[dict[str, Any]]:
    """An id as a list of ``{name, params}`` steps (one step except for defenses)."""
    value = json.loads(ident)
    if kind == "defense":
        return list(value)
    if kind == "dataset":
        return [{"name": value["name"], "params": {**value["params"], **value["split"]}}]
    return [value]


def _differing(step_params: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = sorted({k for p in step_params for k in p})
    return [k for k in keys if len({canonical_json(p.get(k)) for p in step_params}) > 1]


def unique_labels(kind: str, base: Mapping[str, str]) -> dict[str, str]:
    """Display labels for ids of one kind, unique by construction.

    base: id → the plug-in's own short label (for a defense, step labels joined by ``+``).
    Ids whose base labels collide get the parameters that differ among them added, step by
    step (``iforest(contamination=0.05)`` vs ``iforest(contamination=0.4)``); if that still
    does not separate them (e.g. a parameter the label already shows in another form), a
    short hash of the id is added.
    """
    by_label: dict[str, list[str]] = {}
    for ident, label in base.items():
        by_label.setdefault(label, []).append(ident)
    out: dict[str, str] = {}
    for label, idents in by_label.items():
        if len(idents) == 1:
            out[idents[0]] = label
            continue
        steps = {i: _steps(kind, i) for i in idents}
        parts = {i: label.split("+") if kind == "defense" else [label] for i in idents}
        same_shape = len({len(s) for s in steps.values()}) == 1 and all(
            len(parts[i]) == len(steps[i]) for i in idents
        )
        rendered: dict[str, str] = {}
        if same_shape:
            n = len(next(iter(steps.values())))
            for j in range(n):
                keys = _differing([steps[i][j]["params"] for i in idents])
                for i in idents:
                    parts[i][j] = _with_params(parts[i][j], steps[i][j]["params"], keys)
            rendered = {i: "+".join(parts[i]) for i in idents}
        if len(set(rendered.values())) < len(idents):
            rendered = {i: f"{label}#{stable_hash(i, 6)}" for i in idents}
        out.update(rendered)
    return out


def assign_labels(table: pd.DataFrame) -> pd.DataFrame:
    """The table with every ``*_label`` column made unique per id (a new frame).

    The stored labels are the plug-ins' own (set at run time); colliding ones get the
    differing parameters. Idempotent: a table whose labels are unique is returned unchanged.
    """
    if table.empty:
        return table
    out = table.copy()
    for kind in KINDS:
        id_col, label_col = ID[kind], LABEL[kind]
        if id_col not in out or label_col not in out:
            continue
        pairs = out[[id_col, label_col]].dropna(subset=[id_col]).drop_duplicates(id_col)
        base = dict(zip(pairs[id_col], pairs[label_col].fillna(pairs[id_col]), strict=True))
        labels = unique_labels(kind, base)
        out[label_col] = out[id_col].map(labels).fillna(out[label_col])
    return out


# ---------------------------------------------------------------------------------------------
# Table normalisation
# ---------------------------------------------------------------------------------------------


def coerce_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the schema's dtypes for the columns it has (others left as they are).

    A column that cannot be converted keeps its values; :func:`check_table` says why.
    """
    out = table.copy()
    for name in out.columns:
        column = COLUMN_BY_NAME.get(name)
        if column is None:
            continue
        try:
            if column.dtype in ("float64", "Int64"):
                values = pd.to_numeric(out[name], errors="raise")
                out[name] = values.astype(column.dtype)
            elif column.dtype == "int64":
                out[name] = pd.to_numeric(out[name], errors="raise").astype("int64")
            elif column.dtype == "boolean":
                out[name] = out[name].astype("boolean")
        except (TypeError, ValueError):
            pass
    return out


class SchemaError(PoisonBenchError, ValueError):
    """A table lacks columns the caller needs, or holds values of the wrong type."""


#: the columns every consumer of a results table (report, compare, app) needs
REQUIRED_COLUMNS = (*ROW_KEYS, "dataset_label", "model_label", "attack_label", "defense_label",
                    "attack", "defense", "status")  # fmt: skip


def check_table(
    table: pd.DataFrame, required: Iterable[str] = REQUIRED_COLUMNS, where: str = "table"
) -> None:
    """Raise :class:`SchemaError` naming the missing columns, or any numeric column of the
    schema whose values are not numbers (a table of another shape, a hand-edited CSV)."""
    if "attack_id" not in table.columns and "attack_params" in table.columns:
        raise SchemaError(
            f"{where}: a results table written before configuration ids (schema 1); rerun its "
            "config (finished cells are recomputed once), or refresh a baseline with "
            "`poisonbench baseline RUN_DIR DEST`"
        )
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise SchemaError(f"{where}: results table lacks columns {', '.join(missing)}")
    for name in table.columns:
        column = COLUMN_BY_NAME.get(name)
        if column is None or column.dtype not in ("float64", "int64", "Int64"):
            continue
        if not pd.api.types.is_numeric_dtype(table[name]):
            converted = pd.to_numeric(table[name], errors="coerce")
            bad = table[name].notna() & converted.isna()
            if bad.any():
                example = table.loc[bad, name].iloc[0]
                raise SchemaError(
                    f"{where}: column {name} must hold numbers, found {example!r} "
                    f"in {int(bad.sum())} row(s)"
                )
