"""Run one cell: split → poison → defense steps → for each extra-clean fraction: fit → metrics.

The expensive shared work (split, attack output, filter scores) is done once per cell; only the
fit and the metrics are repeated for each extra-clean fraction ``f``.
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from attacks import ATTACKS
from bench.datasets import load_dataset, split
from bench.grid import Cell, stage_rng, stage_seed
from bench.metrics import classification_metrics, detection_metrics
from bench.models import MODELS, check_loss_support, check_privacy_support, fit_options
from bench.recovery import higher_is_better, recovered
from bench.types import DatasetInfo, DefenseContext, Poisoned, TrainingSet
from defenses import DEFENSES

#: bump when the meaning of a record's fields changes; older records are recomputed
SCHEMA_VERSION = 1


def _label(spec: dict[str, Any], registry: Any) -> str:
    plugin = registry.get(spec["name"]).from_params(spec["params"])
    return plugin.label() if hasattr(plugin, "label") else spec["name"]


def identity_columns(cell: Cell) -> dict[str, Any]:
    """The columns that say which cell a row belongs to (the same for all its rows)."""
    s = cell.spec
    return {
        "cell_id": cell.cell_id,
        "dataset": s["dataset"]["name"],
        "model": s["model"]["name"],
        "model_params": json.dumps(s["model"]["params"], sort_keys=True),
        "attack": s["attack"]["name"],
        "attack_label": _label(s["attack"], ATTACKS),
        "attack_params": json.dumps(s["attack"]["params"], sort_keys=True),
        "rate": float(s["rate"]),
        "defense": "+".join(_label(step, DEFENSES) for step in s["defense"]),
        "defense_params": json.dumps(s["defense"], sort_keys=True),
        "seed": int(s["seed"]),
    }


def run_cell(cell: Cell, data_dir: str | None = None) -> dict[str, Any]:
    """Run a cell and return its record: ``{"cell_id", "spec", "rows", "status", ...}``.

    A failure anywhere is caught and recorded with its error (one row with status ``failed``):
    the grid goes on, and the table says why the cell has no numbers.
    """
    started = time.perf_counter()
    ident = identity_columns(cell)
    try:
        rows = _run(cell, ident, data_dir)
        status, error = "ok", None
    except Exception as exc:  # recorded, never swallowed: the row carries the error
        rows = [
            {
                **ident,
                "extra_fraction": 0.0,
                "status": "failed",
                "error": f"{type(exc).__name__}: {exc}",
            }
        ]
        status = "failed"
        error = "".join(traceback.format_exception(exc)[-8:])
    return {
        "schema_version": SCHEMA_VERSION,
        "cell_id": cell.cell_id,
        "spec": cell.spec,
        "status": status,
        "error": error,
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }


@dataclass
class PreparedCell:
    """A cell up to the fit: its split, the attack's output and the defended training set.

    Everything here is shared by all extra-clean fractions of the cell (computed once).
    """

    info: DatasetInfo
    pool_used: int  # pool rows the defense steps consumed; the recovery rows come after them
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    pool_X: np.ndarray
    pool_y: np.ndarray
    attack: Any
    poisoned: Poisoned
    train: TrainingSet  # after every defense step
    model_spec: Any
    base: dict[str, Any]  # sizes and filter-detection columns shared by the cell's rows
    t_attack: float
    t_defense: float


def prepare_cell(cell: Cell, data_dir: str | None = None) -> PreparedCell:
    """Split, poison and defend a cell's training set, exactly as every run of it does."""
    s = cell.spec
    seed = cell.seed
    dataset = load_dataset(s["dataset"]["name"], data_dir, s["dataset"].get("params"))
    if dataset.fingerprint != s["dataset"]["fingerprint"]:
        raise RuntimeError(
            f"dataset {dataset.name} changed since the grid was expanded "
            f"({dataset.fingerprint} != {s['dataset']['fingerprint']})"
        )
    info = dataset.info
    sizes = s["dataset"]["split"]

    # Stage keys: the split depends on (dataset, seed); the attack on (dataset, attack, rate,
    # seed); defenses and models on the whole cell. Every defense sees the same poisoned set.
    t0 = time.perf_counter()
    parts = split(
        dataset,
        sizes["train"],
        sizes["test"],
        sizes["pool"],
        rng=stage_rng("split", s["dataset"], seed),
    )
    X_train, y_train = dataset.X[parts.train], dataset.y[parts.train]
    X_test, y_test = dataset.X[parts.test], dataset.y[parts.test]
    pool_X, pool_y = dataset.X[parts.pool], dataset.y[parts.pool]

    attack = ATTACKS.get(s["attack"]["name"]).from_params(s["attack"]["params"]).bind(info)
    poisoned = attack.poison(
        X_train, y_train, s["rate"], stage_rng("attack", s["dataset"], s["attack"], s["rate"], seed)
    )
    n_eligible = int(attack.eligible(y_train).sum())
    t_attack = time.perf_counter() - t0

    t0 = time.perf_counter()
    train = TrainingSet(
        X=poisoned.X,
        y=poisoned.y,
        mask=poisoned.mask,
        n_classes=info.n_classes,
        source=poisoned.source,  # None without provenance: one source, id 0
    )
    ctx = DefenseContext(info=info, n_train=len(y_train), pool_X=pool_X, pool_y=pool_y)
    # Track which of the poisoned rows survive: filters keep row order and appended pool rows
    # go to the end, so the first len(kept) rows of a step's input are the surviving originals.
    removed_total = np.zeros(len(train), dtype=bool)
    first_scores: np.ndarray | None = None
    kept = np.arange(len(train))
    filtered = False
    pool_start = 0
    for i, step_spec in enumerate(s["defense"]):
        step = DEFENSES.get(step_spec["name"]).from_params(step_spec["params"]).bind(info)
        ctx = dataclasses.replace(ctx, pool_start=pool_start)
        result = step.apply(train, ctx, stage_rng("defense", cell.cell_id, i))
        pool_start += int(result.pool_used)
        if result.removed is not None:
            filtered = True
            gone = result.removed[: len(kept)]
            if first_scores is None and result.scores is not None:
                first_scores = np.full(len(poisoned.y), np.nan)
                first_scores[kept] = result.scores[: len(kept)]
            removed_total[kept[gone]] = True
            kept = kept[~gone]
        train = result.train
    t_defense = time.perf_counter() - t0

    base: dict[str, Any] = {
        "n_trusted_used": pool_start,
        "n_train": len(y_train),
        "n_pool": len(pool_y),
        "n_test": len(y_test),
        "n_eligible": n_eligible,
        "n_poisoned": poisoned.n_poisoned,
        "poison_fraction": poisoned.n_poisoned / len(y_train),
        "n_sources": attack.sources,
        "poisoned_sources": attack.poisoned_sources,
    }
    if filtered:
        base.update(
            detection_metrics(
                poisoned.mask, removed_total, first_scores, poisoned.y, info.n_classes
            )
        )
    else:
        base.update({"n_removed": 0, "clean_removed": 0})

    model_spec = MODELS.get(s["model"]["name"]).from_params(s["model"]["params"]).bind(info)
    check_loss_support(model_spec, train.loss)  # a robust-loss step needs a model that uses it
    check_privacy_support(model_spec, train.privacy)  # so does dp_sgd
    return PreparedCell(
        info=info, pool_used=pool_start, X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
        pool_X=pool_X, pool_y=pool_y, attack=attack, poisoned=poisoned, train=train,
        model_spec=model_spec, base=base, t_attack=t_attack, t_defense=t_defense,
    )  # fmt: skip


def fit_model(cell: Cell, prepared: PreparedCell, f: float, fit_set: TrainingSet) -> Any:
    """Build the cell's model for extra-clean fraction ``f`` (seed keyed by cell and f) and fit
    it on ``fit_set`` with the loss a defense step chose, if any."""
    model = prepared.model_spec.build(prepared.info, stage_seed("model", cell.cell_id, f))
    model.fit(fit_set.X, fit_set.targets, fit_set.sample_weight, **fit_options(fit_set))
    return model


def _run(cell: Cell, ident: dict[str, Any], data_dir: str | None) -> list[dict[str, Any]]:
    s = cell.spec
    p = prepare_cell(cell, data_dir)
    info, train, attack = p.info, p.train, p.attack
    X_train, y_train, X_test, y_test = p.X_train, p.y_train, p.X_test, p.y_test
    pool_X, pool_y, model_spec = p.pool_X, p.pool_y, p.model_spec
    t_attack, t_defense = p.t_attack, p.t_defense
    base = {**ident, **p.base}
    pool_used = p.pool_used
    stop = s.get("early_stop")  # {"metric", "tolerance"} when the config asks for early stop
    reference = None
    if stop:
        reference = _clean_reference(
            cell, stop["metric"], info, model_spec, X_train, y_train, X_test, y_test, attack
        )
    streak = 0  # consecutive grid points at which the curve is back at the clean reference
    rows = []
    for f in s["fractions"]:
        wanted = int(round(f * len(y_train)))
        row = {
            **base,
            "extra_fraction": float(f),
            "n_extra": wanted,
            "t_attack": t_attack,
            "t_defense": t_defense,
        }
        if stop and streak >= 2:
            row.update(
                status="skipped",
                skip_reason="early_stop",
                early_stop_reference=reference,
                error=(
                    f"early stop: {stop['metric']} was back within {stop['tolerance']:g} of the "
                    f"clean reference {reference:.4f} at the two previous grid points"
                ),
            )
            rows.append(row)
            continue
        if pool_used + wanted > len(pool_y):
            row.update(
                status="skipped",
                skip_reason="pool_exhausted",
                error=(
                    f"clean pool exhausted: f={f:g} needs {wanted} rows after {pool_used} used, "
                    f"the pool has {len(pool_y)}"
                ),
            )
            rows.append(row)
            continue
        fit_set = train.append(
            pool_X[pool_used : pool_used + wanted], pool_y[pool_used : pool_used + wanted]
        )
        t0 = time.perf_counter()
        model = fit_model(cell, p, f, fit_set)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        proba = model.predict_proba(X_test)
        t_predict = time.perf_counter() - t0
        metrics = classification_metrics(y_test, proba, info.n_classes, attack.target_pair())
        row.update(metrics)
        row.update(getattr(model, "fit_info_", None) or {})  # e.g. dp_epsilon from dp_sgd
        row.update(n_fit=len(fit_set), t_fit=t_fit, t_predict=t_predict, status="ok", error=None)
        if stop:
            if reference is None:  # this is the clean reference cell itself (f = 0 comes first)
                reference = float(metrics[stop["metric"]])
            row["early_stop_reference"] = reference
            higher = higher_is_better(stop["metric"])
            ok = recovered(float(metrics[stop["metric"]]), reference, stop["tolerance"], higher)
            streak = streak + 1 if ok else 0
        rows.append(row)
    return rows


def _clean_reference(
    cell: Cell,
    metric: str,
    info: Any,
    model_spec: Any,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    attack: Any,
) -> float | None:
    """The clean reference's ``metric`` for early stop, or None when ``cell`` is that reference.

    Refits exactly the clean reference cell's f = 0 model (same split, no attack, no defense,
    the model seed keyed by the clean cell's id), so the value equals that cell's own row and
    the cell's result depends on its spec alone. For the attack success rate the clean model is
    scored on this cell's (source, target) pair.
    """
    none_defense = DEFENSES.get("none").from_params({})
    clean_spec = {
        **cell.spec,
        "attack": {"name": "none", "params": {}},
        "rate": 0.0,
        "defense": [{"name": "none", "params": none_defense.params()}],
    }
    clean = Cell(clean_spec)
    if clean.cell_id == cell.cell_id:
        return None
    model = model_spec.build(info, stage_seed("model", clean.cell_id, cell.spec["fractions"][0]))
    model.fit(X_train, y_train, None)
    proba = model.predict_proba(X_test)
    metrics = classification_metrics(y_test, proba, info.n_classes, attack.target_pair())
    return float(metrics[metric])
