"""Defenses: one module per family, registered by name in ``DEFENSES``.

A defense step maps the training set to a new one before fitting (``apply``). Filters remove
rows and report outlier scores; ``label_smoothing`` softens targets; ``extra_clean`` appends
trusted rows from the clean pool. ``trusted_filter``, ``glc``, ``roni`` and ``provenance`` learn
from a budget of trusted pool rows (counted in ``StepResult.pool_used``); ``gce``, ``sce``,
``glc`` and ``dp_sgd`` change how a torch model trains; ``dpa`` and ``bagging`` make the model
a certified ensemble; ``spectral_signature`` and ``activation_clustering`` filter in a model's
representation space. A cell's defense is a list of such steps.
"""

from defenses import (  # noqa: F401  (registers the plug-ins)
    baselines,
    certified,
    confident_learning,
    dp_sgd,
    extra_clean,
    glc,
    label_smoothing,
    outlier,
    provenance,
    range_filter,
    representation,
    robust_loss,
    roni,
    trusted_filter,
)
from defenses.base import DEFENSES, Defense, Filter, NoDefense

__all__ = ["DEFENSES", "Defense", "Filter", "NoDefense"]
