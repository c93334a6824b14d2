"""The defense protocol and its registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench.core.types import DefenseContext, Plugin, Registry, StepResult, TrainingSet

DEFENSES: Registry[Defense] = Registry("defense", group="poisonbench.defenses")


class Defense(Plugin):
    """Base of all defense steps: ``apply`` maps a training set to the one the model sees.

    ``reference``: the step is a measuring stick, not a defense one can deploy (the oracle
    filter knows the poison mask; the random filter knows nothing). Reports show such
    defenses as ceiling and floor and never name them "best defense".
    """

    reference: ClassVar[bool] = False
    #: what the step asks of the model that trains on its output: ``"loss"`` (a training loss
    #: set in ``TrainingSet.loss``, models with ``supports_loss``) or ``"privacy"``
    #: (``TrainingSet.privacy``, models with ``supports_privacy``); checked at config load
    needs: ClassVar[frozenset[str]] = frozenset()
    #: the step does nothing but append trusted pool rows (``none``: nothing at all), so a
    #: pipeline of such steps at extra fraction f is the poisoned set plus clean rows: a point
    #: of the "append" curve the report compares budget uses with (row ``defense_append_only``)
    append_only: ClassVar[bool] = False
    #: which keys of ``StepResult.details`` become results-table columns: details key → column
    #: (a ``step`` column of ``bench/core/schema.py``, which says what it means and how values of
    #: several steps combine). The runner copies the keys a step's details hold into every row
    #: of the cell; other details stay out of the table.
    recorded: ClassVar[Mapping[str, str]] = {}
    #: the search space ``tune: auto`` uses (parameter → values; ``bench.run.tuning``); empty:
    #: the defense has none, and ``tune`` must give its own
    tune_space: ClassVar[Mapping[str, tuple]] = {}

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        raise NotImplementedError


class Filter(Defense):
    """A defense that removes suspicious rows. Subclasses implement ``score``.

    Only untrusted rows are scored and removable: rows appended from the clean pool are the
    defender's own and stay.
    """

    def score(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Outlier scores (higher = more suspicious) and the boolean mask of rows to remove."""
        raise NotImplementedError

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        candidates = ~train.trusted
        scores = np.full(len(train), np.nan)
        removed = np.zeros(len(train), dtype=bool)
        if candidates.any():
            part = train.subset(candidates)
            part_scores, part_removed = self.score(part, ctx, rng)
            scores[candidates] = part_scores
            removed[candidates] = part_removed
        return StepResult(train=train.subset(~removed), scores=scores, removed=removed)


@DEFENSES.register("none")
@dataclass(frozen=True)
class NoDefense(Defense):
    """No defense: train on the poisoned set as it is."""

    append_only: ClassVar[bool] = True

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        return StepResult(train=train)


#: the details :func:`take_pool` writes, as table columns: the rows a step read to learn from
#: (``n_trusted_read``) and the rows it wanted but the pool lacked (``pool_short``)
POOL_COLUMNS: Mapping[str, str] = {"pool_rows": "n_trusted_read", "pool_short": "pool_short"}


def take_pool(
    ctx: DefenseContext, fraction: float
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The next ``round(fraction × n_train)`` unused pool rows, and what to record about them.

    When the pool holds fewer, the step gets what is left and the details say so: ``pool_wanted``
    (rows asked for), ``pool_rows`` (rows got: the step's ``pool_used``), ``pool_short``
    (the difference). The runner's budget accounting starts the recovery rows after them, and
    a cell whose steps were short of rows is a ``pool_exhausted`` row (its budget is not what
    its parameters say). A step that learns from the rows it takes declares
    :data:`POOL_COLUMNS` in its ``recorded``.
    """
    wanted = int(round(fraction * ctx.n_train))
    X, y = ctx.pool_rows(wanted)
    return X, y, {"pool_wanted": wanted, "pool_rows": len(y), "pool_short": wanted - len(y)}
