"""A config's ``exclude`` rules: cells the grid leaves out (a CNN on tabular rows, glc on an
sklearn model, fewer seeds for an expensive model)."""

from __future__ import annotations

import pytest

from bench.run.config import ConfigError, parse_config
from bench.run.grid import expand

BASE = {
    "name": "t",
    "datasets": [{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
    "models": ["logreg", {"name": "torch-mlp", "epochs": 1}],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.2],
    "defenses": ["none", {"name": "glc", "budget": 0.1}, [{"name": "glc"}, "label_smoothing"]],
    "seeds": 3,
}


def cells(**extra):
    return [
        (
            c.spec["model"]["name"],
            c.spec["attack"]["name"],
            "+".join(s["name"] for s in c.spec["defense"]),
            c.seed,
        )
        for c in expand(parse_config({**BASE, **extra}))
    ]


def test_a_rule_drops_exactly_the_cells_matching_every_key_it_gives():
    everything = cells()
    kept = cells(exclude=[{"model": "logreg", "defense": "glc"}])
    dropped = set(everything) - set(kept)
    assert dropped == {c for c in everything if c[0] == "logreg" and "glc" in c[2].split("+")}
    assert len(dropped) == 2 * 2 * 3  # two glc pipelines × (clean, attacked) × 3 seeds
    assert all(c in kept for c in everything if c[0] == "torch-mlp")


def test_attack_rules_leave_the_clean_reference_and_seed_rules_thin_a_model_out():
    kept = cells(exclude=[{"attack": "label_flip", "defense": "glc"}])
    assert ("logreg", "none", "glc", 0) in kept  # rate 0 runs as attack none
    assert ("logreg", "label_flip", "glc", 0) not in kept
    kept = cells(exclude=[{"model": "torch-mlp", "seed": [1, 2]}])
    assert {c[3] for c in kept if c[0] == "torch-mlp"} == {0}
    assert {c[3] for c in kept if c[0] == "logreg"} == {0, 1, 2}


def test_a_rule_may_give_one_configuration_of_an_attack_in_full_and_a_rate():
    """A provenance attack holds 20 % of the rows in its poisoned source: a 50 % rate is
    dropped for it while the plain attack keeps both rates."""
    provenance = {"name": "label_flip", "mode": "random", "sources": 5, "poisoned_sources": 1}
    config = {
        **BASE,
        "models": ["logreg"],
        "defenses": ["none"],
        "attacks": [{"name": "label_flip", "mode": "random"}, provenance],
        "rates": [0, 0.2, 0.5],
    }
    grid = expand(parse_config({**config, "exclude": [{"attack": provenance, "rate": 0.5}]}))
    kept = {(c.spec["attack"]["params"].get("sources", 1), c.spec["rate"]) for c in grid}
    assert kept == {(1, 0.0), (1, 0.2), (1, 0.5), (5, 0.2)}
    # the full configuration is matched with its defaults filled in, not by its name
    other = {**provenance, "poisoned_sources": 2}
    grid = expand(parse_config({**config, "exclude": [{"attack": other}]}))
    assert len(grid) == (1 + 2 * 2) * 3  # nothing matches: clean + 2 attacks × 2 rates, 3 seeds


def test_a_rule_may_give_one_defense_step_in_full():
    config = {**BASE, "defenses": ["none", {"name": "glc", "budget": 0.5}, "glc"]}
    grid = expand(
        parse_config({**config, "exclude": [{"defense": {"name": "glc", "budget": 0.5}}]})
    )
    budgets = {s["params"]["budget"] for c in grid for s in c.spec["defense"] if s["name"] == "glc"}
    assert budgets == {0.1}  # glc's default budget stays


def test_a_model_kept_away_from_a_dataset_is_not_bound_to_it():
    config = {**BASE, "models": ["logreg", "cnn"], "defenses": ["none"]}
    with pytest.raises(ConfigError, match=r"models\[1\]"):
        expand(parse_config(config))  # a CNN cannot take iris' tabular rows
    grid = expand(parse_config({**config, "exclude": [{"dataset": "iris", "model": "cnn"}]}))
    assert {c.spec["model"]["name"] for c in grid} == {"logreg"}
    # a rule that also names an attack does not keep the model away: it is still bound
    narrower = {**config, "exclude": [{"model": "cnn", "attack": "label_flip"}]}
    with pytest.raises(ConfigError, match=r"models\[1\]"):
        expand(parse_config(narrower))


@pytest.mark.parametrize(
    ("rules", "field", "message"),
    [
        ([{"model": "nosuch"}], "exclude[0].model", "unknown model 'nosuch' (valid: "),
        ([{"defense": ["none", "glcc"]}], "exclude[0].defense[1]", "unknown defense 'glcc'"),
        ([{}], "exclude[0]", "an empty rule would drop every cell"),
        ([{"seed": [0, -1]}], "exclude[0].seed[1]", "expected a seed >= 0"),
        ([{"fraction": 0.2}], "exclude[0].fraction", "unknown key"),
        ([{"rate": [0.2, 1.5]}], "exclude[0].rate[1]", "outside [0, 1]"),
        ([{"attack": {"name": "label_flip", "mode": "x"}}], "exclude[0].attack.mode", "'random'"),
        ({"model": "cnn"}, "exclude", "expected a list"),
    ],
)
def test_rules_are_validated_naming_the_field(rules, field, message):
    with pytest.raises(ConfigError) as exc:
        parse_config({**BASE, "exclude": rules})
    assert exc.value.field == field
    assert message in exc.value.message


def test_the_clean_budget_study_expands_to_the_cells_its_header_counts():
    from pathlib import Path

    from bench.run.config import load_config

    path = Path(__file__).parent.parent / "configs" / "clean-budget.yaml"
    grid = expand(load_config(path))
    assert len(grid) == 1375  # the count the header's measured cost is for
    pairs = {(c.spec["dataset"]["name"], c.spec["model"]["name"]) for c in grid}
    assert pairs == {("digits", "logreg"), ("digits", "torch-mlp"), ("mnist-5k", "cnn")}
    for c in grid:
        steps = {s["name"] for s in c.spec["defense"]}
        assert not (c.spec["model"]["name"] == "logreg" and "glc" in steps)
        sources = c.spec["attack"]["params"].get("sources", 1)
        assert ("provenance" in steps) <= (sources == 5)  # provenance only with sources
        if sources == 5:
            assert c.spec["rate"] == 0.2  # one source's worth: 0.5 would not fit in one source


def test_a_model_kept_away_from_a_defense_it_cannot_train_with_is_not_warned_about():
    """glc needs a model with a training loss: logreg cells with glc would fail, so the grid
    warns; once a rule keeps logreg and glc apart there is nothing to warn about."""
    warned = expand(parse_config(BASE)).warnings
    assert any("model logreg cannot" in w for w in warned)
    kept_apart = expand(parse_config({**BASE, "exclude": [{"model": "logreg", "defense": "glc"}]}))
    assert not any("cannot" in w for w in kept_apart.warnings), kept_apart.warnings
    with pytest.raises(ConfigError, match=r"defenses\[1\].*none of the models it runs with"):
        expand(parse_config({**BASE, "exclude": [{"model": "torch-mlp", "defense": "glc"}]}))
