"""Contract tests over EVERY registered attack, defense and model (scikit-learn's check_estimator
idea): the registries are read at collection time, entry-point plug-ins of installed packages
included, so a plug-in is tested the moment it is registered or installed.

The checks themselves live in :mod:`bench.run.testing` (``poisonbench.testing``), where out-of-tree
plug-in packages reuse them. A plug-in may refuse a kind of data in ``bind`` (an image-only CNN
on tabular rows) by raising ParamError: that combination is skipped as not applicable. Any
other exception fails.
"""

from __future__ import annotations

import pytest

from attacks import ATTACKS
from bench.models import MODELS
from bench.run.testing import (
    DATA_KINDS,
    NotApplicable,
    check_attack,
    check_defense,
    check_model,
)
from defenses import DEFENSES


@pytest.mark.parametrize("kind", DATA_KINDS)
@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_contract(name, kind):
    try:
        check_attack(ATTACKS.get(name), kind)
    except NotApplicable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("kind", DATA_KINDS)
@pytest.mark.parametrize("name", list(DEFENSES))
def test_defense_contract(name, kind, soft):
    try:
        check_defense(DEFENSES.get(name), kind, soft)
    except NotApplicable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("kind", DATA_KINDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_model_contract(name, kind):
    try:
        check_model(MODELS.get(name), kind)
    except NotApplicable as exc:
        pytest.skip(str(exc))


def test_registries_are_not_empty():
    assert {"none", "label_flip", "feature_noise"} <= set(ATTACKS)
    assert {"none", "iforest", "lof", "ocsvm", "pyod", "oracle_filter", "random_filter"} <= set(
        DEFENSES
    )
    assert {"logreg", "random_forest", "svm", "mlp"} <= set(MODELS)
