"""Page: the live label-flip lab (clean vs poisoned model, trained on request and cached)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from bench.app import lab
from bench.datasets import DATASETS, load_dataset
from bench.models import MODELS
from bench.types import PoisonBenchError

# ---------------------------------------------------------------------------------------------
# Cached computation: the clean fit depends only on (dataset, model, seed, size), so moving the
# flip ratio or the labels refits only the poisoned model.
# ---------------------------------------------------------------------------------------------


@st.cache_resource(max_entries=8, show_spinner=False)
def _data(dataset: str, seed: int, n_train: int | None) -> lab.LabData:
    return lab.load_lab_data(dataset, seed, n_train)


@st.cache_data(max_entries=32, show_spinner=False)
def _clean_proba(dataset: str, model: str, seed: int, n_train: int | None) -> np.ndarray:
    data = _data(dataset, seed, n_train)
    return lab.fit_predict(data, model, data.y_train, seed)


@st.cache_data(max_entries=64, show_spinner=False)
def _poisoned(
    dataset: str, model: str, seed: int, n_train: int | None, source: int, target: int, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    data = _data(dataset, seed, n_train)
    poisoned = lab.flip_labels(data, source, target, ratio, seed)
    proba = lab.fit_predict(data, model, poisoned.y, seed)
    return proba, np.flatnonzero(poisoned.mask)


@st.cache_data(max_entries=256, show_spinner=False)
def _recovery_point(
    dataset: str,
    model: str,
    seed: int,
    n_train: int | None,
    source: int,
    target: int,
    ratio: float,
    fraction: float,
) -> tuple[float, float]:
    data = _data(dataset, seed, n_train)
    poisoned = lab.flip_labels(data, source, target, ratio, seed)
    extra = int(round(fraction * len(data.train)))
    proba = lab.fit_predict(data, model, poisoned.y, seed, extra_rows=extra)
    pred = proba.argmax(axis=1)
    from_source = data.y_test == source
    return float((pred == data.y_test).mean()), float((pred[from_source] == target).mean())


# ---------------------------------------------------------------------------------------------
# Controls
# ---------------------------------------------------------------------------------------------

st.title("Live label-flip lab")
st.caption(
    "Relabel a share of one class's training rows as another class and compare the model "
    "trained on the flipped labels with the one trained on clean labels. Both use the same "
    "split and seed; test data is never flipped."
)


def _takes_defaults(cls: type) -> bool:
    """Whether a plug-in builds from its defaults (not table, openml, sklearn or torch, which
    need a path or an import path from a config)."""
    try:
        cls.from_params({})  # type: ignore[attr-defined]
    except PoisonBenchError:
        return False
    return True


datasets = [name for name, cls in DATASETS.items() if _takes_defaults(cls)]
models = [name for name, cls in MODELS.items() if _takes_defaults(cls)]
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
    if state.get("lab_source") not in classes:
        state["lab_source"] = min(1, info.n_classes - 1)
    source = st.selectbox(
        "Source label (flipped from)",
        classes,
        key="lab_source",
        format_func=lambda i: info.class_names[i],
    )
    targets = [c for c in classes if c != source]
    if state.get("lab_target") not in targets:
        state["lab_target"] = 7 if 7 in targets else targets[source % len(targets)]
    target = st.selectbox(
        "Target label (flipped to)",
        targets,
        key="lab_target",
        format_func=lambda i: info.class_names[i],
    )
    ratio_pct = st.slider(
        "Flip ratio (% of the source label's training rows)", 0, 100, step=5, key="lab_ratio"
    )
    model = st.selectbox("Model", models, key="lab_model", help="logreg is the fastest")
    with st.expander("Advanced"):
        seed = int(st.number_input("Seed", min_value=0, max_value=2**31 - 1, key="lab_seed"))
        default_train, n_test = lab.default_sizes(len(dataset.y))
        state.setdefault(f"lab_train_{dataset_name}", default_train)
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

ratio = ratio_pct / 100.0

# ---------------------------------------------------------------------------------------------
# Training (cached per choice) with a progress indicator
# ---------------------------------------------------------------------------------------------

progress = st.progress(0.0, text=f"Training the clean {model} model…")
try:
    data = _data(dataset_name, seed, n_train)
    clean_proba = _clean_proba(dataset_name, model, seed, n_train)
    progress.progress(0.5, text=f"Training the poisoned {model} model…")
    if ratio == 0:  # nothing flipped: the poisoned model is the clean one (same seed)
        poisoned_proba, flipped = clean_proba, np.empty(0, dtype=np.int64)
    else:
        poisoned_proba, flipped = _poisoned(
            dataset_name, model, seed, n_train, source, target, ratio
        )
except PoisonBenchError as exc:
    progress.empty()
    st.error(str(exc))
    st.stop()
progress.empty()
outcome = lab.compare(data, source, target, ratio, clean_proba, poisoned_proba, flipped)
summary = lab.summarize(outcome)
names = info.class_names
src_name, tgt_name = names[source], names[target]

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
    delta=f"{summary['poisoned_asr'] - summary['clean_asr']:+.1%} vs clean",
    delta_color="inverse",
    help=f"Share of test images of label {src_name} the poisoned model calls {tgt_name}",
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
        delta=f"{-summary['accuracy_lost']:+.1%}",
    )
    b.metric(
        "Poisoned log-loss",
        f"{summary['poisoned_log_loss']:.3f}",
        delta=f"{summary['poisoned_log_loss'] - summary['clean_log_loss']:+.3f}",
        delta_color="inverse",
    )

# ---------------------------------------------------------------------------------------------
# Predictions on chosen test images
# ---------------------------------------------------------------------------------------------

st.subheader("Predictions on test images")
state.setdefault("lab_draw", 0)
p1, p2, p3 = st.columns([2, 1, 1])
pick = p1.radio(
    "Which test images",
    ["random", f"random, label {src_name} only", "choose rows"],
    horizontal=True,
    key="lab_pick",
)
count = p2.slider("How many", 4, 24, 8, step=4, key="lab_count")
if p3.button("New random draw", key="lab_redraw"):
    state["lab_draw"] += 1
if pick == "choose rows":
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
    positions = lab.pick_examples(
        outcome, count, seed=state["lab_draw"], source_only=pick != "random"
    )
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
    colour = "background-color: rgba(255, 196, 0, 0.25)" if row["source class"] else ""
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


def _heatmap(matrix: pd.DataFrame, title: str, diverging: bool = False) -> alt.Chart:
    long = lab.confusion_long(matrix)
    order = list(matrix.index)
    if diverging:
        bound = max(1, int(np.abs(matrix.to_numpy()).max()))
        scale = alt.Scale(scheme="redblue", domain=[-bound, bound], reverse=True)
    else:
        scale = alt.Scale(scheme="blues")
    base = alt.Chart(long, title=title).encode(
        x=alt.X("predicted:N", sort=order, title="predicted"),
        y=alt.Y("true:N", sort=order, title="true"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("count:Q", scale=scale, legend=None),
        tooltip=["true", "predicted", "count"],
    )
    text = base.mark_text(fontSize=10).encode(
        text=alt.condition(alt.datum.count != 0, "count:Q", alt.value(""))
    )
    return (cells + text).properties(height=300)


st.subheader("Confusion matrices")
matrices = lab.confusion_matrices(outcome)
m1, m2, m3 = st.columns(3)
m1.altair_chart(_heatmap(matrices["clean"], "Clean model"), width="stretch")
m2.altair_chart(_heatmap(matrices["poisoned"], "Poisoned model"), width="stretch")
m3.altair_chart(
    _heatmap(matrices["difference"], "Difference (poisoned − clean)", diverging=True),
    width="stretch",
)

st.subheader("Prediction distribution")
dist = lab.prediction_distribution(outcome)
st.altair_chart(
    alt.Chart(dist)
    .mark_bar()
    .encode(
        x=alt.X("label:N", sort=list(names), title="label"),
        xOffset=alt.XOffset("series:N", sort=["true labels", "clean model", "poisoned model"]),
        y=alt.Y("count:Q", title="test images"),
        color=alt.Color(
            "series:N",
            sort=["true labels", "clean model", "poisoned model"],
            scale=alt.Scale(range=["#9e9e9e", "#1f77b4", "#d62728"]),
        ),
        tooltip=["label", "series", "count"],
    )
    .properties(height=280),
    width="stretch",
)

st.subheader("Per-label precision, recall and F1")
per_label = lab.per_label_table(outcome)


def _mark_roles(row: pd.Series) -> list[str]:
    colour = {
        "source": "background-color: rgba(255, 196, 0, 0.30)",
        "target": "background-color: rgba(214, 39, 40, 0.20)",
    }.get(row["role"], "")
    return [colour] * len(row)


numeric = [c for c in per_label.columns if c not in ("label", "role", "support")]
st.dataframe(
    per_label.style.apply(_mark_roles, axis=1).format({c: "{:.3f}" for c in numeric}),
    hide_index=True,
    width="stretch",
)
st.caption("Source label highlighted in yellow, target label in red.")

# ---------------------------------------------------------------------------------------------
# Recovery: the harness's own answer, on demand
# ---------------------------------------------------------------------------------------------

st.subheader("Recovery: extra clean data needed")
fractions = lab.recovery_fractions(data)
key = (dataset_name, model, seed, n_train, source, target, ratio)
st.caption(
    "Retrains the poisoned model with f × (training rows) extra clean rows from the pool, for "
    f"f in {', '.join(f'{f:g}' for f in fractions)}, and finds where accuracy is back within "
    f"{lab.RECOVERY_TOLERANCE * 100:g} points of the clean model's."
)
if st.button("Run recovery curve", key="lab_recover") or state.get("lab_recovery_key") == key:
    state["lab_recovery_key"] = key
    bar = st.progress(0.0, text="Training with extra clean data…")
    points = []
    for i, f in enumerate(fractions):
        acc, asr = _recovery_point(dataset_name, model, seed, n_train, source, target, ratio, f)
        points.append({"extra_fraction": f, "accuracy": acc, "attack_success_rate": asr})
        bar.progress((i + 1) / len(fractions), text=f"f = {f:g} done")
    bar.empty()
    curve = pd.DataFrame(points)
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
    line = (
        alt.Chart(curve)
        .mark_line(point=True)
        .encode(
            x=alt.X("extra_fraction:Q", title="extra clean data (× training rows)"),
            y=alt.Y("accuracy:Q", scale=alt.Scale(zero=False), title="test accuracy"),
            tooltip=["extra_fraction", "accuracy", "attack_success_rate"],
        )
    )
    reference = (
        alt.Chart(pd.DataFrame({"clean accuracy": [summary["clean_accuracy"]]}))
        .mark_rule(strokeDash=[6, 4], color="green")
        .encode(y="clean accuracy:Q", tooltip=["clean accuracy"])
    )
    st.altair_chart((line + reference).properties(height=260), width="stretch")
    st.dataframe(curve, hide_index=True)
