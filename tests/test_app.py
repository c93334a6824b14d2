"""The Streamlit app: its pure helpers, and both pages driven headless by AppTest.

The lab runs on ``digits`` (1,797 rows, logreg fits in well under a second) instead of the
default mnist-5k, by setting the page's session state before the first run.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import require

from bench.core.types import ParamError, exact_count
from bench.interfaces.app import ENTRY, charts, columns, explorer, lab, streamlit_command
from bench.interfaces.cli import main

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
    picks = lab.pick_examples(out, 12, seed=3, mode="source")
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
    monkeypatch.setitem(sys.modules, "bench.analysis.recovery", None)  # force the numpy fallback
    fallback = lab.crossing(fractions, values, target)
    for found in (harness, fallback):
        assert (found is None) if expected is None else found == pytest.approx(expected)


def test_recovery_fractions_fit_the_pool():
    data = lab.load_lab_data("digits")
    fractions = lab.recovery_fractions(data)
    assert fractions[0] == 0 and all(f * len(data.train) <= len(data.pool) for f in fractions)


def test_default_test_images_always_include_the_source_class():
    """The old default (a plain random draw of 8) often held no image of the source class."""
    out = lab.run_lab("digits", "logreg", source=1, target=7, ratio=0.5)
    no_source = 0
    for seed in range(30):
        mix = lab.pick_examples(out, 8, seed=seed)  # the default mode
        assert len(mix) == len(set(mix)) == 8 and list(mix) == sorted(mix)
        assert (out.y_test[mix] == 1).sum() == 4  # half, the rest from other classes
        rand = lab.pick_examples(out, 8, seed=seed, mode="random")
        no_source += int((out.y_test[rand] == 1).sum() == 0)
    assert no_source > 0  # what the mix fixes: random draws without a single source image
    odd = lab.pick_examples(out, 5, seed=1)
    assert (out.y_test[odd] == 1).sum() == 3
    with pytest.raises(ParamError, match="mode"):
        lab.pick_examples(out, 8, mode="sources")


@pytest.mark.parametrize(
    ("change", "fmt", "expected"),
    [
        (0.0, "+.1%", None),
        (-0.00004, "+.1%", None),  # shown as -0.0%: no change, not a red arrow
        (0.0004, "+.3f", None),
        (-0.034, "+.1%", "-3.4%"),
        (0.155, "+.3f", "+0.155"),
    ],
)
def test_metric_delta_has_no_arrow_for_no_change(change, fmt, expected):
    got = lab.metric_delta(change, fmt, " vs clean")
    if expected is None:
        assert got == {"delta": "no change vs clean", "delta_arrow": "off", "delta_color": "off"}
    else:
        assert got == {"delta": f"{expected} vs clean"}


def test_fit_cache_is_a_bounded_lru():
    cache = lab.FitCache(max_entries=2)
    calls = []

    def compute(v):
        return lambda: calls.append(v) or v

    assert cache.get("a", compute(1)) == 1 and cache.get("a", compute(9)) == 1
    cache.get("b", compute(2))
    cache.get("a", compute(9))  # a is now the most recently used
    cache.get("c", compute(3))  # evicts b
    assert "a" in cache and "c" in cache and "b" not in cache and len(cache) == 2
    assert calls == [1, 2, 3]
    with pytest.raises(ParamError, match="max_entries"):
        lab.FitCache(0)


def test_fit_predict_reports_torch_epochs():
    """The CNN and the torch MLP report each epoch while they train; sklearn only the end."""
    require("torch")
    data = lab.load_lab_data("iris")
    seen: list[tuple[float, str]] = []
    proba = lab.fit_predict(
        data, "torch-mlp", data.y_train, progress=lambda d, t: seen.append((d, t))
    )
    epochs = lab.MODELS.get("torch-mlp").from_params({}).epochs
    texts = [t for _, t in seen]
    for e in range(1, epochs + 1):
        assert f"epoch {e} of {epochs}" in texts
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == 1.0 and 0 < done[0] < 1
    # the watched fit is the same model: same seed, same probabilities
    np.testing.assert_array_equal(proba, lab.fit_predict(data, "torch-mlp", data.y_train))
    seen.clear()
    lab.fit_predict(data, "logreg", data.y_train, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1.0, "done")]


def test_recovery_curve_reuses_the_trained_f0_model():
    out = lab.run_lab("digits", "logreg", source=1, target=7, ratio=0.6)
    data = lab.load_lab_data("digits")
    poisoned = lab.flip_labels(data, 1, 7, 0.6)
    asked: list[float] = []

    def fit_extra(f):
        asked.append(f)
        return lab.fit_predict(data, "logreg", poisoned.y, extra_rows=round(f * len(data.train)))

    curve = lab.recovery_curve(out, [0.0, 0.1, 0.25], fit_extra)
    assert asked == [0.1, 0.25]  # f = 0 is the poisoned model already trained
    assert list(curve.columns) == ["extra_fraction", "accuracy", "attack_success_rate"]
    assert curve["accuracy"].iloc[0] == out.poisoned["accuracy"]
    assert curve["attack_success_rate"].iloc[0] == pytest.approx(
        out.poisoned["attack_success_rate"]
    )


def _axis(layer: dict, channel: str) -> dict:
    return layer["encoding"][channel]


def test_confusion_heatmap_labels_every_class_on_both_axes():
    out = lab.run_lab("digits", "logreg", source=1, target=7, ratio=0.5)
    matrix = lab.confusion_matrices(out)["poisoned"]
    spec = charts.confusion_heatmap(matrix, "Poisoned model", "1", "7").to_dict()
    cells, text, source_row, target_column = spec["layer"]
    names = [str(n) for n in out.class_names]
    for channel in ("x", "y"):
        enc = _axis(cells, channel)
        assert enc["scale"]["domain"] == names and enc["sort"] == names
        assert enc["axis"]["labelOverlap"] is False  # every label drawn, none thinned out
        assert enc["axis"]["labelAngle"] == 0  # horizontal
    # the source row and the target column: outlined, their tick labels coloured
    assert spec["datasets"][source_row["data"]["name"]] == [{"true": "1"}]
    assert source_row["mark"]["stroke"] == charts.SOURCE_COLOUR
    assert spec["datasets"][target_column["data"]["name"]] == [{"predicted": "7"}]
    assert '"1"' in _axis(cells, "y")["axis"]["labelColor"]["expr"]
    assert '"7"' in _axis(cells, "x")["axis"]["labelColor"]["expr"]
    # numbers in white on dark cells, dark elsewhere
    colour = text["encoding"]["color"]
    high = int(matrix.to_numpy().max())
    assert colour["condition"]["test"] == f"datum.count > {high / 2}"
    assert colour["condition"]["value"] == charts.TEXT_LIGHT and colour["value"] == charts.TEXT_DARK
    diff = charts.confusion_heatmap(matrix - matrix.T, "d", diverging=True).to_dict()
    assert diff["layer"][1]["encoding"]["color"]["condition"]["test"].startswith("abs(")
    assert len(diff["layer"]) == 2  # no source or target given: nothing outlined


def test_prediction_chart_leaves_room_above_the_tallest_bar():
    out = lab.run_lab("digits", "logreg", source=1, target=7, ratio=1.0)
    dist = lab.prediction_distribution(out)
    spec = charts.prediction_bars(dist, list(out.class_names)).to_dict()
    low, high = spec["encoding"]["y"]["scale"]["domain"]
    assert low == 0 and high >= 1.1 * dist["count"].max()
    assert spec["encoding"]["x"]["axis"]["labelAngle"] == 0


def test_lab_recovery_chart_labels_the_clean_line():
    curve = pd.DataFrame(
        {"extra_fraction": [0, 0.5], "accuracy": [0.8, 0.9], "attack_success_rate": [0.3, 0.1]}
    )
    spec = charts.lab_recovery_chart(curve, 0.934).to_dict()
    line, rule, label = spec["layer"]
    assert rule["mark"]["type"] == "rule" and label["mark"]["type"] == "text"
    assert spec["datasets"][label["data"]["name"]][0]["label"] == "clean model: 93.4%"
    legend = line["encoding"]["color"]
    assert legend["scale"]["domain"] == list(charts.RECOVERY_SERIES)
    assert legend["legend"]["symbolType"] == "stroke"


def test_column_titles_are_human_and_keep_the_name_in_help():
    for column in ("attack_label", "extra_fraction", "attack_success_rate"):
        title = columns.title(column)
        assert "_" not in title and title[0].isupper()
        assert f"`{column}`" in columns.help_text(column)
    assert columns.title("some_new_column") == "Some new column"


# ---------------------------------------------------------------------------------------------
# Explorer helpers
# ---------------------------------------------------------------------------------------------


def _ids(table: pd.DataFrame, column: str) -> dict[str, str]:
    """label → id for one kind (``defense``, ``attack``)."""
    pairs = table[[f"{column}_label", f"{column}_id"]].drop_duplicates()
    return dict(zip(pairs[f"{column}_label"], pairs[f"{column}_id"], strict=True))


def test_explorer_filters_and_aggregates(run_dir):
    results = explorer.load_run(run_dir)
    table = results.table
    defenses = _ids(table, "defense")
    options = explorer.filter_options(table)
    assert sorted(options["defense_id"]) == sorted(defenses.values())
    shown = explorer.option_labels(table, "defense_id")
    assert sorted(shown.values()) == ["iforest", "none"]
    assert options["rate"] == [0.0, 0.2, 0.4]
    chosen = {"defense_id": [defenses["iforest"]], "rate": [0.2], "attack_id": None}
    kept = explorer.filter_table(table, chosen)
    assert len(kept) and set(kept["defense_label"]) == {"iforest"} and set(kept["rate"]) == {0.2}
    assert explorer.filter_table(table, {"defense_id": []}).empty
    by_rate = explorer.metric_by_rate(table, "accuracy")
    ok = table[(table["status"] == "ok") & (table["extra_fraction"] == 0)]
    one = ok[(ok["attack_label"] == "label_flip(random)") & (ok["defense_label"] == "none")]
    got = by_rate[
        (by_rate["attack_label"] == "label_flip(random)") & (by_rate["defense_label"] == "none")
    ]
    expected = one.groupby("rate")["accuracy"].mean()
    assert got.set_index("rate")["mean"].loc[[0.2, 0.4]].tolist() == pytest.approx(
        expected.loc[[0.2, 0.4]].tolist()
    )
    clean = ok[(ok["attack"] == "none") & (ok["defense_label"] == "none")]["accuracy"].mean()
    assert got.set_index("rate")["mean"].loc[0.0] == pytest.approx(clean)
    csv = explorer.to_csv_bytes(kept)
    back = pd.read_csv(__import__("io").BytesIO(csv))
    assert len(back) == len(kept) and list(back.columns) == list(kept.columns)
    assert not explorer.summary_table(kept).empty
    assert explorer.find_runs(run_dir.parent) == [run_dir]


def test_explorer_shows_the_reports_tables_for_the_chosen_rows(run_dir):
    results = explorer.load_run(run_dir)
    rec = explorer.recovery_estimates(results.table, results.meta)
    defenses = _ids(results.table, "defense")
    chosen = {"defense_id": [defenses["iforest"]]}
    tables = dict(explorer.report_tables(results.table, rec, chosen))
    need = tables["Extra clean data needed (× n_train): iris / logreg"]
    assert "iforest" in need.columns and "none" not in need.columns
    assert set(need["attack"]) == {"label_flip(1→2)", "label_flip(random)"}
    assert sorted(set(need["rate"])) == ["20%", "40%"]
    asr = tables["Attack success rate (targeted flips): iris / logreg"]
    assert set(asr["attack"]) == {"label_flip(1→2)"}
    assert any(title.startswith("Filter quality") for title in tables)
    only_none = dict(explorer.report_tables(results.table, rec, {"defense_id": [defenses["none"]]}))
    assert not any(title.startswith("Filter quality") for title in only_none)


def test_report_blocks_render_details_and_resolve_images(run_dir):
    """report.md as GitHub shows it: no literal <details> tags, images found in the run dir."""
    results = explorer.load_run(run_dir)
    assert "<details><summary>Config</summary>" in results.report  # what used to show
    blocks = explorer.report_blocks(results.report, run_dir)

    def walk(items):
        for block in items:
            yield block
            yield from walk(block.children)

    every = list(walk(blocks))
    for block in every:
        assert "<details" not in block.text and "</details>" not in block.text
        assert "<summary>" not in block.text
    (config,) = [b for b in every if b.kind == "details"]
    assert config.text == "Config"
    assert config.children[0].kind == "markdown"
    assert (
        config.children[0].text.startswith("```yaml") and "name: apptiny" in config.children[0].text
    )
    images = [b for b in every if b.kind == "image"]
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", results.report)
    assert len(images) == len(linked) > 0
    for block, src in zip(images, linked, strict=True):
        assert block.exists and block.path == (run_dir / src).resolve()
    text = "".join(b.text for b in every if b.kind == "markdown")
    assert "![" not in text  # no image left for the browser to resolve against the app's URL


def test_report_blocks_keep_code_fences_and_flag_missing_images(tmp_path):
    text = (
        "# T\n\n```\n<details>\n![x](in-code.png)\n```\n\n"
        "<details>\n<summary>More</summary>\n\ninside ![a](missing.png) after\n\n</details>\n"
        "tail ![remote](https://example.org/p.png)\n"
    )
    blocks = explorer.report_blocks(text, tmp_path)
    assert [b.kind for b in blocks] == ["markdown", "details", "markdown"]
    assert "<details>\n![x](in-code.png)" in blocks[0].text  # code is code
    inner = blocks[1].children
    assert blocks[1].text == "More"
    assert [b.kind for b in inner] == ["markdown", "image", "markdown"]
    assert inner[1].path == tmp_path / "missing.png" and not inner[1].exists
    assert "https://example.org/p.png" in blocks[2].text  # a URL is left to markdown


def test_explorer_notes_explain_the_interval_notation():
    note = explorer.table_note("Extra clean data needed (× n_train): digits / logreg")
    for part in ("0.79× [0.15–2+]", "95 %", "2+", "> 2×", "†"):
        assert part in note
    assert explorer.table_note("Attack success rate (targeted flips): x / y") is None


def test_explorer_series_are_only_those_with_values(run_dir):
    """With attack success rate, untargeted attacks have no line, so no legend entry."""
    table = explorer.load_run(run_dir).table
    by_rate = explorer.metric_by_rate(table, "attack_success_rate")
    assert set(by_rate["attack_label"]) == {"label_flip(1→2)"}
    assert by_rate["mean"].notna().all()
    spec = charts.rate_chart(
        by_rate, "attack_success_rate", "attack_label", "defense_label"
    ).to_dict()
    colour = spec["spec"]["layer"][0]["encoding"]["color"]
    assert colour["scale"]["domain"] == sorted(set(by_rate["defense_label"]))
    assert colour["legend"]["symbolType"] == "stroke"  # lines in the legend, not dots
    by_f = explorer.metric_by_fraction(table, "attack_success_rate")
    assert set(by_f["panel"]) == {"label_flip(1→2) at 20%", "label_flip(1→2) at 40%"}
    assert explorer.CLEAN_CURVE not in set(by_f["defense_label"])  # the clean model has no ASR


def test_recovery_chart_has_one_panel_per_attack_and_rate(run_dir):
    table = explorer.load_run(run_dir).table
    by_f = explorer.metric_by_fraction(table, "accuracy")
    attacked = table[table["attack"] != "none"]
    panels = attacked[["attack_label", "rate"]].drop_duplicates()
    assert by_f["panel"].nunique() == len(panels) == 4
    for panel, group in by_f.groupby("panel"):
        # each panel: one curve per defense and the clean model's curve
        assert set(group["defense_label"]) == {"none", "iforest", explorer.CLEAN_CURVE}, panel
    clean = table[(table["attack"] == "none") & (table["defense_label"] == "none")]
    expected = clean.groupby("extra_fraction")["accuracy"].mean()
    one = by_f[(by_f["panel"] == "label_flip(random) at 40%")]
    got = one[one["defense_label"] == explorer.CLEAN_CURVE].set_index("extra_fraction")["mean"]
    assert got.tolist() == pytest.approx(expected.tolist())
    spec = charts.recovery_chart(by_f, "accuracy", "defense_label", explorer.CLEAN_CURVE).to_dict()
    colour = spec["spec"]["layer"][0]["encoding"]["color"]
    assert colour["scale"]["domain"] == ["iforest", "none", explorer.CLEAN_CURVE]
    assert spec["facet"]["field"] == "panel" and spec["columns"] == 3


def test_two_settings_of_one_defense_are_two_series(run_dir):
    """The explorer groups by ids: two iforest settings with one display name stay apart."""
    table = explorer.load_run(run_dir).table
    forest = table["defense"] == "iforest"
    other = table[forest].assign(
        defense_id=lambda t: t["defense_id"].str.replace(
            r'"contamination":[^,}]+', '"contamination":0.3', regex=True
        ),
        accuracy=lambda t: t["accuracy"] - 0.1,
    )
    both = pd.concat([table, other], ignore_index=True)
    assert other["defense_id"].iloc[0] != table.loc[forest, "defense_id"].iloc[0]
    by_rate = explorer.metric_by_rate(both, "accuracy")
    forests = by_rate[by_rate["defense_id"].str.contains("iforest")]
    assert forests["defense_id"].nunique() == 2
    means = forests.groupby("defense_id")["mean"].mean()
    assert abs(means.max() - means.min() - 0.1) < 1e-9  # not averaged together
    assert explorer.group_keys("attack", "rate") == ["attack_id", "attack_label", "rate"]


def _train(at, **values):
    """Set the sidebar form's widgets and press Train, in one run (as a user does)."""
    for key, value in values.items():
        widget = at.slider(key=key) if key == "lab_ratio" else at.selectbox(key=key)
        widget.set_value(value)
    at.button(key="lab_train").click()
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def count_fits(monkeypatch):
    """Every lab.fit_predict call the page makes, as its extra_rows (the fit cache cleared)."""
    import streamlit as st

    st.cache_resource.clear()
    calls: list[int] = []
    real = lab.fit_predict

    def counted(*args, **kwargs):
        calls.append(int(kwargs.get("extra_rows", 0)))
        return real(*args, **kwargs)

    monkeypatch.setattr(lab, "fit_predict", counted)
    return calls


def _charts(at) -> list[dict]:
    """The Vega-Lite specs of the page's Altair charts, each with its data frames (Streamlit
    sends them apart from the spec) under ``"frames"``: dataset name → DataFrame."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    specs = []
    for node in at.get("vega_lite_chart"):
        spec = json.loads(node.proto.spec)
        spec["frames"] = {
            d.name: convert_arrow_bytes_to_pandas_df(d.data.data) for d in node.proto.datasets
        }
        specs.append(spec)
    return specs


def _metric(at, label: str):
    return next(m for m in at.metric if m.label == label)


def test_lab_page_trains_only_on_the_train_button(count_fits):
    require("streamlit")
    from streamlit.proto.Metric_pb2 import Metric

    at = _lab(lab_ratio=0)
    assert at.title[0].value == "Live label-flip lab"
    assert count_fits == [0]  # the first visit trains the defaults once; at 0 % one model
    data = lab.load_lab_data("digits")
    n_source = int((data.y_train == 1).sum())
    m0 = _metrics(at)
    assert m0["Labels flipped"] == f"0 of {n_source}"
    assert m0["Accuracy lost"] == "0.0%"
    assert m0["Poisoned accuracy"] == m0["Clean accuracy"]
    assert _pct(m0["Attack success rate"]) <= 0.05
    assert "No label is flipped" in at.info[0].value
    # no change: no arrow, no colour (it used to read "↓ -0.0%" in red)
    for label in ("Poisoned accuracy", "Attack success rate", "Poisoned log-loss"):
        metric = _metric(at, label)
        assert metric.proto.delta.startswith("no change"), label
        assert metric.proto.direction == Metric.MetricDirection.NONE, label
        assert metric.proto.color == Metric.MetricColor.GRAY, label

    at.slider(key="lab_ratio").set_value(60).run()  # moving the slider alone trains nothing
    assert not at.exception
    assert count_fits == [0] and _metrics(at) == m0

    _train(at, lab_ratio=60)
    assert count_fits == [0, 0]  # one fit: the poisoned model (the clean one is cached)
    m60 = _metrics(at)
    assert m60["Labels flipped"] == f"{exact_count(0.6, n_source)} of {n_source}"
    assert _pct(m60["Attack success rate"]) > _pct(m0["Attack success rate"]) + 0.2
    assert _pct(m60["Accuracy lost"]) > 0
    assert m60["Clean accuracy"] == m0["Clean accuracy"]  # the clean model does not move
    expected = lab.summarize(lab.run_lab("digits", "logreg", 1, 7, 0.6))
    assert m60["Attack success rate"] == f"{expected['poisoned_asr']:.1%}"
    assert m60["Poisoned accuracy"] == f"{expected['poisoned_accuracy']:.1%}"
    assert _metric(at, "Poisoned accuracy").proto.direction == Metric.MetricDirection.DOWN

    _train(at, lab_source=3)  # the target stays 7: still a valid choice
    assert at.selectbox(key="lab_target").value == 7
    n3 = int((data.y_train == 3).sum())
    assert _metrics(at)["Labels flipped"] == f"{exact_count(0.6, n3)} of {n3}"
    per_label = next(d.value for d in at.dataframe if "role" in getattr(d.value, "columns", []))
    roles = dict(zip(per_label["label"], per_label["role"], strict=True))
    assert roles["3"] == "source" and roles["7"] == "target"

    shown = _metrics(at)
    fits = len(count_fits)
    _train(at, lab_source=7)  # source = target: refused, the results stay
    assert "same label" in at.sidebar.error[0].value
    assert _metrics(at) == shown and len(count_fits) == fits


def test_lab_page_default_images_include_the_source_class():
    require("streamlit")
    at = _lab(lab_ratio=40)
    assert at.radio(key="lab_pick").value == "mix"
    table = next(d.value for d in at.dataframe if "source class" in getattr(d.value, "columns", []))
    assert len(table) == 8 and table["source class"].sum() == 4


def test_lab_page_confusion_matrices_label_every_class():
    require("streamlit")
    at = _lab(lab_ratio=50)
    heatmaps = {}
    for spec in _charts(at):
        title = spec.get("title")
        if isinstance(title, dict):
            title = title.get("text")
        if title in ("Clean model", "Poisoned model", "Difference (poisoned − clean)"):
            heatmaps[title] = spec
    assert len(heatmaps) == 3
    names = [str(i) for i in range(10)]
    for title, spec in heatmaps.items():
        cells = spec["layer"][0]
        for channel in ("x", "y"):
            enc = cells["encoding"][channel]
            assert enc["scale"]["domain"] == names, (title, channel)
            assert enc["axis"]["labelOverlap"] is False and enc["axis"]["labelAngle"] == 0
        assert len(spec["layer"]) == 4, title  # cells, counts, source row, target column


def test_lab_page_recovery_curve_reuses_the_trained_model(count_fits):
    require("streamlit")
    at = _lab(lab_ratio=80)
    assert "Extra clean data needed" not in _metrics(at)
    before = len(count_fits)
    at.button(key="lab_recover").click().run()
    assert not at.exception
    recovery_fits = count_fits[before:]
    fractions = lab.recovery_fractions(lab.load_lab_data("digits"))
    assert len(recovery_fits) == len(fractions) - 1 and 0 not in recovery_fits
    shown = _metrics(at)["Extra clean data needed"]
    assert re.fullmatch(r"(> )?\d+(\.\d+)? × train", shown)
    frame = at.dataframe[-1]
    curve = frame.value
    assert list(curve.columns) == ["extra_fraction", "accuracy", "attack_success_rate"]
    assert curve["extra_fraction"].iloc[0] == 0
    assert f"{curve['accuracy'].iloc[0]:.1%}" == _metrics(at)["Poisoned accuracy"]
    # extra clean rows never make the flip more successful here
    assert curve["attack_success_rate"].iloc[-1] <= curve["attack_success_rate"].iloc[0]
    # human headers, the column name in the help text
    config = json.loads(frame.proto.columns)
    assert config["extra_fraction"]["label"] == "Extra clean data (× training rows)"
    assert "`extra_fraction`" in config["extra_fraction"]["help"]
    labels = [
        label
        for spec in _charts(at)
        for frame in spec["frames"].values()
        if "label" in frame
        for label in frame["label"]
    ]
    clean = _metrics(at)["Clean accuracy"]
    assert f"clean model: {clean}" in labels  # the dashed line says what it is


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

    # the filters are pills: every value shown, one click drops one
    defenses = _ids(table, "defense")
    defense = at.pills(key="explorer_defense_id")
    assert sorted(defense.options) == ["iforest", "none"]
    assert set(defense.value) == set(defenses.values())
    assert at.pills(key="explorer_rate").options == ["0%", "20%", "40%"]
    defense.unselect(defenses["none"]).run()
    at.pills(key="explorer_rate").unselect(0.0).unselect(0.4).run()
    assert not at.exception
    kept = table[(table["defense_label"] == "iforest") & (table["rate"] == 0.2)]
    assert any(f"{len(kept)} of {len(table)} rows match" in c.value for c in at.caption)
    frame = at.dataframe[-1]
    rows = frame.value
    assert len(rows) == len(kept) and set(rows["defense_label"]) == {"iforest"}
    # human headers with the column name as help
    config = json.loads(frame.proto.columns)
    assert config["attack_label"]["label"] == "Attack"
    assert "`attack_label`" in config["attack_label"]["help"]
    assert config["extra_fraction"]["label"] == "Extra clean data (× training rows)"
    summary = at.dataframe[0].value
    assert list(summary.columns[-1:]) == ["iforest"]
    assert at.get("download_button")


def test_explorer_page_renders_the_report_and_explains_its_notation(run_dir):
    require("streamlit")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(EXPLORER_PAGE), default_timeout=TIMEOUT)
    at.session_state["explorer_run_dir"] = str(run_dir)
    at.run()
    assert not at.exception, at.exception
    texts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    assert not any("<details" in t or "</details>" in t or "<summary>" in t for t in texts)
    assert not any("![" in t for t in texts)  # every image is an image element
    labels = [e.label for e in at.expander]
    assert "Report (report.md)" in labels and "Config" in labels  # <details> is collapsible
    images = at.get("image")
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (run_dir / "report.md").read_text())
    plots = explorer.load_run(run_dir).plots
    assert len(images) == len(linked) + len(plots) > 0  # the report's images and the plots
    assert not at.warning  # no "Image not found"
    captions = " ".join(c.value for c in at.caption)
    assert "0.79× [0.15–2+]" in captions and "95 % interval over seeds" in captions
    assert "the filters above do not apply to them" in captions
    # with attack success rate, only the targeted flip has a line
    at.selectbox(key="explorer_metric").set_value("attack_success_rate").run()
    assert not at.exception
    assert any(h.value == "Attack success rate vs poison rate" for h in at.subheader)
    facets = [spec for spec in _charts(at) if "facet" in spec]
    assert len(facets) == 2  # attack success rate vs rate, and vs extra clean data
    for spec in facets:
        (frame,) = spec["frames"].values()
        assert set(frame["attack_label"]) == {"label_flip(1→2)"}
        colour = spec["spec"]["layer"][0]["encoding"]["color"]
        assert set(colour["scale"]["domain"]) == set(frame["defense_label"])


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
        [sys.executable, "-m", "bench.interfaces.cli", "app", "--port", str(port)],
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
