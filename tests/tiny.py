"""The smallest real grid the tests run (iris, logreg, random flips, one defense), as a config
mapping: ``tiny(seeds=2, recovery={...})`` returns a copy with those keys changed."""

from __future__ import annotations

import copy
from typing import Any

TINY: dict[str, Any] = {
    "name": "tiny",
    "datasets": [{"name": "iris", "split": {"train": 60, "test": 45}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.2],
    "defenses": ["none"],
    "seeds": 1,
    "recovery": {"fractions": [0, 0.5], "bootstrap": 50},
}


def tiny(**changes: Any) -> dict[str, Any]:
    """A deep copy of :data:`TINY` with ``changes`` applied to its top-level keys."""
    return {**copy.deepcopy(TINY), **changes}
