"""The Streamlit app: its pure helpers, and both pages driven headless by AppTest.

The lab runs on ``digits`` (1,797 rows, logreg fits in well under a second) instead of the
default mnist-5k, by setting the page's session state before the first run.
"""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import require

from bench.app import ENTRY, explorer, lab, streamlit_command
from bench.cli import main
from bench.types import ParamError, exact_count

PAGES = ENTRY.parent / "pages"
LAB_PAGE = PAGES / "lab_page.py"
EXPLORER_PAGE = PAGES / "explorer_page.py"
TIMEOUT = 240  # seconds per script run: generous, the machine is shared

RUN = """
name: apptiny
datasets: [{name: iris, split: {train: 0.5, test: 0.3}}]
models: [logreg]
attacks:
  - {name: label_flip, mode: targeted, source: 1, target: 2}
  - {name: label_flip, mode: random}
rates: [0, 0.2, 0.4]
defenses: [none, iforest]
seeds: 2
recovery: {fractions: [0, 0.2]}
"""


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _pct(text: str) -> float:
    """'43.2%' -> 0.432"""
    return float(text.rstrip("%")) / 100


def _lab(**state):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(LAB_PAGE), default_timeout=TIMEOUT)
    at.session_state["lab_dataset"] = "digits"
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("apprun")
    (root / "c.yaml").write_text(RUN)
    out = root / "run"
    assert main(["run", str(root / "c.yaml"), "--out", str(out), "--quiet"]) == 0
    return out


# ---------------------------------------------------------------------------------------------
# Lab helpers (no Streamlit)
# ---------------------------------------------------------------------------------------------


def test_lab_at_ratio_zero_trains_the_same_model_twice():
    out = lab.run_lab("iris", "logreg", source=1, target=2, ratio=0.0)
    assert len(out.flipped) == 0
    np.testing.assert_array_equal(out.clean_proba, out.poisoned_proba)
    s = lab.summarize(out)
    assert s["accuracy_lost"] == 0 and s["clean_asr"] == s["poisoned_asr"]


def test_lab_flips_exactly_the_ratio_of_the_source_rows_and_hurts_them():
    data = lab.load_lab_data("digits", seed=0)
    y_before = data.y_train.copy()
    poisoned = lab.flip_labels(data, source=3, target=8, ratio=0.6)
    n_source = int((y_before == 3).sum())
    assert poisoned.n_poisoned == exact_count(0.6, n_source)
    assert (y_before[poisoned.mask] == 3).all() and (poisoned.y[poisoned.mask] == 8).all()
    np.testing.assert_array_equal(poisoned.y[~poisoned.mask], y_before[~poisoned.mask])
    np.testing.assert_array_equal(data.y_train, y_before)  # the split is not changed in place
    low = lab.summarize(lab.run_lab("digits", "logreg", 3, 8, 0.0))
    high = lab.summarize(lab.run_lab("digits", "logreg", 3, 8, 0.8))
    assert high["poisoned_asr"] > low["poisoned_asr"] + 0.2
    assert high["n_flipped"] == exact_count(0.8, n_source)


def test_lab_tables_are_consistent():
    out = lab.run_lab("digits", "logreg", source=1, target=7, ratio=0.5)
    mats = lab.confusion_matrices(out)
    assert (mats["difference"].sum(axis=1) == 0).all()  # both rows sum to the label's support
    assert mats["clean"].to_numpy().trace() == round(out.clean["accuracy"] * len(out.y_test))
    dist = lab.prediction_distribution(out)
    assert (dist.groupby("series")["count"].sum() == len(out.y_test)).all()
    table = lab.per_label_table(out)
    assert table.loc[1, "role"] == "source" and table.loc[7, "role"] == "target"
    assert set(table["role"]) == {"source", "target", ""}
    long = lab.confusion_long(mats["poisoned"])
    assert long["count"].sum() == len(out.y_test)
    picks = lab.pick_examples(out, 12, seed=3, source_only=True)
    assert len(picks) == 12 and (out.y_test[picks] == 1).all()
    rows = lab.prediction_rows(out, picks)
    assert rows["source class"].all() and list(rows["test row"]) == list(picks)


def test_lab_rejects_bad_choices_with_the_field_named():
    data = lab.load_lab_data("iris")
    with pytest.raises(ParamError, match="target"):
        lab.flip_labels(data, source=1, target=1, ratio=0.5)
    with pytest.raises(ParamError, match="source: 5 is not a class of iris"):
        lab.flip_labels(data, source=5, target=1, ratio=0.5)
    with pytest.raises(ParamError, match="model"):
        lab.fit_predict(data, "no-such-model", data.y_train)


def test_as_image_shapes():
    grey = lab.as_image(np.linspace(-1, 1, 28 * 28), (1, 28, 28))
    assert grey.shape == (28, 28) and grey.min() == 0 and grey.max() == 1
    assert lab.as_image(np.zeros(3 * 4 * 4), (3, 4, 4)).shape == (4, 4, 3)
    assert lab.as_image(np.zeros(4), None) is None


@pytest.mark.parametrize(
    ("values", "target", "expected"),
    [
        ([0.80, 0.90, 1.00], 0.85, 0.25),  # interpolated between f = 0 and f = 0.5
        ([0.95, 0.90, 1.00], 0.90, 0.0),  # reached at once
        ([0.80, 0.85, 0.86], 0.90, None),  # never reached on this grid
        ([0.80, 0.91, 0.85], 0.90, 0.5 * 10 / 11),  # first crossing counts
    ],
)
def test_crossing_fallback_agrees_with_the_harness(monkeypatch, values, target, expected):
    fractions = [0.0, 0.5, 1.0]
    harness = lab.crossing(fractions, values, target)
    monkeypatch.setitem(sys.modules, "bench.recovery", None)  # force the numpy fallback
    fallback = lab.crossing(fractions, values, target)
    for found in (harness, fallback):
        assert (found is None) if expected is None else found == pytest.approx(expected)


def test_recovery_fractions_fit_the_pool():
    data = lab.load_lab_data("digits")
    fractions = lab.recovery_fractions(data)
    assert fractions[0] == 0 and all(f * len(data.train) <= len(data.pool) for f in fractions)


# ---------------------------------------------------------------------------------------------
# Explorer helpers
# ---------------------------------------------------------------------------------------------


def test_explorer_filters_and_aggregates(run_dir):
    results = explorer.load_run(run_dir)
    table = results.table
    options = explorer.filter_options(table)
    assert options["defense"] == ["iforest", "none"]
    assert options["rate"] == [0.0, 0.2, 0.4]
    chosen = {"defense": ["iforest"], "rate": [0.2], "attack_label": None}
    kept = explorer.filter_table(table, chosen)
    assert len(kept) and set(kept["defense"]) == {"iforest"} and set(kept["rate"]) == {0.2}
    assert explorer.filter_table(table, {"defense": []}).empty
    by_rate = explorer.metric_by_rate(table, "accuracy")
    ok = table[(table["status"] == "ok") & (table["extra_fraction"] == 0)]
    one = ok[(ok["attack_label"] == "label_flip(random)") & (ok["defense"] == "none")]
    got = by_rate[
        (by_rate["attack_label"] == "label_flip(random)") & (by_rate["defense"] == "none")
    ]
    expected = one.groupby("rate")["accuracy"].mean()
    assert got.set_index("rate")["mean"].loc[[0.2, 0.4]].tolist() == pytest.approx(
        expected.loc[[0.2, 0.4]].tolist()
    )
    clean = ok[(ok["attack"] == "none") & (ok["defense"] == "none")]["accuracy"].mean()
    assert got.set_index("rate")["mean"].loc[0.0] == pytest.approx(clean)
    csv = explorer.to_csv_bytes(kept)
    back = pd.read_csv(__import__("io").BytesIO(csv))
    assert len(back) == len(kept) and list(back.columns) == list(kept.columns)
    assert not explorer.summary_table(kept).empty
    assert explorer.find_runs(run_dir.parent) == [run_dir]


def test_explorer_shows_the_reports_tables_for_the_chosen_rows(run_dir):
    results = explorer.load_run(run_dir)
    rec = explorer.recovery_estimates(results.table, results.meta)
    tables = dict(explorer.report_tables(results.table, rec, {"defense": ["iforest"]}))
    need = tables["Extra clean data needed (× n_train): iris / logreg"]
    assert "iforest" in need.columns and "none" not in need.columns
    assert set(need["attack_label"]) == {"label_flip(1→2)", "label_flip(random)"}
    assert sorted(set(need["rate"])) == [0.2, 0.4]
    asr = tables["Attack success rate (targeted flips): iris / logreg"]
    assert set(asr["attack_label"]) == {"label_flip(1→2)"}
    assert any(title.startswith("Filter quality") for title in tables)
    only_none = dict(explorer.report_tables(results.table, rec, {"defense": ["none"]}))
    assert not any(title.startswith("Filter quality") for title in only_none)


# ---------------------------------------------------------------------------------------------
# The pages, headless (AppTest)
# ---------------------------------------------------------------------------------------------


def test_lab_page_numbers_follow_the_ratio_and_labels():
    require("streamlit")
    at = _lab(lab_ratio=0)
    assert at.title[0].value == "Live label-flip lab"
    data = lab.load_lab_data("digits")
    n_source = int((data.y_train == 1).sum())
    m0 = _metrics(at)
    assert m0["Labels flipped"] == f"0 of {n_source}"
    assert m0["Accuracy lost"] == "0.0%"
    assert m0["Poisoned accuracy"] == m0["Clean accuracy"]
    assert _pct(m0["Attack success rate"]) <= 0.05
    assert "No label is flipped" in at.info[0].value

    at.slider(key="lab_ratio").set_value(60).run()
    assert not at.exception
    m60 = _metrics(at)
    assert m60["Labels flipped"] == f"{exact_count(0.6, n_source)} of {n_source}"
    assert _pct(m60["Attack success rate"]) > _pct(m0["Attack success rate"]) + 0.2
    assert _pct(m60["Accuracy lost"]) > 0
    assert m60["Clean accuracy"] == m0["Clean accuracy"]  # the clean model does not move
    expected = lab.summarize(lab.run_lab("digits", "logreg", 1, 7, 0.6))
    assert m60["Attack success rate"] == f"{expected['poisoned_asr']:.1%}"
    assert m60["Poisoned accuracy"] == f"{expected['poisoned_accuracy']:.1%}"

    at.selectbox(key="lab_source").set_value(3).run()
    at.selectbox(key="lab_target").set_value(8).run()
    assert not at.exception
    n3 = int((data.y_train == 3).sum())
    assert _metrics(at)["Labels flipped"] == f"{exact_count(0.6, n3)} of {n3}"
    per_label = next(d.value for d in at.dataframe if "role" in getattr(d.value, "columns", []))
    assert dict(zip(per_label["label"], per_label["role"], strict=True))["3"] == "source"


def test_lab_page_recovery_curve_on_demand():
    require("streamlit")
    at = _lab(lab_ratio=80)
    assert "Extra clean data needed" not in _metrics(at)
    at.button(key="lab_recover").click().run()
    assert not at.exception
    shown = _metrics(at)["Extra clean data needed"]
    assert re.fullmatch(r"(> )?\d+(\.\d+)? × train", shown)
    curve = at.dataframe[-1].value
    assert list(curve.columns) == ["extra_fraction", "accuracy", "attack_success_rate"]
    assert curve["extra_fraction"].iloc[0] == 0
    assert f"{curve['accuracy'].iloc[0]:.1%}" == _metrics(at)["Poisoned accuracy"]
    # extra clean rows never make the flip more successful here
    assert curve["attack_success_rate"].iloc[-1] <= curve["attack_success_rate"].iloc[0]


def test_lab_page_reports_a_model_that_does_not_fit_the_dataset():
    require("streamlit")
    from bench.models import MODELS

    if "cnn" not in MODELS:
        pytest.skip("the cnn model is not registered")
    at = _lab(lab_dataset="iris", lab_model="cnn")
    assert at.error and "model" in at.error[0].value


def test_explorer_page_filters_and_counts(run_dir):
    require("streamlit")
    from streamlit.testing.v1 import AppTest

    table = pd.read_parquet(run_dir / "results.parquet")
    at = AppTest.from_file(str(EXPLORER_PAGE), default_timeout=TIMEOUT)
    at.session_state["explorer_run_dir"] = str(run_dir)
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Results explorer"
    m = _metrics(at)
    assert m["Cells"] == str(table["cell_id"].nunique()) and m["Rows"] == str(len(table))
    assert any(f"{len(table)} of {len(table)} rows match" in c.value for c in at.caption)

    at.multiselect(key="explorer_defense").set_value(["iforest"]).run()
    at.multiselect(key="explorer_rate").set_value([0.2]).run()
    assert not at.exception
    kept = table[(table["defense"] == "iforest") & (table["rate"] == 0.2)]
    assert any(f"{len(kept)} of {len(table)} rows match" in c.value for c in at.caption)
    rows = at.dataframe[-1].value
    assert len(rows) == len(kept) and set(rows["defense"]) == {"iforest"}
    summary = at.dataframe[0].value
    assert list(summary.columns[-1:]) == ["iforest"]
    assert at.get("download_button")


def test_explorer_page_says_what_is_wrong_with_a_directory(tmp_path):
    require("streamlit")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(EXPLORER_PAGE), default_timeout=TIMEOUT)
    at.session_state["explorer_run_dir"] = str(tmp_path)
    at.run()
    assert not at.exception
    assert "holds no results.parquet or results.csv" in at.error[0].value


def test_entry_script_navigates_between_both_pages(run_dir, monkeypatch):
    require("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("POISONBENCH_RUN_DIR", str(run_dir))
    at = AppTest.from_file(str(ENTRY), default_timeout=TIMEOUT)
    at.session_state["lab_dataset"] = "iris"
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Live label-flip lab"
    at.switch_page(str(EXPLORER_PAGE.relative_to(ENTRY.parent))).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Results explorer"
    assert at.text_input(key="explorer_run_dir").value == str(run_dir)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def test_app_command_binds_to_localhost_without_usage_stats():
    cmd = streamlit_command(8600)
    assert "--server.address=127.0.0.1" in cmd and "--server.port=8600" in cmd
    assert "--browser.gatherUsageStats=false" in cmd and "--server.headless=true" in cmd
    assert cmd[cmd.index("run") + 1] == str(ENTRY)


def test_app_command_errors(tmp_path, capsys):
    assert main(["app", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["app", "--port", "0"]) == 2
    assert "--port" in capsys.readouterr().err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_sigterm_stops_the_app_and_its_streamlit_child():
    """``kill PID`` of ``poisonbench app`` used to end only the parent: its Streamlit child
    went on serving the port."""
    import signal
    import subprocess
    import time

    require("streamlit")
    psutil = require("psutil")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "app", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children = []
    try:
        deadline = time.monotonic() + 180
        while not _listening(port) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _listening(port), "the app did not start"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, "the Streamlit child outlived the app"
        assert not _listening(port)
    finally:
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        proc.kill()
        proc.wait()


def test_missing_streamlit_is_a_clear_error(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "streamlit" else real(name)
    )
    assert main(["app"]) == 2
    assert "pip install 'poisonbench[app]'" in capsys.readouterr().err
