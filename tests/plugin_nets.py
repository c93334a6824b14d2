"""Network factories that tests name by import path (``tests.plugin_nets:make_net``): the
``torch`` model's protocol is ``factory(info, **params) -> nn.Module`` giving n×k logits."""

from __future__ import annotations

from typing import Any

from bench.core.types import DatasetInfo


def make_net(info: DatasetInfo, hidden: int = 16) -> Any:
    """A one-hidden-layer MLP over the flattened rows (tabular or images)."""
    from torch import nn

    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(info.n_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, info.n_classes),
    )


def wrong_width(info: DatasetInfo) -> Any:
    """A network with one logit too many: a config naming it must fail at grid expansion."""
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(info.n_features, info.n_classes + 1))


def not_a_module(info: DatasetInfo) -> Any:
    """Returns a plain object, not an ``nn.Module``."""
    return object()


NOT_CALLABLE = 3
