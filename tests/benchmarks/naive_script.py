"""The naive baseline for the macro benchmark: the grid written as a plain user would script it.

One process, the libraries' default thread settings, plain nested loops, and *everything*
recomputed for every extra-clean fraction: split, attack, filter, fit. It uses poisonbench's
building blocks (datasets, attacks, defenses, models, metrics) the way a user who read the API
would, but none of the harness: no grid expansion, no shared work, no worker processes, no
store. It writes one CSV row per (attack, rate, defense, seed, fraction).

To make "same numbers out" checkable row by row, it reproduces the harness's documented seeding
(DESIGN.md: randomness is keyed by stage: the split by (dataset, seed), the attack by (dataset,
attack, rate, seed), defenses and the model by the cell's identity hash): the stage keys are
built from the same canonical parameters. That is the only thing borrowed from the harness, and
it costs nothing measurable. A user would loop over every (attack, rate) pair, so the clean
rate-0 reference is computed once per attack (the harness runs it once).

Usage: ``python tests/benchmarks/naive_script.py OUT.csv [--seeds N]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from attacks import ATTACKS
from bench.datasets import load_dataset, split
from bench.grid import stable_hash, stage_rng, stage_seed
from bench.metrics import classification_metrics
from bench.models import MODELS
from bench.types import DefenseContext, TrainingSet
from defenses import DEFENSES

#: the macro grid, in the harness's config format (``test_macro.py`` writes it as YAML)
GRID: dict[str, Any] = {
    "name": "macro",
    "datasets": [{"name": "digits", "split": {"train": 300, "test": 0.25}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}, {"name": "feature_noise"}],
    "rates": [0, 0.1, 0.2, 0.4],
    "defenses": ["none", "iforest"],
    "seeds": 10,
    "recovery": {"fractions": [0, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2]},
}


def _canonical(registry: Any, name: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "params": registry.get(name).from_params(params).params()}


def _plugin(entry: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    return entry["name"], {k: v for k, v in entry.items() if k != "name"}


def run(grid: dict[str, Any], seeds: int | None = None) -> pd.DataFrame:
    """Every (dataset, model, attack, rate, defense, seed, fraction) of ``grid``, from scratch."""
    ds_spec = grid["datasets"][0]
    dataset = load_dataset(ds_spec["name"])
    sizes = {"train": ds_spec["split"]["train"], "test": ds_spec["split"]["test"], "pool": "rest"}
    dataset_key = {"name": dataset.name, "split": sizes, "fingerprint": dataset.fingerprint}
    fractions = [float(f) for f in grid["recovery"]["fractions"]]
    model_name, model_params = _plugin(grid["models"][0])
    model_key = _canonical(MODELS, model_name, model_params)
    rows = []
    for attack_entry in grid["attacks"]:
        for rate in grid["rates"]:
            name, params = _plugin(attack_entry) if rate > 0 else ("none", {})
            attack_key = _canonical(ATTACKS, name, params)
            for defense_entry in grid["defenses"]:
                defense_key = [_canonical(DEFENSES, *_plugin(defense_entry))]
                for seed in range(seeds or grid["seeds"]):
                    cell_id = stable_hash(
                        {
                            "dataset": dataset_key,
                            "model": model_key,
                            "attack": attack_key,
                            "rate": float(rate),
                            "defense": defense_key,
                            "seed": seed,
                            "fractions": fractions,
                        }
                    )
                    for f in fractions:
                        # everything again, for every fraction
                        parts = split(
                            dataset,
                            sizes["train"],
                            sizes["test"],
                            sizes["pool"],
                            rng=stage_rng("split", dataset_key, seed),
                        )
                        X, y = dataset.X[parts.train], dataset.y[parts.train]
                        attack = ATTACKS.get(name).from_params(params).bind(dataset.info)
                        poisoned = attack.poison(
                            X,
                            y,
                            float(rate),
                            stage_rng("attack", dataset_key, attack_key, float(rate), seed),
                        )
                        pool_X, pool_y = dataset.X[parts.pool], dataset.y[parts.pool]
                        train = TrainingSet(
                            X=poisoned.X,
                            y=poisoned.y,
                            mask=poisoned.mask,
                            n_classes=dataset.info.n_classes,
                        )
                        ctx = DefenseContext(
                            info=dataset.info, n_train=len(y), pool_X=pool_X, pool_y=pool_y
                        )
                        defense = (
                            DEFENSES.get(defense_key[0]["name"])
                            .from_params(defense_key[0]["params"])
                            .bind(dataset.info)
                        )
                        train = defense.apply(train, ctx, stage_rng("defense", cell_id, 0)).train
                        n_extra = int(round(f * len(y)))
                        train = train.append(pool_X[:n_extra], pool_y[:n_extra])
                        model = (
                            MODELS.get(model_name)
                            .from_params(model_params)
                            .bind(dataset.info)
                            .build(dataset.info, stage_seed("model", cell_id, f))
                        )
                        model.fit(train.X, train.targets, train.sample_weight)
                        proba = model.predict_proba(dataset.X[parts.test])
                        metrics = classification_metrics(
                            dataset.y[parts.test], proba, dataset.info.n_classes
                        )
                        rows.append(
                            {
                                "attack": name,
                                "attack_label": attack.label(),
                                "rate": float(rate),
                                "defense": defense_key[0]["name"],
                                "seed": seed,
                                "extra_fraction": f,
                                "accuracy": metrics["accuracy"],
                                "macro_f1": metrics["macro_f1"],
                            }
                        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="CSV file to write")
    parser.add_argument("--seeds", type=int, help="fewer seeds than the grid's (for a quick try)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    table = run(GRID, args.seeds)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"naive: {len(table)} fits in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
