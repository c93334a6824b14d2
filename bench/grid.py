"""Grid expansion, cell identity and stage-keyed random generators."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the stable text that identities hash."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of the canonical JSON of ``obj`` (stable across processes and machines)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def stage_rng(*key: Any) -> np.random.Generator:
    """A generator keyed by a stage and its inputs, e.g. ``stage_rng("split", dataset, seed)``.

    Randomness is keyed by stage, not by cell: every defense sees the identical poisoned set,
    so comparisons between defenses are paired.
    """
    digest = hashlib.sha256(canonical_json(list(key)).encode()).digest()
    entropy = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 32, 4)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def stage_seed(*key: Any) -> int:
    """A 31-bit integer seed for libraries that take ``random_state: int``."""
    return int(stage_rng(*key).integers(2**31 - 1))


@dataclass(frozen=True)
class Cell:
    """One unit of work: (dataset, model, attack+params, rate, defense steps, seed) and the
    extra-clean fractions trained for it. ``spec`` is the canonical, JSON-able form."""

    spec: dict[str, Any]

    @property
    def cell_id(self) -> str:
        return stable_hash(self.spec)

    @property
    def dataset_key(self) -> dict[str, Any]:
        return self.spec["dataset"]

    @property
    def seed(self) -> int:
        return int(self.spec["seed"])

    def describe(self) -> str:
        s = self.spec
        steps = "+".join(step["name"] for step in s["defense"])
        return (
            f"{s['dataset']['name']}/{s['model']['name']}/{s['attack']['name']}@{s['rate']:g}/"
            f"{steps}/seed={s['seed']}"
        )


def expand(config: Any) -> list[Cell]:
    """All cells of a config, validated against each dataset (classes, image inputs).

    A rate-0 cell poisons nothing whatever the attack, so it is one ``none`` attack cell per
    (dataset, model, defense, seed): the clean reference is computed once, not once per attack.
    """
    from attacks import ATTACKS
    from bench.config import ConfigError
    from bench.datasets import DatasetError, load_dataset, split
    from bench.models import MODELS
    from bench.types import ParamError
    from defenses import DEFENSES

    cells: dict[str, Cell] = {}
    fractions = list(config.recovery.fractions)
    # Early stop changes which rows a cell trains, so it is part of the cell's identity; it is
    # left out when off so that the ids of existing runs do not change.
    early_stop = (
        {"metric": config.recovery.metric, "tolerance": config.recovery.tolerance}
        if getattr(config.recovery, "early_stop", False)
        else None
    )
    for index, ds in enumerate(config.datasets):
        dataset = load_dataset(ds.name, config.data_dir, ds.params)
        info = dataset.info
        # Sizes that do not fit the dataset are a config error now, not a failure in every cell.
        try:
            split(dataset, ds.train, ds.test, ds.pool, rng=np.random.default_rng(0))
        except ParamError as exc:
            raise ConfigError(f"datasets[{index}].{exc.field}", exc.message) from None
        except DatasetError as exc:
            raise ConfigError(f"datasets[{index}].split", str(exc)) from None
        try:
            for i, a in enumerate(config.attacks):
                ATTACKS.get(a.name).from_params(a.params).bind(info, f"attacks[{i}]")
            for i, m in enumerate(config.models):
                MODELS.get(m.name).from_params(m.params).bind(info, f"models[{i}]")
            for i, steps in enumerate(config.defenses):
                for j, s in enumerate(steps):
                    DEFENSES.get(s.name).from_params(s.params).bind(info, f"defenses[{i}][{j}]")
        except ParamError as exc:
            raise ConfigError(exc.field, exc.message) from None
        dataset_key = {**ds.canonical(), "fingerprint": dataset.fingerprint}
        poisonings = [({"name": "none", "params": {}}, 0.0)]
        poisonings += [(a.canonical(), r) for a in config.attacks for r in config.rates if r > 0]
        for model in config.models:
            for attack, rate in poisonings:
                for steps in config.defenses:
                    for seed in config.seeds:
                        spec = {
                            "dataset": dataset_key,
                            "model": model.canonical(),
                            "attack": attack,
                            "rate": rate,
                            "defense": [s.canonical() for s in steps],
                            "seed": seed,
                            "fractions": fractions,
                        }
                        if early_stop is not None:
                            spec["early_stop"] = early_stop
                        cell = Cell(spec)
                        cells.setdefault(cell.cell_id, cell)
    return list(cells.values())
