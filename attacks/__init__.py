"""Attacks: one module per family, registered by name in ``ATTACKS``.

An attack is a frozen dataclass of parameters with ``poison(X, y, rate, rng) -> Poisoned``.
``rate`` is the fraction of *eligible* rows (``eligible(y)``) changed, turned into an exact count.
"""

from attacks import backdoor, feature_noise, label_flip  # noqa: F401  (registers the plug-ins)
from attacks.base import ATTACKS, Attack, NoAttack

__all__ = ["ATTACKS", "Attack", "NoAttack"]
