"""MLflow tracking: runs read back with MlflowClient match the results table (local sqlite store,
no network, telemetry off)."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import require

from bench.analysis.findings import headline_table
from bench.core.store import Store
from bench.core.types import PoisonBenchError
from bench.interfaces.cli import main
from bench.interfaces.tracking import (
    FRACTION_METRICS,
    TELEMETRY_OFF,
    confusion_image,
    curve_metric,
    default_tracking_uri,
    headline_metrics,
    refit_model,
    step_of,
)

TINY = """
name: tinyml
datasets: [{name: iris, split: {train: 0.5, test: 0.3}}]
models: [logreg]
attacks: [{name: label_flip, mode: targeted, source: 1, target: 2}]
rates: [0, 0.4]
defenses: [none, iforest]
seeds: 1
recovery: {fractions: [0, 0.2]}
"""


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, created once: MLflow 3 takes 2–15 s to create the schema
    (its migrations), so each test copies this file instead of paying that again."""
    require("mlflow")
    path = tmp_path_factory.mktemp("mlflowdb") / "mlflow.db"
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def _fresh_run_dir(path: Path, empty_db: Path) -> Path:
    path.mkdir(parents=True)
    shutil.copy(empty_db, path / "mlflow.db")
    return path


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, empty_db):
    """A tiny grid run with --mlflow: (run dir, table, client, experiment id)."""
    root = tmp_path_factory.mktemp("mlflow")
    config = root / "tiny.yaml"
    config.write_text(TINY)
    out = _fresh_run_dir(root / "run", empty_db)
    assert main(["run", str(config), "--out", str(out), "--quiet", "--mlflow"]) == 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(default_tracking_uri(out))
    experiment = client.get_experiment_by_name("tinyml")
    return out, pd.read_parquet(out / "results.parquet"), client, experiment.experiment_id


def _runs(client, experiment_id, kind):
    return client.search_runs(
        [experiment_id], filter_string=f"tags.`poisonbench.kind` = '{kind}'", max_results=1000
    )


def test_one_nested_run_per_cell_with_the_tables_params(tracked):
    out, table, client, experiment_id = tracked
    (parent,) = _runs(client, experiment_id, "grid")
    cells = _runs(client, experiment_id, "cell")
    assert parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in cells} == {parent.info.run_id}
    assert sorted(r.data.params["cell_id"] for r in cells) == sorted(table["cell_id"].unique())
    for run in cells:
        row = table[table["cell_id"] == run.data.params["cell_id"]].iloc[0]
        p = run.data.params
        assert p["dataset"] == row["dataset"]
        assert p["model"] == row["model"]
        assert p["attack"] == row["attack"]
        assert p["attack_label"] == row["attack_label"]
        assert float(p["rate"]) == row["rate"]
        assert p["defense"] == row["defense"]
        assert int(p["seed"]) == row["seed"]
        assert p["attack_id"] == row["attack_id"] and p["defense_id"] == row["defense_id"]
        assert p["defense_label"] == row["defense_label"]
        if row["attack"] == "label_flip":
            assert json.loads(p["attack.source"]) == 1
        assert run.info.status == "FINISHED"
    # the artifact store is under the run directory, not wherever the tests were started
    assert (out / "mlflow.db").exists()
    assert (out / "mlartifacts").is_dir()


def test_plain_metrics_are_f0_and_the_curve_is_logged_by_f(tracked):
    """``accuracy`` in the runs table is the model with no extra clean data (f = 0), not the
    last fraction logged; the curve is ``accuracy_by_f`` with step 1000 × f."""
    _, table, client, experiment_id = tracked
    checked = 0
    for run in _runs(client, experiment_id, "cell"):
        rows = table[table["cell_id"] == run.data.params["cell_id"]]
        assert rows["extra_fraction"].nunique() == 2  # f = 0 and f = 0.2: the curve has 2 points
        for name in FRACTION_METRICS:
            curve = client.get_metric_history(run.info.run_id, curve_metric(name))
            history = {m.step: m.value for m in curve}
            expected = {
                step_of(f): v
                for f, v in zip(rows["extra_fraction"], rows[name], strict=True)
                if not math.isnan(v)
            }
            assert history == pytest.approx(expected), (name, run.data.params["cell_id"])
            checked += len(expected)
            f0 = rows[rows["extra_fraction"] == 0][name].iloc[0]
            if math.isnan(f0):
                assert name not in run.data.metrics
                continue
            # the runs table shows the latest value of a metric: it must be the f = 0 one
            assert run.data.metrics[name] == f0
            plain = client.get_metric_history(run.info.run_id, name)
            assert [(m.step, m.value) for m in plain] == [(0, f0)]
            if name == "accuracy":
                last = rows.sort_values("extra_fraction")[name].iloc[-1]
                assert run.data.metrics[curve_metric(name)] == pytest.approx(last)
        assert not any(k.endswith("_f0") for k in run.data.metrics)
        row = rows.iloc[0]
        if row["defense"] == "iforest" and row["attack"] != "none":
            for name in ("det_precision", "det_recall", "det_roc_auc"):
                assert run.data.metrics[name] == pytest.approx(row[name])
        else:
            assert "det_recall" not in run.data.metrics
    assert checked > 20


def test_the_parent_logs_the_grids_settings_with_labels(tracked):
    _, table, client, experiment_id = tracked
    latest = max(_runs(client, experiment_id, "grid"), key=lambda r: r.info.start_time)
    p = latest.data.params
    attacked = table[table["attack"] != "none"]
    assert json.loads(p["attacks"]) == sorted(set(attacked["attack_label"]))  # one attack here
    assert json.loads(p["attacks"]) == ["label_flip(1→2)"]
    assert json.loads(p["defenses"]) == ["none", "iforest"]  # config order
    assert set(json.loads(p["defenses"])) == set(table["defense"])
    assert json.loads(p["datasets"]) == ["iris"] and json.loads(p["models"]) == ["logreg"]
    assert json.loads(p["rates"]) == [0, 0.4] and json.loads(p["seeds"]) == [0]
    assert json.loads(p["fractions"]) == [0, 0.2]
    assert p["recovery_metric"] == "accuracy" and float(p["recovery_tolerance"]) == 0.005


def test_the_parent_logs_the_headline_as_a_table_and_metrics(tracked):
    """The headline (extra clean data needed, best deployable defense) on the parent run,
    checked against estimate_recovery and an independent pandas computation."""
    from bench.analysis.recovery import estimate_recovery

    out, table, client, experiment_id = tracked
    latest = max(_runs(client, experiment_id, "grid"), key=lambda r: r.info.start_time)
    files = {a.path for a in client.list_artifacts(latest.info.run_id)}
    assert {"headline.csv", "headline.json"} <= files
    local = client.download_artifacts(latest.info.run_id, "headline.csv", str(out / "dlh"))
    headline = pd.read_csv(local)
    rec = estimate_recovery(table, "accuracy", 0.005, n_boot=1000)
    attacked = rec[rec["attack"] != "none"]
    assert len(headline) == attacked[["attack_label", "rate"]].drop_duplicates().shape[0] == 1
    row = headline.iloc[0]
    none = attacked[attacked["defense"] == "none"].iloc[0]
    iforest = attacked[attacked["defense"] == "iforest"].iloc[0]
    assert row["attack_label"] == "label_flip(1→2)" and row["rate"] == 0.4
    assert row["f_needed"] == pytest.approx(none["f_needed"])
    assert row["reference"] == pytest.approx(none["reference"])
    # the only deployable defense here is iforest
    assert row["best_defense"] == "iforest"
    assert row["best_f_needed"] == pytest.approx(iforest["f_needed"])
    clean = table[(table["attack"] == "none") & (table["defense"] == "none")]
    clean = clean[clean["extra_fraction"] == 0]["accuracy"].mean()
    metrics = latest.data.metrics
    assert metrics["clean_accuracy/iris/logreg"] == pytest.approx(clean)
    for key, value in (("f_needed", none["f_needed"]), ("best_f_needed", iforest["f_needed"])):
        name = f"{key}/iris/logreg/label_flip_1-2/0.4"
        if math.isfinite(value):
            assert metrics[name] == pytest.approx(value)
        else:
            assert name not in metrics  # not recovered within the grid: no number to log
    table_json = client.download_artifacts(latest.info.run_id, "headline.json", str(out / "dlj"))
    parsed = json.loads(Path(table_json).read_text())  # strict JSON: no NaN or Infinity
    assert parsed["columns"][:4] == ["attack_label", "rate", "extra_clean_data", "best_defense"]
    assert len(parsed["data"]) == 1


def test_headline_picks_the_best_deployable_defense():
    """Smallest f_needed among defenses that are neither none nor a reference (the oracle)."""
    from bench.core.schema import NO_DEFENSE_ID

    rows = []
    for defense, f, saved in (
        ("none", math.inf, math.nan),
        ("oracle_filter", 0.0, 600.0),
        ("iforest", 0.8, 120.0),
        ("knn", 0.5, 150.0),
        ("smooth", math.inf, math.nan),
    ):
        rows.append(
            {
                "dataset_id": "D",
                "dataset_label": "d",
                "model_id": "M",
                "model_label": "m",
                "attack": "label_flip",
                "attack_id": "A",
                "attack_label": "label_flip(random)",
                "rate": 0.3,
                "defense": defense,
                "defense_id": NO_DEFENSE_ID if defense == "none" else defense,
                "defense_label": defense,
                "defense_reference": defense == "oracle_filter",
                "metric": "accuracy",
                "reference": 0.95,
                "value_at_0": 0.7,
                "f_needed": f,
                "f_low": f,
                "f_high": f,
                "f_max": 2.0,
                "rows_needed": f * 300,
                "pool_exhausted": False,
                "defense_value_rows": saved,
                "defense_value_kind": "exact",
            }
        )
    headline = headline_table(pd.DataFrame(rows))
    (row,) = headline.to_dict("records")
    assert row["best_defense"] == "knn" and row["best_f_needed"] == 0.5
    assert row["best_rows_saved"] == 150.0
    assert row["extra_clean_data"] == "> 2×" and math.isinf(row["f_needed"])
    metrics = headline_metrics(headline)
    assert metrics == {
        "best_f_needed/d/m/label_flip_random/0.3": 0.5,
        "rows_saved/d/m/label_flip_random/0.3": 150.0,
        "clean_accuracy/d/m": 0.95,
    }


def test_confusion_image_keeps_every_text_inside(monkeypatch):
    """The old image cut the axis title ("rue"): every text drawn must lie inside the image."""
    from PIL import ImageDraw

    drawn: list[tuple[str, tuple[float, float, float, float], tuple[int, int], str]] = []
    real = ImageDraw.ImageDraw.text

    def record(self, xy, text, fill=None, font=None, anchor=None, *args, **kwargs):
        box = self.textbbox(xy, text, font=font, anchor=anchor)
        drawn.append((text, box, self.im.size, anchor))
        return real(self, xy, text, fill, font, anchor, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", record)
    for names in ([str(i) for i in range(10)], ["setosa", "versicolor", "virginica"]):
        drawn.clear()
        k = len(names)
        matrix = (np.eye(k, dtype=int) * 40 + 1).tolist()
        img = confusion_image(matrix, names, "a title")
        texts = [t for t, *_ in drawn]
        assert {"true label", "predicted label", "a title"} <= set(texts)
        rows = [t for t, _, _, anchor in drawn if anchor == "rm"]
        columns = [(t, box) for t, box, _, anchor in drawn if anchor == "mt" and t in names]
        assert rows == names and [t for t, _ in columns] == names  # every class on both axes
        for text, (x0, y0, x1, y1), (w, h), _ in drawn:
            assert x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h, (text, (x0, y0, x1, y1), w, h)
        assert img.size == drawn[0][2]
        # column labels do not overlap each other
        boxes = [box for _, box in columns]
        assert all(a[2] <= b[0] for a, b in itertools.pairwise(boxes))


def test_artifacts_on_cells_and_on_the_parent(tracked):
    out, _, client, experiment_id = tracked
    (parent,) = _runs(client, experiment_id, "grid")
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "results.csv", "run.json", "config.yaml", "headline.csv"} <= parent_files
    run = _runs(client, experiment_id, "cell")[0]
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"record.json", "confusion_matrix.png"} <= files
    local = client.download_artifacts(run.info.run_id, "record.json", str(out / "dl"))
    record = json.loads(Path(local).read_text())
    assert record == Store(out).read(run.data.params["cell_id"])


def test_a_resumed_run_logs_its_cached_cells_too(tracked, capsys):
    out, table, client, experiment_id = tracked
    config = out.parent / "tiny.yaml"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--mlflow"]) == 0
    assert "4 cached" in capsys.readouterr().out
    parents = _runs(client, experiment_id, "grid")
    assert len(parents) == 2
    latest = max(parents, key=lambda r: r.info.start_time)
    children = [
        r
        for r in _runs(client, experiment_id, "cell")
        if r.data.tags["mlflow.parentRunId"] == latest.info.run_id
    ]
    assert len(children) == table["cell_id"].nunique()
    assert {r.data.tags["poisonbench.cached"] for r in children} == {"true"}


def test_refit_model_scores_exactly_as_the_runner(tracked):
    """--mlflow-log-models refits the f = 0 model; it must be the runner's own model."""
    out, table, _, _ = tracked
    store = Store(out)
    for cell_id in table["cell_id"].unique():
        record = store.read(cell_id)
        estimator, X_test, y_test = refit_model(record["spec"])
        accuracy = float((estimator.predict_proba(X_test).argmax(axis=1) == y_test).mean())
        f0 = next(r for r in record["rows"] if r["extra_fraction"] == 0)
        assert accuracy == f0["accuracy"], record["spec"]["defense"]


def test_log_models_logs_a_loadable_sklearn_model(tmp_path, empty_db):
    mlflow = require("mlflow")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("rates: [0, 0.4]", "rates: [0.4]").replace(", iforest", ""))
    out = _fresh_run_dir(tmp_path / "run", empty_db)
    args = ["run", str(config), "--out", str(out), "-q", "--mlflow", "--mlflow-log-models"]
    assert main(args) == 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(default_tracking_uri(out))
    experiment = client.get_experiment_by_name("tinyml")
    runs = _runs(client, experiment.experiment_id, "cell")
    assert len(runs) == 2
    mlflow.set_tracking_uri(default_tracking_uri(out))
    run = runs[0]
    model = mlflow.sklearn.load_model(f"runs:/{run.info.run_id}/model")
    record = Store(out).read(run.data.params["cell_id"])
    _, X_test, y_test = refit_model(record["spec"])
    accuracy = float((model.predict(X_test.reshape(len(X_test), -1)) == y_test).mean())
    assert accuracy == next(r for r in record["rows"] if r["extra_fraction"] == 0)["accuracy"]


def test_telemetry_is_off_and_the_store_is_local(tracked):
    import os

    for key, value in TELEMETRY_OFF.items():
        assert os.environ.get(key) == value
    assert default_tracking_uri("x").startswith("sqlite:///")


def test_log_models_without_mlflow_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", "cfg.yaml", "--mlflow-log-models"])
    assert stop.value.code == 2
    assert "--mlflow-log-models needs --mlflow" in capsys.readouterr().err


def test_missing_mlflow_is_a_clear_error(monkeypatch):
    from bench.interfaces import tracking

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(PoisonBenchError, match=r"pip install 'poisonbench\[mlflow\]'"):
        tracking._import_mlflow()


def test_step_is_a_thousandth_of_the_fraction():
    assert [step_of(f) for f in (0, 0.1, 0.25, 2, 4)] == [0, 100, 250, 2000, 4000]
    assert np.all(np.diff([step_of(f) for f in (0, 0.001, 0.002)]) > 0)


def test_a_logging_failure_is_raised_at_the_end_and_fails_the_parent(tmp_path, empty_db):
    _fresh_run_dir(tmp_path / "run", empty_db)
    import yaml

    from bench.interfaces.tracking import MlflowTracker
    from bench.run.config import parse_config

    tracker = MlflowTracker(tmp_path / "run")
    parent = tracker.start(parse_config(yaml.safe_load(TINY)))
    tracker.submit({"cell_id": "0" * 16, "not": "a record"})
    with pytest.raises(PoisonBenchError, match="MLflow logging failed: KeyError"):
        tracker.finish()
    assert tracker.client.get_run(parent).info.status == "FAILED"


COLLIDING = TINY.replace(
    "attacks: [{name: label_flip, mode: targeted, source: 1, target: 2}]",
    "attacks: [{name: label_flip, mode: targeted, source: 1, target: 2}, "
    "{name: label_flip, mode: random}]",
).replace(
    "defenses: [none, iforest]", "defenses: [none, iforest, {name: iforest, contamination: 0.3}]"
)


def test_cell_run_names_are_unique_and_show_what_differs(tmp_path, empty_db):
    """Targeted and random flips, and two iforest settings, used to share run names."""
    config = tmp_path / "colliding.yaml"
    config.write_text(COLLIDING.replace("tinyml", "colliding"))
    out = _fresh_run_dir(tmp_path / "run", empty_db)
    assert main(["run", str(config), "--out", str(out), "--quiet", "--mlflow"]) == 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(default_tracking_uri(out))
    experiment_id = client.get_experiment_by_name("colliding").experiment_id
    table = pd.read_parquet(out / "results.parquet")
    cells = _runs(client, experiment_id, "cell")
    names = [run.info.run_name for run in cells]
    assert len(names) == len(set(names)) == table["cell_id"].nunique() == 9
    assert any("iforest(contamination=0.3)" in n for n in names)
    assert any("label_flip(1→2)@0.4" in n for n in names)
    assert any("label_flip(random)@0.4" in n for n in names)
    for run in cells:  # each name is made of the row's labels
        row = table[table["cell_id"] == run.data.params["cell_id"]].iloc[0]
        assert run.info.run_name == (
            f"{row['dataset_label']}/{row['model_label']}/{row['attack_label']}@{row['rate']:g}/"
            f"{row['defense_label']}/seed={row['seed']}"
        )
