"""Backdoors: the trigger lands exactly on the masked rows, the runner's triggered test metrics,
the first-pass model shared through the stage cache, representation-space defenses refused for
models without a representation, and backdoor ASR recovery against the clean model triggered."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from attacks import ATTACKS
from attacks.backdoor import Backdoor
from bench.analysis.recovery import estimate_recovery
from bench.core.schema import NO_ATTACK_ID, NO_DEFENSE_ID, ROW_REFERENCES, higher_is_better
from bench.core.types import DatasetInfo, ParamError, PoisonBenchError, exact_count
from bench.models import MODELS, check_representation_support
from bench.run.backdoor import triggered_test
from bench.run.config import ConfigError, parse_config
from bench.run.grid import expand
from bench.run.runner import StageCache, prepare_cell, run_cell

IMG = DatasetInfo("img", tuple(f"c{i}" for i in range(4)), n_features=64, image_shape=(1, 8, 8))
TAB = DatasetInfo("tab", tuple(f"c{i}" for i in range(3)), n_features=5)


def images(n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = (rng.random((n, 1, 8, 8)) * 0.5).astype(np.float32)  # max 0.5: a patch of 1 changes
    return X, np.arange(n, dtype=np.int64) % 4


def backdoor(info: DatasetInfo, **params) -> Backdoor:
    return ATTACKS.get("backdoor").from_params(params, "attack").bind(info, "attack")


@pytest.mark.parametrize(
    "params",
    [
        {"trigger": "patch", "value": 1.0, "target": 2},
        {"trigger": "patch", "value": 1.0, "position": [2, 3], "size": 2, "target": 1},
        {"trigger": "blend", "alpha": 0.3, "target": 0},
        {"trigger": "patch", "value": 1.0, "target": 3, "clean_label": True},
        {"trigger": "patch", "value": 1.0, "target": 0, "source": 1},
    ],
)
def test_trigger_lands_exactly_on_the_masked_rows(params):
    X, y = images()
    attack = backdoor(IMG, **params)
    rate = 0.25
    out = attack.poison(X, y, rate, np.random.default_rng(3))
    eligible = attack.eligible(y)
    assert out.n_poisoned == exact_count(rate, int(eligible.sum()))
    assert not out.mask[~eligible].any()
    # masked rows carry the trigger (computed independently of the poisoned arrays) ...
    np.testing.assert_array_equal(out.X[out.mask], attack.apply_trigger(X[out.mask], X))
    # ... and every other row is the clean one, label included
    np.testing.assert_array_equal(out.X[~out.mask], X[~out.mask])
    np.testing.assert_array_equal(out.y[~out.mask], y[~out.mask])
    if params.get("clean_label"):
        np.testing.assert_array_equal(out.y, y)
        assert (y[out.mask] == params["target"]).all()
    else:
        assert (out.y[out.mask] == params["target"]).all()
        assert (y[out.mask] != params["target"]).all()
    if params["trigger"] == "patch":
        k = params.get("size", 3)
        r, c = params.get("position", [8 - k, 8 - k])
        assert (out.X[out.mask][..., r : r + k, c : c + k] == 1.0).all()


def test_features_trigger_on_tables_sets_the_columns_to_the_quantile():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    y = np.arange(60, dtype=np.int64) % 3
    attack = backdoor(TAB, trigger="features", features=[1, 4], quantile=0.9, target=2)
    out = attack.poison(X, y, 0.5, np.random.default_rng(1))
    expected = np.quantile(X[:, [1, 4]].astype(np.float64), 0.9, axis=0).astype(np.float32)
    np.testing.assert_array_equal(out.X[out.mask][:, [1, 4]], np.tile(expected, (20, 1)))
    np.testing.assert_array_equal(out.X[out.mask][:, [0, 2, 3]], X[out.mask][:, [0, 2, 3]])
    assert out.n_poisoned == 20  # half of the 40 non-target rows


def test_blend_pattern_is_fixed_by_its_seed():
    X, _ = images()
    a, b = backdoor(IMG, trigger="blend"), backdoor(IMG, trigger="blend", pattern_seed=1)
    np.testing.assert_array_equal(a.pattern(X), backdoor(IMG, trigger="blend").pattern(X))
    assert not np.array_equal(a.pattern(X), b.pattern(X))


@pytest.mark.parametrize(
    ("info", "params", "field", "words"),
    [
        (TAB, {"trigger": "patch"}, "attack.trigger", "tabular"),
        (IMG, {"size": 9}, "attack.size", "does not fit"),
        (IMG, {"position": [6, 0]}, "attack.position", "row <= 5"),
        (TAB, {"trigger": "features", "features": [5]}, "attack.features", "0..4"),
        (TAB, {"trigger": "features"}, "attack.features", "required"),
        (IMG, {"target": 7}, "attack.target", "0..3"),
        (IMG, {"clean_label": True, "source": 1}, "attack.source", "clean_label"),
        (IMG, {"alpha": 0}, "attack.alpha", "(0, 1]"),
        (IMG, {"trigger": "blend", "position": [0, 0]}, "attack.position", "patch"),
    ],
)
def test_a_trigger_that_does_not_fit_names_the_field(info, params, field, words):
    with pytest.raises(ParamError) as err:
        backdoor(info, **params)
    assert err.value.field == field
    assert words in err.value.message


# ---------------------------------------------------------------------------------------------
# The runner: triggered test metrics, the clean model's ASR, the shared first-pass fit
# ---------------------------------------------------------------------------------------------

DIGITS = {
    "name": "bd",
    "datasets": [{"name": "digits", "split": {"train": 400, "test": 300}}],
    "models": [{"name": "mlp", "hidden": [32], "max_iter": 150}],
    "attacks": [
        {
            "name": "backdoor",
            "trigger": "features",
            "features": [0, 7, 56, 63],
            "value": 16,
            "target": 0,
        },
    ],
    "rates": [0.1],
    "defenses": ["none", "spectral_signature"],
    "seeds": 1,
    "recovery": {"fractions": [0]},
}


def cells_of(raw: dict) -> list:
    return expand(parse_config(raw)).cells


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_runner_records_backdoor_metrics_on_triggered_test_rows_only():
    none_cell = next(
        c
        for c in cells_of(DIGITS)
        if c.spec["defense"][0]["name"] == "none" and c.spec["attack"]["name"] == "backdoor"
    )
    cache = StageCache()
    p = prepare_cell(none_cell, None, cache)
    clean_train = p.X_train.copy()
    # The training set carries the trigger on the masked rows only.
    np.testing.assert_array_equal(p.poisoned.X[~p.poisoned.mask], clean_train[~p.poisoned.mask])
    assert (p.poisoned.X[p.poisoned.mask][:, [0, 7, 56, 63]] == 16).all()
    X_trig, y_trig = triggered_test(p.attack, p.X_test, p.y_test, p.X_train)
    np.testing.assert_array_equal(p.X_train, clean_train)  # the test trigger touches no train row
    assert len(y_trig) == int((p.y_test != 0).sum()) and (y_trig != 0).all()
    record = run_cell(none_cell, [0.0], None, cache)
    row = record["rows"][0]
    assert row["status"] == "ok", row.get("error")
    model = cache.get(
        [
            "first-pass",
            *[none_cell.spec[k] for k in ("dataset", "attack", "rate")],
            none_cell.seed,
            none_cell.spec["model"],
        ],
        lambda: None,
    )[0]
    pred = model.predict_proba(X_trig).argmax(axis=1)
    assert row["backdoor_asr"] == pytest.approx(float((pred == 0).mean()))
    assert row["backdoor_robust_acc"] == pytest.approx(float((pred == y_trig).mean()))
    assert row["backdoor_asr"] > 0.8  # 4 saturated corner pixels: the MLP learns the trigger
    assert row["backdoor_asr_clean"] < 0.2  # the clean model ignores the corners


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_first_pass_model_is_fit_once_for_the_undefended_cell_and_the_defense(monkeypatch):
    from bench.models.sklearn_models import MLPAdapter

    fits = []
    original = MLPAdapter.fit

    def counting(self, X, targets, sample_weight=None):
        fits.append(len(X))
        return original(self, X, targets, sample_weight)

    monkeypatch.setattr(MLPAdapter, "fit", counting)
    cells = cells_of(DIGITS)
    cache = StageCache()
    # the defense first: its first-pass fit must serve the undefended cell afterwards
    cells = [c for c in cells if c.spec["attack"]["name"] == "backdoor"]
    order = sorted(cells, key=lambda c: c.spec["defense"][0]["name"] == "none")
    records = [run_cell(c, [0.0], None, cache) for c in order]
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    removed = records[0]["rows"][0]["n_removed"]
    # fits: the first pass (400 rows), the defended fit (400 - removed) and the clean model
    # (400 rows, for backdoor_asr_clean); no second fit of the first pass
    assert sorted(fits) == sorted([400, 400 - removed, 400])


def test_a_representation_defense_is_refused_for_a_model_without_one():
    raw = {**DIGITS, "models": ["logreg"]}
    with pytest.raises(ConfigError) as err:
        cells_of(raw)
    text = str(err.value)
    assert "spectral_signature" in text and "representation" in text
    for name in ("mlp", "cnn", "torch-mlp"):
        assert name in text
    spec = MODELS.get("logreg").from_params({})
    with pytest.raises(PoisonBenchError, match=r"logreg.*no learned representation.*mlp"):
        check_representation_support(spec, "activation_clustering")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlp_features_are_its_hidden_layer():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X[:200].astype(np.float32)
    info = DatasetInfo("digits", tuple(str(i) for i in range(10)), n_features=64)
    model = MODELS.get("mlp").from_params({"hidden": [20, 12], "max_iter": 50}).build(info, 0)
    model.fit(X, y[:200])
    rep = model.features(X)
    assert rep.shape == (200, 12) and (rep >= 0).all()
    # the output layer applied to the representation gives the model's own probabilities
    mlp = model.estimator[-1]
    logits = rep @ mlp.coefs_[-1] + mlp.intercepts_[-1]
    np.testing.assert_array_equal(logits.argmax(axis=1), model.predict_proba(X).argmax(axis=1))


# ---------------------------------------------------------------------------------------------
# Recovery of backdoor_asr: against the clean model triggered (recorded in each row)
# ---------------------------------------------------------------------------------------------


def test_backdoor_asr_recovers_against_the_clean_model_triggered():
    assert not higher_is_better("backdoor_asr")
    assert ROW_REFERENCES["backdoor_asr"] == "backdoor_asr_clean"
    rows = []
    base = {
        "dataset_id": "d",
        "model_id": "m",
        "dataset_label": "d",
        "model_label": "m",
        "status": "ok",
        "n_train": 100,
    }
    curve = {0.0: 0.9, 1.0: 0.5, 2.0: 0.1}  # the backdoor dilutes with extra clean data
    for seed in range(3):
        for f, asr in curve.items():
            rows.append(
                {
                    **base,
                    "attack_id": "bd",
                    "attack_label": "bd",
                    "attack": "backdoor",
                    "rate": 0.1,
                    "defense_id": NO_DEFENSE_ID,
                    "defense_label": "none",
                    "defense": "none",
                    "seed": seed,
                    "extra_fraction": f,
                    "backdoor_asr": asr + 0.01 * seed,
                    "backdoor_asr_clean": 0.1 + 0.01 * seed,
                }
            )
        rows.append(
            {
                **base,
                "attack_id": NO_ATTACK_ID,
                "attack_label": "none",
                "attack": "none",
                "rate": 0.0,
                "defense_id": NO_DEFENSE_ID,
                "defense_label": "none",
                "defense": "none",
                "seed": seed,
                "extra_fraction": 0.0,
                "backdoor_asr": math.nan,
            }
        )
    out = estimate_recovery(pd.DataFrame(rows), "backdoor_asr", tolerance=0.05, n_boot=0)
    bd = out[out["attack_id"] == "bd"].iloc[0]
    assert bd["reference"] == pytest.approx(0.11)
    assert bd["n_seeds"] == 3
    # back within 0.05 of the reference where the curve 0.5 → 0.1 crosses 0.15: f = 1.875
    assert bd["f_needed"] == pytest.approx(1.0 + (0.5 - 0.15) / 0.4)


# ---------------------------------------------------------------------------------------------
# Representation-space filters on a designed representation
# ---------------------------------------------------------------------------------------------


def designed_representation(seed: int = 0, n_classes: int = 2, poison: int = 20):
    """``n_classes`` classes of 200 rows N(8·e_{c+1}, I) in 20 dimensions (separated, as a
    trained model's representation separates its classes), plus ``poison`` rows of class 0
    around 6·e1 + 8·e2 (a second population of the target class). The "representation" is
    the rows themselves."""
    from bench.core.types import TrainingSet

    rng = np.random.default_rng(seed)
    parts, labels = [], []
    for c in range(n_classes):
        rows = rng.normal(size=(200, 20))
        rows[:, c + 1] += 8.0
        parts.append(rows)
        labels.append(np.full(200, c))
    bad = rng.normal(size=(poison, 20)) * 0.5
    bad[:, 0] += 6.0
    bad[:, 1] += 8.0
    X = np.concatenate([*parts, bad]).astype(np.float32)
    y = np.concatenate([*labels, np.zeros(poison, dtype=int)]).astype(np.int64)
    mask = np.zeros(len(y), dtype=bool)
    mask[len(y) - poison :] = True
    return TrainingSet(X=X, y=y, mask=mask, n_classes=n_classes)


def identity_context(train):
    from bench.core.types import DefenseContext

    return DefenseContext(
        info=TAB, n_train=len(train), pool_X=train.X[:0], pool_y=train.y[:0],
        features=lambda X: np.asarray(X, dtype=np.float64),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "params", "removed_per_class"),
    [
        # auto ε: the poisoned mode's weight in class 0 (×1.5), nothing of the Gaussian class 1
        ("spectral_signature", {}, (30, 0)),
        # the paper's fixed ε: 1.5 × ε of every class, by squared projection
        ("spectral_signature", {"epsilon": 0.1}, (33, 30)),
        # PCA keeps the poison's direction; 2-means isolates it (relative size 20/220)
        ("activation_clustering", {"reduce": "pca"}, (20, 0)),
        # the paper's fixed rule: the smaller cluster, relative size 20/220 <= 0.35
        ("activation_clustering", {"reduce": "pca", "size_threshold": 0.35}, (20, 0)),
    ],
)
def test_representation_filters_find_a_separate_population(name, params, removed_per_class):
    from defenses import DEFENSES

    train = designed_representation()
    defense = DEFENSES.get(name).from_params(params)
    removed = defense.apply(train, identity_context(train), np.random.default_rng(0)).removed
    assert removed[train.mask].all()  # every poisoned row is found
    got = (int(removed[train.y == 0].sum()), int(removed[train.y == 1].sum()))
    # within 3 rows of the expected counts (the mixture's weight is an estimate)
    assert all(abs(g - e) <= 3 for g, e in zip(got, removed_per_class, strict=True)), got


@pytest.mark.parametrize("name", ["spectral_signature", "activation_clustering"])
def test_representation_filters_flag_only_the_unusual_class(name):
    """Ten classes, one with a second population: the cross-class rule flags that class only,
    and the details record the rule, the share removed and the flagged class."""
    from defenses import DEFENSES

    train = designed_representation(n_classes=10)
    result = (
        DEFENSES.get(name)
        .from_params({})
        .apply(train, identity_context(train), np.random.default_rng(0))
    )
    assert result.removed[train.mask].all()
    assert not result.removed[train.y != 0].any()
    assert list(result.details["classes_flagged"]) == ["0"]
    assert result.details["contamination_used"] == pytest.approx(result.removed.mean())
    assert result.details["threshold_rule"].startswith("auto")


@pytest.mark.parametrize("name", ["spectral_signature", "activation_clustering"])
def test_representation_filters_tell_no_poison_here(name):
    """Clean classes, each a single Gaussian mode: nothing flagged, nothing removed."""
    from defenses import DEFENSES

    train = designed_representation(n_classes=10, poison=0)
    result = (
        DEFENSES.get(name)
        .from_params({})
        .apply(train, identity_context(train), np.random.default_rng(0))
    )
    assert result.removed.sum() == 0
    assert result.details["classes_flagged"] == {}
    assert result.details["contamination_used"] == 0


def test_spectral_per_class_test_alone_flags_clean_classes():
    """Without the cross-class comparison (outlier_z: null) the per-class test is looser: at
    separation 0.5 every single-mode class is 'two populations' and loses rows."""
    from defenses import DEFENSES

    train = designed_representation(n_classes=10, poison=0)
    loose = DEFENSES.get("spectral_signature").from_params({"outlier_z": None, "separation": 0.5})
    result = loose.apply(train, identity_context(train), np.random.default_rng(0))
    assert len(result.details["classes_flagged"]) >= 5


def test_robust_z_leaves_the_value_out():
    from defenses.representation import robust_z

    values = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 5.0])
    z = robust_z(values)
    others = values[:-1]
    mad = np.median(np.abs(others - np.median(others)))
    assert z[-1] == pytest.approx(0.6745 * (5.0 - np.median(others)) / mad)
    assert (np.abs(z[:-1]) < 3.5).all()
    assert np.isinf(robust_z(np.array([1.0, 2.0, 3.0]))).all()  # < 3 others: no reference


def test_activation_clustering_with_ica_misses_a_one_axis_population():
    """ICA whitens every component to unit variance, so the poison's one high-variance
    direction no longer dominates the 2-means split (measured; PCA finds it, above)."""
    from defenses import DEFENSES

    train = designed_representation()
    defense = DEFENSES.get("activation_clustering").from_params({"reduce": "ica"})
    removed = defense.apply(train, identity_context(train), np.random.default_rng(0)).removed
    assert removed[train.mask].mean() < 0.5


def test_representation_filters_need_the_runner_representation():
    from bench.core.types import DefenseContext
    from defenses import DEFENSES

    train = designed_representation()
    ctx = DefenseContext(info=TAB, n_train=len(train), pool_X=train.X[:0], pool_y=train.y[:0])
    with pytest.raises(PoisonBenchError, match="first-pass"):
        DEFENSES.get("spectral_signature").from_params({}).apply(
            train, ctx, np.random.default_rng(0)
        )


@pytest.fixture(scope="module")
def torch():
    """torch, with one tiny fit done before the per-test state guard looks: the process's
    first torch fit sets TORCHINDUCTOR_CACHE_DIR in the environment, for good."""
    from conftest import require

    from bench.run.testing import tiny_dataset

    module = require("torch")
    info, X, y = tiny_dataset("tabular")
    MODELS.get("torch-mlp").from_params({"epochs": 1}).build(info, 0).fit(X, y)
    return module


@pytest.mark.torch
@pytest.mark.parametrize(("name", "params", "width"), [
    ("cnn", {"epochs": 1}, 84),
    ("torch-mlp", {"epochs": 2, "hidden": [16, 8]}, 8),
])  # fmt: skip
def test_torch_features_are_the_input_of_the_last_linear_layer(torch, name, params, width):
    from bench.run.testing import tiny_dataset

    info, X, y = tiny_dataset("image")
    model = MODELS.get(name).from_params(params).bind(info).build(info, 0)
    model.fit(X, y)
    rep = model.features(X)
    assert rep.shape == (len(X), width) and (rep >= 0).all()  # after the last hidden ReLU
    head = [m for m in model.net_.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        logits = head(torch.from_numpy(rep.astype(np.float32))).numpy()
    np.testing.assert_array_equal(logits.argmax(axis=1), model.predict_proba(X).argmax(axis=1))
