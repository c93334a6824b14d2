"""The plug-in contract checks (``check_attack``, ``check_defense``, ``check_model``) for
out-of-tree plug-in packages: the same checks ``tests/test_contracts.py`` runs over every
registered plug-in. See :mod:`bench.run.testing` for the rules each one checks."""

from bench.run.testing import (
    DATA_KINDS,
    K,
    NotApplicable,
    bind,
    check_attack,
    check_defense,
    check_model,
    check_params_round_trip,
    check_proba,
    defense_inputs,
    tiny_dataset,
)

__all__ = [
    "DATA_KINDS",
    "K",
    "NotApplicable",
    "bind",
    "check_attack",
    "check_defense",
    "check_model",
    "check_params_round_trip",
    "check_proba",
    "defense_inputs",
    "tiny_dataset",
]
