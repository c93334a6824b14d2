"""One identity per configuration: ids, unique labels, and the (cell, fraction) storage unit.

- A contract over every registered attack, defense and model: two configurations that differ in
  any one parameter never share an id, nor a label in a table, a recovery row, a report column
  or a compare group.
- The issue's own example (two Isolation Forest settings) end to end: two report columns with
  the numbers of a pandas groupby of the table.
- Golden cell ids, so a change to the canonical form cannot silently invalidate every cache.
- Extending a run's fraction grid fits only the new fractions; removing one fits nothing.
"""

from __future__ import annotations

import dataclasses
import json
import typing

import pandas as pd
import pytest

from attacks import ATTACKS
from bench.analysis.compare import Settings, compare_tables
from bench.analysis.recovery import estimate_recovery
from bench.analysis.report import build_report, recovery_table
from bench.core.schema import (
    NO_ATTACK_ID,
    NO_DEFENSE_ID,
    assign_labels,
    dataset_id,
    defense_id,
    plugin_id,
)
from bench.core.store import Store
from bench.core.types import DatasetInfo, ParamError
from bench.models import MODELS
from bench.run.config import parse_config
from bench.run.grid import expand
from bench.run.orchestrate import run_config
from defenses import DEFENSES

INFO = {
    "tabular": DatasetInfo("tiny", ("a", "b", "c"), n_features=4),
    "image": DatasetInfo("tiny-img", ("a", "b", "c"), n_features=144, image_shape=(1, 12, 12)),
}

#: other starting points for plug-ins whose parameters only apply in some mode
BASES: dict[str, list[dict[str, typing.Any]]] = {
    "label_flip": [
        {},
        {"mode": "targeted", "source": 0, "target": 1},
        {"mode": "boundary", "source": 0},
        {"mode": "boundary", "target": 1},
    ],
    "ocsvm": [{}, {"approx": "nystroem"}],
    "feature_noise": [{}, {"mode": "gaussian"}],
}

#: the clean reference's attack: the grid always writes it without parameters (rate 0)
FIXED = {("attack", "none")}

STRINGS = ("raw", "standardized", "pca:5", "knn", "ecod", "random_forest", "cpu", "most", "b")


def _candidates(value: typing.Any, hint: typing.Any) -> list[typing.Any]:
    """Values of the annotation ``hint`` other than ``value``, likely to validate."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return [c for c in typing.get_args(hint) if c != value]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        out = []
        for arm in typing.get_args(hint):
            out += [None] if arm is type(None) else _candidates(value, arm)
        return [c for c in out if c != value]
    if origin in (tuple, list):
        base = list(value) if value else [4]
        return [(*base, 3), (max(1, base[0] // 2),)]
    if hint is bool:
        return [not value]
    if hint is int:
        start = value if isinstance(value, int) else 1
        return [start + 1, start + 2, start * 2, 1, 3]
    if hint is float:
        start = value if isinstance(value, float | int) and value else 0.2
        return [start * 2, start / 2, start + 0.1, 0.3, 0.05]
    if hint is str:
        return [s for s in STRINGS if s != value]
    return []


def _variants(registry, name: str, info: DatasetInfo):
    """(param, a, b): pairs of bound instances that differ in exactly ``param``."""
    cls = registry.get(name)
    hints = typing.get_type_hints(cls)
    found = {}
    for base in BASES.get(name, [{}]):
        base = {**getattr(cls, "example_params", {}), **base}
        try:
            a = cls.from_params(base).bind(info)
        except ParamError:
            continue
        for f in dataclasses.fields(cls):
            if not f.init or f.name in found:
                continue
            value = a.params().get(f.name)
            for candidate in _candidates(value, hints.get(f.name, typing.Any)):
                try:
                    b = cls.from_params({**a.params(), f.name: candidate}).bind(info)
                except (ParamError, TypeError, ValueError):
                    continue
                if b.params() != a.params():
                    found[f.name] = (a, b)
                    break
    return [(param, a, b) for param, (a, b) in sorted(found.items())]


def _cases():
    cases = []
    for kind, registry in (("attack", ATTACKS), ("defense", DEFENSES), ("model", MODELS)):
        for name in registry:
            if (kind, name) in FIXED:
                continue
            for data in ("tabular", "image"):
                variants = _variants(registry, name, INFO[data])
                if variants:
                    cases += [
                        pytest.param(kind, data, p, a, b, id=f"{kind}-{name}-{p}")
                        for p, a, b in variants
                    ]
                    break
    return cases


DS = dataset_id({"name": "tiny", "split": {"train": 0.5, "test": 0.25, "pool": "rest"}})


def _table(configs: dict[str, list[tuple[typing.Any, str, float]]]) -> pd.DataFrame:
    """A synthetic results table: for each slot (attack, defense, model) a list of
    (plug-in instance or None, label, accuracy offset); a clean reference per model."""
    rows = []
    models = configs.get("model") or [(None, "m", 0.0)]
    attacks = configs.get("attack") or [(None, "label_flip(random)", 0.0)]
    defenses = configs.get("defense") or [(None, "none", 0.0)]

    def ident(kind, plugin, label):
        if plugin is None:
            defaults = {
                "model": plugin_id("m", {}),
                "attack": plugin_id("label_flip", {"mode": "random"}),
            }
            if kind == "defense":
                return (
                    NO_DEFENSE_ID
                    if label == "none"
                    else defense_id([{"name": label, "params": {}}])
                )
            return defaults[kind]
        if kind == "defense":
            return defense_id([{"name": plugin.name, "params": plugin.params()}])
        return plugin_id(plugin.name, plugin.params())

    for m_plugin, m_label, m_off in models:
        for seed in (0, 1, 2):
            base = {
                "dataset": "tiny", "dataset_id": DS, "dataset_label": "tiny",
                "model": getattr(m_plugin, "name", "m"), "model_id": ident("model", m_plugin, m_label),
                "model_label": m_label, "seed": seed, "status": "ok", "n_train": 100,
                "n_classes": 3, "n_poisoned": 10, "poison_fraction": 0.1, "n_removed": 0,
                "clean_removed": 0, "defense_reference": False,
            }  # fmt: skip
            for f in (0.0, 1.0):
                rows.append(
                    {**base, "cell_id": f"clean-{m_label}-{seed}", "attack": "none",
                     "attack_id": NO_ATTACK_ID, "attack_label": "none", "rate": 0.0,
                     "defense": "none", "defense_id": NO_DEFENSE_ID, "defense_label": "none",
                     "extra_fraction": f, "accuracy": 0.95 + 0.001 * seed}
                )  # fmt: skip
                for a_plugin, a_label, a_off in attacks:
                    for d_plugin, d_label, d_off in defenses:
                        rows.append(
                            {**base, "cell_id": f"{a_label}-{d_label}-{m_label}-{seed}",
                             "attack": getattr(a_plugin, "name", "label_flip"),
                             "attack_id": ident("attack", a_plugin, a_label),
                             "attack_label": a_label, "rate": 0.2,
                             "defense": getattr(d_plugin, "name", d_label),
                             "defense_id": ident("defense", d_plugin, d_label),
                             "defense_label": d_label, "extra_fraction": f,
                             "accuracy": 0.8 + m_off + a_off + d_off + 0.15 * f + 0.001 * seed}
                        )  # fmt: skip
    return assign_labels(pd.DataFrame(rows))


@pytest.mark.parametrize(("kind", "data", "param", "a", "b"), _cases())
def test_configurations_differing_in_one_parameter_never_share_a_group(kind, data, param, a, b):
    make_id = (
        (lambda p: defense_id([{"name": p.name, "params": p.params()}]))
        if kind == "defense"
        else (lambda p: plugin_id(p.name, p.params()))
    )
    id_a, id_b = make_id(a), make_id(b)
    assert id_a != id_b, f"{param} is not part of the id"
    slot = {kind: [(a, a.label(), 0.0), (b, b.label(), 0.05)]}
    if kind == "defense":
        slot["defense"].insert(0, (None, "none", -0.05))
    table = _table(slot)
    id_col, label_col = f"{kind}_id", f"{kind}_label"
    labels = table.drop_duplicates(id_col).set_index(id_col)[label_col]
    assert labels.is_unique, f"labels collide: {labels.tolist()}"
    # recovery: one row per configuration, distinct labels
    rec = estimate_recovery(table, n_boot=0)
    rec = rec[rec["attack_id"] != NO_ATTACK_ID] if kind != "model" else rec
    assert rec[id_col].nunique() == len(rec[[id_col]].drop_duplicates())
    assert rec.groupby(id_col)[label_col].nunique().eq(1).all()
    assert rec.drop_duplicates(id_col)[label_col].is_unique
    # each configuration keeps its own numbers (b is 5 points better than a at f = 0)
    attacked = rec[(rec["attack_id"] != NO_ATTACK_ID) & (rec["defense_id"] != NO_DEFENSE_ID)]
    if kind != "defense":
        attacked = rec[rec["attack_id"] != NO_ATTACK_ID]
    at0 = attacked.set_index(label_col)["value_at_0"]
    assert at0[labels[id_b]] - at0[labels[id_a]] == pytest.approx(0.05)
    # report: for defenses two columns; for attacks two rows; for models two sections
    report = build_report(table, {"recovery": {"bootstrap": 0}}, {})
    text = json.dumps([t.frame.to_dict() for s in report.sections for t in s.tables], default=str)
    if kind == "defense":
        columns = list(recovery_table(rec).columns)
        assert labels[id_a] in columns and labels[id_b] in columns
    elif kind == "attack":
        assert set(recovery_table(rec)["attack"]) >= {labels[id_a], labels[id_b]}
    else:
        headings = [s.title for s in report.section("Extra clean data needed").subsections]
        assert len(headings) == 2 and len(set(headings)) == 2, headings
    assert text
    # compare: the two configurations are two groups
    checks = compare_tables(table, table, Settings(metrics=("accuracy",))).checks
    assert checks.groupby(
        list(("dataset_id", "model_id", "attack_id", "rate", "defense_id"))
    ).ngroups == len(checks)
    assert {id_a, id_b} <= set(checks[id_col])


def test_every_registered_plugin_with_parameters_is_covered():
    covered = {(c.values[0], c.values[3].name) for c in _cases()}
    for kind, registry in (("attack", ATTACKS), ("defense", DEFENSES), ("model", MODELS)):
        for name in registry:
            cls = registry.get(name)
            if (kind, name) not in FIXED and any(f.init for f in dataclasses.fields(cls)):
                assert (kind, name) in covered, f"no varied parameter for {kind} {name}"


# ---------------------------------------------------------------------------------------------
# The example, end to end
# ---------------------------------------------------------------------------------------------

TWO_FORESTS = {
    "name": "two-forests",
    "datasets": [{"name": "digits", "split": {"train": 300, "test": 0.25}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.2],
    "defenses": [
        "none",
        {"name": "iforest", "contamination": 0.05},
        {"name": "iforest", "contamination": 0.4},
    ],
    "seeds": 2,
    "recovery": {"fractions": [0, 0.5], "bootstrap": 0},
}


@pytest.mark.slow
def test_two_settings_of_one_defense_are_two_report_columns_with_their_own_numbers(tmp_path):
    from bench.analysis.report import write_report

    run_config(parse_config(TWO_FORESTS), tmp_path, progress=False)
    table = pd.read_parquet(tmp_path / "results.parquet")
    forests = table[table["defense"] == "iforest"]
    assert forests["defense_id"].nunique() == 2
    labels = sorted(forests["defense_label"].unique())
    assert labels == ["iforest(contamination=0.05)", "iforest(contamination=0.4)"]
    # the accuracy table in report.md: one column per setting, each its own mean ± std
    text = write_report(tmp_path).read_text()
    section = text.split("## Accuracy (mean ± std over seeds, f = 0)")[1].split("\n## ")[0]
    header = next(line for line in section.splitlines() if line.startswith("| attack"))
    assert all(label in header for label in labels)
    ok = table[(table["status"] == "ok") & (table["extra_fraction"] == 0) & (table["rate"] == 0.2)]
    expected = ok.groupby("defense_label")["accuracy"].agg(["mean", "std"])
    row = next(
        line for line in section.splitlines() if "label_flip(random)" in line and "20%" in line
    )
    cells = [c.strip() for c in row.strip("|").split("|")]
    columns = [c.strip() for c in header.strip("|").split("|")]
    for label in labels:
        mean, std = expected.loc[label]
        assert cells[columns.index(label)] == f"{mean:.3f} ± {std:.3f}"
    assert expected.loc[labels[0], "mean"] != expected.loc[labels[1], "mean"]
    # recovery: two rows; compare: two groups
    rec = estimate_recovery(table, n_boot=0)
    assert set(rec.loc[rec["defense"] == "iforest", "defense_label"]) == set(labels)


# ---------------------------------------------------------------------------------------------
# Golden ids and the (cell, fraction) unit
# ---------------------------------------------------------------------------------------------

GOLDEN = {
    "name": "golden",
    "datasets": [{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "targeted", "source": 1, "target": 2}],
    "rates": [0, 0.1],
    "defenses": ["none", {"name": "iforest", "contamination": 0.2}],
    "seeds": [0],
}

#: pinned: a change here invalidates every stored record; bump schema.SCHEMA_VERSION with it
GOLDEN_IDS = {
    ("none", "none"): "9fcad0f68112c031",
    ("none", "iforest"): "066fb342a9bd5174",
    ("label_flip", "none"): "c1efa4a90fd3ec1e",
    ("label_flip", "iforest"): "4925a30d80df47c5",
}


def test_golden_cell_ids_do_not_change():
    cells = expand(parse_config(GOLDEN)).cells
    ids = {(c.spec["attack"]["name"], c.spec["defense"][0]["name"]): c.cell_id for c in cells}
    assert ids == GOLDEN_IDS
    # the fraction grid is not part of a cell
    other = expand(parse_config({**GOLDEN, "recovery": {"fractions": [0, 3]}})).cells
    assert {c.cell_id for c in other} == set(GOLDEN_IDS.values())


EXTEND = {
    "name": "extend",
    "datasets": [{"name": "iris", "split": {"train": 0.4, "test": 0.3}}],
    "models": ["logreg"],
    "attacks": [{"name": "label_flip", "mode": "random"}],
    "rates": [0, 0.2],
    "defenses": ["none", "oracle_filter"],
    "seeds": 2,
    "recovery": {"fractions": [0, 0.25], "bootstrap": 0},
}


def test_extending_the_fraction_grid_fits_only_the_new_fractions(tmp_path):
    first = run_config(parse_config(EXTEND), tmp_path, progress=False)
    n_cells = first.n_cells
    assert (first.fits_run, first.fits_cached) == (2 * n_cells, 0)
    before = {p.name: json.loads(p.read_text()) for p in (tmp_path / "cells").glob("*.json")}
    longer = {**EXTEND, "recovery": {"fractions": [0, 0.25, 0.5], "bootstrap": 0}}
    second = run_config(parse_config(longer), tmp_path, progress=False)
    assert (second.fits_run, second.fits_cached) == (n_cells, 2 * n_cells)
    assert second.n_run == n_cells and second.n_cached == 0
    # the compute it reports is this run's (one in-process worker: never more than the wall)
    assert second.compute_seconds <= second.wall_seconds
    after = {p.name: json.loads(p.read_text()) for p in (tmp_path / "cells").glob("*.json")}
    timing = ("t_attack", "t_defense", "t_fit", "t_predict")
    for name, record in before.items():
        old = [{k: v for k, v in r.items() if k not in timing} for r in record["rows"]]
        new = [
            {k: v for k, v in r.items() if k not in timing}
            for r in after[name]["rows"]
            if r["extra_fraction"] != 0.5
        ]
        assert old == new, "rows of the fractions already stored changed"
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert sorted(table["extra_fraction"].unique()) == [0, 0.25, 0.5]
    # a fresh run of the longer grid gives the same table (up to timings)
    fresh = run_config(parse_config(longer), tmp_path / "fresh", progress=False)
    assert fresh.fits_run == 3 * n_cells
    again = pd.read_parquet(tmp_path / "fresh" / "results.parquet")
    keep = [c for c in table.columns if not c.startswith("t_")]
    pd.testing.assert_frame_equal(table[keep], again[keep])
    # removing a fraction computes nothing; the table shows the config's grid only
    third = run_config(parse_config(EXTEND), tmp_path, progress=False)
    assert third.fits_run == 0 and third.n_cached == n_cells
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert sorted(table["extra_fraction"].unique()) == [0, 0.25]


def test_records_of_an_older_schema_are_recomputed_with_a_warning(tmp_path):
    run_config(parse_config(EXTEND), tmp_path, progress=False)
    victim = sorted((tmp_path / "cells").glob("*.json"))[0]
    record = json.loads(victim.read_text())
    record["schema_version"] = 1
    from bench.core.store import record_checksum

    record["checksum"] = record_checksum(record)
    victim.write_text(json.dumps(record))
    warnings: list[str] = []
    summary = run_config(parse_config(EXTEND), tmp_path, progress=False, on_warning=warnings.append)
    assert summary.n_run == 1 and summary.fits_run == 2
    assert len(warnings) == 1 and "schema version 1" in warnings[0]
    assert Store(tmp_path).read(victim.stem)["schema_version"] == 2


def test_model_seed_is_shared_across_attacks_defenses_and_fractions():
    from bench.run.runner import model_seed

    cells = expand(parse_config(GOLDEN)).cells
    assert len({model_seed(c.spec) for c in cells}) == 1
    other_seed = expand(parse_config({**GOLDEN, "seeds": [1]})).cells
    assert model_seed(other_seed[0].spec) != model_seed(cells[0].spec)


def test_labels_are_unique_by_construction_even_when_parameters_do_not_separate_them():
    from bench.core.schema import unique_labels

    a = defense_id([{"name": "x", "params": {"k": 1}}])
    b = defense_id([{"name": "x", "params": {"k": 2}}])
    c = defense_id([{"name": "x", "params": {"k": 1}}, {"name": "y", "params": {}}])
    labels = unique_labels("defense", {a: "x", b: "x", c: "x+y"})
    assert labels == {a: "x(k=1)", b: "x(k=2)", c: "x+y"}
    # a label that already hides a difference another way still comes out unique
    d = plugin_id("z", {"p": [1, 2]})
    e = plugin_id("z", {"p": (1, 2), "q": None})
    assert len(set(unique_labels("attack", {d: "z", e: "z"}).values())) == 2


def test_sharing_stages_within_a_task_leaves_the_table_unchanged(tmp_path):
    """Two models, a filter alone and the same filter followed by another step: shared stages
    (split, attack, the filter's output) are computed once per task; the table is the one that
    recomputing every stage for every cell gives."""
    raw = {
        **EXTEND,
        "models": ["logreg", {"name": "logreg", "C": 0.1}],
        "defenses": ["none", "iforest", ["iforest", {"name": "label_smoothing"}]],
    }
    shared = run_config(parse_config(raw), tmp_path / "shared", progress=False)
    alone = run_config(parse_config(raw), tmp_path / "alone", progress=False, share_stages=False)
    assert shared.n_cells == alone.n_cells
    a = pd.read_parquet(tmp_path / "shared" / "results.parquet")
    b = pd.read_parquet(tmp_path / "alone" / "results.parquet")
    keep = [c for c in a.columns if not c.startswith("t_")]
    pd.testing.assert_frame_equal(a[keep], b[keep])
    # and sharing did skip work: with it, some cells report no defense time of their own
    forests = a[(a["defense"] != "none") & (a["extra_fraction"] == 0)]
    assert (forests["t_defense"] == 0).any()
    assert (b.loc[(b["defense"] != "none") & (b["extra_fraction"] == 0), "t_defense"] > 0).all()
