"""MLflow tracking of a grid run (optional extra ``mlflow``): ``poisonbench run --mlflow``.

One parent run per grid invocation (named after the config) and one nested run per cell:

- params: ``dataset``, ``split``, ``model``, ``model_id``, ``attack``, ``attack_label``,
  ``attack_id`` (and each attack parameter as ``attack.<name>``), ``rate``, ``defense``,
  ``defense_label``, ``defense_id``, ``seed``, ``cell_id``; run names are the unique display
  labels (``digits/logreg/label_flip(1→7)@0.3/iforest/seed=2``);
- metrics: the plain names (``accuracy``, ``macro_f1``, ``log_loss``, ``source_accuracy``,
  ``attack_success_rate``) are the cell's model **with no extra clean data (f = 0)**, the
  model a user compares in the runs table; the recovery curve is logged under
  ``<metric>_by_f`` (e.g. ``accuracy_by_f``) as a history with ``step = round(1000 × f)``
  (f = 0.25 is step 250), so MLflow's chart of that metric is the curve. Per cell (step 0): the
  filter metrics ``det_precision``, ``det_recall``, ``det_f1``, ``det_roc_auc`` and the sizes
  ``n_poisoned``, ``n_removed``, ``clean_removed``. NaN values (an untargeted attack's attack
  success rate, a filter metric with nothing to detect) are not logged;
- artifacts: ``record.json`` (the stored record), ``confusion_matrix.png`` (at f = 0) and, with
  ``log_models``, the f = 0 model (``mlflow.sklearn`` for scikit-learn models, ``mlflow.pytorch``
  for torch ones). The runner keeps no fitted model, so it is refit here with the runner's own
  stage-keyed seeds (:func:`refit_model`); a test checks that it scores exactly as the record.

The parent run gets the grid's settings as params (``datasets``, ``models``, ``attacks`` and
``defenses`` as JSON lists of their display labels, ``rates``, ``seeds``, ``fractions`` and the
recovery settings), the config, and at the end ``report.md``, ``results.csv``, ``run.json`` and
the headline: ``headline.csv`` (one row per dataset, model, attack and rate: the extra clean
data needed without a defense and with the best deployable defense, from
``bench.analysis.recovery.estimate_recovery``; see
:func:`bench.analysis.findings.headline_table`), the same as an MLflow table
(``headline.json``), and parent metrics ``f_needed/...``, ``best_f_needed/...``,
``rows_saved/...`` and ``clean_<metric>/...`` (see :func:`headline_metrics`).
Cells found finished in the store (a resumed run) are logged too, at the end.

Run names are made of the grid's unique display labels (``bench.run.runner.run_name``): two
configurations never share one.

The default store is ``sqlite:///<run dir>/mlflow.db`` with artifacts in
``<run dir>/mlartifacts``: MLflow 3 refuses the plain ``mlruns/`` file store unless
``MLFLOW_ALLOW_FILE_STORE=true``. Nothing goes over the network unless the tracking URI given
is a server; MLflow's telemetry is switched off (``MLFLOW_DISABLE_TELEMETRY``, ``DO_NOT_TRACK``).
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any

from bench.analysis.findings import headline_table
from bench.analysis.recovery import estimate_recovery
from bench.core.schema import (
    FALLBACK_METRICS,
    dataset_id,
    defense_id,
    jsonable,
    plugin_id,
)
from bench.core.store import Store, read_table
from bench.core.types import PoisonBenchError
from bench.data.datasets import load_dataset
from bench.run.grid import Cell, expand
from bench.run.runner import display_labels, fit_model, prepare_cell, run_name

#: set before mlflow is imported: no usage data leaves the machine
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
#: metrics logged at f = 0 under their plain name, and per extra-clean fraction as the history
#: ``<name>_by_f`` (step = round(1000 × f))
FRACTION_METRICS = ("accuracy", "macro_f1", "log_loss", "source_accuracy", "attack_success_rate")
#: the suffix of a recovery-curve metric: ``accuracy_by_f``
CURVE_SUFFIX = "_by_f"
#: metrics logged once per cell (step 0)
CELL_METRICS = (
    "det_precision",
    "det_recall",
    "det_f1",
    "det_roc_auc",
    "n_poisoned",
    "n_removed",
    "clean_removed",
)
DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"


def step_of(fraction: float) -> int:
    """The MLflow step of an extra-clean fraction: ``round(1000 × f)`` (f = 0.25 → 250)."""
    return int(round(1000 * float(fraction)))


def curve_metric(name: str) -> str:
    """The name of a metric's recovery curve (its history over f): ``accuracy_by_f``."""
    return f"{name}{CURVE_SUFFIX}"


def default_tracking_uri(run_dir: str | Path) -> str:
    """``sqlite:///<run dir>/mlflow.db`` (absolute): the local store used by ``--mlflow``."""
    return f"sqlite:///{(Path(run_dir) / DB_NAME).resolve()}"


def _import_mlflow() -> Any:
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    try:
        import mlflow
    except ImportError:
        raise PoisonBenchError(
            "--mlflow needs MLflow, which is not installed: pip install 'poisonbench[mlflow]'"
        ) from None
    return mlflow


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def cell_params(spec: dict[str, Any], row: dict[str, Any]) -> dict[str, str]:
    """A cell's MLflow params (strings) from its spec and one of its table rows."""
    params = {
        "cell_id": row["cell_id"],
        "dataset": row["dataset"],
        "split": json.dumps(spec["dataset"]["split"], sort_keys=True),
        "model": row["model"],
        "model_id": row["model_id"],
        "attack": row["attack"],
        "attack_label": row["attack_label"],
        "attack_id": row["attack_id"],
        "rate": repr(float(row["rate"])),
        "defense": row["defense"],
        "defense_label": row["defense_label"],
        "defense_id": row["defense_id"],
        "seed": str(int(row["seed"])),
    }
    for key, value in spec["attack"]["params"].items():
        params[f"attack.{key}"] = json.dumps(value)
    # MLflow caps a param value at 6,000 characters; ids of long pipelines are cut, not lost:
    # the full spec is in record.json.
    return {k: str(v)[:6000] for k, v in params.items()}


def cell_metrics(rows: list[dict[str, Any]]) -> list[tuple[str, float, int]]:
    """(name, value, step) of every metric a cell logs: each of :data:`FRACTION_METRICS` at
    f = 0 under its plain name (step 0), its value at every fraction under
    :func:`curve_metric` (step :func:`step_of` f), and the per-cell metrics (step 0)."""
    out: list[tuple[str, float, int]] = []
    ok = sorted(
        (r for r in rows if r.get("status") == "ok"), key=lambda r: float(r["extra_fraction"])
    )
    for row in ok:
        step = step_of(row["extra_fraction"])
        for name in FRACTION_METRICS:
            if _finite(row.get(name)):
                out.append((curve_metric(name), float(row[name]), step))
                if float(row["extra_fraction"]) == 0:
                    out.append((name, float(row[name]), 0))
    if ok:
        for name in CELL_METRICS:
            if _finite(ok[0].get(name)):
                out.append((name, float(ok[0][name]), 0))
    return out


def grid_params(config: Any, labels: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """The parent run's params: the grid's settings, the plug-ins by their display labels.

    ``datasets``, ``models``, ``attacks`` and ``defenses`` are JSON lists of the unique display
    labels ``labels`` holds for their ids (``bench.run.runner.display_labels``; e.g. ``attacks``:
    ``["label_flip(random)", "label_flip(1→7)", "feature_noise(uniform)"]``), ``rates``,
    ``seeds`` and ``fractions`` JSON lists of numbers, then the recovery settings."""
    labels = labels or {}

    def shown(kind: str, ident: str, fallback: str) -> str:
        return labels.get(kind, {}).get(ident, fallback)

    recovery = config.recovery
    datasets = [shown("dataset", dataset_id(d.canonical()), d.name) for d in config.datasets]
    models = [shown("model", plugin_id(m.name, m.params), m.name) for m in config.models]
    attacks = [shown("attack", plugin_id(a.name, a.params), a.name) for a in config.attacks]
    defenses = [
        shown(
            "defense",
            defense_id([s.canonical() for s in steps]),
            "+".join(s.name for s in steps),
        )
        for steps in config.defenses
    ]
    params = {
        "config": config.name,
        "datasets": json.dumps(datasets, ensure_ascii=False),
        "models": json.dumps(models, ensure_ascii=False),
        "attacks": json.dumps(attacks, ensure_ascii=False),
        "defenses": json.dumps(defenses, ensure_ascii=False),
        "rates": json.dumps(list(config.rates)),
        "seeds": json.dumps(list(config.seeds)),
        "fractions": json.dumps(list(recovery.fractions)),
        "recovery_metric": recovery.metric,
        "recovery_tolerance": str(recovery.tolerance),
        "recovery_bootstrap": str(recovery.bootstrap),
        "recovery_early_stop": str(bool(recovery.early_stop)).lower(),
    }
    return params


def _json_safe(frame: Any) -> Any:
    """``frame`` with non-finite numbers as None (MLflow's table viewer parses strict JSON,
    which has no NaN or Infinity; the text columns say ``> 2×``)."""
    import numpy as np

    out = frame.astype(object)
    for column in frame.columns:
        values = frame[column]
        if values.dtype.kind == "f":
            out[column] = [float(v) if np.isfinite(v) else None for v in values]
    return out.where(out.notna(), None)


def _metric_key(*parts: Any) -> str:
    """An MLflow metric key from display labels: characters MLflow refuses become ``_``
    (``label_flip(1→7)`` → ``label_flip_1-7``)."""
    text = "/".join(str(p) for p in parts).replace("→", "-")
    text = re.sub(r"[^A-Za-z0-9_\-. /:]+", "_", text)
    return re.sub(r"_+(?=/|$)", "", text)


def headline_metrics(headline: Any) -> dict[str, float]:
    """The parent run's metrics from :func:`bench.analysis.findings.headline_table`: per
    (dataset, model, attack, rate) ``f_needed/<dataset>/<model>/<attack>/<rate>`` (extra clean
    data needed without a defense, × n_train), ``best_f_needed/...`` and ``rows_saved/...``
    (the best deployable defense's), and ``clean_<metric>/<dataset>/<model>``. Values not
    finite (not recovered within the grid) are left out: the headline table says ``> X×``. A key two labels would
    share after MLflow's character rules is left out rather than overwritten."""
    out: dict[str, float] = {}
    seen: set[str] = set()
    clashes: set[str] = set()

    def put(key: str, value: Any) -> None:
        if key in seen:
            clashes.add(key)
        seen.add(key)
        if _finite(value):
            out[key] = float(value)

    for row in headline.to_dict("records"):
        where = (row["dataset"], row["model"], row["attack_label"], f"{row['rate']:g}")
        put(_metric_key("f_needed", *where), row.get("f_needed"))
        put(_metric_key("best_f_needed", *where), row.get("best_f_needed"))
        put(_metric_key("rows_saved", *where), row.get("best_rows_saved"))
    clean = headline.drop_duplicates(["dataset", "model"])
    for row in clean.to_dict("records"):
        key = _metric_key(f"clean_{row['metric']}", row["dataset"], row["model"])
        if _finite(row.get("reference")):
            out[key] = float(row["reference"])
    return {k: v for k, v in out.items() if k not in clashes}


def confusion_image(confusion: list[list[int]], class_names: list[str], title: str) -> Any:
    """A PIL image of a confusion matrix: rows true, columns predicted, counts in the cells
    (white on dark cells), every class labelled on both axes; every text, the axis titles
    ("true label" above the row labels, "predicted label" under the columns) and ``title``
    included, lies inside the image.

    Drawn with Pillow rather than matplotlib: ~20× faster (a 10×10 matplotlib figure with its
    100 labels takes ~1 s on a busy 2-core machine), and the tracker draws one per cell.
    """
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    matrix = np.asarray(confusion, dtype=np.int64)
    k = len(matrix)
    names = [str(n) for n in class_names[:k]]
    font = ImageFont.load_default(size=12)
    pad = 8
    y_title, x_title = "true label", "predicted label"
    labels_width = int(max(font.getlength(n) for n in names))
    cell = max(34, labels_width + 8)  # column labels fit under their column
    # the row labels end 6 px left of the matrix; "true label" sits above them, left-aligned
    left = pad + max(labels_width + 6, int(font.getlength(y_title)) + 4)
    top = 48
    grid_right = left + k * cell
    width = max(
        grid_right + 16,
        pad + int(font.getlength(title)) + pad,
        left + k * cell // 2 + int(font.getlength(x_title)) // 2 + pad,
    )
    img = Image.new("RGB", (width, top + k * cell + 46), "white")
    draw = ImageDraw.Draw(img)
    high = max(int(matrix.max()), 1)
    dark = (8, 48, 107)  # matplotlib's "Blues" at 1
    for i in range(k):
        for j in range(k):
            share = matrix[i, j] / high
            fill = tuple(int(255 - share * (255 - c)) for c in dark)
            x, y = left + j * cell, top + i * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=fill)
            if matrix[i, j]:
                colour = "white" if share > 0.5 else "black"
                draw.text((x + cell / 2, y + cell / 2), str(matrix[i, j]), colour, font, "mm")
    for i, name in enumerate(names):
        draw.text((left - 6, top + i * cell + cell / 2), name, "black", font, "rm")
        draw.text((left + i * cell + cell / 2, top + k * cell + 4), name, "black", font, "mt")
    draw.text((left + k * cell / 2, top + k * cell + 24), x_title, "black", font, "mt")
    draw.text((pad, top - 6), y_title, "black", font, "ld")
    draw.text((pad, 6), title, "black", font)
    return img


def refit_model(spec: dict[str, Any], data_dir: str | None = None) -> tuple[Any, Any, Any]:
    """Refit a cell's f = 0 model exactly as the runner does (same split, attack output, defense
    steps and model seed, all stage-keyed); return (estimator, X_test, y_test)."""
    cell = Cell(spec)
    prepared = prepare_cell(cell, data_dir)
    estimator = fit_model(cell, prepared, prepared.train)
    return estimator, prepared.X_test, prepared.y_test


class MlflowTracker:
    """Logs a grid run to MLflow as it happens: ``start`` → ``submit`` (background) or
    ``log_record`` (now) per cell → ``finish`` (or ``abort`` when the grid stops early).

    out_dir: the run directory. tracking_uri: None for :func:`default_tracking_uri`.
    log_models: also log each cell's f = 0 model (refit; costs one fit per cell).
    """

    def __init__(
        self,
        out_dir: str | Path,
        tracking_uri: str | None = None,
        log_models: bool = False,
        data_dir: str | None = None,
        experiment: str | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.tracking_uri = tracking_uri or default_tracking_uri(self.out_dir)
        self.log_models = log_models
        self.data_dir = data_dir
        self.experiment = experiment
        self.experiment_name: str | None = None
        self.parent_id: str | None = None
        self.logged: dict[str, str] = {}  # cell id -> MLflow run id
        self.labels: dict[str, dict[str, str]] = {}  # kind -> id -> unique display label
        self.config: Any = None  # the grid's config, set by start()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._mlflow = _import_mlflow()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(self.tracking_uri)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, config: Any) -> str:
        """Create the experiment (named after the config unless given) and the parent run;
        return the parent run's id."""
        from mlflow.exceptions import MlflowException

        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.labels = display_labels(expand(config).cells, self.data_dir)
        name = self.experiment_name = self.experiment or config.name
        try:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                location = None
                if self.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in (
                    self.tracking_uri
                ):
                    location = (self.out_dir / ARTIFACTS_DIR).resolve().as_uri()
                # the MLflow 3 UI opens a "model training" experiment on its runs table
                experiment_id = self.client.create_experiment(
                    name,
                    artifact_location=location,
                    tags={"mlflow.experimentKind": "custom_model_development"},
                )
            else:
                experiment_id = found.experiment_id
            self.experiment_id = experiment_id
            parent = self.client.create_run(
                experiment_id, run_name=config.name, tags={"poisonbench.kind": "grid"}
            )
        except MlflowException as exc:
            raise PoisonBenchError(f"--mlflow {self.tracking_uri}: {exc.message}") from None
        self.parent_id = parent.info.run_id
        self.config = config
        params = {**grid_params(config, self.labels), "out_dir": str(self.out_dir.resolve())}
        self.client.log_batch(self.parent_id, params=[self._param(k, v) for k, v in params.items()])
        import yaml

        self.client.log_text(
            self.parent_id,
            yaml.safe_dump(config.raw or {"name": config.name}, sort_keys=False),
            "config.yaml",
        )
        return self.parent_id

    def submit(self, record: dict[str, Any]) -> None:
        """Queue a finished cell's record; a background thread logs it while the grid goes on
        (each cell costs a few SQLite transactions, ~0.1–0.3 s on a busy 2-core machine, which
        would otherwise leave the workers waiting for new cells)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="mlflow-log", daemon=True)
            self._thread.start()
        self._queue.put(record)

    def _drain(self) -> None:
        while (record := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.log_record(record)
                except BaseException as exc:  # re-raised by _join in the main thread
                    self._error = exc

    def _join(self) -> None:
        """Wait until every submitted record is logged; raise what the logging thread hit."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise PoisonBenchError(
                f"MLflow logging failed: {type(error).__name__}: {error}"
            ) from error

    def abort(self, status: str = "FAILED") -> None:
        """Log what was submitted, then close the parent run as FAILED or KILLED (the grid
        stopped before its end)."""
        try:
            self._join()
        finally:
            if self.parent_id is not None:
                self.client.set_terminated(self.parent_id, status)

    def finish(self, status: str = "FINISHED") -> None:
        """Log the cells not logged yet (found finished in the store), the report, the table and
        run.json on the parent run, and close it with ``status``."""
        assert self.parent_id is not None, "start() first"
        try:
            self._join()
        except PoisonBenchError:
            self.client.set_terminated(self.parent_id, "FAILED")
            raise
        try:
            table = read_table(self.out_dir)
        except PoisonBenchError:
            table = None
        if table is not None and "cell_id" in table:
            store = Store(self.out_dir)
            for cell_id in table["cell_id"].unique():
                if cell_id not in self.logged:
                    record = store.read(cell_id)
                    if record is not None:
                        self.log_record(record, cached=True)
        for name in ("report.md", "results.csv", "run.json"):
            if (self.out_dir / name).exists():
                self.client.log_artifact(self.parent_id, str(self.out_dir / name))
        if table is not None and "extra_fraction" in table and len(table):
            self.log_headline(table)
        self.client.set_terminated(self.parent_id, status)

    def log_headline(self, table: Any) -> Any:
        """Log the run's headline on the parent run: ``headline.csv`` and the MLflow table
        ``headline.json`` (:func:`bench.analysis.findings.headline_table` of ``estimate_recovery`` on ``table`` with the
        config's recovery settings) and :func:`headline_metrics` as parent metrics; return the
        headline table."""
        from mlflow.entities import Metric

        assert self.parent_id is not None, "start() first"
        recovery = self.config.recovery
        rec = estimate_recovery(
            table,
            recovery.metric,
            float(recovery.tolerance),
            n_boot=int(recovery.bootstrap),
            fallback=FALLBACK_METRICS.get(recovery.metric),
        )
        headline = headline_table(rec)
        self.client.log_text(self.parent_id, headline.to_csv(index=False), "headline.csv")
        self.client.log_table(
            self.parent_id, data=_json_safe(headline), artifact_file="headline.json"
        )
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in headline_metrics(headline).items()]
        if metrics:
            self.client.log_batch(self.parent_id, metrics=metrics)
        return headline

    # -- one cell ------------------------------------------------------------------------------

    @staticmethod
    def _param(key: str, value: str) -> Any:
        from mlflow.entities import Param

        return Param(key, value)

    def log_record(self, record: dict[str, Any], cached: bool = False) -> str:
        """Log one cell's record as a run nested under the parent; return its run id."""
        from mlflow.entities import Metric, RunTag

        assert self.parent_id is not None, "start() first"
        spec = record["spec"]
        rows = record["rows"]
        cell = Cell(spec)
        status = record["status"]
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name(cell, self.labels) if self.labels else cell.describe(),
            tags={
                "mlflow.parentRunId": self.parent_id,
                "poisonbench.kind": "cell",
                "poisonbench.status": status,
                "poisonbench.cached": str(cached).lower(),
            },
        )
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        params = [self._param(k, v) for k, v in cell_params(spec, rows[0]).items()]
        metrics = [Metric(k, v, now, step) for k, v, step in cell_metrics(rows)]
        tags = []
        if record.get("error"):
            tags.append(RunTag("poisonbench.error", str(record["error"])[-4000:]))
        self.client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        stored = Store(self.out_dir).path(record["cell_id"])
        text = stored.read_text() if stored.exists() else json.dumps(jsonable(record))
        self.client.log_text(run_id, text, "record.json")
        first = next((r for r in rows if r.get("status") == "ok"), None)
        if first is not None and first.get("confusion") is not None:
            key = spec["dataset"]
            names = list(
                load_dataset(key["name"], self.data_dir, key.get("params")).info.class_names
            )
            title = run_name(cell, self.labels) if self.labels else cell.describe()
            image = confusion_image(
                first["confusion"],
                names,
                f"{title}   f = {first['extra_fraction']:g}, accuracy {first['accuracy']:.3f}",
            )
            self.client.log_image(run_id, image, artifact_file="confusion_matrix.png")
        if self.log_models and status == "ok":
            self._log_model(run_id, spec)
        self.client.set_terminated(run_id, "FINISHED" if status == "ok" else "FAILED")
        self.logged[record["cell_id"]] = run_id
        return run_id

    def _log_model(self, run_id: str, spec: dict[str, Any]) -> None:
        """Refit the cell's f = 0 model and log it (sklearn or pytorch flavour)."""
        from mlflow.models import infer_signature

        mlflow = self._mlflow
        estimator, X_test, _ = refit_model(spec, self.data_dir)
        sample = X_test[:5]
        signature = infer_signature(sample, estimator.predict_proba(sample))
        inner = getattr(estimator, "estimator", None)  # SklearnClassifier's fitted pipeline
        module = getattr(estimator, "net_", None)  # TorchClassifier's trained torch.nn.Module
        mlflow.set_tracking_uri(self.tracking_uri)
        with mlflow.start_run(run_id=run_id):
            if inner is not None and getattr(estimator, "constant_", None) is None:
                from importlib.metadata import version

                mlflow.sklearn.log_model(
                    inner,
                    name="model",
                    signature=signature,
                    pip_requirements=[f"scikit-learn=={version('scikit-learn')}"],
                )
            elif module is not None:
                import torch

                mlflow.pytorch.log_model(
                    module,
                    name="model",
                    signature=signature,
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                )
            else:
                mlflow.set_tag("poisonbench.model_logged", "false: no sklearn or torch model")
