"""Run one cell: split → poison → defense steps → for each extra-clean fraction: fit → metrics.

The expensive shared work (split, attack output, filter scores) is done once per cell; only the
fit and the metrics are repeated for each extra-clean fraction ``f``.
"""

from __future__ import annotations

import json
import time
import traceback
from typing import Any

import numpy as np

from attacks import ATTACKS
from bench.datasets import load_dataset, split
from bench.grid import Cell, stage_rng, stage_seed
from bench.metrics import classification_metrics, detection_metrics
from bench.models import MODELS
from bench.types import DefenseContext, TrainingSet
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


def _run(cell: Cell, ident: dict[str, Any], data_dir: str | None) -> list[dict[str, Any]]:
    s = cell.spec
    seed = cell.seed
    dataset = load_dataset(s["dataset"]["name"], data_dir)
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
    train = TrainingSet(X=poisoned.X, y=poisoned.y, mask=poisoned.mask, n_classes=info.n_classes)
    ctx = DefenseContext(info=info, n_train=len(y_train), pool_X=pool_X, pool_y=pool_y)
    # Track which of the poisoned rows survive: filters keep row order and appended pool rows
    # go to the end, so the first len(kept) rows of a step's input are the surviving originals.
    removed_total = np.zeros(len(train), dtype=bool)
    first_scores: np.ndarray | None = None
    kept = np.arange(len(train))
    filtered = False
    for i, step_spec in enumerate(s["defense"]):
        step = DEFENSES.get(step_spec["name"]).from_params(step_spec["params"]).bind(info)
        result = step.apply(train, ctx, stage_rng("defense", cell.cell_id, i))
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
        **ident,
        "n_train": len(y_train),
        "n_pool": len(pool_y),
        "n_test": len(y_test),
        "n_eligible": n_eligible,
        "n_poisoned": poisoned.n_poisoned,
        "poison_fraction": poisoned.n_poisoned / len(y_train),
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
    pool_used = int(train.trusted.sum())
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
        if pool_used + wanted > len(pool_y):
            row.update(
                status="skipped",
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
        model = model_spec.build(info, stage_seed("model", cell.cell_id, f))
        model.fit(fit_set.X, fit_set.targets, fit_set.sample_weight)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        proba = model.predict_proba(X_test)
        t_predict = time.perf_counter() - t0
        metrics = classification_metrics(y_test, proba, info.n_classes, attack.target_pair())
        row.update(metrics)
        row.update(n_fit=len(fit_set), t_fit=t_fit, t_predict=t_predict, status="ok", error=None)
        rows.append(row)
    return rows
