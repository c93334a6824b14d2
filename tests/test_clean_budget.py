"""Defenses that spend the clean-data budget (issue 15) and attack provenance, on designed data.

Gaussian blobs where the answer is known: a judge fit on trusted rows that classifies every row
correctly, random flips whose corruption matrix is known exactly, one of five sources fully
flipped. The torch parts (GLC's loss, DP-SGD) are in test_private_training.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.datasets import make_blobs

from attacks import ATTACKS
from attacks.label_flip import LabelFlip
from bench.core.metrics import detection_metrics
from bench.core.types import (
    TRUSTED_SOURCE,
    DatasetInfo,
    DefenseContext,
    ParamError,
    PoisonBenchError,
    TrainingSet,
    exact_count,
)
from bench.models import MODELS, check_loss_support, check_privacy_support
from defenses import DEFENSES
from defenses.classifiers import fit_proba, negative_impact
from defenses.roni import RejectOnNegativeImpact

INFO = DatasetInfo("blobs", ("a", "b", "c"), n_features=4)
K = 3
#: the defenses that read trusted pool rows (and so spend the budget)
POOL_READERS = ("trusted_filter", "glc", "roni", "provenance")


def blobs(n: int, std: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n_samples=n, centers=K, n_features=4, cluster_std=std, random_state=seed)
    return X.astype(np.float32), y.astype(np.int64)


def flipped(X, y, rate: float, seed: int, **attack) -> TrainingSet:
    """``rate`` random label flips (exact count); with ``sources=K`` the rows carry source ids."""
    out = (
        LabelFlip(mode="random", **attack)
        .bind(INFO)
        .poison(X, y, rate, np.random.default_rng(seed))
    )
    return TrainingSet(X=out.X, y=out.y, mask=out.mask, n_classes=K, source=out.source)


def apply(name: str, train: TrainingSet, ctx: DefenseContext, seed: int = 0, **params):
    return DEFENSES.get(name).from_params(params).apply(train, ctx, np.random.default_rng(seed))


# --------------------------------------------------------------------------------------------
# trusted_filter
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rule", [{"contamination": 0.2}, {"threshold": 0.5}])
def test_trusted_filter_with_a_perfect_judge_removes_exactly_the_flipped_rows(seed, rule):
    X, y = blobs(600, std=0.5)
    X_train, y_train, X_pool, y_pool = X[:300], y[:300], X[300:], y[300:]
    train = flipped(X_train, y_train, 0.2, seed)
    ctx = DefenseContext(INFO, 300, X_pool, y_pool)
    # The design: 30 trusted rows already give a judge that gives every train row's true class
    # a probability above 0.5 (so a flipped label's is below 0.5).
    judge = fit_proba("logreg", X_pool[:30], y_pool[:30], X_train, K, seed=0)
    assert judge[np.arange(300), y_train].min() > 0.5

    result = apply("trusted_filter", train, ctx, seed=seed, budget=0.1, **rule)
    np.testing.assert_array_equal(result.removed, train.mask)
    assert not result.train.mask.any() and len(result.train) == 240
    assert result.pool_used == 30 and result.details["pool_short"] == 0
    metrics = detection_metrics(train.mask, result.removed, result.scores, train.y, K)
    assert metrics["det_roc_auc"] == 1.0


def test_trusted_filter_relabel_restores_the_true_labels():
    X, y = blobs(600)
    train = flipped(X[:300], y[:300], 0.2, 0)
    ctx = DefenseContext(INFO, 300, X[300:], y[300:])
    result = apply("trusted_filter", train, ctx, budget=0.1, contamination=0.2, action="relabel")
    assert result.removed is None, "relabelling removes nothing"
    np.testing.assert_array_equal(result.train.y, y[:300])
    np.testing.assert_array_equal(result.train.targets, y[:300])
    assert result.details["n_relabelled"] == 60 == result.details["flagged_poisoned"]
    np.testing.assert_array_equal(result.train.mask, train.mask)  # the attacked rows stay marked
    assert (train.y[train.mask] != y[:300][train.mask]).all(), "the input is not changed"


def test_trusted_filter_relabel_on_soft_targets_makes_one_hot_rows():
    X, y = blobs(600)
    train = flipped(X[:300], y[:300], 0.2, 0)
    ctx = DefenseContext(INFO, 300, X[300:], y[300:])
    soft = apply("label_smoothing", train, ctx, epsilon=0.3).train
    out = apply("trusted_filter", soft, ctx, contamination=0.2, action="relabel").train
    np.testing.assert_allclose(out.targets[train.mask], np.eye(K)[y[:300][train.mask]])
    np.testing.assert_allclose(out.targets[~train.mask], soft.targets[~train.mask])


def test_trusted_filter_append_trains_on_the_rows_it_learnt_from():
    X, y = blobs(600)
    train = flipped(X[:300], y[:300], 0.2, 0)
    ctx = dataclasses.replace(DefenseContext(INFO, 300, X[300:], y[300:]), pool_start=7)
    result = apply("trusted_filter", train, ctx, contamination=0.2, append=True)
    out = result.train
    assert len(out) == 240 + 30 and result.pool_used == 30
    np.testing.assert_array_equal(out.X[240:], X[307:337])  # the rows after pool_start
    assert out.trusted[240:].all() and (out.source[240:] == TRUSTED_SOURCE).all()
    np.testing.assert_array_equal(out.X[:240], train.X[~result.removed])


def test_trusted_filter_cannot_judge_a_class_its_trusted_rows_lack():
    X, y = blobs(600)
    train = flipped(X[:300], y[:300], 0.2, 0)
    no_c = y[300:] != 2
    ctx = DefenseContext(INFO, 300, X[300:][no_c], y[300:][no_c])
    result = apply("trusted_filter", train, ctx, threshold=0.5)
    labelled_c = train.y == 2
    assert result.details["n_unjudged"] == labelled_c.sum()
    assert not result.removed[labelled_c].any(), "unjudged rows are kept"
    assert (result.scores[labelled_c] == 0).all()


# --------------------------------------------------------------------------------------------
# glc: the corruption matrix
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_glc_estimates_the_corruption_matrix_of_random_flips(seed):
    X, y = blobs(1500)
    train = flipped(X[:900], y[:900], 0.3, seed)
    ctx = DefenseContext(INFO, 900, X[900:], y[900:])
    result = apply("glc", train, ctx, seed=seed, budget=0.1)
    C = np.array(result.details["C"])
    # Random flips at 30 %: each row keeps its class w.p. 0.7, else goes to one of the 2 others.
    true = np.full((K, K), 0.3 / (K - 1)) + np.eye(K) * (0.7 - 0.3 / (K - 1))
    np.testing.assert_allclose(C.sum(axis=1), 1.0)
    assert np.abs(C - true).max() < 0.1, C.round(3)
    # ... and what the step measures is the flips: unflipped data gives a near-identity C.
    clean = TrainingSet(X[:900], y[:900], np.zeros(900, bool), K)
    assert np.diag(np.array(apply("glc", clean, ctx, budget=0.1).details["C"])).min() > 0.9


def test_glc_appends_its_gold_rows_and_sets_the_corrected_loss():
    X, y = blobs(600)
    train = flipped(X[:300], y[:300], 0.3, 0)
    ctx = dataclasses.replace(DefenseContext(INFO, 300, X[300:], y[300:]), pool_start=10)
    result = apply("glc", train, ctx, budget=0.2)
    out = result.train
    assert result.pool_used == 60 and len(out) == 360
    np.testing.assert_array_equal(out.X[300:], X[310:370])
    assert out.trusted[300:].all() and not out.trusted[:300].any()
    assert out.loss == {"name": "glc", "C": result.details["C"]}
    assert train.loss is None
    with pytest.raises(PoisonBenchError, match="already set 'gce'"):
        apply("glc", apply("gce", train, ctx).train, ctx)


def test_glc_assumes_no_corruption_for_a_class_without_gold_rows():
    X, y = blobs(600)
    train = flipped(X[:300], y[:300], 0.3, 0)
    no_c = y[300:] != 1
    ctx = DefenseContext(INFO, 300, X[300:][no_c], y[300:][no_c])
    details = apply("glc", train, ctx, budget=0.2).details
    assert details["classes_without_gold_rows"] == [1]
    np.testing.assert_array_equal(details["C"][1], [0.0, 1.0, 0.0])


def test_sklearn_models_refuse_glc_and_dp_sgd_naming_the_models_that_can():
    X, y = blobs(600)
    train = flipped(X[:300], y[:300], 0.3, 0)
    ctx = DefenseContext(INFO, 300, X[300:], y[300:])
    logreg = MODELS.get("logreg").from_params({})
    loss = apply("glc", train, ctx).train.loss
    with pytest.raises(PoisonBenchError, match=r"'logreg'.*'glc'.*torch-mlp") as exc:
        check_loss_support(logreg, loss)
    assert "C=" not in str(exc.value), "the matrix is not dumped into the message"
    privacy = apply("dp_sgd", train, ctx).train.privacy
    with pytest.raises(PoisonBenchError, match=r"'logreg'.*differential privacy.*cnn.*torch-mlp"):
        check_privacy_support(logreg, privacy)
    check_privacy_support(logreg, None)
    check_privacy_support(MODELS.get("torch-mlp").from_params({}), privacy)


# --------------------------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_provenance_drops_the_one_fully_flipped_source_of_five(seed):
    X, y = blobs(600)
    # rate 0.2 of 300 rows = 60 = all of one source's rows: source 0 is fully flipped.
    train = flipped(X[:300], y[:300], 0.2, seed, sources=5, poisoned_sources=1)
    assert train.mask.sum() == 60 and (train.mask == (train.source == 0)).all()
    ctx = DefenseContext(INFO, 300, X[300:], y[300:])
    result = apply("provenance", train, ctx, seed=seed)
    np.testing.assert_array_equal(result.removed, train.source == 0)
    d = result.details
    assert d["n_sources"] == 5 and d["n_sources_dropped"] == 1
    assert d["n_poisoned_sources"] == 1 and d["n_poisoned_sources_dropped"] == 1
    by_id = {s["id"]: s for s in d["sources"]}
    assert by_id[0] == {**by_id[0], "n_rows": 60, "n_poisoned": 60, "dropped": True}
    assert by_id[0]["effect"] < 0 < min(by_id[s]["effect"] for s in range(1, 5))
    assert result.pool_used == 30


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_provenance_keeps_every_clean_source(seed):
    X, y = blobs(600)
    train = flipped(X[:300], y[:300], 0.0, seed, sources=5, poisoned_sources=1)
    ctx = DefenseContext(INFO, 300, X[300:], y[300:])
    result = apply("provenance", train, ctx, seed=seed)
    assert not result.removed.any() and result.details["n_sources"] == 5


def test_provenance_without_sources_drops_nothing():
    X, y = blobs(600)
    train = flipped(X[:300], y[:300], 0.2, 0)  # no provenance: one source
    result = apply("provenance", train, DefenseContext(INFO, 300, X[300:], y[300:]))
    assert not result.removed.any()
    assert result.details["n_sources"] == 1 and result.details["n_sources_dropped"] == 0


def test_negative_impact_rejects_only_harmful_outliers():
    rejected, cal = negative_impact(np.array([0.05, 0.04, 0.06, 0.05, -0.2]), k=2.0)
    np.testing.assert_array_equal(rejected, [False, False, False, False, True])
    assert cal["effect_median"] == 0.05
    # An outlier that still helps is kept: impact must be negative.
    rejected, _ = negative_impact(np.array([0.5, 0.51, 0.49, 0.5, 0.1]), k=2.0)
    assert not rejected.any()


# --------------------------------------------------------------------------------------------
# roni
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_roni_chunk_effect_falls_with_the_flipped_rows_it_holds(seed):
    X, y = blobs(400)
    train = flipped(X[:200], y[:200], 0.2, seed)
    roni = RejectOnNegativeImpact(chunk=5)
    rng = np.random.default_rng(seed)
    chunks = np.array_split(rng.permutation(200), 40)
    effects = roni.chunk_effects(train, chunks, X[200:240], y[200:240], rng)
    flips = [train.mask[c].sum() for c in chunks]
    assert spearmanr(effects, flips).statistic < -0.6


def test_roni_removes_mostly_flipped_rows_and_scores_them_higher():
    X, y = blobs(400)
    train = flipped(X[:200], y[:200], 0.3, 0)
    ctx = DefenseContext(INFO, 200, X[200:], y[200:])
    result = apply("roni", train, ctx, chunk=5, budget=0.2)
    metrics = detection_metrics(train.mask, result.removed, result.scores, train.y, K)
    assert result.removed.sum() > 0
    assert metrics["det_precision"] > 0.5  # the base rate is 0.3
    assert metrics["det_roc_auc"] > 0.7
    assert result.details["n_chunks"] == 40 and result.pool_used == 40


# --------------------------------------------------------------------------------------------
# Budget accounting and parameters
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", POOL_READERS)
def test_a_defense_asking_for_more_pool_rows_than_are_left_gets_the_rest_and_says_so(name):
    X, y = blobs(320)
    train = flipped(X[:300], y[:300], 0.2, 0, sources=3, poisoned_sources=1)
    # 20 pool rows, 5 used by an earlier step: 15 left, 30 (0.1 × 300) asked for.
    ctx = DefenseContext(INFO, 300, X[300:], y[300:], pool_start=5)
    result = apply(name, train, ctx, budget=0.1)
    assert result.pool_used == 15
    assert result.details["pool_wanted"] == 30
    assert result.details["pool_rows"] == 15 and result.details["pool_short"] == 15
    empty = dataclasses.replace(ctx, pool_start=20)
    result = apply(name, train, empty, budget=0.1)
    assert result.pool_used == 0 and result.details["pool_short"] == 30
    if result.removed is not None:
        assert not result.removed.any(), "no trusted rows, no evidence: nothing is removed"


@pytest.mark.parametrize(
    ("name", "params", "field", "message"),
    [
        ("trusted_filter", {"budget": 0}, "budget", "in (0, 100]"),
        ("trusted_filter", {"budget": float("inf")}, "budget", "finite"),
        ("trusted_filter", {"contamination": 0.2, "threshold": 0.5}, "threshold", "not both"),
        ("trusted_filter", {"contamination": 1.5}, "contamination", "in [0, 1]"),
        ("trusted_filter", {"contamination": "guess"}, "contamination", "'auto'"),
        ("trusted_filter", {"threshold": -0.1}, "threshold", "in [0, 1]"),
        ("trusted_filter", {"model": "svm"}, "model", "'logreg', 'random_forest', 'knn'"),
        ("trusted_filter", {"action": "drop"}, "action", "'remove', 'relabel'"),
        ("glc", {"budget": -0.1}, "budget", "in (0, 100]"),
        ("roni", {"chunk": 0}, "chunk", "in [1, 10000000]"),
        ("roni", {"base": 1.0}, "base", "outside (0, 1)"),
        ("roni", {"repeats": 0}, "repeats", "in [1, 1000]"),
        ("roni", {"k": -1}, "k", "in [0, 100]"),
        ("roni", {"metric": "f1"}, "metric", "'log_loss', 'accuracy'"),
        ("provenance", {"budget": 0}, "budget", "in (0, 100]"),
        ("provenance", {"k": -0.5}, "k", "in [0, 100]"),
        ("dp_sgd", {"noise_multiplier": 1.0, "epsilon": 2.0}, "epsilon", "not both"),
        ("dp_sgd", {"noise_multiplier": 0}, "noise_multiplier", "in (0, 1000]"),
        ("dp_sgd", {"epsilon": -1}, "epsilon", "in (0, 1e+06]"),
        ("dp_sgd", {"max_grad_norm": 0}, "max_grad_norm", "in (0, 1e+06]"),
        ("dp_sgd", {"delta": 1.0}, "delta", "outside (0, 1)"),
    ],
)
def test_parameters_are_validated_naming_the_field(name, params, field, message):
    with pytest.raises(ParamError) as exc:
        DEFENSES.get(name).from_params(params, "defenses[2]")
    assert exc.value.field == f"defenses[2].{field}"
    assert message in exc.value.message


def test_either_or_parameters_have_one_spelling_per_behaviour():
    tf = DEFENSES.get("trusted_filter")
    assert tf.from_params({}).contamination == "auto"
    assert tf.from_params({}) == tf.from_params({"contamination": "auto"})
    assert tf.from_params({"threshold": 0.4}).contamination is None
    dp = DEFENSES.get("dp_sgd")
    assert dp.from_params({}) == dp.from_params({"noise_multiplier": 1.0})
    assert dp.from_params({"epsilon": 3}).noise_multiplier is None


# --------------------------------------------------------------------------------------------
# Provenance options of every attack
# --------------------------------------------------------------------------------------------


def tiny_rows(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    X, y = blobs(n)
    return X, y


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_draws_its_rows_only_from_the_poisoned_sources(name):
    X, y = tiny_rows()
    # tabular rows: an attack whose default needs images (backdoor's patch) gets a tabular form
    base = {"trigger": "blend"} if name == "backdoor" else {}
    attack = ATTACKS.get(name).from_params({**base, "sources": 4, "poisoned_sources": 2})
    attack = attack.bind(INFO)
    plain = ATTACKS.get(name).from_params(base).bind(INFO)
    for seed in range(3):
        out = attack.poison(X, y, 0.25, np.random.default_rng(seed))
        assert out.source.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(out.source), [15, 15, 15, 15])
        assert (out.source[out.mask] < 2).all(), "poison only in sources 0 and 1"
        reference = plain.poison(X, y, 0.25, np.random.default_rng(seed))
        assert out.mask.sum() == reference.mask.sum(), "the rate counts from all eligible rows"
        assert reference.source is None
    if name != "none":
        assert out.mask.sum() == exact_count(0.25, int(plain.eligible(y).sum()))


def test_boundary_flips_respect_the_poisoned_sources():
    X, y = tiny_rows(90)
    attack = LabelFlip(mode="boundary", sources=3, poisoned_sources=1).bind(INFO)
    out = attack.poison(X, y, 0.3, np.random.default_rng(0))
    assert out.mask.sum() == 27 and (out.source[out.mask] == 0).all()


def test_a_rate_beyond_what_the_poisoned_sources_hold_is_an_error_naming_rate():
    X, y = tiny_rows()
    attack = LabelFlip(mode="random", sources=5, poisoned_sources=1).bind(INFO)
    attack.poison(X, y, 0.2, np.random.default_rng(0))  # 12 rows: exactly one source
    with pytest.raises(
        ParamError, match=r"rate: .*13 rows.*1 poisoned source\(s\) of 5 hold only 12"
    ):
        attack.poison(X, y, 0.21, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"sources": 0}, "sources", "in [1, 10000]"),
        ({"sources": 2, "poisoned_sources": 3}, "poisoned_sources", "1..sources (2)"),
        ({"sources": 3, "poisoned_sources": 0}, "poisoned_sources", "1..sources (3)"),
        ({"poisoned_sources": 2}, "poisoned_sources", "1..sources (1)"),
    ],
)
@pytest.mark.parametrize("name", ["label_flip", "feature_noise", "none"])
def test_provenance_options_are_validated(name, params, field, message):
    with pytest.raises(ParamError) as exc:
        ATTACKS.get(name).from_params(params, "attacks[0]")
    assert exc.value.field == f"attacks[0].{field}"
    assert message in exc.value.message


def test_provenance_options_stay_out_of_the_params_of_attacks_without_provenance():
    """Without provenance the params (and so every existing cell id) are what they were."""
    assert LabelFlip().params() == {"mode": "random", "source": None, "target": None}
    with_sources = LabelFlip(sources=5, poisoned_sources=2)
    params = with_sources.params()
    assert params["sources"] == 5 and params["poisoned_sources"] == 2
    assert LabelFlip.from_params(params) == with_sources


def test_training_sets_carry_sources_through_steps():
    X, y = blobs(360)
    train = flipped(X[:300], y[:300], 0.2, 0, sources=5, poisoned_sources=1)
    ctx = DefenseContext(INFO, 300, X[300:], y[300:])
    out = apply("extra_clean", train, ctx, fraction=0.1).train
    out = apply("label_smoothing", out, ctx, epsilon=0.1).train
    out = apply("dp_sgd", out, ctx).train
    out = apply("oracle_filter", out, ctx).train
    kept = ~train.mask
    np.testing.assert_array_equal(out.source[: kept.sum()], train.source[kept])
    assert (out.source[kept.sum() :] == TRUSTED_SOURCE).all() and len(out) == kept.sum() + 30
    assert out.privacy == {
        "noise_multiplier": 1.0,
        "epsilon": None,
        "max_grad_norm": 1.0,
        "delta": 1e-5,
    }
    # A set built without sources has one source (0), and -1 for trusted rows.
    plain = TrainingSet(X[:3], y[:3], np.zeros(3, bool), K, trusted=np.array([0, 0, 1], bool))
    np.testing.assert_array_equal(plain.source, [0, 0, TRUSTED_SOURCE])


# --------------------------------------------------------------------------------------------
# Through the runner
# --------------------------------------------------------------------------------------------


def test_cells_count_the_rows_a_defense_read_and_stop_when_the_pool_runs_out():
    from bench.run.config import parse_config
    from bench.run.grid import expand
    from bench.run.runner import run_cell

    config = parse_config(
        {
            "name": "t",
            # iris: 75 train rows, 45 test, a pool of 30 rows
            "datasets": [{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
            "models": ["logreg"],
            "attacks": [
                {"name": "label_flip", "mode": "random", "sources": 3, "poisoned_sources": 1}
            ],
            "rates": [0.2],
            "defenses": [{"name": "trusted_filter", "budget": 0.2}],  # 15 pool rows
            "seeds": 1,
            "recovery": {"fractions": [0, 0.2, 0.25]},  # +15 rows fits, +19 does not
        }
    )
    cells = [
        c
        for c in expand(config)
        if c.spec["defense"][0]["name"] == "trusted_filter" and c.spec["rate"] > 0
    ]
    assert len(cells) == 1
    rows = run_cell(cells[0], config.recovery.fractions)["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok", "skipped"]
    assert rows[2]["skip_reason"] == "pool_exhausted"
    assert all(r["n_trusted_used"] == 15 for r in rows)
    assert rows[1]["n_fit"] == rows[0]["n_fit"] + 15
    assert rows[0]["n_sources"] == 3 and rows[0]["poisoned_sources"] == 1


# --------------------------------------------------------------------------------------------
# Step details as table columns, and the pool budget through the runner
# --------------------------------------------------------------------------------------------


def test_every_recorded_detail_is_a_step_column_of_the_schema():
    from bench.core.schema import COLUMN_BY_NAME

    declared = {name: DEFENSES.get(name).recorded for name in DEFENSES}
    assert declared["provenance"]["sources"] == "per_source"
    for name, recorded in declared.items():
        for key, column in recorded.items():
            assert column in COLUMN_BY_NAME, f"{name}.recorded[{key!r}]: {column} not in schema"
            assert COLUMN_BY_NAME[column].kind == "step", (name, column)


def test_step_details_combine_over_steps_as_the_schema_says():
    from bench.run.runner import record_details

    declared = DEFENSES.get("trusted_filter").recorded
    first = record_details(
        {"n_trusted_read": 0, "pool_short": 0},
        declared,
        {"pool_rows": 30, "pool_short": 0, "n_flagged": 12, "action": "remove", "n_gold": 3},
    )
    assert first == {"n_trusted_read": 30, "pool_short": 0, "n_flagged": 12}
    second = record_details(first, declared, {"pool_rows": 5, "pool_short": 25, "n_flagged": 4})
    assert second == {"n_trusted_read": 35, "pool_short": 25, "n_flagged": 16}  # counts add up
    # a non-additive column keeps the later step's value; NaN becomes null
    prov = DEFENSES.get("provenance").recorded
    a = record_details({}, prov, {"source_det_precision": 0.5, "sources": [{"id": 0}]})
    b = record_details(a, prov, {"source_det_precision": float("nan"), "sources": [{"id": 1}]})
    assert b == {"source_det_precision": None, "per_source": [{"id": 1}]}


def test_glc_and_dp_sgd_record_the_matrix_and_the_settings():
    from bench.run.runner import record_details

    X, y = blobs(600)
    train = flipped(X[:300], y[:300], 0.3, 0)
    ctx = DefenseContext(INFO, 300, X[300:], y[300:])
    glc = DEFENSES.get("glc")
    details = apply("glc", train, ctx, budget=0.1).details
    columns = record_details({}, glc.recorded, details)
    assert columns["glc_corruption"] == details["C"] and columns["n_trusted_read"] == 30
    dp = DEFENSES.get("dp_sgd")
    columns = record_details({}, dp.recorded, apply("dp_sgd", train, ctx, epsilon=3.0).details)
    assert columns == {"dp_max_grad_norm": 1.0, "dp_target_epsilon": 3.0}


def _iris_cells(defenses, attack=None, fractions=(0.0,), **extra):
    """Cells of a tiny iris config (75 train rows, 45 test, a pool of 30 rows)."""
    from bench.run.config import parse_config
    from bench.run.grid import expand

    config = parse_config(
        {
            "name": "t",
            "datasets": [{"name": "iris", "split": {"train": 0.5, "test": 0.3}}],
            "models": ["logreg"],
            "attacks": [attack or {"name": "label_flip", "mode": "random"}],
            "rates": [0.2],
            "defenses": defenses,
            "seeds": 1,
            "recovery": {"fractions": list(fractions)},
            **extra,
        }
    )
    return [c for c in expand(config) if c.spec["rate"] > 0], config.recovery.fractions


def test_provenance_runs_record_drops_and_detection_per_source():
    import json

    from bench.core.store import records_to_table
    from bench.run.runner import run_cell

    attack = {"name": "label_flip", "mode": "random", "sources": 3, "poisoned_sources": 1}
    cells, fractions = _iris_cells(["none", {"name": "provenance", "budget": 0.2}], attack)
    table = records_to_table([run_cell(c, fractions) for c in cells])
    row = table[table["defense"] == "provenance"].iloc[0]
    sources = json.loads(row["per_source"])  # nested detail: JSON text, like the others
    assert [s["id"] for s in sources] == [0, 1, 2]
    assert sum(s["n_rows"] for s in sources) == row["n_train"] == 75
    assert sum(s["n_poisoned"] for s in sources) == row["n_poisoned"] == 15
    dropped = [s for s in sources if s["dropped"]]
    hit = [s for s in dropped if s["n_poisoned"]]
    assert row["n_sources_dropped"] == len(dropped) >= 1
    assert row["poisoned_sources_dropped"] == len(hit)
    assert row["n_poisoned_sources"] == 1 == row["poisoned_sources"]
    assert row["source_det_precision"] == len(hit) / len(dropped)
    assert row["source_det_recall"] == len(hit) / row["n_poisoned_sources"]
    assert row["n_removed"] == sum(s["n_rows"] for s in dropped)  # row-level detection agrees
    assert row["n_trusted_read"] == row["n_trusted_used"] == 15 and row["pool_short"] == 0
    none = table[table["defense"] == "none"].iloc[0]
    assert none["n_trusted_read"] == 0 and pd.isna(none["per_source"])
    assert str(table["n_sources_dropped"].dtype) == "Int64"


def test_a_step_short_of_pool_rows_is_a_pool_exhausted_row_never_a_fit():
    from bench.run.runner import run_cell

    cells, fractions = _iris_cells(
        [
            {"name": "trusted_filter", "budget": 0.5},  # 38 rows wanted, the pool holds 30
            # 15 read, then 19 wanted with 15 left
            [{"name": "trusted_filter", "budget": 0.2}, {"name": "extra_clean", "fraction": 0.25}],
            {"name": "trusted_filter", "budget": 0.2},  # fits: 15 read, 15 left for f <= 0.2
        ],
        fractions=(0.0, 0.2, 0.25),
    )
    short, pipeline, fits = (run_cell(c, fractions)["rows"] for c in cells)
    assert [r["status"] for r in short] == ["skipped"] * 3
    assert all(r["skip_reason"] == "pool_exhausted" for r in short)
    assert short[0]["pool_short"] == 8 and short[0]["n_trusted_used"] == 30
    assert "step 1 (trusted_filter) got 30 of 38 pool rows" in short[0]["error"]
    assert "accuracy" not in short[0] and "n_fit" not in short[0]
    assert {r["skip_reason"] for r in pipeline} == {"pool_exhausted"}
    assert pipeline[0]["pool_short"] == 4 and pipeline[0]["n_trusted_read"] == 15
    assert "step 2 (extra_clean) got 15 of 19 pool rows" in pipeline[0]["error"]
    assert [r["status"] for r in fits] == ["ok", "ok", "skipped"]
    assert not fits[0]["defense_append_only"]
    assert fits[0]["pool_short"] == 0 and fits[2]["skip_reason"] == "pool_exhausted"
    for r in short + pipeline + fits:  # no fit ever counts more clean rows than the pool holds
        if r["status"] == "ok":
            assert r["n_trusted_used"] + r["n_extra"] <= r["n_pool"] == 30


def test_appending_b_rows_on_the_curve_is_the_same_fit_as_an_extra_clean_cell():
    """The report reads "append b" from the undefended curve at f = b: same rows, same seed."""
    from bench.run.runner import run_cell

    cells, _ = _iris_cells(["none", {"name": "extra_clean", "fraction": 0.2}])
    rows = {c.spec["defense"][0]["name"]: run_cell(c, [0.0, 0.2])["rows"] for c in cells}
    curve, extra = rows["none"][1], rows["extra_clean"][0]
    assert curve["n_extra"] == extra["n_trusted_used"] == 15
    assert curve["n_fit"] == extra["n_fit"]
    assert curve["defense_append_only"] and extra["defense_append_only"]  # both: the append curve
    for metric in ("accuracy", "log_loss", "confusion"):
        assert curve[metric] == extra[metric]
