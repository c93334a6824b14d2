"""The lab page's backdoor mode (Streamlit): pick the trigger, the target and the rate, train
the clean and the backdoored model, and see triggered test images with both models'
predictions and the two attack success rates.

The computation is :mod:`bench.interfaces.app.lab_backdoor`; this module only draws it. The
label-flip lab (``pages/lab_page.py``) calls :func:`render` when the sidebar's mode is
"Backdoor" and stops there, so the label-flip lab is unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from bench.core.types import PoisonBenchError
from bench.interfaces.app import lab, lab_backdoor

#: the triggered test images shown
N_EXAMPLES = 12


@st.cache_resource(max_entries=8, show_spinner=False)
def _data(dataset: str, seed: int) -> lab.LabData:
    return lab.load_lab_data(dataset, seed)


@st.cache_resource(show_spinner=False)
def _fits() -> lab.FitCache:
    return lab.FitCache(max_entries=64)


def _stage(bar: Any, low: float, high: float, label: str) -> lab.Progress:
    def report(done: float, text: str) -> None:
        bar.progress(low + (high - low) * done, text=f"{label}: {text}")

    bar.progress(low, text=f"{label}…")
    return report


def _outcome(choice: dict[str, Any], bar: Any) -> lab_backdoor.BackdoorOutcome:
    """Both fits for ``choice`` (each cached: a new rate refits only the backdoored model)."""
    data = _data(choice["dataset"], choice["seed"])
    attack = lab_backdoor.backdoor_attack(
        data, choice["trigger"], choice["target"], choice["clean_label"]
    )
    rows, X_trig = lab_backdoor.triggered_test(data, attack)
    model, seed = choice["model"], choice["seed"]
    base = (choice["dataset"], model, seed, choice["trigger"], choice["target"])
    clean = _fits().get(
        ("clean", *base),
        lambda: lab_backdoor.fit_two(
            data,
            model,
            data.dataset.X[data.train],
            data.y_train,
            X_trig,
            seed,
            _stage(bar, 0, 0.5, f"Clean {model}"),
        ),
    )
    poisoned = lab_backdoor.poison(data, attack, choice["rate"], seed)
    dirty = _fits().get(
        ("backdoored", *base, choice["clean_label"], choice["rate"]),
        lambda: lab_backdoor.fit_two(
            data,
            model,
            poisoned.X,
            poisoned.y,
            X_trig,
            seed,
            _stage(bar, 0.5, 1.0, f"Backdoored {model}"),
        ),
    )
    return lab_backdoor.outcome_of(
        data, attack, choice["rate"], poisoned, rows, X_trig, clean, dirty
    )


def render() -> None:
    """Draw the backdoor lab: sidebar form, summary metrics, triggered examples."""
    st.title("Live backdoor lab")
    st.caption(
        "Stamp a trigger on a share of the training rows (dirty label: non-target rows, "
        "relabelled as the target; clean label: target rows, labels kept) and compare the "
        "backdoored model with the clean one on test rows carrying the trigger."
    )
    datasets, models = lab.lab_choices()
    state = st.session_state
    state.setdefault("bd_dataset", "mnist-5k" if "mnist-5k" in datasets else datasets[0])
    state.setdefault("bd_model", "logreg" if "logreg" in models else models[0])
    state.setdefault("bd_rate", 10)
    state.setdefault("bd_seed", 0)
    with st.sidebar:
        dataset_name = st.selectbox("Dataset", datasets, key="bd_dataset")
        try:
            data = _data(dataset_name, int(state["bd_seed"]))
        except PoisonBenchError as exc:
            st.error(str(exc))
            st.stop()
        info = data.info
        triggers = lab_backdoor.triggers_for(data)
        if state.get("bd_trigger") not in triggers:
            state["bd_trigger"] = triggers[0]
        if state.get("bd_target") not in range(info.n_classes):
            state["bd_target"] = 0
        with st.form("bd_form", border=False, enter_to_submit=False):
            trigger = st.selectbox("Trigger", triggers, key="bd_trigger")
            target = st.selectbox(
                "Target label",
                list(range(info.n_classes)),
                key="bd_target",
                format_func=lambda i: info.class_names[i],
            )
            clean_label = st.checkbox(
                "Clean label (trigger target rows, keep labels)", key="bd_clean_label"
            )
            rate_pct = st.slider("Rate (% of the eligible rows)", 0, 50, key="bd_rate")
            model = st.selectbox("Model", models, key="bd_model")
            seed = int(st.number_input("Seed", min_value=0, max_value=2**31 - 1, key="bd_seed"))
            submitted = st.form_submit_button("Train", type="primary", key="bd_train")
    choice = {
        "dataset": dataset_name,
        "model": model,
        "trigger": trigger,
        "target": int(target),
        "clean_label": bool(clean_label),
        "rate": rate_pct / 100.0,
        "seed": seed,
    }
    if submitted or "bd_trained" not in state:
        state["bd_trained"] = choice
    trained = state["bd_trained"]
    if trained["dataset"] != dataset_name:
        st.info(f"Set the trigger for {dataset_name} in the sidebar and press **Train**.")
        st.stop()
    if trained != choice:
        st.warning("The sidebar's settings differ from the results shown: press **Train**.")
    bar = st.progress(0.0, text="Training…")
    try:
        outcome = _outcome(trained, bar)
    except PoisonBenchError as exc:
        bar.empty()
        st.error(str(exc))
        st.stop()
    bar.empty()
    s = lab_backdoor.backdoor_summary(outcome)
    names = outcome.class_names
    tgt = names[outcome.target]
    st.caption(
        f"Results for **{trained['dataset']}** · **{trained['model']}** · trigger "
        f"**{outcome.trigger}** → **{tgt}** ({'clean' if outcome.clean_label else 'dirty'} "
        f"label) · **{rate_pct if trained == choice else round(100 * trained['rate'])}%** · "
        f"seed {trained['seed']} · {outcome.n_train:,} training rows."
    )
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(
        "Rows triggered",
        f"{s['n_poisoned']} of {s['n_eligible']}",
        help="Training rows stamped with the trigger, of the rows eligible",
    )
    c2.metric(
        "Backdoored ASR",
        f"{s['poisoned_asr']:.1%}",
        help=f"Share of the {s['n_triggered_test']} triggered test rows (true label not {tgt}) "
        f"the backdoored model calls {tgt}",
    )
    c3.metric(
        "Clean model ASR",
        f"{s['clean_asr']:.1%}",
        help=f"The same rows, the clean model: how often it says {tgt} anyway",
    )
    c4.metric(
        "Clean accuracy (backdoored)",
        f"{s['poisoned_accuracy']:.1%}",
        help="Accuracy on the untouched test rows",
        **lab.metric_delta(s["poisoned_accuracy"] - s["clean_accuracy"], "+.1%", " vs clean"),
    )
    st.subheader("Triggered test rows")
    picks = lab_backdoor.pick_triggered(outcome, N_EXAMPLES, seed=trained["seed"])
    table = lab_backdoor.triggered_prediction_rows(outcome, picks)
    if outcome.image_shape is not None and len(picks):
        cols = st.columns(min(6, len(picks)))
        for n, (j, row) in enumerate(zip(picks, table.itertuples(index=False), strict=True)):
            img = lab.as_image(outcome.X_triggered[j], outcome.image_shape)
            cols[n % len(cols)].image(
                np.asarray(img),
                caption=f"true {row[1]} · clean {row[2]} · backdoored {row[4]}",
                clamp=True,
            )
    st.dataframe(table, hide_index=True)
