"""Noise-robust training losses for torch models: generalized and symmetric cross-entropy.

A robust-loss step changes no rows: it attaches a loss choice to the training set
(``TrainingSet.loss``, e.g. ``{"name": "gce", "q": 0.7}``) and the torch trainer computes its
per-row loss with :func:`robust_loss` instead of the soft-target cross-entropy. scikit-learn
models cannot change their loss, so the runner refuses to fit them on such a set (use the
``robust_linear`` model for a robust sklearn baseline instead).

Why these two: cross-entropy's gradient weights a row by ``1/p_y``, so a confidently wrong
(flipped) label dominates training. Mean absolute error (``1 − p_y``) is noise-tolerant but slow
to fit; GCE interpolates between the two, SCE adds a bounded "reverse" term to CE.

The loss functions take torch tensors and import torch lazily, so importing this module (as the
defense registry does in every worker) stays cheap.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bench.core.types import DefenseContext, ParamError, StepResult, TrainingSet, check_range
from defenses.base import DEFENSES, Defense

if TYPE_CHECKING:
    import torch


def _soft_targets(targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Targets as an n×k float tensor: hard labels (n, integer) become one-hot rows."""
    import torch

    if targets.ndim == 1:
        return torch.nn.functional.one_hot(targets.long(), n_classes).to(torch.float32)
    return targets.to(torch.float32)


def gce_loss(logits: torch.Tensor, targets: torch.Tensor, q: float = 0.7) -> torch.Tensor:
    """Per-row generalized cross-entropy ``Σ_c t_c (1 − p_c^q) / q`` (Zhang & Sabuncu, 2018).

    logits: n×k raw scores. targets: hard labels (n) or soft targets (n×k, rows summing to 1).
    q: in (0, 1]; q → 0 gives cross-entropy ``−log p_y``, q = 1 gives MAE ``1 − p_y`` (the
    noise-robust end). Returns a length-n tensor (non-negative, at most 1/q).
    """
    import torch

    if not 0 < q <= 1:
        raise ParamError("q", f"{q} is outside (0, 1]")
    log_p = torch.log_softmax(logits, dim=1)
    t = _soft_targets(targets, logits.shape[1])
    # p^q computed as exp(q log p) stays finite where p underflows to 0.
    return (t * (1.0 - torch.exp(q * log_p))).sum(dim=1) / q


def sce_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.1,
    beta: float = 1.0,
    log_zero: float = -4.0,
) -> torch.Tensor:
    """Per-row symmetric cross-entropy ``alpha·CE + beta·RCE`` (Wang et al., 2019).

    CE is ``−Σ_c t_c log p_c``; the reverse cross-entropy RCE is ``−Σ_c p_c log t_c`` with
    ``log 0`` replaced by ``log_zero`` (the paper's A = −4): targets are clamped to
    ``[exp(log_zero), 1]``. For a one-hot target RCE = ``−log_zero · (1 − p_y)``, a scaled MAE.
    alpha, beta: weights >= 0; alpha=1, beta=0 is plain cross-entropy. Returns a length-n tensor.
    """
    import torch

    log_p = torch.log_softmax(logits, dim=1)
    t = _soft_targets(targets, logits.shape[1])
    ce = -(t * log_p).sum(dim=1)
    log_t = torch.log(t.clamp(min=math.exp(log_zero), max=1.0))
    rce = -(log_p.exp() * log_t).sum(dim=1)
    return alpha * ce + beta * rce


def glc_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    C: list[list[float]],
    trusted: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-row Gold Loss Correction loss (Hendrycks et al., 2018).

    Untrusted rows get the forward-corrected cross-entropy ``−Σ_j t_j log (softmax(logits) @ C)_j``
    (for a hard label ỹ: ``−log (p @ C)_ỹ``), where ``C[i, j]`` estimates p(noisy label j | true
    class i): the network's softmax then estimates the *clean* class posterior. Trusted rows
    (``trusted`` True; a bool tensor over the rows, None = none) get plain cross-entropy.
    C: k×k row-stochastic matrix (nested lists, as stored in ``TrainingSet.loss``).
    Returns a length-n tensor.
    """
    import torch

    corruption = torch.as_tensor(C, dtype=torch.float32, device=logits.device)
    log_p = torch.log_softmax(logits, dim=1)
    t = _soft_targets(targets, logits.shape[1])
    noisy = torch.log((log_p.exp() @ corruption).clamp(min=1e-12))
    forward = -(t * noisy).sum(dim=1)
    if trusted is None:
        return forward
    return torch.where(trusted, -(t * log_p).sum(dim=1), forward)


#: the losses a ``TrainingSet.loss`` may name, with the function that computes them
LOSSES: dict[str, Callable[..., Any]] = {"gce": gce_loss, "sce": sce_loss, "glc": glc_loss}
#: the losses that treat trusted rows differently (they take a ``trusted`` argument)
_TAKES_TRUSTED = frozenset(
    name for name, fn in LOSSES.items() if "trusted" in inspect.signature(fn).parameters
)


def robust_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    loss: dict[str, Any],
    trusted: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-row loss named by a ``TrainingSet.loss`` dict (``{"name": "gce", "q": 0.7}``).

    This is the one hook a torch trainer calls when ``loss`` is set; weight the rows by
    ``sample_weight`` and average as for cross-entropy. trusted: bool tensor over the rows
    (the clean-pool rows), given to the losses that use it (``glc``); the others ignore it.
    """
    name = loss.get("name")
    if name not in LOSSES:
        raise ParamError("loss.name", f"unknown robust loss {name!r} (valid: {', '.join(LOSSES)})")
    kwargs = {k: v for k, v in loss.items() if k != "name"}
    if name in _TAKES_TRUSTED:
        kwargs["trusted"] = trusted
    return LOSSES[name](logits, targets, **kwargs)


class RobustLoss(Defense):
    """Base of robust-loss steps: the training set is returned with ``loss`` attached."""

    needs: ClassVar[frozenset[str]] = frozenset({"loss"})

    def loss_spec(self) -> dict[str, Any]:
        return {"name": self.name, **self.params()}

    def apply(
        self, train: TrainingSet, ctx: DefenseContext, rng: np.random.Generator
    ) -> StepResult:
        out = dataclasses.replace(train, loss=self.loss_spec())
        return StepResult(train=out, details={"loss": out.loss})


@DEFENSES.register("gce")
@dataclass(frozen=True)
class GeneralizedCrossEntropy(RobustLoss):
    """Train a torch model with generalized cross-entropy (training-time, like label smoothing).

    q: in (0, 1]; small q behaves like cross-entropy, q = 1 like MAE. 0.7 is the paper's default.
    """

    q: float = 0.7

    def __post_init__(self) -> None:
        if not 0 < self.q <= 1:
            raise ParamError("q", f"{self.q} is outside (0, 1]")

    def label(self) -> str:
        return f"gce(q={self.q:g})"


@DEFENSES.register("sce")
@dataclass(frozen=True)
class SymmetricCrossEntropy(RobustLoss):
    """Train a torch model with symmetric cross-entropy ``alpha·CE + beta·RCE``.

    alpha, beta: weights in [0, 1000], not both 0 (the paper's CIFAR-10 setting is 0.1 and 1.0).
    log_zero: the value of ``log 0`` in the reverse term, in [−100, 0) (the paper's A = −4).
    """

    alpha: float = 0.1
    beta: float = 1.0
    log_zero: float = -4.0

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            check_range(getattr(self, name), name, 0, 1000)
        if self.alpha == 0 and self.beta == 0:
            raise ParamError("beta", "alpha and beta cannot both be 0")
        check_range(self.log_zero, "log_zero", -100, 0, high_open=True)

    def label(self) -> str:
        return f"sce(α={self.alpha:g}, β={self.beta:g})"
