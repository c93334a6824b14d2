"""The naive baseline for the macro benchmark: the grid written as a plain user would script it.

One process, plain nested loops, and *everything* recomputed for every extra-clean fraction: split, attack, filter, fit. It uses poisonbench's
building blocks (datasets, attacks, defenses, models, metrics) the way a user who read the API
would, but none of the harness: no grid expansion, no shared work, no worker processes, no
store. It writes one CSV row per (attack, rate, defense, seed, fraction).

To make "same numbers out" checkable row by row, it reproduces the harness's documented seeding
(docs/architecture.md: randomness is keyed by stage: the split by (dataset, seed), the attack by (dataset,
attack, rate, seed), a defense step by the poisoned set and the steps before it, the model by
(dataset, model, seed)): the stage keys are built from the same canonical parameters. That is
the only thing borrowed from the harness, and it costs nothing measurable. A user would loop
over every (attack, rate) pair, so the clean rate-0 reference is computed once per attack (the
harness runs it once).

``--plain`` is the honest baseline: the same plain loops, but the split, the attack and the
defense are computed once per (attack, rate, defense, seed) and only the fit is repeated per
fraction (what a careful user writes); its grid (:data:`GRID_PLAIN`) has no defense at all.

Threads: one BLAS/OpenMP thread by default (``--threads``), as in the harness's workers. With
the libraries' default (one per core) these small fits are several times slower on 2 cores
(the plain grid: 182 s against 31 s with one thread, measured on 2 idle cores), which would
flatter the harness; and the threaded BLAS sums in another order, so a few lbfgs fits that stop
at ``max_iter`` end one test row apart (2 of 800), and "same numbers" could not be checked.

Usage: ``python tests/benchmarks/naive_script.py OUT.csv [--seeds N] [--plain] [--threads N]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from attacks import ATTACKS
from bench.core.metrics import classification_metrics
from bench.core.types import DefenseContext, TrainingSet
from bench.data.datasets import load_dataset, split
from bench.models import MODELS
from bench.run.grid import stage_rng, stage_seed
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

#: the plain grid (issue 16): digits, logistic regression, random flips and uniform noise at
#: 5/10/20/50 %, no defense, 10 seeds, fractions up to 4× (300 train and 290 test rows leave a
#: pool of 1,207 rows, 4.02× the train set)
GRID_PLAIN: dict[str, Any] = {
    "name": "macro-plain",
    "datasets": [{"name": "digits", "split": {"train": 300, "test": 290}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}, {"name": "feature_noise"}],
    "rates": [0, 0.05, 0.1, 0.2, 0.5],
    "defenses": ["none"],
    "seeds": 10,
    "recovery": {"fractions": [0, 0.1, 0.25, 0.5, 1, 2, 3, 4]},
}


def _canonical(registry: Any, name: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "params": registry.get(name).from_params(params).params()}


def _plugin(entry: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    return entry["name"], {k: v for k, v in entry.items() if k != "name"}


def run(grid: dict[str, Any], seeds: int | None = None, plain: bool = False) -> pd.DataFrame:
    """Every (dataset, model, attack, rate, defense, seed, fraction) of ``grid``, from scratch.

    plain: compute the split, the attack and the defense once per (attack, rate, defense,
    seed) and only refit per fraction; otherwise everything is redone for every fraction.
    """
    ds_spec = grid["datasets"][0]
    dataset = load_dataset(ds_spec["name"])
    sizes = {"train": ds_spec["split"]["train"], "test": ds_spec["split"]["test"], "pool": "rest"}
    dataset_key = {"name": dataset.name, "split": sizes, "fingerprint": dataset.fingerprint}
    fractions = [float(f) for f in grid["recovery"]["fractions"]]
    model_name, model_params = _plugin(grid["models"][0])
    model_key = _canonical(MODELS, model_name, model_params)
    rows = []

    def prepare(name, params, attack_key, rate, defense_key, seed):
        parts = split(
            dataset, sizes["train"], sizes["test"], sizes["pool"],
            rng=stage_rng("split", dataset_key, seed),
        )  # fmt: skip
        X, y = dataset.X[parts.train], dataset.y[parts.train]
        attack = ATTACKS.get(name).from_params(params).bind(dataset.info)
        poisoning = ["poison", dataset_key, attack_key, float(rate), seed]
        poisoned = attack.poison(X, y, float(rate), stage_rng("attack", *poisoning[1:]))
        pool_X, pool_y = dataset.X[parts.pool], dataset.y[parts.pool]
        train = TrainingSet(
            X=poisoned.X, y=poisoned.y, mask=poisoned.mask, n_classes=dataset.info.n_classes
        )
        ctx = DefenseContext(info=dataset.info, n_train=len(y), pool_X=pool_X, pool_y=pool_y)
        spec = defense_key[0]
        defense = DEFENSES.get(spec["name"]).from_params(spec["params"]).bind(dataset.info)
        train = defense.apply(train, ctx, stage_rng("defense", *poisoning, defense_key)).train
        return parts, attack, train, pool_X, pool_y

    for attack_entry in grid["attacks"]:
        for rate in grid["rates"]:
            name, params = _plugin(attack_entry) if rate > 0 else ("none", {})
            attack_key = _canonical(ATTACKS, name, params)
            for defense_entry in grid["defenses"]:
                defense_key = [_canonical(DEFENSES, *_plugin(defense_entry))]
                for seed in range(seeds or grid["seeds"]):
                    args = (name, params, attack_key, rate, defense_key, seed)
                    prepared = prepare(*args) if plain else None
                    for f in fractions:
                        # naive: everything again, for every fraction
                        parts, attack, train, pool_X, pool_y = prepared or prepare(*args)
                        n_extra = int(round(f * len(parts.train)))
                        if n_extra > len(pool_y):
                            continue  # the harness marks this row pool_exhausted
                        fit_set = train.append(pool_X[:n_extra], pool_y[:n_extra])
                        model = (
                            MODELS.get(model_name)
                            .from_params(model_params)
                            .bind(dataset.info)
                            .build(dataset.info, stage_seed("model", dataset_key, model_key, seed))
                        )
                        model.fit(fit_set.X, fit_set.targets, fit_set.sample_weight)
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
    parser.add_argument(
        "--plain", action="store_true", help="the plain grid, stages computed once per seed"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS/OpenMP threads (0: the libraries' default)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.threads or None):
        table = run(GRID_PLAIN if args.plain else GRID, args.seeds, plain=args.plain)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"naive: {len(table)} fits in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
