"""``poisonbench report --metric/--tolerance/--out``, and a backdoor run's attacks without a
trigger (a label flip: no ``backdoor_asr``) getting their headline on accuracy, marked."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

import poisonbench as pb
from bench.analysis.formats import FALLBACK_MARK, fmt_recovery
from bench.analysis.recovery import estimate_recovery
from bench.analysis.report import build_report, load_report_inputs
from bench.core.schema import (
    DEFAULT_TOLERANCE,
    FALLBACK_METRICS,
    NO_ATTACK_ID,
    NO_DEFENSE_ID,
)
from bench.core.types import ParamError
from bench.interfaces.cli import main
from tests.tiny import tiny

#: a backdoor (a feature trigger: iris is a table) and a random flip at the same rate
MIXED = tiny(
    name="mixed",
    attacks=[
        {"name": "backdoor", "trigger": "features", "features": [0, 1], "target": 0},
        {"name": "label_flip", "mode": "random"},
    ],
    seeds=2,
    recovery={"fractions": [0, 0.25], "bootstrap": 50, "metric": "backdoor_asr", "tolerance": 0.05},
)


def _run(root, config: dict, name: str):
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    out = root / name
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("metric"), tiny(seeds=2), "tiny")


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("mixed"), MIXED, "mixed")


def _findings(report) -> pd.DataFrame:
    return report.section("Findings").subsections[0].tables[0].frame


def _row(frame: pd.DataFrame, attack: str) -> pd.Series:
    rows = frame[frame["attack"].str.startswith(attack)]
    assert len(rows) == 1, attack
    return rows.iloc[0]


def test_metric_changes_the_headline_metric(tiny_run, tmp_path):
    out = tmp_path / "report-macro_f1.md"
    before = (tiny_run / "report.md").read_bytes()
    assert main(["report", str(tiny_run), "--metric", "macro_f1", "--out", str(out)]) == 0
    assert (tiny_run / "report.md").read_bytes() == before  # --out: the run's report stays
    text = out.read_text()
    assert "metric `macro_f1`, tolerance 0.005" in text
    assert "metric `macro_f1` overrides the run's `accuracy`" in text
    drawn = {p.name for p in tmp_path.glob("*.png")}  # the plots beside it, linked
    assert drawn and all(f"]({name})" in text for name in drawn)
    table, meta, config = load_report_inputs(tiny_run)
    report = build_report(table, meta, config, metric="macro_f1")
    findings = _findings(report)
    assert "macro_f1 lost" in findings.columns and "accuracy lost" not in findings.columns
    rec = estimate_recovery(table, "macro_f1", 0.005, n_boot=50)
    flip = rec[(rec["attack"] == "label_flip") & (rec["defense_id"] == NO_DEFENSE_ID)].iloc[0]
    lost = (flip["reference"] - flip["value_at_0"]) * 100
    row = _row(findings, "label_flip")
    assert row["macro_f1 lost"] == f"{lost:+.1f} pts"
    assert row["extra clean data needed"] == fmt_recovery(flip)


def test_tolerance_overrides_the_run_and_the_header_says_so(tiny_run):
    table, meta, config = load_report_inputs(tiny_run)
    rec = estimate_recovery(table, "accuracy", 0.2, n_boot=50)
    flip = rec[(rec["attack"] == "label_flip") & (rec["defense_id"] == NO_DEFENSE_ID)].iloc[0]
    report = build_report(table, meta, config, tolerance=0.2)
    assert _row(_findings(report), "label_flip")["extra clean data needed"] == fmt_recovery(flip)
    header = report.section("Run").paragraphs[2]
    assert "tolerance 0.2 overrides the run's 0.005" in header
    assert "overrides the run's `" not in header  # the metric is the run's
    plain = build_report(table, meta, config)
    assert "Overridden" not in plain.section("Run").paragraphs[2]


@pytest.mark.parametrize(
    ("metric", "words"),
    [("nonsense", "'nonsense' is unknown"), ("attack_success_rate", "not measured in this run")],
)
def test_a_metric_the_table_lacks_is_exit_2_naming_the_choices(tiny_run, capsys, metric, words):
    before = (tiny_run / "report.md").read_bytes()
    assert main(["report", str(tiny_run), "--metric", metric]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --metric: ") and words in err
    assert "choose one of accuracy, macro_f1" in err and "backdoor_asr" not in err
    assert err.count("\n") == 1  # one line, no traceback
    assert (tiny_run / "report.md").read_bytes() == before  # nothing written


def test_a_negative_tolerance_is_exit_2(tiny_run, capsys):
    assert main(["report", str(tiny_run), "--tolerance", "-0.1"]) == 2
    assert capsys.readouterr().err.startswith("error: --tolerance: must be a finite number")


def test_the_api_report_takes_the_metric_and_refuses_an_unknown_one(tiny_run, tmp_path):
    run = pb.load(tiny_run)
    path = run.report(metric="macro_f1", out=tmp_path / "r.md")
    assert path == tmp_path / "r.md" and "metric `macro_f1`" in path.read_text()
    assert "metric `macro_f1` overrides" in run.report_markdown(metric="macro_f1")
    with pytest.raises(ParamError) as info:
        run.report_markdown(metric="backdoor_asr")
    assert info.value.field == "--metric"


def test_mixed_run_gives_the_label_flip_an_f_on_accuracy(mixed_run):
    table, meta, config = load_report_inputs(mixed_run)
    assert FALLBACK_METRICS["backdoor_asr"] == "accuracy"
    flips = table[table["attack"] == "label_flip"]
    assert flips["backdoor_asr"].isna().all()  # no trigger: nothing to measure the ASR on
    rec = estimate_recovery(table, "backdoor_asr", 0.05, n_boot=50, fallback="accuracy")
    # independent: the label flip and the clean cells alone, estimated on accuracy
    alone = table[table["attack"].isin(["label_flip", "none"])]
    expected = estimate_recovery(alone, "accuracy", DEFAULT_TOLERANCE, n_boot=50)
    expected = expected[expected["attack_id"] != NO_ATTACK_ID]
    got = rec[rec["attack"] == "label_flip"]
    assert (got["metric"] == "accuracy").all() and (got["tolerance"] == DEFAULT_TOLERANCE).all()
    for column in ("f_needed", "f_low", "f_high", "reference", "value_at_0"):
        assert got[column].tolist() == pytest.approx(expected[column].tolist(), nan_ok=True)
    assert got["f_needed"].notna().all()
    # the backdoor and the clean cells keep the run's metric, as without a fallback
    own = rec[rec["attack"] != "label_flip"].reset_index(drop=True)
    plain = estimate_recovery(table, "backdoor_asr", 0.05, n_boot=50)
    plain = plain[plain["attack"] != "label_flip"].reset_index(drop=True)
    assert (own["metric"] == "backdoor_asr").all()
    assert own["f_needed"].tolist() == pytest.approx(plain["f_needed"].tolist(), nan_ok=True)
    # without the fallback the label flip has no headline (what the report showed before)
    assert plain_flip_is_empty(table)

    report = build_report(table, meta, config)
    flip = got[got["defense_id"] == NO_DEFENSE_ID].iloc[0]
    row = _row(_findings(report), "label_flip")
    assert row["extra clean data needed"] == f"{fmt_recovery(flip)} {FALLBACK_MARK}"
    lost = (flip["reference"] - flip["value_at_0"]) * 100
    assert row["backdoor_asr worse"] == f"{lost:+.1f} pts accuracy lost {FALLBACK_MARK}"
    backdoor = _row(_findings(report), "backdoor")
    assert FALLBACK_MARK not in backdoor["extra clean data needed"]
    needed = report.section("Extra clean data needed")
    assert any(
        p.startswith(f"{FALLBACK_MARK} measured on `accuracy` (tolerance 0.005)")
        and "label_flip(random)" in p
        for p in needed.paragraphs
    )
    cell = _row(needed.subsections[0].tables[0].frame, "label_flip")["none"]
    assert cell == f"{fmt_recovery(flip)} {FALLBACK_MARK}"
    # the written report carries it too
    text = (mixed_run / "report.md").read_text()
    assert f"{fmt_recovery(flip)} {FALLBACK_MARK}" in text


def plain_flip_is_empty(table: pd.DataFrame) -> bool:
    rec = estimate_recovery(table, "backdoor_asr", 0.05, n_boot=50)
    flip = rec[rec["attack"] == "label_flip"]
    return len(flip) > 0 and flip["f_needed"].map(math.isnan).all()


def test_mixed_run_with_metric_accuracy_measures_everything_on_accuracy(mixed_run, tmp_path):
    out = tmp_path / "report-accuracy.md"
    args = ["report", str(mixed_run), "--metric", "accuracy", "--tolerance", "0.005"]
    assert main([*args, "--out", str(out)]) == 0
    text = out.read_text()
    assert FALLBACK_MARK not in text
    assert "metric `accuracy` overrides the run's `backdoor_asr`" in text
    table, meta, config = load_report_inputs(mixed_run)
    rec = estimate_recovery(table, "accuracy", 0.005, n_boot=50)
    flip = rec[(rec["attack"] == "label_flip") & (rec["defense_id"] == NO_DEFENSE_ID)].iloc[0]
    report = build_report(table, meta, config, metric="accuracy", tolerance=0.005)
    assert _row(_findings(report), "label_flip")["extra clean data needed"] == fmt_recovery(flip)


def test_another_metric_without_a_tolerance_starts_from_the_default(mixed_run, tmp_path):
    # the run's 0.05 is in ASR units: accuracy without --tolerance is judged at the default
    out = tmp_path / "report-accuracy.md"
    assert main(["report", str(mixed_run), "--metric", "accuracy", "--out", str(out)]) == 0
    text = out.read_text()
    assert f"tolerance {DEFAULT_TOLERANCE:g} overrides the run's 0.05" in text
    assert "default tolerance" in text
    same = tmp_path / "same.md"  # the run's own metric keeps the run's tolerance
    assert main(["report", str(mixed_run), "--metric", "backdoor_asr", "--out", str(same)]) == 0
    assert "Overridden" not in same.read_text()
