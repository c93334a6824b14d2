"""Models by import path (``bench/models/by_path.py``): ``sklearn`` (a classifier class) and
``torch`` (a network factory), validated at config load and run through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.core.types import DatasetInfo, ParamError, TrainingSet
from bench.interfaces.cli import main
from bench.models import MODELS
from bench.models.by_path import SampleWeightError, resolve_import
from bench.run.config import ConfigError, parse_config
from bench.run.grid import expand

ROOT = Path(__file__).resolve().parents[1]
INFO = DatasetInfo("toy", ("a", "b", "c"), n_features=4)


def config(*models, defenses=("none",), seeds=1) -> dict:
    return {
        "name": "imported",
        "datasets": [{"name": "iris", "split": {"train": 60, "test": 45}}],
        "models": list(models),
        "attacks": [{"name": "label_flip", "mode": "random"}],
        "rates": [0, 0.2],
        "defenses": list(defenses),
        "seeds": seeds,
        "recovery": {"fractions": [0]},
    }


def knn(**params) -> dict:
    """A config entry for k-NN by import path."""
    return {"name": "sklearn", **knn_params(**params)}


def knn_params(**params) -> dict:
    """k-NN's plug-in parameters (what ``from_params`` takes)."""
    return {"estimator": "sklearn.neighbors.KNeighborsClassifier", "params": params}


def run_cli(tmp_path: Path, raw: dict, name: str, capsys) -> tuple[int, pd.DataFrame | None, str]:
    import yaml

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / name
    capsys.readouterr()
    code = main(["run", str(path), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    table = pd.read_parquet(out / "results.parquet") if code == 0 else None
    return code, table, err


# ---------------------------------------------------------------------------------------------
# Import paths
# ---------------------------------------------------------------------------------------------


def test_resolve_import_forms():
    from sklearn.neighbors import KNeighborsClassifier

    assert resolve_import("sklearn.neighbors.KNeighborsClassifier", "f") is KNeighborsClassifier
    assert resolve_import("sklearn.neighbors:KNeighborsClassifier", "f") is KNeighborsClassifier
    assert resolve_import("sklearn:neighbors.KNeighborsClassifier", "f") is KNeighborsClassifier
    from tests.plugin_nets import make_net

    assert resolve_import("tests.plugin_nets:make_net", "f") is make_net


@pytest.mark.parametrize(
    ("path", "piece"),
    [
        ("nosuchpkg.Thing", "no module named 'nosuchpkg'"),
        ("sklearn.neighbors.NoSuchClassifier", "'sklearn.neighbors' has no attribute"),
        ("sklearn.nosuchmodule.Thing", "'sklearn' has no attribute 'nosuchmodule'"),
        ("tests.plugin_broken.Thing", "importing 'tests.plugin_broken' failed"),
        ("Thing", "not an import path"),
        ("sklearn.neighbors:", "not an import path"),
        ("", "expected an import path"),
    ],
)
def test_resolve_import_errors_name_the_field(path, piece):
    with pytest.raises(ParamError) as err:
        resolve_import(path, "models[0].estimator")
    assert err.value.field == "models[0].estimator"
    assert piece in err.value.message


# ---------------------------------------------------------------------------------------------
# sklearn: validation at config load
# ---------------------------------------------------------------------------------------------

SKLEARN_ERRORS = [
    ({"name": "sklearn"}, "models[0].estimator", "required"),
    ({"name": "sklearn", "estimator": "nosuchpkg.Model"}, "models[0].estimator", "cannot import"),
    ({"name": "sklearn", "estimator": "sklearn.base.clone"}, "models[0].estimator", "not a class"),
    (
        {"name": "sklearn", "estimator": "sklearn.linear_model.Ridge"},
        "models[0].estimator",
        "no predict_proba()",
    ),
    (
        {"name": "sklearn", "estimator": "sklearn.mixture.GaussianMixture"},
        "models[0].estimator",
        "not a classifier",
    ),
    (knn(n_neigbors=3), "models[0].params.n_neigbors", "takes no parameter 'n_neigbors'"),
    (knn(n_neighbors=-1), "models[0].params", "n_neighbors"),
    (knn(random_state=3), "models[0].params.random_state", "seed"),
    (
        {"name": "sklearn", "estimator": "sklearn.svm.SVC", "params": {"probability": False}},
        "models[0].params",
        "no predict_proba",
    ),
    (
        {"name": "sklearn", "estimator": "sklearn.svm.SVC", "params": [1, 2]},
        "models[0].params",
        "mapping",
    ),
    ({**knn(), "scale": "yes"}, "models[0].scale", "true or false"),
    ({**knn(), "estimator_params": {}}, "models[0].params", "not both"),
    ({**knn(), "epochs": 3}, "models[0].epochs", "unknown parameter"),
]


@pytest.mark.parametrize(("entry", "field", "piece"), SKLEARN_ERRORS)
def test_sklearn_config_errors_name_the_field(entry, field, piece):
    with pytest.raises(ConfigError) as err:
        parse_config(config(entry))
    assert err.value.field == field, err.value
    assert piece in err.value.message


def test_params_round_trip_and_canonical_form():
    cfg = parse_config(config(knn(n_neighbors=3), {**knn(), "scale": True}))
    assert cfg.models[0].params == {
        "estimator": "sklearn.neighbors.KNeighborsClassifier",
        "params": {"n_neighbors": 3},
        "scale": False,
    }
    assert cfg.models[1].params["params"] == {}
    spec = MODELS.get("sklearn").from_params(cfg.models[0].params)
    assert spec.params() == cfg.models[0].params
    alias = MODELS.get("sklearn").from_params(
        {
            "estimator": "sklearn.neighbors.KNeighborsClassifier",
            "estimator_params": {"n_neighbors": 3},
        }
    )
    assert alias == spec


def test_estimator_param_changes_cell_ids_and_labels():
    three = parse_config(config(knn(n_neighbors=3)))
    five = parse_config(config(knn(n_neighbors=5)))
    ids3 = {c.cell_id for c in expand(three)}
    ids5 = {c.cell_id for c in expand(five)}
    assert len(ids3) == len(ids5) == 2 and not ids3 & ids5
    labels = {MODELS.get("sklearn").from_params(c.models[0].params).label() for c in (three, five)}
    assert labels == {"KNeighborsClassifier(n_neighbors=3)", "KNeighborsClassifier(n_neighbors=5)"}
    scaled = MODELS.get("sklearn").from_params({**knn_params(n_neighbors=3), "scale": True})
    assert scaled.label() == "KNeighborsClassifier(n_neighbors=3)+scale"


def test_random_state_comes_from_the_seed_and_n_jobs_is_one():
    spec = MODELS.get("sklearn").from_params(
        {"estimator": "sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": 5}}
    )
    a, b = spec.build(INFO, 11), spec.build(INFO, 12)
    assert a.estimator.random_state == 11 and b.estimator.random_state == 12
    assert a.estimator.n_jobs == 1 and a.estimator.n_estimators == 5
    scaled = MODELS.get("sklearn").from_params({**knn_params(), "scale": True}).build(INFO, 0)
    assert [name for name, _ in scaled.estimator.steps] == ["scale", "model"]


def test_an_estimator_without_sample_weight_refuses_soft_targets():
    spec = MODELS.get("sklearn").from_params(knn_params(n_neighbors=1))
    assert spec.supports_sample_weight is False
    X = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    y = np.arange(12) % 3
    spec.build(INFO, 0).fit(X, y)  # hard labels: fine
    with pytest.raises(SampleWeightError, match="no sample_weight"):
        spec.build(INFO, 0).fit(X, np.eye(3)[y] * 0.9 + 0.1 / 3)
    from bench.models.by_path import check_weight_support

    soft = TrainingSet(
        X=X, y=y, mask=np.zeros(12, bool), n_classes=3, targets=np.eye(3)[y] * 0.5 + 1 / 6
    )
    with pytest.raises(
        SampleWeightError, match=r"defense label_smoothing\(0\.5\) gives .*soft targets"
    ):
        check_weight_support(spec, soft, "label_smoothing(0.5)")
    hard = TrainingSet(X=X, y=y, mask=np.zeros(12, bool), n_classes=3)
    check_weight_support(spec, hard, "none")


# ---------------------------------------------------------------------------------------------
# sklearn: end to end through the CLI
# ---------------------------------------------------------------------------------------------


def test_knn_by_import_path_runs_and_its_params_give_distinct_rows(tmp_path, capsys):
    code, table, err = run_cli(
        tmp_path, config(knn(n_neighbors=3), knn(n_neighbors=7)), "knn", capsys
    )
    assert code == 0, err
    assert (table["status"] == "ok").all(), table["error"].tolist()
    assert set(table["model_label"]) == {
        "KNeighborsClassifier(n_neighbors=3)",
        "KNeighborsClassifier(n_neighbors=7)",
    }
    assert table.groupby("model_id")["cell_id"].nunique().tolist() == [2, 2]
    assert table["cell_id"].nunique() == 4
    clean = table[table["rate"] == 0]
    assert clean["accuracy"].min() > 0.85  # iris: k-NN is accurate on clean data
    params = {json.loads(p)["params"]["params"]["n_neighbors"] for p in table["model_id"]}
    assert params == {3, 7}


def test_knn_with_label_smoothing_fails_its_cells_naming_the_defense(tmp_path, capsys):
    raw = config(knn(), defenses=("none", {"name": "label_smoothing", "epsilon": 0.2}))
    code, table, err = run_cli(tmp_path, raw, "smooth", capsys)
    assert code == 0, err
    failed = table[table["status"] == "failed"]
    assert len(failed) == 2 and set(failed["defense_label"]) == {"label_smoothing(0.2)"}
    assert failed["error"].str.contains(r"defense label_smoothing\(0\.2\)").all()
    assert failed["error"].str.contains("sample_weight").all()
    assert (table.loc[table["defense"] == "none", "status"] == "ok").all()


# ---------------------------------------------------------------------------------------------
# torch: a network factory by import path
# ---------------------------------------------------------------------------------------------


def torch_model(network: str = "tests.plugin_nets:make_net", **extra) -> dict:
    return {
        "name": "torch",
        "network": network,
        "epochs": 2,
        "batch_size": 16,
        "device": "cpu",
        **extra,
    }


TORCH_ERRORS = [
    ({"name": "torch"}, "models[0].network", "required"),
    (torch_model("tests.plugin_nets:nothing"), "models[0].network", "has no attribute 'nothing'"),
    (torch_model("tests.plugin_nets:NOT_CALLABLE"), "models[0].network", "not callable"),
    (torch_model(params={"width": 3}), "models[0].params", "factory(info, **params)"),
    (torch_model(epochs=0), "models[0].epochs", "in [1, 10000]"),
]


@pytest.mark.parametrize(("entry", "field", "piece"), TORCH_ERRORS)
def test_torch_config_errors_name_the_field(entry, field, piece):
    with pytest.raises(ConfigError) as err:
        parse_config(config(entry))
    assert err.value.field == field, err.value
    assert piece in err.value.message


@pytest.mark.parametrize(
    ("network", "piece"),
    [
        ("tests.plugin_nets:wrong_width", "to [2, 4], expected [2, 3]"),
        ("tests.plugin_nets:not_a_module", "not a torch nn.Module"),
    ],
)
def test_torch_network_checked_against_the_dataset_at_expansion(network, piece):
    pytest.importorskip("torch")
    cfg = parse_config(config(torch_model(network)))
    with pytest.raises(ConfigError) as err:
        expand(cfg)
    assert err.value.field == "models[0].network"
    assert piece in err.value.message


def test_torch_network_by_import_path_runs_with_soft_targets(tmp_path, capsys):
    pytest.importorskip("torch")
    raw = config(
        torch_model(params={"hidden": 8}),
        defenses=("none", {"name": "label_smoothing", "epsilon": 0.1}),
    )
    code, table, err = run_cli(tmp_path, raw, "torch", capsys)
    assert code == 0, err
    assert len(table) == 4 and (table["status"] == "ok").all(), table["error"].tolist()
    assert set(table["model_label"]) == {"make_net(hidden=8)"}
    assert table["accuracy"].between(0, 1).all()
    # Same seed, same training set: the run is deterministic (a second run in a new dir).
    _, again, _ = run_cli(tmp_path, raw, "torch2", capsys)
    cols = ["cell_id", "accuracy", "log_loss"]
    pd.testing.assert_frame_equal(
        table[cols].sort_values("cell_id").reset_index(drop=True),
        again[cols].sort_values("cell_id").reset_index(drop=True),
    )


def test_plain_name_configs_import_no_plugin_code():
    code = (
        "import sys; from bench.run.config import load_config; from bench.run.grid import expand; "
        "expand(load_config('configs/quick.yaml')); "
        "print(sorted(m for m in ('torch', 'tests.plugin_nets') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    assert out.stdout.strip() == "[]"
