"""Certified defenses (issue 27): the DPA certificate by brute force, the pinned partition hash,
bagging's bound by simulation, the report's curve against an independent computation, and one
tiny run through the runner."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.analysis.certified import certified_curves, certified_points, certified_section
from bench.core.certificates import certified_changes, certified_metrics, radius_grid
from bench.core.types import DatasetInfo, DefenseContext, ParamError, TrainingSet
from bench.models.ensemble import EnsembleClassifier
from defenses import DEFENSES
from defenses.certified import (
    BaggingPlan,
    DPAPlan,
    bagging_radius,
    clopper_pearson_lower,
    dpa_radius,
    partition_of,
    row_hashes,
)

K = 3
INFO = DatasetInfo("tiny", ("a", "b", "c"), n_features=2)


# --------------------------------------------------------------------------------------------
# A base model whose vote one row can always turn: 1-nearest neighbour
# --------------------------------------------------------------------------------------------


class _NearestNeighbour:
    def fit(self, X, targets, sample_weight=None):
        self.X, self.y = np.asarray(X, np.float64), np.asarray(targets, np.int64)
        return self

    def predict_proba(self, X):
        d = ((np.asarray(X, np.float64)[:, None, :] - self.X[None, :, :]) ** 2).sum(axis=2)
        out = np.zeros((len(X), K))
        out[np.arange(len(X)), self.y[d.argmin(axis=1)]] = 1.0
        return out


@dataclass(frozen=True)
class _NNSpec:
    def build(self, info, seed):
        return _NearestNeighbour()


def _dpa_predict(X, y, k, x):
    model = EnsembleClassifier(_NNSpec(), INFO, 0, DPAPlan(k)).fit(X, y)
    pred, radius = model.certify(x[None, :])
    return int(pred[0]), int(radius[0]), model


def _attacked(X, y, changes):
    """The training set after ``changes``: (row, None) removes the row, (row, c) relabels it."""
    y = y.copy()
    keep = np.ones(len(y), dtype=bool)
    for row, label in changes:
        if label is None:
            keep[row] = False
        else:
            y[row] = label
    return X[keep], y[keep]


def _check_certificate(X, y, k, x) -> int:
    """Brute force for one test row ``x``; returns its radius r.

    Every way of removing or relabelling (to any class) up to r rows of the partitions that
    vote for the prediction keeps it; relabelling the nearest row of r + 1 such partitions to
    the runner-up changes it (1-NN members: one row decides a partition's vote, so the bound
    is tight)."""
    pred, r, model = _dpa_predict(X, y, k, x)
    part = partition_of(X, k)
    voters = [
        j for j, m in enumerate(model.members_)
        if m is not None and m.predict_proba(x[None, :]).argmax() == pred
    ]  # fmt: skip
    candidates = np.flatnonzero(np.isin(part, voters))
    actions = [None, *range(K)]
    for size in range(1, r + 1):
        for rows in itertools.combinations(candidates, size):
            for labels in itertools.product(actions, repeat=size):
                changes = list(zip(rows, labels, strict=True))
                assert _dpa_predict(*_attacked(X, y, changes), k, x)[0] == pred, (
                    f"radius {r} but {changes} changed the prediction {pred}"
                )
    # r + 1: flip the vote of r + 1 voting partitions to the class closest to winning
    votes = model.votes(x[None, :])[0]
    rival = votes + (np.arange(K) < pred)
    rival[pred] = -1
    runner_up = int(rival.argmax())
    assert len(voters) >= r + 1
    changes = []
    for j in voters[: r + 1]:
        rows = np.flatnonzero(part == j)
        nearest = rows[((X[rows] - x) ** 2).sum(axis=1).argmin()]
        changes.append((int(nearest), runner_up))
    assert _dpa_predict(*_attacked(X, y, changes), k, x)[0] != pred, (
        f"radius {r} is not tight: {changes} left the prediction {pred}"
    )
    return r


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 8), k=st.integers(2, 5))
def test_dpa_certificate_holds_by_brute_force_and_is_tight(seed, n, k):
    """The certificate on random tiny sets (3 classes, 3-8 rows, 2-5 partitions)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)).astype(np.float32)
    y = rng.integers(0, K, size=n).astype(np.int64)
    for x in rng.normal(size=(2, 2)).astype(np.float32):
        _check_certificate(X, y, k, x)


def test_dpa_certificate_by_brute_force_at_radius_two():
    """A set where the radius is 2 (every partition votes 0), so the search goes two deep."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(8, 2)).astype(np.float32)
    y = np.zeros(8, np.int64)
    assert len(set(partition_of(X, 5).tolist())) >= 4  # 4+ voters: radius >= 2
    assert _check_certificate(X, y, 5, np.zeros(2, np.float32)) == 2


def test_dpa_radius_tie_break():
    """Ties go to the smaller class, which therefore needs one change less (Levine & Feizi)."""
    votes = np.array([[5, 5, 0], [4, 6, 0], [6, 4, 0], [7, 0, 0], [0, 0, 0]])
    # [5,5]: class 0 wins the tie and one change breaks it; [4,6]: 1 wins, gap 6−4−1 = 1 → 0;
    # [6,4]: gap 2 → 1; [7,0,0]: gap 7 → 3; no votes: class 0, radius 0
    np.testing.assert_array_equal(dpa_radius(votes), [0, 0, 1, 3, 0])


# --------------------------------------------------------------------------------------------
# The partition hash
# --------------------------------------------------------------------------------------------

GOLDEN_X = (np.arange(24, dtype=np.float32).reshape(6, 4) / 7).astype(np.float32)
#: pinned: changing the hash moves every row's partition and every certificate with it
GOLDEN_HASHES = [
    0x577B224F2B6C069B,
    0x306F225EC9A7A7D8,
    0x918277AB637E275F,
    0x3B1F0F4C88225CBE,
    0x3D76F7C2B387C62E,
    0xFEB4A53CF8BA68D0,
]


def test_partition_hash_is_pinned_and_depends_on_content_only():
    hashes = row_hashes(GOLDEN_X)
    assert [int(h) for h in hashes] == GOLDEN_HASHES
    # what the docstring promises: BLAKE2b-64 of the row's float32 little-endian bytes
    first = hashlib.blake2b(GOLDEN_X[0].astype("<f4").tobytes(), digest_size=8).digest()
    assert int.from_bytes(first, "little") == GOLDEN_HASHES[0]
    np.testing.assert_array_equal(partition_of(GOLDEN_X, 10), [h % 10 for h in GOLDEN_HASHES])
    order = np.array([3, 5, 0, 1, 4, 2])
    np.testing.assert_array_equal(
        partition_of(GOLDEN_X[order], 10), partition_of(GOLDEN_X, 10)[order]
    )
    # images hash by their float32 bytes too: a (c, h, w) row equals its flattened form
    np.testing.assert_array_equal(row_hashes(GOLDEN_X.reshape(6, 1, 2, 2)), hashes)
    # the defense step's plan is the same whatever the seed of its generator
    train = TrainingSet(GOLDEN_X, np.zeros(6, np.int64), np.zeros(6, bool), n_classes=K)
    ctx = DefenseContext(INFO, 6, np.empty((0, 4), np.float32), np.empty(0, np.int64))
    dpa = DEFENSES.get("dpa").from_params({"partitions": 10})
    plans = [dpa.apply(train, ctx, np.random.default_rng(s)).train.ensemble for s in (0, 1, 99)]
    members = [[m.tolist() for m in p.members(GOLDEN_X)] for p in plans]
    assert members[0] == members[1] == members[2]


# --------------------------------------------------------------------------------------------
# Bagging
# --------------------------------------------------------------------------------------------


def _true_radius(p_top: float, n: int, s: int) -> int:
    """Jia et al.'s radius with the exact vote probabilities (two classes: p_B = 1 − p_A)."""
    r = np.arange(n + 1)
    with np.errstate(divide="ignore"):
        needed = 2.0 * (1 - np.exp(s * np.log1p(-r / n)))
    return int(np.sum(needed < 2 * p_top - 1)) - 1


@pytest.mark.parametrize("p_top", [0.55, 0.7, 0.86])
def test_bagging_bound_fails_at_most_alpha_in_simulation(p_top):
    """With a known vote distribution, the share of test rows whose certificate is wrong (a
    radius above the one of the exact probabilities, or the wrong class certified) is at most
    alpha: Jia et al.'s guarantee is per row, over the draw of the votes. The plug-in radius (no
    confidence bound) fails far more often, so the check can fail.

    Conditioned on being certified the share can exceed alpha where certification is rare
    (p_top = 0.55: 122 of the 946 certified rows, 13 %; issue 27 asked for this conditional
    rate, which the theorem does not bound); it is asserted only where most rows certify."""
    n, s, models, alpha, trials = 1000, 20, 100, 0.05, 4000
    rng = np.random.default_rng(7)
    top = rng.binomial(models, p_top, size=trials)
    votes = np.stack([top, models - top], axis=1)
    truth = _true_radius(p_top, n, s)
    radius = bagging_radius(votes, n, s, alpha)
    # the prediction is class 0 where it leads; a certified wrong class is a failure too
    certified = radius >= 0
    wrong_class = votes[:, 1] > votes[:, 0]
    failed = certified & (wrong_class | (radius > truth))
    assert failed.mean() <= alpha
    if certified.mean() > 0.5:
        assert failed.sum() / certified.sum() <= alpha
    naive = np.array([_true_radius(t / models, n, s) for t in top])
    assert np.mean(naive > truth) > alpha


def test_clopper_pearson_matches_scipy_binomtest():
    from scipy.stats import binomtest

    for k in (1, 37, 99, 100):
        exact = binomtest(k, 100).proportion_ci(confidence_level=0.9, method="exact").low
        assert clopper_pearson_lower(np.array([k]), 100, 0.05)[0] == pytest.approx(exact)


def test_bagging_members_are_subsamples_of_s_rows_fixed_by_the_plan_seed():
    X = np.zeros((200, 2), np.float32)
    plan = BaggingPlan(models=5, sample=0.1, alpha=0.01, seed=3)
    a, b = plan.members(X), plan.members(X)
    assert [len(m) for m in a] == [20] * 5
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not np.array_equal(a[0], BaggingPlan(5, 0.1, 0.01, 4).members(X)[0])
    assert [len(m) for m in BaggingPlan(2, 7, 0.01, 3).members(X)] == [7, 7]


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("dpa", {"partitions": 1}, "partitions"),
        ("bagging", {"models": 0}, "models"),
        ("bagging", {"sample": 2.5}, "sample"),
        ("bagging", {"sample": 0}, "sample"),
        ("bagging", {"alpha": 1}, "alpha"),
    ],
)
def test_bad_parameters_name_the_field(name, params, field):
    with pytest.raises(ParamError) as err:
        DEFENSES.get(name).from_params(params)
    assert err.value.field == field


# --------------------------------------------------------------------------------------------
# Certificates in the table and the report
# --------------------------------------------------------------------------------------------


def test_certified_metrics_columns():
    y = np.array([0, 1, 2, 0])
    pred = np.array([0, 1, 1, 0])
    out = certified_metrics(y, pred, np.array([3, 0, 7, 12]), "rows")
    assert out["certified_radii"] == [3, 0, -1, 12]
    assert out["certified_accuracy"] == {"0": 0.75, "1": 0.5, "2": 0.5, "5": 0.25, "10": 0.25,
                                         "20": 0.0}  # fmt: skip
    assert out["certified_radius_median"] == 3.0
    assert radius_grid(0) == [0, 1] and radius_grid(100)[-3:] == [50, 100, 200]


def _table(rng):
    """A results table of two certified defenses and the plain model, 3 seeds, one attack."""
    rows = []
    for defense in ("none", "dpa_a", "dpa_b"):
        for seed in range(3):
            for rate, attack in ((0.0, "none"), (0.1, "flip")):
                radii = rng.integers(-1, 40, size=50) if defense != "none" else None
                rows.append(
                    {
                        "dataset_id": "d", "model_id": "m", "seed": seed, "rate": rate,
                        "defense_id": '[{"name":"none","params":{}}]' if defense == "none"
                        else defense,
                        "attack_id": '{"name":"none","params":{}}' if attack == "none" else attack,
                        "dataset_label": "d", "model_label": "m", "defense_label": defense,
                        "attack_label": attack, "status": "ok", "extra_fraction": 0.0,
                        "n_poisoned": 0 if rate == 0 else int(rng.integers(1, 30)),
                        "accuracy": float(rng.uniform(0.6, 1.0)),
                        "certified_radii": None if radii is None else json.dumps(radii.tolist()),
                        "certified_radius_median": np.nan if radii is None
                        else float(np.median(radii[radii >= 0])),
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_report_curve_equals_an_independent_computation_from_the_radii():
    table = _table(np.random.default_rng(0))
    curves = certified_curves(table)
    clean = table[(table["rate"] == 0) & table["certified_radii"].notna()]
    for defense, g in clean.groupby("defense_id"):
        radii = [np.array(json.loads(v)) for v in g["certified_radii"]]
        mine = curves[curves["defense_id"] == defense].set_index("radius")["certified_accuracy"]
        assert list(mine.index) == radius_grid(max(r.max() for r in radii))
        for r, value in mine.items():
            expected = pd.Series([(x >= r).mean() for x in radii]).mean()
            assert value == pytest.approx(expected)
    points = certified_points(table).set_index("defense_id")
    attacked = table[(table["rate"] > 0) & table["certified_radii"].notna()]
    for defense, g in attacked.groupby("defense_id"):
        floors = [
            (np.array(json.loads(clean[(clean["defense_id"] == defense)
                                       & (clean["seed"] == row.seed)]["certified_radii"].iloc[0]))
             >= row.n_poisoned).mean()
            for row in g.itertuples()
        ]  # fmt: skip
        assert points.loc[defense, "certified"] == pytest.approx(np.mean(floors))
        assert points.loc[defense, "accuracy"] == pytest.approx(g["accuracy"].mean())
    section = certified_section(table)
    (curve,) = [t for t in section.subsections[0].tables if t.title.startswith("Certified")]
    row = curve.frame.set_index("defense").loc["dpa_a"]
    value = curves[(curves["defense_id"] == "dpa_a") & (curves["radius"] == 10)]
    assert row["r=10"] == pytest.approx(round(float(value["certified_accuracy"].iloc[0]), 3))


def test_a_run_records_certificates_the_ensemble_recomputes(tmp_path):
    """Through the runner: a dpa cell's row carries per-test-row radii equal to a direct DPA
    computation with the cell's own split, and the plain cell carries none."""
    from bench.run.config import load_config
    from bench.run.grid import expand
    from bench.run.runner import fit_model, prepare_cell, run_cell

    config = tmp_path / "c.yaml"
    config.write_text(
        "name: c\ndatasets:\n  - name: digits\n    split: {train: 120, test: 40}\n"
        "models: [{name: logreg, max_iter: 200}]\nattacks: [{name: label_flip, mode: random}]\n"
        "rates: [0.1]\ndefenses: [none, {name: dpa, partitions: 6}]\nseeds: 1\n"
        "recovery: {fractions: [0]}\n"
    )
    cells = [c for c in expand(load_config(config)).cells if c.spec["rate"] > 0]
    rows = {c.spec["defense"][0]["name"]: run_cell(c)["rows"][0] for c in cells}
    assert rows["none"].get("certified_radii") is None
    row = rows["dpa"]
    assert row["status"] == "ok", row.get("error")
    (cell,) = [c for c in cells if c.spec["defense"][0]["name"] == "dpa"]
    prepared = prepare_cell(cell)
    model = fit_model(cell, prepared, prepared.train)
    votes = model.votes(prepared.X_test)
    right = votes.argmax(axis=1) == prepared.y_test
    assert row["certified_radii"] == np.where(right, dpa_radius(votes), -1).tolist()
    assert row["accuracy"] == pytest.approx(right.mean())
    assert row["certified_accuracy"]["0"] == pytest.approx(right.mean())
    assert row["certified_changes"] == row["n_poisoned"] > 0  # label flips: one change a row


def test_certified_changes_count_a_moved_row_by_the_plans_cost():
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    Xp = X.copy()
    Xp[1, 0] += 1  # features changed (moves DPA partition)
    mask = np.array([True, True, False, False])  # row 0 relabelled, row 1 moved
    assert certified_changes(X, Xp, mask, DPAPlan.feature_change_cost) == 3
    assert certified_changes(X, Xp, mask, BaggingPlan.feature_change_cost) == 2
    assert certified_changes(X, Xp[:3], mask, 2) is None


def test_dpa_ensemble_is_the_same_under_reordering_of_the_rows():
    """The partitions follow the rows' content, so shuffling the training set trains the same
    members (an order-insensitive base model) and gives the same votes and radii."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 2)).astype(np.float32)
    y = rng.integers(0, K, size=60).astype(np.int64)
    test = rng.normal(size=(20, 2)).astype(np.float32)
    order = rng.permutation(60)
    a = EnsembleClassifier(_NNSpec(), INFO, 0, DPAPlan(7)).fit(X, y)
    b = EnsembleClassifier(_NNSpec(), INFO, 1, DPAPlan(7)).fit(X[order], y[order])
    np.testing.assert_array_equal(a.votes(test), b.votes(test))
    for u, v in zip(a.certify(test), b.certify(test), strict=True):
        np.testing.assert_array_equal(u, v)
