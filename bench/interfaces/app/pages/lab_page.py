"""Page: the live label-flip lab (clean vs poisoned model).

The sidebar's form sets the source and target labels, the flip ratio and the model; nothing is
trained until Train is pressed (the first visit trains the defaults once, so the page is not
empty). Each fit is cached, so going back to earlier settings is instant, and a progress bar
shows how far training has come (epochs for the torch models).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from bench.core.types import PoisonBenchError
from bench.data.datasets import DATASETS, load_dataset
from bench.interfaces.app import charts, columns, lab, lab_backdoor_view
from bench.models import MODELS

#: row highlights of the source and the target label (the confusion matrices' outline colours)
SOURCE_TINT = "rgba(224, 138, 0, 0.22)"
TARGET_TINT = "rgba(194, 24, 91, 0.15)"

# ---------------------------------------------------------------------------------------------
# Cached computation: the clean fit depends only on (dataset, model, seed, size), so new flip
# settings refit only the poisoned model. The fits live in one bounded lab.FitCache per server
# (not st.cache_data, which cannot replay the progress bar a fit draws into).
# ---------------------------------------------------------------------------------------------


@st.cache_resource(max_entries=8, show_spinner=False)
def _data(dataset: str, seed: int, n_train: int | None) -> lab.LabData:
    return lab.load_lab_data(dataset, seed, n_train)


@st.cache_resource(show_spinner=False)
def _fits() -> lab.FitCache:
    return lab.FitCache(max_entries=256)


def _clean_proba(
    dataset: str, model: str, seed: int, n_train: int | None, progress: lab.Progress
) -> np.ndarray:
    def fit() -> np.ndarray:
        data = _data(dataset, seed, n_train)
        return lab.fit_predict(data, model, data.y_train, seed, progress=progress)

    return _fits().get(("clean", dataset, model, seed, n_train), fit)


def _poisoned(
    dataset: str,
    model: str,
    seed: int,
    n_train: int | None,
    source: int,
    target: int,
    ratio: float,
    progress: lab.Progress,
    fraction: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The poisoned model's test probabilities with ``fraction × n_train`` extra clean rows,
    and the flipped train rows."""

    def fit() -> tuple[np.ndarray, np.ndarray]:
        data = _data(dataset, seed, n_train)
        poisoned = lab.flip_labels(data, source, target, ratio, seed)
        extra = int(round(fraction * len(data.train)))
        proba = lab.fit_predict(data, model, poisoned.y, seed, extra_rows=extra, progress=progress)
        return proba, np.flatnonzero(poisoned.mask)

    key = ("poisoned", dataset, model, seed, n_train, source, target, ratio, fraction)
    return _fits().get(key, fit)


# ---------------------------------------------------------------------------------------------
# Controls: a form, so that nothing trains until Train is pressed
# ---------------------------------------------------------------------------------------------

# the backdoor mode is its own module (bench/interfaces/app/lab_backdoor_view.py)
if (
    st.sidebar.radio("Lab", ("Label flip", "Backdoor"), key="lab_mode", horizontal=True)
    == "Backdoor"
):
    lab_backdoor_view.render()
    st.stop()

st.title("Live label-flip lab")
st.caption(
    "Relabel a share of one class's training rows as another class and compare the model "
    "trained on the flipped labels with the one trained on clean labels. Both use the same "
    "split and seed; test data is never flipped."
)


datasets, models = lab.lab_choices()
state = st.session_state
state.setdefault("lab_dataset", "mnist-5k" if "mnist-5k" in DATASETS else datasets[0])
state.setdefault("lab_model", "logreg" if "logreg" in MODELS else models[0])
state.setdefault("lab_ratio", 40)
state.setdefault("lab_seed", 0)

with st.sidebar:
    st.header("Lab settings")
    dataset_name = st.selectbox(
        "Dataset", datasets, key="lab_dataset", help="Any registered dataset (poisonbench list)"
    )
    st.caption((DATASETS.get(dataset_name).__doc__ or "").strip().splitlines()[0])
    try:
        dataset = load_dataset(dataset_name)
    except PoisonBenchError as exc:
        st.error(str(exc))
        st.stop()
    info = dataset.info
    classes = list(range(info.n_classes))
    # keep the labels chosen before when they are classes of this dataset too; a target equal
    # to the source is the user's choice and is refused on Train, not silently changed
    source_reset = state.get("lab_source") not in classes
    if source_reset:
        state["lab_source"] = min(1, info.n_classes - 1)
    target_now = state.get("lab_target")
    if target_now not in classes or (source_reset and target_now == state["lab_source"]):
        others = [c for c in classes if c != state["lab_source"]]
        state["lab_target"] = 7 if 7 in others else others[state["lab_source"] % len(others)]
    default_train, n_test = lab.default_sizes(len(dataset.y))
    state.setdefault(f"lab_train_{dataset_name}", default_train)
    with st.form("lab_form", border=False, enter_to_submit=False):
        source = st.selectbox(
            "Source label (flipped from)",
            classes,
            key="lab_source",
            format_func=lambda i: info.class_names[i],
        )
        target = st.selectbox(
            "Target label (flipped to)",
            classes,
            key="lab_target",
            format_func=lambda i: info.class_names[i],
            help="Any label but the source",
        )
        ratio_pct = st.slider(
            "Flip ratio (% of the source label's training rows)", 0, 100, step=5, key="lab_ratio"
        )
        model = st.selectbox("Model", models, key="lab_model", help="logreg is the fastest")
        with st.expander("Advanced"):
            seed = int(st.number_input("Seed", min_value=0, max_value=2**31 - 1, key="lab_seed"))
            n_train = int(
                st.number_input(
                    "Training rows",
                    min_value=max(20, 2 * info.n_classes),
                    max_value=len(dataset.y) - n_test,
                    step=100,
                    key=f"lab_train_{dataset_name}",
                    help=f"The test set keeps {n_test} rows; the rest is the clean pool.",
                )
            )
        submitted = st.form_submit_button("Train", type="primary", key="lab_train", width="stretch")

chosen = {
    "dataset": dataset_name,
    "model": model,
    "source": int(source),
    "target": int(target),
    "ratio_pct": int(ratio_pct),
    "seed": seed,
    "n_train": n_train,
}
if submitted or "lab_trained" not in state:  # the first visit trains the defaults once
    if chosen["source"] == chosen["target"]:
        st.sidebar.error("Source and target are the same label: pick another target.")
    else:
        state["lab_trained"] = chosen
trained = state.get("lab_trained")
if trained is None or trained["dataset"] != dataset_name:
    st.info(f"Set the labels for {dataset_name} in the sidebar and press **Train**.")
    st.stop()

model, seed, n_train = trained["model"], trained["seed"], trained["n_train"]
source, target, ratio_pct = trained["source"], trained["target"], trained["ratio_pct"]
ratio = ratio_pct / 100.0
names = info.class_names
src_name, tgt_name = names[source], names[target]
if trained != chosen:
    st.warning("The sidebar's settings differ from the results shown: press **Train**.")

# ---------------------------------------------------------------------------------------------
# Training (cached per choice) with a progress bar
# ---------------------------------------------------------------------------------------------


def _stage(bar: Any, low: float, high: float, label: str) -> lab.Progress:
    """A progress callback mapping a fit's [0, 1] onto [low, high] of ``bar``."""

    def report(done: float, text: str) -> None:
        bar.progress(low + (high - low) * done, text=f"{label}: {text}")

    bar.progress(low, text=f"{label}…")
    return report


progress = st.progress(0.0, text=f"Training the clean {model} model…")
try:
    data = _data(dataset_name, seed, n_train)
    clean_proba = _clean_proba(
        dataset_name, model, seed, n_train, _stage(progress, 0, 0.5, f"Clean {model}")
    )
    if ratio == 0:  # nothing flipped: the poisoned model is the clean one (same seed)
        poisoned_proba, flipped = clean_proba, np.empty(0, dtype=np.int64)
    else:
        poisoned_proba, flipped = _poisoned(
            dataset_name,
            model,
            seed,
            n_train,
            source,
            target,
            ratio,
            _stage(progress, 0.5, 1.0, f"Poisoned {model}"),
        )
except PoisonBenchError as exc:
    progress.empty()
    st.error(str(exc))
    st.stop()
progress.empty()
outcome = lab.compare(data, source, target, ratio, clean_proba, poisoned_proba, flipped)
summary = lab.summarize(outcome)
st.caption(
    f"Results for **{dataset_name}** · **{model}** · **{ratio_pct}%** of label **{src_name}** "
    f"→ **{tgt_name}** · seed {seed} · {outcome.n_train:,} training rows."
)

# ---------------------------------------------------------------------------------------------
# Summary and side-by-side metrics
# ---------------------------------------------------------------------------------------------

st.subheader("Summary")
c1, c2, c3 = st.columns(3)
c1.metric(
    "Labels flipped",
    f"{summary['n_flipped']} of {summary['n_source_train']}",
    help=f"Training rows of label {src_name} relabelled {tgt_name} "
    f"({summary['flipped_share_of_train']:.1%} of the {outcome.n_train} training rows)",
)
c2.metric(
    "Attack success rate",
    f"{summary['poisoned_asr']:.1%}",
    help=f"Share of test images of label {src_name} the poisoned model calls {tgt_name}",
    **{
        "delta_color": "inverse",
        **lab.metric_delta(summary["poisoned_asr"] - summary["clean_asr"], "+.1%", " vs clean"),
    },
)
c3.metric(
    "Accuracy lost",
    f"{summary['accuracy_lost']:.1%}",
    help="Clean model's test accuracy minus the poisoned model's",
)

st.subheader("Clean vs poisoned model")
left, right = st.columns(2)
with left:
    st.markdown("**Clean model** (original labels)")
    a, b = st.columns(2)
    a.metric("Clean accuracy", f"{summary['clean_accuracy']:.1%}")
    b.metric("Clean log-loss", f"{summary['clean_log_loss']:.3f}")
with right:
    st.markdown(f"**Poisoned model** ({ratio_pct}% of {src_name} → {tgt_name})")
    a, b = st.columns(2)
    a.metric(
        "Poisoned accuracy",
        f"{summary['poisoned_accuracy']:.1%}",
        **lab.metric_delta(-summary["accuracy_lost"], "+.1%"),
    )
    b.metric(
        "Poisoned log-loss",
        f"{summary['poisoned_log_loss']:.3f}",
        **{
            "delta_color": "inverse",
            **lab.metric_delta(summary["poisoned_log_loss"] - summary["clean_log_loss"], "+.3f"),
        },
    )

# ---------------------------------------------------------------------------------------------
# Predictions on chosen test images
# ---------------------------------------------------------------------------------------------

st.subheader("Predictions on test images")
state.setdefault("lab_draw", 0)
p1, p2, p3 = st.columns([2, 1, 1])
pick_labels = {
    "mix": f"mix (half of label {src_name})",
    "random": "random",
    "source": f"label {src_name} only",
    "rows": "choose rows",
}
pick = p1.radio(
    "Which test images",
    list(pick_labels),
    format_func=pick_labels.get,
    horizontal=True,
    key="lab_pick",
    help=f"The mix always includes images of the source label {src_name} (★), the ones the "
    "attack aims at.",
)
count = p2.slider("How many", 4, 24, 8, step=4, key="lab_count")
if p3.button("New random draw", key="lab_redraw"):
    state["lab_draw"] += 1
if pick == "rows":
    positions = np.array(
        sorted(
            st.multiselect(
                "Test rows",
                list(range(len(outcome.y_test))),
                default=list(range(min(count, len(outcome.y_test)))),
                key="lab_rows",
                format_func=lambda i: f"{i} (label {names[outcome.y_test[i]]})",
            )
        ),
        dtype=np.int64,
    )
else:
    positions = lab.pick_examples(outcome, count, seed=state["lab_draw"], mode=pick)
st.caption(
    f"★ marks test images of the source label {src_name}; ⚠ marks images the two models "
    "disagree on."
)
table = lab.prediction_rows(outcome, positions)
if info.image_shape is not None and len(positions):
    X_test = dataset.X[data.test]
    per_row = 8
    for start in range(0, len(positions), per_row):
        cols = st.columns(per_row)
        for col, (_, row) in zip(
            cols, table.iloc[start : start + per_row].iterrows(), strict=False
        ):
            img = lab.as_image(X_test[row["test row"]], info.image_shape)
            marks = ("★ " if row["source class"] else "") + ("⚠ " if row["changed"] else "")
            col.image(
                np.kron(img, np.ones((3, 3), dtype=img.dtype)) if img.ndim == 2 else img,
                clamp=True,
                caption=f"{marks}true {row['true']} · clean {row['clean prediction']} · "
                f"poisoned {row['poisoned prediction']}",
            )


def _mark_source(row: pd.Series) -> list[str]:
    colour = f"background-color: {SOURCE_TINT}" if row["source class"] else ""
    return [colour] * len(row)


st.dataframe(
    table.style.apply(_mark_source, axis=1).format(
        {"clean confidence": "{:.2f}", "poisoned confidence": "{:.2f}"}
    ),
    hide_index=True,
    width="stretch",
)

# ---------------------------------------------------------------------------------------------
# Gallery of flipped training samples
# ---------------------------------------------------------------------------------------------

st.subheader("Flipped training samples")
if len(outcome.flipped) == 0:
    st.info("No label is flipped at 0%: the two models are trained on the same labels.")
else:
    st.caption(
        f"{len(outcome.flipped)} training rows of label {src_name} now say {tgt_name} "
        f"(showing up to 24)."
    )
    shown = outcome.flipped[:24]
    X_train = dataset.X[data.train]
    if info.image_shape is not None:
        per_row = 12
        for start in range(0, len(shown), per_row):
            cols = st.columns(per_row)
            for col, i in zip(cols, shown[start : start + per_row], strict=False):
                img = lab.as_image(X_train[i], info.image_shape)
                col.image(
                    np.kron(img, np.ones((2, 2), dtype=img.dtype)) if img.ndim == 2 else img,
                    clamp=True,
                    caption=f"{src_name} → {tgt_name}",
                )
    else:
        features = pd.DataFrame(X_train[shown]).add_prefix("x")
        features.insert(0, "label given", tgt_name)
        features.insert(0, "true label", src_name)
        features.insert(0, "train row", shown)
        st.dataframe(features, hide_index=True, width="stretch")

# ---------------------------------------------------------------------------------------------
# Confusion matrices, prediction distribution, per-label metrics
# ---------------------------------------------------------------------------------------------


st.subheader("Confusion matrices")
st.caption(
    "Rows: true label; columns: the label the model predicts. The source label's row "
    f"({src_name}, orange) and the target label's column ({tgt_name}, magenta) are outlined: "
    "the flip moves counts from the diagonal into their crossing."
)
matrices = lab.confusion_matrices(outcome)
m1, m2, m3 = st.columns(3)
for col, key, heading in (
    (m1, "clean", "Clean model"),
    (m2, "poisoned", "Poisoned model"),
    (m3, "difference", "Difference (poisoned − clean)"),
):
    col.altair_chart(
        charts.confusion_heatmap(
            matrices[key], heading, src_name, tgt_name, diverging=key == "difference"
        ),
        width="stretch",
    )

st.subheader("Prediction distribution")
st.altair_chart(
    charts.prediction_bars(lab.prediction_distribution(outcome), list(names)), width="stretch"
)

st.subheader("Per-label precision, recall and F1")
per_label = lab.per_label_table(outcome)


def _mark_roles(row: pd.Series) -> list[str]:
    colour = {
        "source": f"background-color: {SOURCE_TINT}",
        "target": f"background-color: {TARGET_TINT}",
    }.get(row["role"], "")
    return [colour] * len(row)


numeric = [c for c in per_label.columns if c not in ("label", "role", "support")]
st.dataframe(
    per_label.style.apply(_mark_roles, axis=1).format({c: "{:.3f}" for c in numeric}),
    hide_index=True,
    width="stretch",
)
st.caption(
    "Source label highlighted in orange, target label in magenta (as in the confusion matrices)."
)

# ---------------------------------------------------------------------------------------------
# Recovery: the harness's own answer, on demand
# ---------------------------------------------------------------------------------------------

st.subheader("Recovery: extra clean data needed")
fractions = lab.recovery_fractions(data)
key = tuple(trained.values())
st.caption(
    "Retrains the poisoned model with f × (training rows) extra clean rows from the pool, for "
    f"f in {', '.join(f'{f:g}' for f in fractions)} (f = 0 is the poisoned model above), and "
    f"finds where accuracy is back within {lab.RECOVERY_TOLERANCE * 100:g} points of the clean "
    "model's."
)
if st.button("Run recovery curve", key="lab_recover") or state.get("lab_recovery_key") == key:
    state["lab_recovery_key"] = key
    bar = st.progress(0.0, text="Training with extra clean data…")
    step = 1 / max(1, len(fractions))

    def _fit_extra(f: float) -> np.ndarray:
        i = fractions.index(f)
        label = f"f = {f:g} ({i + 1} of {len(fractions)})"
        proba, _ = _poisoned(
            dataset_name,
            model,
            seed,
            n_train,
            source,
            target,
            ratio,
            _stage(bar, i * step, (i + 1) * step, label),
            fraction=f,
        )
        return proba

    curve = lab.recovery_curve(outcome, fractions, _fit_extra)
    bar.empty()
    goal = summary["clean_accuracy"] - lab.RECOVERY_TOLERANCE
    found = lab.crossing(curve["extra_fraction"].tolist(), curve["accuracy"].tolist(), goal)
    if found is None:
        st.metric("Extra clean data needed", f"> {max(fractions):g} × train")
    else:
        st.metric(
            "Extra clean data needed",
            f"{found:.2f} × train",
            help=f"about {int(round(found * outcome.n_train))} clean rows",
        )
    st.altair_chart(charts.lab_recovery_chart(curve, summary["clean_accuracy"]), width="stretch")
    st.dataframe(
        curve,
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(
                columns.title(c), help=columns.help_text(c), format="%.3f"
            )
            for c in curve.columns
        },
    )
