"""The lab's backdoor mode: its pure helpers (no Streamlit) and the page driven by AppTest.

It runs on ``digits`` (tabular: the ``features`` trigger) with logreg, which fits in well under
a second, by setting the page's session state before the first run.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require

from bench.core.types import ParamError
from bench.interfaces.app import ENTRY, lab
from bench.interfaces.app import lab_backdoor as lb

LAB_PAGE = ENTRY.parent / "pages" / "lab_page.py"
TIMEOUT = 240  # seconds per script run: generous, the machine is shared


def test_dirty_label_backdoor_is_learned_and_the_clean_model_ignores_it():
    out = lb.run_backdoor_lab("digits", "logreg", "features", target=0, rate=0.1)
    s = lb.backdoor_summary(out)
    assert s["n_poisoned"] == round(0.1 * s["n_eligible"])
    assert s["poisoned_asr"] >= 0.8
    assert s["clean_asr"] <= 0.2
    # measured on the rows whose true class is not the target, all of them
    assert s["n_triggered_test"] == int((out.y_test != 0).sum())
    assert (out.y_triggered != 0).all()
    # the ASR is the share of triggered rows predicted as the target, from the probabilities
    assert s["poisoned_asr"] == pytest.approx((out.poisoned_triggered.argmax(1) == 0).mean())


def test_rate_zero_poisons_nothing_and_trains_the_clean_model():
    out = lb.run_backdoor_lab("digits", "logreg", "features", target=3, rate=0.0)
    s = lb.backdoor_summary(out)
    assert s["n_poisoned"] == 0
    np.testing.assert_allclose(out.poisoned_proba, out.clean_proba)
    assert s["poisoned_asr"] == s["clean_asr"]


def test_clean_label_triggers_target_rows_only_and_keeps_labels():
    data = lab.load_lab_data("digits")
    attack = lb.backdoor_attack(data, "features", target=2, clean_label=True)
    poisoned = lb.poison(data, attack, 0.5)
    assert (data.y_train[poisoned.mask] == 2).all()
    np.testing.assert_array_equal(poisoned.y, data.y_train)
    # the trigger columns are the quietest of the train set, set to its maximum
    cols = list(attack.features)
    assert (poisoned.X[poisoned.mask][:, cols] == data.dataset.X[data.train].max()).all()


def test_prediction_rows_match_the_outcome():
    out = lb.run_backdoor_lab("digits", "logreg", "features", target=0, rate=0.1)
    picks = lb.pick_triggered(out, 7, seed=1)
    table = lb.triggered_prediction_rows(out, picks)
    assert len(table) == 7 and len(set(table["test row"])) == 7
    obeys = out.poisoned_triggered[picks].argmax(1) == 0
    np.testing.assert_array_equal(table["obeys trigger"].to_numpy(), obeys)
    assert (table["true"] != out.class_names[0]).all()


def test_a_trigger_that_does_not_fit_is_refused_with_the_field_named():
    data = lab.load_lab_data("digits")
    assert lb.triggers_for(data) == ("features",)
    with pytest.raises(ParamError, match="trigger"):
        lb.backdoor_attack(data, "patch", target=0)
    with pytest.raises(ParamError, match="target"):
        lb.backdoor_attack(data, "features", target=10)


def _backdoor_lab(**state):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(LAB_PAGE), default_timeout=TIMEOUT)
    at.session_state["lab_mode"] = "Backdoor"
    at.session_state["bd_dataset"] = "digits"
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def test_backdoor_mode_shows_both_asrs_and_the_triggered_rows():
    require("streamlit")
    at = _backdoor_lab(bd_rate=10, bd_target=0)
    assert at.title[0].value == "Live backdoor lab"
    metrics = {m.label: m.value for m in at.metric}
    expected = lb.backdoor_summary(lb.run_backdoor_lab("digits", "logreg", "features", 0, 0.1))
    assert metrics["Backdoored ASR"] == f"{expected['poisoned_asr']:.1%}"
    assert metrics["Clean model ASR"] == f"{expected['clean_asr']:.1%}"
    assert metrics["Rows triggered"] == f"{expected['n_poisoned']} of {expected['n_eligible']}"
    table = at.dataframe[0].value
    assert len(table) == 12 and "obeys trigger" in table.columns
    # a new rate trains only on Train
    at.slider(key="bd_rate").set_value(0).run()
    assert {m.label: m.value for m in at.metric} == metrics
    at.slider(key="bd_rate").set_value(0)
    at.button(key="bd_train").click().run()
    assert not at.exception
    after = {m.label: m.value for m in at.metric}
    assert after["Rows triggered"].startswith("0 of")


def test_label_flip_mode_is_unchanged_by_default():
    require("streamlit")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(LAB_PAGE), default_timeout=TIMEOUT)
    at.session_state["lab_dataset"] = "digits"
    at.run()
    assert not at.exception
    assert at.title[0].value == "Live label-flip lab"
