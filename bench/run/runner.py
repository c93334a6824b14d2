"""Run cells: split → poison → defense steps → for each extra-clean fraction: fit → metrics.

Randomness is keyed by *stage* (docs/architecture.md, "Randomness by stage"): the split by
(dataset, seed), the attack by (dataset, attack, rate, seed), defense step i by (the poisoned set, steps 0..i, seed) and the
**model by (dataset, model, seed) only**, so within a seed every attack, rate, defense and
extra-clean fraction shares one initialization and shuffle stream (common random numbers): two
cells whose training sets are identical give identical models, and every comparison between
defenses, rates or fractions is paired.

Work shared by many cells is done once per task (:class:`bench.run.grid.Task`: the cells of one
poisoned training set): the split, the attack's output and the output of every defense-step
prefix are kept in a :class:`StageCache`, so ``iforest`` and ``[iforest, label_smoothing]`` fit
the forest once, and a grid with two models filters once. Only the fits are per fraction.
"""

from __future__ import annotations

import os
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.analysis.recovery import recovered
from bench.core.certificates import certified_changes, certified_metrics
from bench.core.metrics import classification_metrics, detection_metrics
from bench.core.schema import (
    EARLY_STOP,
    GROUP_KEYS,
    KINDS,
    POOL_EXHAUSTED,
    REFERENCE_COLUMNS,
    SCHEMA_VERSION,
    STEP_SUMS,
    STEP_TOTALS,
    canonical_json,
    higher_is_better,
    jsonable,
    spec_group,
    unique_labels,
)
from bench.core.types import (
    DatasetInfo,
    DefenseContext,
    ParamError,
    PoisonBenchError,
    Poisoned,
    TrainingSet,
    plugin_escape,
)
from bench.data.datasets import load_dataset, split
from bench.models import (
    MODELS,
    check_loss_support,
    check_privacy_support,
    check_representation_support,
    fit_options,
)
from bench.models.by_path import check_weight_support
from bench.models.ensemble import EnsembleClassifier
from bench.run.backdoor import (
    backdoor_metrics,
    first_pass_model,
    is_first_pass,
    lazy_features,
    needs_representation,
    triggered_test,
)
from bench.run.grid import Cell, TaskPayload, stage_rng, stage_seed
from bench.run.plugins import import_plugins
from bench.run.proba import checked_proba
from bench.run.resolve import bound, build, resolve
from bench.run.tuning import TUNE_COLUMNS, tune_step
from defenses import DEFENSES


class StageCache:
    """Outputs of shared stages within one task (bounded: at most ``size`` entries)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Any, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """``(value, reused)``: the cached value for ``key``, or ``compute()`` stored."""
        text = canonical_json(key)
        if text in self._items:
            self._items.move_to_end(text)
            self.hits += 1
            return self._items[text], True
        self.misses += 1
        value = compute()
        self._items[text] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return value, False


# ---------------------------------------------------------------------------------------------
# Identity columns
# ---------------------------------------------------------------------------------------------


def identity_columns(cell: Cell, info: DatasetInfo | None = None) -> dict[str, Any]:
    """The columns that say which configuration a row belongs to (the same for all its rows):
    ids, names, the plug-ins' own labels (made unique per table by ``schema.assign_labels``)
    and the plug-in facts analysis needs (targeted pair, theory line, reference defense)."""
    s = cell.spec
    out: dict[str, Any] = {
        "cell_id": cell.cell_id,
        **dict(zip(GROUP_KEYS, spec_group(s), strict=True)),
        "dataset": s["dataset"]["name"],
        "model": s["model"]["name"],
        "attack": s["attack"]["name"],
        "defense": "+".join(step["name"] for step in s["defense"]),
        "rate": float(s["rate"]),
        "seed": int(s["seed"]),
        "dataset_fingerprint": s["dataset"]["fingerprint"],
    }
    try:
        resolved = resolve(s, info)
    except (PoisonBenchError, TypeError, ValueError):
        # a spec that no longer builds or binds still gets a row saying why it failed
        out.update(
            dataset_label=s["dataset"]["name"],
            model_label=s["model"]["name"],
            attack_label=s["attack"]["name"],
            defense_label=out["defense"],
        )
        return out
    out.update(resolved.labels())
    out.update(resolved.facts())
    return out


def display_labels(cells: Sequence[Cell], data_dir: str | None = None) -> dict[str, dict[str, str]]:
    """The unique display label of every configuration of a grid: ``{kind: {id: label}}``.

    The same labels the results table gets (``schema.assign_labels`` over the whole grid), known
    before any cell runs (e.g. for MLflow run names)."""
    base: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
    for cell in cells:
        key = cell.spec["dataset"]
        info = load_dataset(key["name"], data_dir, key.get("params")).info
        row = identity_columns(cell, info)
        for kind in KINDS:
            base[kind].setdefault(row[f"{kind}_id"], row[f"{kind}_label"])
    return {kind: unique_labels(kind, labels) for kind, labels in base.items()}


def run_name(cell: Cell, labels: dict[str, dict[str, str]]) -> str:
    """A cell's short unique name from display labels: ``digits/logreg/iforest(...)@0.3/...``."""
    ident = identity_columns(cell)
    part = {kind: labels[kind].get(ident[f"{kind}_id"], ident[kind]) for kind in labels}
    return (
        f"{part['dataset']}/{part['model']}/{part['attack']}@{cell.spec['rate']:g}/"
        f"{part['defense']}/seed={cell.seed}"
    )


def failed_rows(
    cell: Cell, fractions: Sequence[float], error: str, info: DatasetInfo | None = None
) -> list[dict[str, Any]]:
    """One ``failed`` row per fraction, saying why (a failed cell is a row, never a NaN)."""
    ident = identity_columns(cell, info)
    return [
        {**ident, "extra_fraction": float(f), "status": "failed", "error": error} for f in fractions
    ]


def make_record(
    cell: Cell, rows: list[dict[str, Any]], seconds: float, error: str | None = None
) -> dict[str, Any]:
    """A cell's record: its spec, its rows (one per fraction) and whether any row failed."""
    failed = any(r.get("status") == "failed" for r in rows)
    return {
        "schema_version": SCHEMA_VERSION,
        "cell_id": cell.cell_id,
        "spec": cell.spec,
        "status": "failed" if failed else "ok",
        "error": error,
        "seconds": seconds,
        "rows": rows,
    }


def failed_record(cell: Cell, fractions: Sequence[float], error: str) -> dict[str, Any]:
    """The record of a cell that could not run at all (its worker died, the task broke)."""
    return make_record(cell, failed_rows(cell, fractions, error), 0.0, error)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def run_task(
    payload: TaskPayload | Sequence[tuple[dict[str, Any], Sequence[float]]],
    data_dir: str | None = None,
) -> list[dict[str, Any]]:
    """Run a task's cells with one shared :class:`StageCache`; returns one record per cell.

    payload: :meth:`bench.run.grid.Task.payload` (``{"cells": [(spec, fractions), ...],
    "plugins": [module, ...]}``), or the bare list of ``(spec, fractions)``. The ``plugins``
    modules are imported first (once per process); one this process cannot import fails every
    cell of the task with the reason (retried on the next run).
    """
    if isinstance(payload, Mapping):
        items, plugins = payload["cells"], tuple(payload.get("plugins") or ())
    else:
        items, plugins = payload, ()
    if plugins:
        try:
            import_plugins(plugins)
        except ParamError as exc:
            error = f"worker (pid {os.getpid()}): {exc} (every worker must be able to import it)"
            return [failed_record(Cell(spec), fractions, error) for spec, fractions in items]
    cache = StageCache()
    return [run_cell(Cell(spec), fractions, data_dir, cache) for spec, fractions in items]


def run_cell(
    cell: Cell,
    fractions: Sequence[float] | None = None,
    data_dir: str | None = None,
    cache: StageCache | None = None,
) -> dict[str, Any]:
    """Run a cell for ``fractions`` (default: the grid of its early-stop spec, else ``[0]``)
    and return its record: ``{"cell_id", "spec", "rows", "status", "seconds", ...}``.

    A failure anywhere is caught and recorded with its error (``failed`` rows): the grid goes
    on, and the table says why the cell has no numbers.
    """
    started = time.perf_counter()
    if fractions is None:
        fractions = (cell.spec.get("early_stop") or {}).get("fractions", [0.0])
    fractions = [float(f) for f in fractions]
    cache = cache if cache is not None else StageCache()
    try:
        rows = _run(cell, fractions, data_dir, cache)
        error = None
    except Exception as exc:  # recorded, never swallowed: the rows carry the error
        rows = failed_rows(cell, fractions, f"{type(exc).__name__}: {exc}")
        error = "".join(traceback.format_exception(exc)[-8:])
    except BaseException as exc:  # sys.exit or another BaseException from a plug-in's code
        why = plugin_escape(exc)
        if why is None:  # a stop signal: the run stops (and resumes later)
            raise
        rows = failed_rows(cell, fractions, f"plugin {why}")
        error = "".join(traceback.format_exception(exc)[-8:])
    return make_record(cell, rows, time.perf_counter() - started, error)


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
    base: dict[str, Any]  # sizes, filter-detection and step columns shared by the cell's rows
    t_attack: float
    t_defense: float
    short: tuple[str, ...] = ()  # steps that got fewer pool rows than they asked for


@dataclass
class _Defended:
    """The output of a defense-step prefix (cached per task)."""

    train: TrainingSet
    removed_total: np.ndarray
    first_scores: np.ndarray | None
    kept: np.ndarray
    filtered: bool
    pool_start: int
    recorded: dict[str, Any]  # step-detail columns (``Defense.recorded``), combined over steps
    short: tuple[str, ...]  # "step i (name) got 30 of 38 pool rows" for steps short of rows


def prepare_cell(
    cell: Cell, data_dir: str | None = None, cache: StageCache | None = None
) -> PreparedCell:
    """Split, poison and defend a cell's training set, exactly as every run of it does."""
    cache = cache if cache is not None else StageCache()
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

    t0 = time.perf_counter()
    poisoning = ["poison", s["dataset"], s["attack"], s["rate"], seed]

    def do_split() -> tuple[np.ndarray, ...]:
        parts = split(
            dataset, sizes["train"], sizes["test"], sizes["pool"],
            rng=stage_rng("split", s["dataset"], seed),
        )  # fmt: skip
        return (
            dataset.X[parts.train], dataset.y[parts.train], dataset.X[parts.test],
            dataset.y[parts.test], dataset.X[parts.pool], dataset.y[parts.pool],
        )  # fmt: skip

    (X_train, y_train, X_test, y_test, pool_X, pool_y), _ = cache.get(
        ["split", s["dataset"], seed], do_split
    )
    resolved = resolve(s, info)
    attack = resolved.attack

    def do_attack() -> Poisoned:
        rng = stage_rng("attack", s["dataset"], s["attack"], s["rate"], seed)
        return attack.poison(X_train, y_train, s["rate"], rng)

    poisoned, attack_reused = cache.get(poisoning, do_attack)
    n_eligible = int(attack.eligible(y_train).sum())
    t_attack = 0.0 if attack_reused else time.perf_counter() - t0

    t0 = time.perf_counter()
    state = _Defended(
        train=TrainingSet(
            X=poisoned.X,
            y=poisoned.y,
            mask=poisoned.mask,
            n_classes=info.n_classes,
            source=poisoned.source,  # None without provenance: one source, id 0
        ),
        removed_total=np.zeros(len(poisoned.y), dtype=bool),
        first_scores=None,
        kept=np.arange(len(poisoned.y)),
        filtered=False,
        pool_start=0,
        recorded={column: 0 for column in STEP_TOTALS},
        short=(),
    )
    computed = False
    evaluate = _validation_accuracy(cell, info)  # for tuned steps only (bench.run.tuning)
    features = None  # the first-pass model's representation, for steps that need it
    if needs_representation(s["defense"]):
        rep_spec = resolved.bound_model()
        check_representation_support(rep_spec, "+".join(st["name"] for st in s["defense"]))
        features = lazy_features(
            lambda: first_pass_model(s, rep_spec, info, poisoned, model_seed(s), cache)[0]
        )
    for i in range(len(s["defense"])):
        prefix = s["defense"][: i + 1]
        previous = state
        # A tuned step chooses with the cell's model, and a representation step reads the
        # cell's model's first-pass fit: their outputs are shared per model only.
        by_model = (
            ["model", s["model"]]
            if needs_representation(prefix) or any(st.get("tune") for st in prefix)
            else []
        )
        state, reused = cache.get(
            [*poisoning, "defense", prefix, *by_model],
            lambda i=i, prev=previous, prefix=prefix: _defense_step(
                prev,
                prefix,
                i,
                info,
                len(y_train),
                pool_X,
                pool_y,
                [*poisoning, prefix],
                evaluate,
                features if needs_representation(prefix[i:]) else None,
            ),
        )
        computed |= not reused
    t_defense = time.perf_counter() - t0 if computed else 0.0

    base: dict[str, Any] = {
        "n_trusted_used": state.pool_start,
        "n_train": len(y_train),
        "n_pool": len(pool_y),
        "n_test": len(y_test),
        "n_eligible": n_eligible,
        "n_poisoned": poisoned.n_poisoned,
        "poison_fraction": poisoned.n_poisoned / len(y_train),
        "n_sources": attack.sources,
        "poisoned_sources": attack.poisoned_sources,
        **state.recorded,
    }
    if state.filtered:
        base.update(
            detection_metrics(
                poisoned.mask, state.removed_total, state.first_scores, poisoned.y, info.n_classes
            )
        )
    else:
        base.update({"n_removed": 0, "clean_removed": 0})

    model_spec = resolved.bound_model()
    check_loss_support(model_spec, state.train.loss)  # a robust-loss step needs a model for it
    check_privacy_support(model_spec, state.train.privacy)  # so does dp_sgd
    check_weight_support(model_spec, state.train, "+".join(st.label() for st in resolved.steps))
    return PreparedCell(
        info=info, pool_used=state.pool_start, X_train=X_train, y_train=y_train, X_test=X_test,
        y_test=y_test, pool_X=pool_X, pool_y=pool_y, attack=attack, poisoned=poisoned,
        train=state.train, model_spec=model_spec, base=base, t_attack=t_attack,
        t_defense=t_defense, short=state.short,
    )  # fmt: skip


def _defense_step(
    state: _Defended,
    prefix: list[dict[str, Any]],
    i: int,
    info: DatasetInfo,
    n_train: int,
    pool_X: np.ndarray,
    pool_y: np.ndarray,
    key: list[Any],
    evaluate: Callable[[TrainingSet, np.ndarray, np.ndarray], float] | None = None,
    features: Callable[[np.ndarray], np.ndarray] | None = None,
) -> _Defended:
    """Apply step ``i`` (the last of ``prefix``) to the output of the steps before it.

    A tuned step (``tune`` in its spec) is the best of its settings on held-out pool rows,
    scored by ``evaluate`` (see :mod:`bench.run.tuning`); ``features``: the first-pass
    representation, for a step that needs it."""
    spec = prefix[i]
    step = bound(DEFENSES, spec["name"], spec["params"], info)
    ctx = DefenseContext(
        info=info, n_train=n_train, pool_X=pool_X, pool_y=pool_y, pool_start=state.pool_start,
        features=features,
    )  # fmt: skip
    declared = step.recorded
    if spec.get("tune"):
        if evaluate is None:
            raise ValueError(f"step {i + 1} ({spec['name']}) is tuned: it needs the cell's model")
        # a candidate draws as the untuned step at its setting would: key ends with the prefix
        *stage, _ = key

        def candidate_rng(fixed: dict[str, Any]) -> np.random.Generator:
            return stage_rng("defense", *stage, [*prefix[:i], fixed])

        result, step = tune_step(spec, state.train, ctx, info, candidate_rng, evaluate)
        declared = {**step.recorded, **TUNE_COLUMNS}
    else:
        result = step.apply(state.train, ctx, stage_rng("defense", *key))
    # Track which of the poisoned rows survive: filters keep row order and appended pool rows
    # go to the end, so the first len(kept) rows of a step's input are the surviving originals.
    removed_total, kept = state.removed_total.copy(), state.kept
    first_scores, filtered = state.first_scores, state.filtered
    if result.removed is not None:
        filtered = True
        gone = result.removed[: len(kept)]
        if first_scores is None and result.scores is not None:
            first_scores = np.full(len(removed_total), np.nan)
            first_scores[kept] = result.scores[: len(kept)]
        removed_total[kept[gone]] = True
        kept = kept[~gone]
    recorded = record_details(state.recorded, declared, result.details)
    short = state.short
    lacking = int(recorded.get("pool_short") or 0) - int(state.recorded.get("pool_short") or 0)
    if lacking > 0:
        got = int(result.pool_used)
        short = (*short, f"step {i + 1} ({spec['name']}) got {got} of {got + lacking} pool rows")
    return _Defended(
        train=result.train,
        removed_total=removed_total,
        first_scores=first_scores,
        kept=kept,
        filtered=filtered,
        pool_start=state.pool_start + int(result.pool_used),
        recorded=recorded,
        short=short,
    )


def record_details(
    before: dict[str, Any], declared: Any, details: dict[str, Any]
) -> dict[str, Any]:
    """The step-detail columns after one more step: ``before`` updated with the ``details`` keys
    the step declares (``Defense.recorded``: key → column). Columns in ``schema.STEP_SUMS`` add
    up over steps; any other column takes the later step's value. Values are made JSON-plain
    (NaN → None); nested ones become JSON text in the table (``schema.NESTED_COLUMNS``)."""
    out = dict(before)
    for key, column in declared.items():
        if key not in details:
            continue
        value = jsonable(details[key])
        previous = out.get(column)
        if column in STEP_SUMS and value is not None and previous is not None:
            value = previous + value
        out[column] = value
    return out


def _validation_accuracy(
    cell: Cell, info: DatasetInfo
) -> Callable[[TrainingSet, np.ndarray, np.ndarray], float]:
    """What a tuned step scores a candidate by: the cell's model (its own seed, as every fit
    of the cell) fit on the candidate's training set, its accuracy on the validation rows.
    It is given only those rows: tuning cannot read the test set."""
    s = cell.spec

    def evaluate(fit_set: TrainingSet, X_val: np.ndarray, y_val: np.ndarray) -> float:
        spec = bound(MODELS, s["model"]["name"], s["model"]["params"], info)
        model = spec.build(info, model_seed(s))
        model.fit(fit_set.X, fit_set.targets, fit_set.sample_weight, **fit_options(fit_set))
        predicted = np.asarray(model.predict_proba(X_val)).argmax(axis=1)
        return float(np.mean(predicted == y_val))

    return evaluate


def model_seed(spec: dict[str, Any]) -> int:
    """The model's seed: keyed by (dataset, model, seed) only (common random numbers)."""
    return stage_seed("model", spec["dataset"], spec["model"], int(spec["seed"]))


def fit_model(cell: Cell, prepared: PreparedCell, fit_set: TrainingSet) -> Any:
    """Build the cell's model (seeded by :func:`model_seed`) and fit it on ``fit_set`` with the
    loss or privacy options a defense step chose, if any. Under a certified defense
    (``fit_set.ensemble``) the model is the ensemble of that spec the plan describes."""
    if fit_set.ensemble is not None:
        model = EnsembleClassifier(
            prepared.model_spec, prepared.info, model_seed(cell.spec), fit_set.ensemble
        )
    else:
        model = prepared.model_spec.build(prepared.info, model_seed(cell.spec))
    model.fit(fit_set.X, fit_set.targets, fit_set.sample_weight, **fit_options(fit_set))
    return model


def _run(
    cell: Cell, fractions: list[float], data_dir: str | None, cache: StageCache
) -> list[dict[str, Any]]:
    s = cell.spec
    p = prepare_cell(cell, data_dir, cache)
    info, train, attack = p.info, p.train, p.attack
    base = {**identity_columns(cell, info), **p.base}
    pool_used = p.pool_used
    if p.short:  # the steps did not get the budget their parameters say: no fit measures it
        error = (
            f"clean pool exhausted: {'; '.join(p.short)} (the pool has {len(p.pool_y)} rows, "
            f"{pool_used} used)"
        )
        return [
            {
                **base,
                "extra_fraction": float(f),
                "n_extra": int(round(f * len(p.y_train))),
                "status": "skipped",
                "skip_reason": POOL_EXHAUSTED,
                "error": error,
            }
            for f in fractions
        ]
    stop = s.get("early_stop")  # {"metric", "tolerance", "fractions"} when early stop is on
    reference = _clean_reference(cell, stop["metric"], p, cache) if stop else None
    streak = 0  # consecutive grid points at which the curve is back at the clean reference
    triggered = triggered_test(attack, p.X_test, p.y_test, p.X_train)  # None: no backdoor
    clean_asr = _clean_backdoor_asr(cell, p, cache, triggered)
    rows = []
    for f in fractions:
        wanted = int(round(f * len(p.y_train)))
        row = {
            **base,
            "extra_fraction": float(f),
            "n_extra": wanted,
            "t_attack": p.t_attack,
            "t_defense": p.t_defense,
        }
        if stop and streak >= 2:
            row.update(
                status="skipped",
                skip_reason=EARLY_STOP,
                early_stop_reference=reference,
                error=(
                    f"early stop: {stop['metric']} was back within {stop['tolerance']:g} of the "
                    f"clean reference {reference:.4f} at the two previous grid points"
                ),
            )
            rows.append(row)
            continue
        if pool_used + wanted > len(p.pool_y):
            row.update(
                status="skipped",
                skip_reason=POOL_EXHAUSTED,
                error=(
                    f"clean pool exhausted: f={f:g} needs {wanted} rows after {pool_used} used, "
                    f"the pool has {len(p.pool_y)}"
                ),
            )
            rows.append(row)
            continue
        fit_set = train.append(
            p.pool_X[pool_used : pool_used + wanted], p.pool_y[pool_used : pool_used + wanted]
        )
        t0 = time.perf_counter()
        if is_first_pass(s, wanted) and pool_used == 0:  # shared with representation steps
            model, _ = first_pass_model(s, p.model_spec, info, p.poisoned, model_seed(s), cache)
        else:
            model = fit_model(cell, p, fit_set)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        proba = checked_proba(
            model.predict_proba(p.X_test), len(p.y_test), info.n_classes, p.model_spec.label()
        )
        t_predict = time.perf_counter() - t0
        metrics = classification_metrics(p.y_test, proba, info.n_classes, attack.target_pair())
        metrics.update(backdoor_metrics(model, attack, triggered))
        if triggered is not None:
            metrics["backdoor_asr_clean"] = clean_asr
        row.update(metrics)
        row.update(getattr(model, "fit_info_", None) or {})
        if fit_set.ensemble is not None:  # certified defenses: radii of the test predictions
            plan = fit_set.ensemble
            row.update(certified_metrics(p.y_test, *model.certify(p.X_test), plan.unit))
            row["certified_changes"] = certified_changes(
                p.X_train, p.poisoned.X, p.poisoned.mask, plan.feature_change_cost
            )
        row.update(n_fit=len(fit_set), t_fit=t_fit, t_predict=t_predict, status="ok", error=None)
        if f == 0 and int(s.get("reference_fits") or 1) > 1:
            row.update(reference_metrics(cell, p, metrics, int(s["reference_fits"])))
        if stop:
            if reference is None:  # this is the clean reference cell itself (f = 0 comes first)
                reference = float(metrics.get(stop["metric"], np.nan))
            row["early_stop_reference"] = reference
            value = float(metrics.get(stop["metric"], np.nan))
            back = recovered(value, reference, stop["tolerance"], higher_is_better(stop["metric"]))
            streak = streak + 1 if back else 0
        rows.append(row)
    return rows


def reference_draws(
    y_train: np.ndarray, y_pool: np.ndarray, k: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` more train sets like the seed's own: each holds, per class, as many rows as the
    train set does, drawn without replacement from that class's train and pool rows. Returns
    ``(train_index, pool_index)`` pairs (the rows of each part the draw takes)."""
    n_train = len(y_train)
    labels = np.concatenate([y_train, y_pool])
    out = []
    for _ in range(k):
        chosen = []
        for c in np.unique(y_train):
            rows = np.flatnonzero(labels == c)
            chosen.append(rng.choice(rows, size=int((y_train == c).sum()), replace=False))
        picked = np.sort(np.concatenate(chosen))
        out.append((picked[picked < n_train], picked[picked >= n_train] - n_train))
    return out


def reference_metrics(
    cell: Cell, p: PreparedCell, own: Mapping[str, Any], k: int
) -> dict[str, Any]:
    """The clean reference averaged over ``k`` fits: the cell's own (``own`` metrics) and
    ``k − 1`` fits on :func:`reference_draws` of the seed's train and pool rows, each with the
    cell's model seed (common random numbers). The clean model at f = 0 varies across seeds
    mostly by *which* n_train rows it learned from; its test set is shared with every curve of
    the seed and cancels in the paired margin, this part does not, and dominated the headline
    interval at large f. Averaging estimates the same quantity (the expected clean accuracy at
    n_train rows on this seed's test set) with less of that noise. Test rows are never drawn."""
    rng = stage_rng("reference", cell.spec["dataset"], cell.spec["model"], cell.seed)
    values = {m: [float(own[m])] for m in REFERENCE_COLUMNS}
    for train_rows, pool_rows in reference_draws(p.y_train, p.pool_y, k - 1, rng):
        X = np.concatenate([p.X_train[train_rows], p.pool_X[pool_rows]])
        y = np.concatenate([p.y_train[train_rows], p.pool_y[pool_rows]])
        model = p.model_spec.build(p.info, model_seed(cell.spec))
        model.fit(X, y, None)
        scored = classification_metrics(p.y_test, model.predict_proba(p.X_test), p.info.n_classes)
        for m in REFERENCE_COLUMNS:
            values[m].append(float(scored[m]))
    out: dict[str, Any] = {
        column: float(np.mean(values[m])) for m, column in REFERENCE_COLUMNS.items()
    }
    out["reference_fits"] = k
    return out


def _clean_reference(cell: Cell, metric: str, p: PreparedCell, cache: StageCache) -> float | None:
    """The clean reference's ``metric`` for early stop, or None when ``cell`` is that reference.

    Refits exactly the clean reference cell's f = 0 model (same split, no attack, no defense,
    the same model seed), so the value equals that cell's own row and the cell's result depends
    on its spec alone. For the attack success rate the clean model is scored on this cell's
    (source, target) pair.
    """
    none_defense = build(DEFENSES, "none", {})
    clean = Cell(
        {
            **cell.spec,
            "attack": {"name": "none", "params": {}},
            "rate": 0.0,
            "defense": [{"name": "none", "params": none_defense.params()}],
        }
    )
    if clean.cell_id == cell.cell_id:
        return None
    if metric == "backdoor_asr":  # the clean model, triggered
        triggered = triggered_test(p.attack, p.X_test, p.y_test, p.X_train)
        return _clean_backdoor_asr(cell, p, cache, triggered)

    def fit_clean() -> np.ndarray:
        model = p.model_spec.build(p.info, model_seed(clean.spec))
        model.fit(p.X_train, p.y_train, None)
        proba = model.predict_proba(p.X_test)
        return checked_proba(proba, len(p.y_test), p.info.n_classes, p.model_spec.label())

    proba, _ = cache.get(["clean-reference", clean.spec], fit_clean)
    metrics = classification_metrics(p.y_test, proba, p.info.n_classes, p.attack.target_pair())
    return float(metrics[metric])


def _clean_backdoor_asr(
    cell: Cell,
    p: PreparedCell,
    cache: StageCache,
    triggered: tuple[np.ndarray, np.ndarray] | None,
) -> float:
    """The clean model's ``backdoor_asr`` on this cell's triggered test rows (NaN: no trigger).

    The clean model is the clean reference cell's f = 0 fit (same split and model seed, no
    attack, no defense), fit once per task and kept in the stage cache."""
    if triggered is None:
        return float("nan")
    clean_spec = {**cell.spec, "attack": {"name": "none", "params": {}}, "rate": 0.0,
                  "defense": [{"name": "none", "params": {}}]}  # fmt: skip
    unpoisoned = Poisoned(p.X_train, p.y_train, np.zeros(len(p.y_train), dtype=bool))
    model, _ = first_pass_model(
        clean_spec, p.model_spec, p.info, unpoisoned, model_seed(clean_spec), cache
    )
    return backdoor_metrics(model, p.attack, triggered)["backdoor_asr"]


__all__ = [
    "PreparedCell",
    "StageCache",
    "failed_record",
    "fit_model",
    "identity_columns",
    "make_record",
    "prepare_cell",
    "run_cell",
    "run_task",
]
