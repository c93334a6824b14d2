"""Defenses: one module per family, registered by name in ``DEFENSES``.

A defense step maps the training set to a new one before fitting (``apply``). Filters remove
rows and report outlier scores; ``label_smoothing`` softens targets; ``extra_clean`` appends
trusted rows from the clean pool. A cell's defense is a list of such steps.
"""

from defenses import (  # noqa: F401  (registers the plug-ins)
    baselines,
    confident_learning,
    extra_clean,
    label_smoothing,
    outlier,
    range_filter,
    robust_loss,
)
from defenses.base import DEFENSES, Defense, Filter, NoDefense

__all__ = ["DEFENSES", "Defense", "Filter", "NoDefense"]
