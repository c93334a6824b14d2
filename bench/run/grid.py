"""Grid expansion, cell identity, tasks and stage-keyed random generators.

A **cell** is one configuration and seed: (dataset, model, attack+params, rate, defense
steps+params, seed). Its id hashes that canonical form and nothing else, so the stored and
skipped unit is (cell, extra-clean fraction): extending the recovery grid computes only the new
fractions. (With ``recovery.early_stop`` a cell's rows depend on the grid, so there the grid is
part of the cell.)

A **task** is what one worker runs at a time: every cell that shares a poisoned training set
(dataset, attack, rate, seed), with the fractions each still needs. Within a task the split,
the attack's output and each defense step's output are computed once and shared by every model
and every pipeline that starts with the same steps (see :mod:`bench.run.runner`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np

from attacks import ATTACKS
from bench.core.schema import canonical_json, dataset_id, spec_group, stable_hash
from bench.core.types import ParamError
from bench.data.datasets import DatasetError, load_dataset, split
from bench.models import MODELS
from bench.run.config import ConfigError, PluginSpec, cell_tokens, plugin_tokens
from bench.run.resolve import bound
from defenses import DEFENSES


def stage_rng(*key: Any) -> np.random.Generator:
    """A generator keyed by a stage and its inputs, e.g. ``stage_rng("split", dataset, seed)``.

    Randomness is keyed by stage, not by cell: every defense sees the identical poisoned set,
    and every model of a seed starts from the same initialization (see :mod:`bench.run.runner`).
    """
    digest = hashlib.sha256(canonical_json(list(key)).encode()).digest()
    entropy = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 32, 4)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def stage_seed(*key: Any) -> int:
    """A 31-bit integer seed for libraries that take ``random_state: int``."""
    return int(stage_rng(*key).integers(2**31 - 1))


@dataclass(frozen=True)
class Cell:
    """One configuration and seed; ``spec`` is its canonical, JSON-able form."""

    spec: dict[str, Any]

    @property
    def cell_id(self) -> str:
        return stable_hash(self.spec)

    @property
    def seed(self) -> int:
        return int(self.spec["seed"])

    @property
    def poisoning_key(self) -> tuple[str, ...]:
        """What cells sharing a poisoned training set have in common (one task)."""
        s = self.spec
        return (
            canonical_json(s["dataset"]),
            canonical_json(s["attack"]),
            repr(float(s["rate"])),
            str(s["seed"]),
        )

    def describe(self) -> str:
        s = self.spec
        steps = "+".join(step["name"] for step in s["defense"])
        return (
            f"{s['dataset']['name']}/{s['model']['name']}/{s['attack']['name']}@{s['rate']:g}/"
            f"{steps}/seed={s['seed']}"
        )


class TaskPayload(TypedDict):
    """What a worker receives for a task (JSON-able): its cells as ``(spec, fractions)`` and
    the config's ``plugins:`` modules to import first."""

    cells: list[tuple[dict[str, Any], list[float]]]
    plugins: list[str]


@dataclass(frozen=True)
class Task:
    """Cells that share a poisoned training set, each with the fractions still to compute.

    ``plugins``: the config's ``plugins:`` modules, which the process that runs the task
    imports first (a fresh worker knows only the built-ins and installed entry points). They
    travel with the task, not in the cells' specs: they are no part of any cell's identity.
    """

    items: tuple[tuple[Cell, tuple[float, ...]], ...]
    plugins: tuple[str, ...] = ()

    @property
    def cells(self) -> list[Cell]:
        return [cell for cell, _ in self.items]

    def payload(self) -> TaskPayload:
        """The JSON-able form sent to a worker: ``{"cells": [(spec, fractions), ...],
        "plugins": [module, ...]}`` (see :func:`bench.run.runner.run_task`)."""
        return {
            "cells": [(cell.spec, list(fractions)) for cell, fractions in self.items],
            "plugins": list(self.plugins),
        }


@dataclass
class Grid:
    """An expanded config: its cells, the recovery fractions and the loaded datasets' facts."""

    cells: list[Cell]
    fractions: tuple[float, ...]
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataset_id → facts
    warnings: list[str] = field(default_factory=list)  # what will fail, said before it runs

    def __iter__(self) -> Iterator[Cell]:
        return iter(self.cells)

    def __len__(self) -> int:
        return len(self.cells)


def make_tasks(
    todo: Sequence[tuple[Cell, Sequence[float]]],
    max_cells: int | None = None,
    plugins: Sequence[str] = (),
) -> list[Task]:
    """Group ``(cell, fractions)`` pairs by poisoned training set, in first-seen order.

    max_cells: split larger groups (None: no limit) so one task never holds too much work.
    plugins: the modules each task's worker imports first (a config's ``plugins:``).
    """
    groups: dict[tuple[str, ...], list[tuple[Cell, tuple[float, ...]]]] = {}
    for cell, fractions in todo:
        groups.setdefault(cell.poisoning_key, []).append((cell, tuple(fractions)))
    tasks = []
    for items in groups.values():
        step = max_cells or len(items)
        for start in range(0, len(items), step):
            tasks.append(Task(tuple(items[start : start + step]), tuple(plugins)))
    return tasks


def iter_specs(
    config: Any,
    dataset_keys: Sequence[dict[str, Any]],
    extra_seeds: Mapping[tuple[Any, ...], Sequence[int]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Every cell spec of ``config`` (dataset keys already carry their fingerprints).

    A rate-0 cell poisons nothing whatever the attack, so it is one ``none`` attack cell per
    (dataset, model, defense, seed): the clean reference is computed once, not once per attack.
    Cells an ``exclude`` rule of the config matches are left out. ``extra_seeds`` maps a group
    (:func:`bench.core.schema.spec_group`) to seeds it runs beyond ``config.seeds`` (the rounds
    of a precision request); they follow the configured cells.
    """
    excluded = getattr(config, "excluded", None)
    early_stop = None
    if getattr(config.recovery, "early_stop", False):
        # Early stop decides which rows a cell trains from the grid, so the grid is part of it.
        early_stop = {
            "metric": config.recovery.metric,
            "tolerance": config.recovery.tolerance,
            "fractions": list(config.recovery.fractions),
        }
    poisonings = [({"name": "none", "params": {}}, 0.0)]
    poisonings += [(a.canonical(), r) for a in config.attacks for r in config.rates if r > 0]
    reference_fits = int(getattr(config.recovery, "reference_fits", 1) or 1)

    def is_none(steps: Any) -> bool:
        return [s.canonical() for s in steps] == [{"name": "none", "params": {}}]

    def spec(
        dataset_key: dict[str, Any],
        attack: dict[str, Any],
        rate: float,
        model: Any,
        steps: Any,
        seed: int,
    ) -> dict[str, Any] | None:
        if excluded is not None and excluded(
            **cell_tokens(
                dataset_key["name"],
                model,
                PluginSpec(attack["name"], attack["params"]),
                steps,
                seed,
                rate,
            )
        ):
            return None
        out = {
            "dataset": dataset_key,
            "model": model.canonical(),
            "attack": attack,
            "rate": rate,
            "defense": [s.canonical() for s in steps],
            "seed": seed,
        }
        if early_stop is not None:
            out["early_stop"] = early_stop
        if reference_fits > 1 and rate == 0 and attack["name"] == "none" and is_none(steps):
            out["reference_fits"] = reference_fits  # the clean reference: its values change
        return out

    for dataset_key in dataset_keys:
        for attack, rate in poisonings:
            for seed in config.seeds:
                for model in config.models:
                    for steps in config.defenses:
                        if (out := spec(dataset_key, attack, rate, model, steps, seed)) is not None:
                            yield out
    if not extra_seeds:
        return
    configured = set(config.seeds)
    for dataset_key in dataset_keys:
        for attack, rate in poisonings:
            for model in config.models:
                for steps in config.defenses:
                    group = spec_group(
                        {
                            "dataset": dataset_key,
                            "model": model.canonical(),
                            "attack": attack,
                            "rate": rate,
                            "defense": [s.canonical() for s in steps],
                        }
                    )
                    for seed in extra_seeds.get(group, ()):
                        if seed in configured:
                            continue
                        if (out := spec(dataset_key, attack, rate, model, steps, seed)) is not None:
                            yield out


def expand(config: Any, extra_seeds: Mapping[tuple[Any, ...], Sequence[int]] | None = None) -> Grid:
    """Validate every dataset and plug-in of ``config`` against its data, then list its cells.

    This is the one validation pass before anything runs: each dataset is loaded and split
    once (NaN/inf features, a class with too few rows, split sizes larger than the dataset, a
    train set missing a class are ``DatasetError``s naming ``datasets[i]``), and each attack,
    model and defense is bound to each dataset (class indices, image inputs: ``ConfigError``).
    """
    keys = []
    warnings: list[str] = []
    facts: dict[str, dict[str, Any]] = {}
    for index, ds in enumerate(config.datasets):
        where = f"datasets[{index}] ({ds.name})"
        try:
            dataset = load_dataset(ds.name, config.data_dir, ds.params)
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        except OSError as exc:
            raise DatasetError(f"{where}: cannot load: {exc}") from None
        key = {**ds.canonical(), "fingerprint": dataset.fingerprint}
        try:
            parts = split(
                dataset, ds.train, ds.test, ds.pool, rng=stage_rng("split", key, config.seeds[0])
            )
        except ParamError as exc:
            raise DatasetError(f"datasets[{index}].{exc.field}: {exc.message}") from None
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        info = dataset.info
        present = len(set(dataset.y[parts.train].tolist()))
        if present < info.n_classes:
            raise DatasetError(
                f"datasets[{index}].split.train: {len(parts.train)} rows hold {present} of the "
                f"{info.n_classes} classes of {ds.name}; a train set needs at least one row of "
                "every class"
            )

        def away(ds: Any = ds, **tokens: Any) -> bool:
            """Whether an exclude rule keeps a plug-in away from this dataset whatever the rest
            of the cell is (then it is not bound to it: a CNN cannot take tabular rows)."""
            excluded = getattr(config, "excluded", None)
            return excluded is not None and excluded(dataset={ds.name}, **tokens)

        try:
            for i, a in enumerate(config.attacks):
                if not away(attack=plugin_tokens([a])):
                    bound(ATTACKS, a.name, a.params, info, f"attacks[{i}]")
            for i, m in enumerate(config.models):
                if not away(model=plugin_tokens([m])):
                    bound(MODELS, m.name, m.params, info, f"models[{i}]")
            for i, steps in enumerate(config.defenses):
                if away(defense=plugin_tokens(steps)):
                    continue
                for j, s in enumerate(steps):
                    bound(DEFENSES, s.name, s.params, info, f"defenses[{i}][{j}]")
        except ParamError as exc:
            raise ConfigError(exc.field, exc.message) from None
        warnings += _check_model_needs(config, info.name, away)
        keys.append(key)
        facts[dataset_id(key)] = {
            "name": ds.name,
            "fingerprint": dataset.fingerprint,
            "class_names": list(info.class_names),
            "n_rows": int(len(dataset.y)),
            "n_features": info.n_features,
            "image_shape": list(info.image_shape) if info.image_shape else None,
            "notes": list(getattr(dataset, "notes", ()) or ()),
        }
    cells: dict[str, Cell] = {}
    for spec in iter_specs(config, keys, extra_seeds):
        cell = Cell(spec)
        cells.setdefault(cell.cell_id, cell)
    return Grid(
        cells=list(cells.values()),
        fractions=tuple(config.recovery.fractions),
        datasets=facts,
        warnings=list(dict.fromkeys(warnings)),
    )


def _check_model_needs(config: Any, dataset: str, away: Callable[..., bool]) -> list[str]:
    """Defense steps that need something of the model (``Defense.needs``: a training loss,
    private training) against the config's models on ``dataset``: a ``ConfigError`` naming the
    defense when no model can train with it (every such cell would fail), else one warning per
    model that cannot (its cells fail with the reason, the others run). ``away(model=...,
    defense=...)``: whether exclude rules keep a model and defense apart on this dataset
    (those pairs have no cells, so nothing to warn about)."""
    warnings = []
    for i, steps in enumerate(config.defenses):
        needs = set()
        for s in steps:
            needs |= set(DEFENSES.get(s.name).needs)
        if not needs:
            continue
        models = [
            (m, MODELS.get(m.name))
            for m in config.models
            if not away(model=plugin_tokens([m]), defense=plugin_tokens(steps))
        ]
        if not models:
            continue
        unable = [
            m for m, cls in models if not all(getattr(cls, f"supports_{n}", False) for n in needs)
        ]
        names = "+".join(s.name for s in steps)
        able = [
            name
            for name, cls in MODELS.items()
            if all(getattr(cls, f"supports_{n}", False) for n in needs)
        ]
        what = " and ".join({"loss": "a robust training loss", "privacy": "private training",
                             "representation": "a learned representation (features(X))"}[n]
                            for n in sorted(needs))  # fmt: skip
        if len(unable) == len(models):
            raise ConfigError(
                f"defenses[{i}]",
                f"{names} needs a model that supports {what}, and none of the models it runs with "
                f"({', '.join(m.name for m, _ in models)}) does (models that do: "
                f"{', '.join(able)})",
            )
        for m in unable:
            warnings.append(
                f"defenses[{i}] ({names}) needs {what}; model {m.name} cannot, so its "
                f"{names} cells on {dataset} will fail (models that can: {', '.join(able)})"
            )
    return warnings
