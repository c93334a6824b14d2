"""A cell spec turned into its plug-in objects: the one place that builds them.

A cell spec (:class:`bench.run.grid.Cell`) names its dataset, attack, model and defense steps
as ``{"name", "params"}`` entries. Everything that needs the objects they name goes through
here: the grid (binding a config's plug-ins to each dataset before anything runs), the runner
(running the cell), the identity columns (a row's labels and the plug-in facts analysis reads)
and the app's lab. A name or parameter that no longer builds (a plug-in changed since the
record was written) is a ``ParamError`` naming it, raised from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from attacks import ATTACKS
from bench.core.types import DatasetInfo, Registry
from bench.data.datasets import DATASETS
from bench.models import MODELS
from bench.run.tuning import tuned_label
from defenses import DEFENSES


def build(registry: Registry, name: str, params: Mapping[str, Any] | None, path: str = "") -> Any:
    """The plug-in ``name`` of ``registry`` with ``params`` (defaults filled in), not yet bound
    to any data. ``path`` names the entry in errors (``models[0]``)."""
    return registry.get(name, path or None).from_params(dict(params or {}), path)


def bound(
    registry: Registry,
    name: str,
    params: Mapping[str, Any] | None,
    info: DatasetInfo,
    path: str = "",
) -> Any:
    """:func:`build`, then bound to the dataset ``info`` describes (class indices resolved,
    image inputs checked): ``ParamError`` naming ``path`` when it cannot take that data."""
    return build(registry, name, params, path).bind(info, path)


def provenance_label(attack: Any) -> str:
    """The attack's label, with ``J/K sources`` added when it draws from J of K sources."""
    label = attack.label()
    if getattr(attack, "sources", 1) <= 1:
        return label
    extra = f"{attack.poisoned_sources}/{attack.sources} sources"
    return f"{label[:-1]}, {extra})" if label.endswith(")") else f"{label}({extra})"


@dataclass(frozen=True)
class ResolvedCell:
    """A cell spec's plug-in objects.

    ``attack`` is bound to ``info`` when that is given (its class indices resolved); ``model``
    and ``steps`` are as built, since a label needs no data and a model that cannot take the
    data must still label its failed rows: :meth:`bound_model` and :meth:`bound_step` bind
    them for a fit.
    """

    spec: Mapping[str, Any]
    info: DatasetInfo | None
    source: Any  # the DatasetSource
    attack: Any
    model: Any
    steps: tuple[Any, ...]

    def bound_model(self) -> Any:
        """The model spec bound to the cell's dataset (needs ``info``)."""
        assert self.info is not None, "resolve(spec, info) first"
        return self.model.bind(self.info)

    def bound_step(self, i: int) -> Any:
        """Defense step ``i`` bound to the cell's dataset (needs ``info``)."""
        assert self.info is not None, "resolve(spec, info) first"
        return self.steps[i].bind(self.info)

    def labels(self) -> dict[str, str]:
        """The plug-ins' own display labels (made unique per table by
        ``schema.assign_labels``): ``dataset_label``, ``model_label``, ``attack_label``,
        ``defense_label`` (steps joined by ``+``, tuned ones marked)."""
        model = self.model
        return {
            "dataset_label": self.source.label(),
            "model_label": model.label() if hasattr(model, "label") else model.name,
            "attack_label": provenance_label(self.attack),
            "defense_label": "+".join(
                tuned_label(step.label(), entry["tune"]) if entry.get("tune") else step.label()
                for step, entry in zip(self.steps, self.spec["defense"], strict=True)
            ),
        }

    def facts(self) -> dict[str, Any]:
        """What analysis needs from the plug-ins, written into every row: the class count and
        targeted pair (with ``info``), the theory line, whether the defense is a reference
        (the oracle) and whether it only appends rows."""
        pair = self.attack.target_pair() if self.info is not None else None
        return {
            "n_classes": self.info.n_classes if self.info is not None else None,
            "source_class": pair[0] if pair else None,
            "target_class": pair[1] if pair else None,
            "theory": self.attack.theory_line(),
            "defense_reference": any(getattr(step, "reference", False) for step in self.steps),
            "defense_append_only": all(getattr(step, "append_only", False) for step in self.steps),
        }


def resolve(spec: Mapping[str, Any], info: DatasetInfo | None = None) -> ResolvedCell:
    """The plug-in objects of cell ``spec`` (see :class:`ResolvedCell`); ``info``: the loaded
    dataset's facts, to bind the attack to. Raises ``ParamError`` (a ``PoisonBenchError``) when
    a name is unknown or its parameters no longer build."""
    dataset, attack, model = spec["dataset"], spec["attack"], spec["model"]
    built = build(ATTACKS, attack["name"], attack["params"])
    return ResolvedCell(
        spec=spec,
        info=info,
        source=build(DATASETS, dataset["name"], dataset.get("params")),
        attack=built.bind(info) if info is not None else built,
        model=build(MODELS, model["name"], model["params"]),
        steps=tuple(build(DEFENSES, st["name"], st["params"]) for st in spec["defense"]),
    )
