"""Plotly figures of the app: training curves (like Matlab's training-progress window), FM per image and
the size distribution of cells."""

from __future__ import annotations

from typing import Any, Sequence

from moleseg.core.config import BASELINE_NAME


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and value == value and row.get("epoch") is not None:
            xs.append(float(row["epoch"]))
            ys.append(float(value))
    return xs, ys


def training_curves(history: Sequence[dict[str, Any]], title: str = ""):
    """Loss, pixel accuracy and FM per epoch (training solid, validation dashed) from ``history.csv`` rows."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=3, subplot_titles=("loss", "pixel accuracy", "FM (validation: real cleanup)"))
    panels = [
        (1, [("loss", "training loss", "solid"), ("val_loss", "validation loss", "dash")]),
        (2, [("accuracy", "training accuracy", "solid"), ("val_accuracy", "validation accuracy", "dash")]),
        (3, [("train_fm", "training FM", "solid"), ("val_fm", "validation FM", "dash")]),
    ]
    colours = {"solid": "#1f77b4", "dash": "#d62728"}
    for column, traces in panels:
        for key, name, dash in traces:
            xs, ys = _series(history, key)
            if xs:
                figure.add_trace(go.Scatter(x=xs, y=ys, name=name, mode="lines+markers",
                                            line={"dash": dash, "color": colours[dash]}), row=1, col=column)
        figure.update_xaxes(title_text="epoch", row=1, col=column, rangemode="tozero")
    figure.update_yaxes(range=[0, 1.02], row=1, col=2)
    figure.update_yaxes(range=[0, 1.02], row=1, col=3)
    figure.update_layout(height=340, margin={"l": 40, "r": 10, "t": 50 if title else 30, "b": 40},
                         title=title or None, legend={"orientation": "h", "y": -0.25})
    return figure


def fm_per_image(rows: Sequence[tuple[str, float]], baseline: Sequence[tuple[str, float]] | None = None,
                 model_name: str = "model", baseline_name: str = BASELINE_NAME):
    """FM of every image (sorted by the model's FM), with the baseline's FM of the same images."""
    import plotly.graph_objects as go

    ordered = sorted(rows, key=lambda item: item[1])
    names = [name for name, _ in ordered]
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=names, y=[value for _, value in ordered], mode="markers+lines", name=model_name))
    if baseline:
        lookup = dict(baseline)
        figure.add_trace(go.Scatter(x=names, y=[lookup.get(name) for name in names], mode="markers",
                                    name=baseline_name, marker={"symbol": "x"}))
    figure.update_layout(height=360, margin={"l": 40, "r": 10, "t": 30, "b": 40},
                         yaxis={"range": [0, 1.02], "title": "FM"},
                         xaxis={"title": "image (sorted by the model's FM)", "showticklabels": len(names) <= 40},
                         legend={"orientation": "h", "y": 1.1})
    return figure


def size_histogram(areas: Sequence[float], unit: str = "px\u00b2", title: str = ""):
    """Histogram of the object areas of a cells image (count of objects per area bin)."""
    import plotly.graph_objects as go

    figure = go.Figure(go.Histogram(x=list(areas), nbinsx=min(40, max(5, len(areas) // 3)), name="objects"))
    figure.update_layout(height=300, margin={"l": 40, "r": 10, "t": 40 if title else 20, "b": 40},
                         title=title or None, xaxis={"title": f"area ({unit})"},
                         yaxis={"title": "cells / nuclei"}, bargap=0.05)
    return figure
