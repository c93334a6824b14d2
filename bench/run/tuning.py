"""Tuning a defense step on trusted rows: ``tune: {param: [values...], budget: b}`` or ``tune: auto``.

A defense compared at an arbitrary setting compares settings, not defenses. A tuned step holds
out ``round(b × n_train)`` rows of the clean pool as a validation split, applies every setting
of its search space to the same (poisoned) training set, fits the cell's own model on each
output and keeps the setting whose model is most accurate on the validation rows. Selection
reads the training set and the pool only, never the test set (the tuner is never given it),
and the validation rows count against the clean-data budget like any trusted rows the step
reads (``n_trusted_used`` and ``n_trusted_read``; ``n_tune_rows`` says how many), so budget
comparisons stay fair.

Identity: a tuned step's spec is ``{"name", "params", "tune": {"space", "budget"}}``; its id
holds the search space (``auto`` resolved to the defense's own ``tune_space``), never the
choice, so one configuration is one id whatever the data make it choose. The choice is
recorded per cell (``tuned_setting``, ``tune_score``). Untuned steps keep the spec (and the
id) they always had.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bench.core.schema import canonical_json
from bench.core.types import (
    DatasetInfo,
    DefenseContext,
    ParamError,
    StepResult,
    TrainingSet,
    init_fields,
)
from defenses import DEFENSES

#: validation rows as a fraction of n_train when ``tune`` gives no budget
DEFAULT_TUNE_BUDGET = 0.1
#: the most settings a search space may hold (every one is a defense step and a model fit)
MAX_SETTINGS = 64

#: the step-detail columns a tuned step records (details key → column, see schema)
TUNE_COLUMNS: Mapping[str, str] = {
    "tuned_setting": "tuned_setting",
    "tune_score": "tune_score",
    "n_tune_rows": "n_tune_rows",
    "pool_short": "pool_short",
    # the validation rows are read to learn from (to choose), so the budget section counts them
    "pool_rows": "n_trusted_read",
}


def parse_tune(value: Any, cls: type, params: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The canonical tune spec ``{"space": {param: [values...]}, "budget": b}`` of a step.

    value: ``auto`` (the defense's ``tune_space`` and the default budget), or a mapping of
        parameter → list of values plus an optional ``budget`` (validation rows as a fraction
        of n_train, in (0, 10]).
    cls: the defense class; params: the step's other (fixed) parameters.
    Raises ParamError naming ``path`` (``path.budget``, ``path.<param>``) on a bad space: an
    unknown parameter, an empty list, a value the defense refuses, more than
    :data:`MAX_SETTINGS` settings.
    """
    valid = [f.name for f in init_fields(cls)]
    if value == "auto":
        default = dict(getattr(cls, "tune_space", None) or {})
        if not default:
            having = [n for n, c in DEFENSES.items() if getattr(c, "tune_space", None)]
            raise ParamError(
                path,
                f"{cls.name} has no default search space for 'auto'; give one as "
                f"{{param: [values...], budget: b}} (parameters: {', '.join(valid)}; defenses "
                f"with a default space: {', '.join(having)})",
            )
        value = {k: list(v) for k, v in default.items()}
    if not isinstance(value, Mapping):
        raise ParamError(
            path, f"expected 'auto' or a mapping {{param: [values...], budget: b}}, got {value!r}"
        )
    budget = value.get("budget", DEFAULT_TUNE_BUDGET)
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget <= 10:
        raise ParamError(
            f"{path}.budget",
            f"validation rows as a fraction of n_train, in (0, 10], got {budget!r}",
        )
    space: dict[str, list[Any]] = {}
    for key, values in value.items():
        if key == "budget":
            continue
        if key not in valid:
            raise ParamError(
                f"{path}.{key}", f"not a parameter of {cls.name} (valid: {', '.join(valid)})"
            )
        if not isinstance(values, list | tuple) or not values:
            raise ParamError(
                f"{path}.{key}", f"expected a non-empty list of values, got {values!r}"
            )
        space[key] = list(values)
    if not space:
        raise ParamError(path, f"no parameter to tune (parameters: {', '.join(valid)})")
    space = dict(sorted(space.items()))
    settings = list(iter_settings(space))
    if len(settings) > MAX_SETTINGS:
        raise ParamError(path, f"{len(settings)} settings; at most {MAX_SETTINGS} are allowed")
    for setting in settings:  # every setting must be a valid configuration of the defense
        try:
            cls.from_params({**params, **setting})
        except ParamError as exc:
            raise ParamError(f"{path}.{exc.field}", f"{exc.message} (in {setting})") from None
    # Values as the defense normalizes them, so 0.1 and 0.10 are one space (one id).
    normalized = {
        key: [cls.from_params({**params, key: v}).params()[key] for v in values]
        for key, values in space.items()
    }
    return {"space": normalized, "budget": float(budget)}


def iter_settings(space: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every setting of a search space (the product of its lists), in a fixed order."""
    keys = sorted(space)
    return [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(space[k] for k in keys))
    ]


def tuned_label(label: str, tune: Mapping[str, Any]) -> str:
    """A tuned step's display label: its base label and what is tuned, e.g.
    ``iforest[tuned: contamination, v=0.1]``."""
    return f"{label}[tuned: {', '.join(tune['space'])}, v={tune['budget']:g}]"


#: fits the cell's model on a training set and returns its accuracy on (X_val, y_val)
Evaluate = Callable[[TrainingSet, np.ndarray, np.ndarray], float]


def tune_step(
    spec: Mapping[str, Any],
    train: TrainingSet,
    ctx: DefenseContext,
    info: DatasetInfo,
    make_rng: Callable[[dict[str, Any]], np.random.Generator],
    evaluate: Evaluate,
) -> tuple[StepResult, Any]:
    """Apply the tuned step ``spec`` to ``train``: the setting best on held-out pool rows.

    The validation rows are the next ``round(budget × n_train)`` rows of the pool; the
    candidates read their own trusted rows after them. A candidate gets the generator of the
    untuned step at its setting (``make_rng(spec)``, ``spec`` its ``{name, params}``), so the
    chosen output is the fixed-setting cell's own (paired with it); ties go to the first
    setting in :func:`iter_settings` order. Returns the chosen candidate's
    result, with the validation rows added to its ``pool_used`` and the choice in its details,
    and the chosen step object (for its ``recorded`` columns).
    """
    tune = spec["tune"]
    cls = DEFENSES.get(spec["name"])
    wanted = int(round(float(tune["budget"]) * ctx.n_train))
    X_val, y_val = ctx.pool_rows(wanted)
    inner = DefenseContext(
        info=ctx.info,
        n_train=ctx.n_train,
        pool_X=ctx.pool_X,
        pool_y=ctx.pool_y,
        pool_start=ctx.pool_start + len(y_val),
    )
    best: tuple[float, dict[str, Any], StepResult, Any] | None = None
    for setting in iter_settings(tune["space"]):
        step = cls.from_params({**spec["params"], **setting})
        fixed = {"name": spec["name"], "params": step.params()}
        result = step.bind(info).apply(train, inner, make_rng(fixed))
        score = evaluate(result.train, X_val, y_val) if len(y_val) else float("nan")
        if best is None or score > best[0]:  # NaN never wins: the first setting stays
            best = (score, setting, result, step)
    assert best is not None  # a space holds at least one setting (parse_tune)
    score, setting, result, step = best
    details = dict(result.details)
    details.update(
        tuned_setting=canonical_json(setting),
        tune_score=score if np.isfinite(score) else None,
        n_tune_rows=len(y_val),
        pool_rows=int(details.get("pool_rows") or 0) + len(y_val),
        pool_short=int(details.get("pool_short") or 0) + (wanted - len(y_val)),
    )
    result = StepResult(
        train=result.train,
        scores=result.scores,
        removed=result.removed,
        details=details,
        pool_used=int(result.pool_used) + len(y_val),
    )
    return result, step


__all__ = [
    "DEFAULT_TUNE_BUDGET",
    "TUNE_COLUMNS",
    "iter_settings",
    "parse_tune",
    "tune_step",
    "tuned_label",
]
