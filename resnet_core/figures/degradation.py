"""The degradation figure: final training loss and test error against depth, plain vs residual,
beside He et al. 2016's CIFAR-10 figures for their ResNets (labelled as the paper's, not ours).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..experiments import PAPER_RESNET_TEST_ERROR
from .gradflow import PLAIN_STYLE, RESIDUAL_STYLE
from .theme import TEMPLATE

STYLES = {"residual": RESIDUAL_STYLE, "plain": PLAIN_STYLE}
PAPER_COLOUR = "#000000"
PAPER_NAME = "He et al. 2016: ResNets on CIFAR-10 (the paper's figures, not ours)"


def degradation_figure(table: pd.DataFrame, dataset: str = "mnist-5k", steps: int | None = None,
                       paper: dict[int, float] | None = None) -> go.Figure:
    """Two panels against depth: our final training loss (left) and our test error with the paper's (right).

    `table` is experiments.results(); runs without figures (not finished) are left out. `paper`
    defaults to experiments.PAPER_RESNET_TEST_ERROR; pass {} to leave the paper out.
    """
    paper = PAPER_RESNET_TEST_ERROR if paper is None else paper
    fig = go.Figure()
    budget = f", {steps:,} steps each" if steps else ""
    for family in ("plain", "residual"):
        rows = table[(table["family"] == family)].sort_values("depth")
        colour, symbol, dash = STYLES[family]
        name = f"ours: {family} nets on {dataset}{budget}"
        for column, axes, scale, fmt in (("train_loss", ("x", "y"), 1.0, ".3f"),
                                         ("test_error", ("x2", "y2"), 100.0, ".2f")):
            keep = np.isfinite(rows[column].to_numpy(float))
            part = rows[keep]
            if not len(part):
                continue
            fig.add_trace(go.Scatter(
                x=part["depth"].to_numpy(), y=part[column].to_numpy(float) * scale, mode="lines+markers",
                name=name, legendgroup=family, showlegend=axes[0] == "x" or not _has(fig, family),
                line={"color": colour, "dash": dash, "width": 2}, marker={"symbol": symbol, "size": 9},
                xaxis=axes[0], yaxis=axes[1], meta=[family, column],
                hovertemplate=f"{family}-%{{x}}<br>{column.replace('_', ' ')} %{{y:{fmt}}}"
                              f"{'%' if column == 'test_error' else ''}<extra>ours</extra>"))
    if paper:
        depths = sorted(paper)
        fig.add_trace(go.Scatter(
            x=depths, y=[paper[d] for d in depths], mode="lines+markers", name=PAPER_NAME, legendgroup="paper",
            line={"color": PAPER_COLOUR, "dash": "dot", "width": 1}, meta=["paper", "test_error"],
            marker={"symbol": "diamond-open", "size": 10, "color": PAPER_COLOUR, "line": {"width": 2}},
            xaxis="x2", yaxis="y2", hovertemplate="ResNet-%{x}, CIFAR-10<br>test error %{y:.2f}%"
                                                  "<extra>He et al. 2016</extra>"))
    ours = sorted(set(table["depth"].astype(int)))
    axis = {"title": {"text": "depth (weighted layers)"}, "type": "linear"}
    fig.update_layout(
        xaxis={**axis, "domain": [0, 0.45], "tickvals": ours},
        xaxis2={**axis, "domain": [0.55, 1], "anchor": "y2", "tickvals": sorted(set(ours) | set(paper))},
        yaxis={"title": {"text": "final training loss (ours)"}, "rangemode": "tozero"},
        yaxis2={"title": {"text": "test error (%)"}, "anchor": "x2", "rangemode": "tozero"},
        annotations=[_panel_title("Training loss after the same budget", 0.0),
                     _panel_title("Test error: ours and the paper's", 0.55)],
        legend={"orientation": "h", "y": -0.22, "x": 0}, margin={"l": 60, "r": 20, "t": 40, "b": 40},
        height=440, template=TEMPLATE, uirevision="degradation")
    if not any(len(t.x) for t in fig.data if t.meta and t.meta[0] != "paper"):
        fig.add_annotation(text="no finished runs yet", x=0.22, y=0.5, xref="paper", yref="paper", showarrow=False)
    return fig


def _has(fig: go.Figure, family: str) -> bool:
    return any(t.legendgroup == family for t in fig.data)


def _panel_title(text: str, x: float) -> dict:
    return {"text": f"<b>{text}</b>", "x": x, "y": 1.02, "xref": "paper", "yref": "paper", "xanchor": "left",
            "yanchor": "bottom", "showarrow": False, "font": {"size": 13}}


def points(fig: go.Figure) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """{(family or "paper", column): [(depth, value), ...]} as drawn; for tests and captions."""
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for t in fig.data:
        if t.meta:
            out[tuple(t.meta)] = [(float(x), float(y)) for x, y in zip(t.x, t.y, strict=True)
                                  if not math.isnan(float(y))]
    return out
