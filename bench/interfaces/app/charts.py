"""The app's Altair charts, as pure functions of the frames ``lab`` and ``explorer`` return.

Kept apart from the pages so that tests can check a chart's specification (every class
labelled on both axes of a confusion matrix, horizontal tick labels, one legend entry per drawn
line) without a browser; the Chromium test checks the rendering.
"""

from __future__ import annotations

import json
import math
from typing import Any

import altair as alt
import pandas as pd

from bench.interfaces.app import columns
from bench.interfaces.app.lab import confusion_long

#: the source row and the target column of a confusion matrix, and the attack's labels
SOURCE_COLOUR = "#e08a00"
TARGET_COLOUR = "#c2185b"
#: Streamlit's text colour, and the colour of numbers on dark cells
TEXT_DARK = "#31333f"
TEXT_LIGHT = "#ffffff"
#: the lab's prediction-distribution series, in legend order
DISTRIBUTION_SERIES = ("true labels", "clean model", "poisoned model")
DISTRIBUTION_COLOURS = ("#9e9e9e", "#1f77b4", "#d62728")


def _js(value: Any) -> str:
    """A value as a JavaScript string literal for a Vega expression."""
    return json.dumps(str(value))


def _label_expr(highlights: dict[str, str], default: str) -> alt.ExprRef:
    """An axis-label property that takes ``highlights[label]`` for the listed labels."""
    expr = _js(default)
    for label, value in reversed(list(highlights.items())):
        expr = f"datum.value === {_js(label)} ? {_js(value)} : {expr}"
    return alt.ExprRef(expr=expr)


def _class_axis(title: str, highlight: str | None, colour: str) -> alt.Axis:
    """An axis that shows every class (no overlap thinning), horizontally, with the attacked
    class in ``colour`` and bold."""
    marks = {highlight: colour} if highlight is not None else {}
    bold = {highlight: "bold"} if highlight is not None else {}
    return alt.Axis(
        title=title,
        labelAngle=0,
        labelOverlap=False,
        labelFontSize=12,
        labelPadding=4,
        ticks=False,
        domain=False,
        labelColor=_label_expr(marks, TEXT_DARK),
        labelFontWeight=_label_expr(bold, "normal"),
    )


def confusion_heatmap(
    matrix: pd.DataFrame,
    title: str,
    source: str | None = None,
    target: str | None = None,
    diverging: bool = False,
    height: int = 320,
) -> alt.LayerChart:
    """A confusion matrix (rows true, columns predicted) as a heatmap: every class labelled on
    both axes with horizontal tick labels, counts in a colour that contrasts with their cell
    (white on dark cells), the ``source`` row and the ``target`` column outlined and their
    labels coloured. ``diverging`` for a difference matrix (red up, blue down, white at 0)."""
    long = confusion_long(matrix)
    long["true"] = long["true"].astype(str)
    long["predicted"] = long["predicted"].astype(str)
    order = [str(v) for v in matrix.index]
    values = matrix.to_numpy()
    if diverging:
        bound = max(1, int(abs(values).max()))
        scale = alt.Scale(scheme="redblue", domain=[-bound, bound], reverse=True)
        dark = f"abs(datum.count) > {bound / 2}"
    else:
        high = max(1, int(values.max()))
        scale = alt.Scale(scheme="blues", domain=[0, high])
        dark = f"datum.count > {high / 2}"
    band = {"sort": order, "scale": alt.Scale(domain=order)}
    x = alt.X(
        "predicted:N",
        **band,
        axis=_class_axis("predicted label", target, TARGET_COLOUR),
    )
    y = alt.Y("true:N", **band, axis=_class_axis("true label", source, SOURCE_COLOUR))
    base = alt.Chart(long).encode(x=x, y=y)
    cells = base.mark_rect().encode(
        color=alt.Color("count:Q", scale=scale, legend=None),
        tooltip=[
            alt.Tooltip("true:N", title="true label"),
            alt.Tooltip("predicted:N", title="predicted label"),
            alt.Tooltip("count:Q", title="test images"),
        ],
    )
    text = base.mark_text(fontSize=11).encode(
        text=alt.condition("datum.count != 0", "count:Q", alt.value("")),
        color=alt.condition(dark, alt.value(TEXT_LIGHT), alt.value(TEXT_DARK)),
    )
    layers: list[alt.Chart] = [cells, text]
    outline = {"filled": False, "strokeWidth": 2.5}
    if source is not None:
        row = pd.DataFrame({"true": [str(source)]})
        layers.append(
            alt.Chart(row)
            .mark_rect(stroke=SOURCE_COLOUR, **outline)
            .encode(y=alt.Y("true:N", **band), x=alt.value(0), x2=alt.value("width"))
        )
    if target is not None:
        column = pd.DataFrame({"predicted": [str(target)]})
        layers.append(
            alt.Chart(column)
            .mark_rect(stroke=TARGET_COLOUR, **outline)
            .encode(x=alt.X("predicted:N", **band), y=alt.value(0), y2=alt.value("height"))
        )
    return alt.layer(*layers, title=title).properties(height=height)


def prediction_bars(dist: pd.DataFrame, order: list[str], height: int = 300) -> alt.Chart:
    """The lab's prediction distribution: test images per label for the true labels and both
    models, grouped per label. The y axis ends above the tallest bar (with room for its
    tooltip), so no bar is cut."""
    top = float(dist["count"].max()) if len(dist) else 1.0
    y_max = max(1.0, math.ceil(top * 1.12))
    series = list(DISTRIBUTION_SERIES)
    return (
        alt.Chart(dist)
        .mark_bar()
        .encode(
            x=alt.X("label:N", sort=order, title="label", axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("series:N", sort=series),
            y=alt.Y("count:Q", title="test images", scale=alt.Scale(domain=[0, y_max], nice=True)),
            color=alt.Color(
                "series:N",
                sort=series,
                title=None,
                scale=alt.Scale(domain=series, range=list(DISTRIBUTION_COLOURS)),
                legend=alt.Legend(orient="top"),
            ),
            tooltip=["label", "series", alt.Tooltip("count:Q", title="test images")],
        )
        .properties(height=height)
    )


#: the lab's recovery chart: its two series, in legend order, and their colours
RECOVERY_SERIES = ("poisoned model + f × extra clean rows", "clean model (no flip, f = 0)")
RECOVERY_COLOURS = ("#d62728", "#2ca02c")


def lab_recovery_chart(curve: pd.DataFrame, clean_accuracy: float, height: int = 280) -> alt.Chart:
    """The lab's recovery curve: the poisoned model's test accuracy against the extra clean
    rows it gets, and the clean model's accuracy as a dashed line, both in the legend and the
    dashed line labelled with its value at its left end (where the poisoned curve is lowest)."""
    x_title = columns.title("extra_fraction")
    poisoned, clean = RECOVERY_SERIES
    colour = alt.Color(
        "series:N",
        title=None,
        scale=alt.Scale(domain=list(RECOVERY_SERIES), range=list(RECOVERY_COLOURS)),
        legend=alt.Legend(orient="top", symbolType="stroke", symbolStrokeWidth=3, labelLimit=0),
    )
    dash = alt.StrokeDash(
        "series:N",
        scale=alt.Scale(domain=list(RECOVERY_SERIES), range=[[1, 0], [6, 4]]),
        legend=None,
    )
    line = (
        alt.Chart(curve.assign(series=poisoned))
        .mark_line(point=alt.OverlayMarkDef(color=RECOVERY_COLOURS[0]))
        .encode(
            x=alt.X("extra_fraction:Q", title=x_title),
            y=alt.Y("accuracy:Q", scale=alt.Scale(zero=False), title="test accuracy"),
            color=colour,
            strokeDash=dash,
            tooltip=[
                alt.Tooltip("extra_fraction:Q", title=x_title),
                alt.Tooltip("accuracy:Q", title="test accuracy", format=".1%"),
                alt.Tooltip(
                    "attack_success_rate:Q",
                    title=columns.title("attack_success_rate"),
                    format=".1%",
                ),
            ],
        )
    )
    ref = pd.DataFrame(
        {
            "accuracy": [clean_accuracy],
            "series": [clean],
            "label": [f"clean model: {clean_accuracy:.1%}"],
            "x": [float(curve["extra_fraction"].min()) if len(curve) else 0.0],
        }
    )
    rule = (
        alt.Chart(ref)
        .mark_rule(strokeWidth=2)
        .encode(
            y="accuracy:Q",
            color=colour,
            strokeDash=dash,
            tooltip=[alt.Tooltip("accuracy:Q", title="clean model's accuracy", format=".1%")],
        )
    )
    label = (
        alt.Chart(ref)
        .mark_text(
            align="left", baseline="bottom", dx=4, dy=-4, color=RECOVERY_COLOURS[1], fontSize=12
        )
        .encode(x="x:Q", y="accuracy:Q", text="label:N")
    )
    return (line + rule + label).properties(height=height)


# ---------------------------------------------------------------------------------------------
# The explorer
# ---------------------------------------------------------------------------------------------


#: the defenses' colours (Tableau 10), assigned in sorted order so both explorer charts agree
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
#: the clean reference curve of the recovery chart: grey and dashed
CLEAN_COLOUR = "#888888"


def _defense_scale(values: list[str], clean_curve: str | None = None) -> tuple[list, list, list]:
    """(domain, colours, dashes) for the defenses drawn: sorted, one palette colour each, solid;
    ``clean_curve`` (when drawn) last, grey and dashed."""
    drawn = sorted(v for v in values if v != clean_curve)
    domain = list(drawn)
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(drawn))]
    dashes: list[list[int]] = [[1, 0]] * len(drawn)
    if clean_curve is not None and clean_curve in values:
        domain.append(clean_curve)
        colours.append(CLEAN_COLOUR)
        dashes.append([5, 4])
    return domain, colours, dashes


#: the width the panels of a faceted chart share: it fits the main column of a 1400 px window
PANELS_WIDTH = 760


def panel_width(panels: int, columns: int = 3) -> int:
    """The width of one panel when ``panels`` panels are laid out in at most ``columns``
    columns: one panel gets the whole row (at most 640 px), more share it."""
    across = min(columns, max(1, panels))
    return min(640, PANELS_WIDTH // across - (20 if across > 1 else 0))


def _series_legend(title: str) -> alt.Legend:
    """A legend whose symbols are line strokes (dashes show), not the default dots."""
    return alt.Legend(
        title=title,
        symbolType="stroke",
        symbolStrokeWidth=3,
        symbolSize=300,
        labelLimit=0,
        orient="top",
        direction="horizontal",
        columns=4,
    )


def rate_chart(
    by_rate: pd.DataFrame,
    metric: str,
    attack: str,
    defense: str,
    width: int | None = None,
    height: int = 220,
) -> alt.FacetChart:
    """``metric`` against the poison rate: one panel per attack (column ``attack``), one line
    per defense (column ``defense``, coloured; a click on the legend highlights one). ``width``
    is one panel's (default :func:`panel_width`)."""
    pick = alt.selection_point(fields=[defense], bind="legend")
    panels = by_rate[attack].nunique()
    domain, colours, _ = _defense_scale(list(by_rate[defense].unique()))
    inner = (
        alt.Chart()
        .mark_line(point=True)
        .encode(
            x=alt.X("rate:Q", title=columns.title("rate"), axis=alt.Axis(format="%")),
            y=alt.Y(
                "mean:Q", title=f"mean {columns.title(metric).lower()}", scale=alt.Scale(zero=False)
            ),
            color=alt.Color(
                f"{defense}:N",
                scale=alt.Scale(domain=domain, range=colours),
                legend=_series_legend("Defense"),
            ),
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
            tooltip=[
                alt.Tooltip(f"{attack}:N", title="attack"),
                alt.Tooltip(f"{defense}:N", title="defense"),
                alt.Tooltip("rate:Q", title=columns.title("rate"), format=".0%"),
                alt.Tooltip("mean:Q", title=f"mean {metric}", format=".3f"),
                alt.Tooltip("std:Q", title="std over seeds", format=".3f"),
                alt.Tooltip("n:Q", title="seeds"),
            ],
        )
        .add_params(pick)
        .properties(width=width or panel_width(panels), height=height)
    )
    return alt.layer(inner, data=by_rate).facet(
        facet=alt.Facet(
            f"{attack}:N", title=None, header=alt.Header(labelFontSize=13, labelLimit=0)
        ),
        columns=min(3, max(1, panels)),
    )


def recovery_chart(
    by_fraction: pd.DataFrame,
    metric: str,
    defense: str,
    clean_curve: str,
    width: int | None = None,
    height: int = 200,
) -> alt.FacetChart:
    """``metric`` against the extra clean data: one panel per attack and rate (column
    ``panel``), one line per defense (column ``defense``) and the clean model's curve
    (``clean_curve``, grey and dashed) in each; a click on the legend highlights a defense.
    ``width`` is one panel's (default :func:`panel_width`)."""
    pick = alt.selection_point(fields=[defense], bind="legend")
    panels = by_fraction["panel"].nunique()
    domain, colours, dashes = _defense_scale(list(by_fraction[defense].unique()), clean_curve)
    x_title = columns.title("extra_fraction")
    inner = (
        alt.Chart()
        .mark_line(point=True)
        .encode(
            x=alt.X("extra_fraction:Q", title=x_title),
            y=alt.Y(
                "mean:Q", title=f"mean {columns.title(metric).lower()}", scale=alt.Scale(zero=False)
            ),
            color=alt.Color(
                f"{defense}:N",
                scale=alt.Scale(domain=domain, range=colours),
                legend=_series_legend("Defense"),
            ),
            strokeDash=alt.StrokeDash(
                f"{defense}:N", scale=alt.Scale(domain=domain, range=dashes), legend=None
            ),
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
            tooltip=[
                alt.Tooltip("panel:N", title="attack and rate"),
                alt.Tooltip(f"{defense}:N", title="defense"),
                alt.Tooltip("extra_fraction:Q", title=x_title),
                alt.Tooltip("mean:Q", title=f"mean {metric}", format=".3f"),
                alt.Tooltip("n:Q", title="seeds"),
            ],
        )
        .add_params(pick)
        .properties(width=width or panel_width(panels), height=height)
    )
    return alt.layer(inner, data=by_fraction).facet(
        facet=alt.Facet("panel:N", title=None, header=alt.Header(labelFontSize=13, labelLimit=0)),
        columns=min(3, max(1, panels)),
    )
