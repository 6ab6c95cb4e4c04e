"""Figures for the Inspect page: confusion matrix, per-class accuracy, class probabilities, one block's
maps, the per-block norms of one image, the saliency map, and F(x) against x at init and trained."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from ..inspect.forward import BlockTrace, top_channels
from ..inspect.training_change import BlockNorms
from .explain import MapRow, maps_figure
from .gradflow import PLAIN_STYLE, RESIDUAL_STYLE

INITIAL_COLOUR, TRAINED_COLOUR = "#999999", RESIDUAL_STYLE[0]


def confusion_figure(confusion: np.ndarray, classes: Sequence[str], title: str = "Confusion matrix") -> go.Figure:
    """Counts, rows the true class and columns the predicted one; the diagonal is right."""
    k = len(classes)
    names = [str(c) for c in classes]
    share = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)  # colour: the row's share, so rare classes show
    fig = go.Figure(go.Heatmap(
        z=share, x=names, y=names, text=confusion, texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1,
        customdata=confusion, colorbar={"title": {"text": "share of<br>the row"}, "thickness": 12},
        hovertemplate="true %{y}, predicted %{x}: %{customdata} images (%{z:.0%} of the row)<extra></extra>"))
    fig.update_layout(title={"text": title, "x": 0}, height=140 + 32 * k, margin={"l": 110, "r": 20, "t": 60, "b": 90},
                      xaxis={"title": {"text": "predicted"}, "side": "bottom", "type": "category", "tickangle":
                             -30 if k > 10 or max(map(len, names)) > 3 else 0},
                      yaxis={"title": {"text": "true"}, "autorange": "reversed", "type": "category"},
                      plot_bgcolor="white")
    return fig


def per_class_figure(rows: Sequence[dict], title: str = "Accuracy per class") -> go.Figure:
    names = [str(r["name"]) for r in rows]
    acc = [r["accuracy"] if r["count"] else None for r in rows]
    fig = go.Figure(go.Bar(x=names, y=acc, marker_color=RESIDUAL_STYLE[0],
                           text=[f"{a:.0%}" if a is not None else "" for a in acc], textposition="outside",
                           customdata=[[r["correct"], r["count"]] for r in rows],
                           hovertemplate="%{x}: %{customdata[0]} of %{customdata[1]} right<extra></extra>"))
    fig.update_layout(title={"text": title, "x": 0}, height=300, margin={"l": 60, "r": 20, "t": 60, "b": 60},
                      xaxis={"type": "category"},
                      yaxis={"range": [0, 1.12], "tickformat": ".0%", "title": {"text": "right"}},
                      plot_bgcolor="white")
    return fig


def probabilities_figure(probs: torch.Tensor, classes: Sequence[str], title: str = "Class probabilities") -> go.Figure:
    p = probs.tolist()
    best = int(np.argmax(p))
    colours = [RESIDUAL_STYLE[0] if i == best else "#bbbbbb" for i in range(len(p))]
    fig = go.Figure(go.Bar(x=p, y=[str(c) for c in classes], orientation="h", marker_color=colours,
                           text=[f"{v:.1%}" for v in p], textposition="outside", cliponaxis=False,
                           hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(title={"text": title, "x": 0}, height=90 + 24 * len(p), margin={"l": 90, "r": 50, "t": 50,
                                                                                      "b": 30},
                      xaxis={"range": [0, 1.15], "tickformat": ".0%"},
                      yaxis={"autorange": "reversed", "type": "category"},
                      plot_bgcolor="white")
    return fig


def block_figure(bt: BlockTrace, channels: int = 4) -> go.Figure:
    """x, F(x) and x + F(x) of one block on one image: the same channels of each, on one colour scale.

    The channels are those where x + F(x) (a plain block: F(x)) is largest; `x` is what the skip path adds
    (the input itself, or the input reshaped by the shortcut), so all three rows have one shape."""
    if bt.total is None:  # a plain net: nothing skips, the block's input is shown beside what it makes of it
        ch = tuple(top_channels(bt.fx, channels))
        rows = [MapRow("F(x)", bt.fx, ch), MapRow("output", bt.out, ch)]
        title = f"Block {bt.name} (no skip): branch output and block output, channels {_list(ch)}"
    else:
        ch = tuple(top_channels(bt.total, channels))
        label = "x" if bt.shortcut_kind == "identity" else f"x ({bt.shortcut_kind})"
        rows = [MapRow(label, bt.shortcut, ch), MapRow("F(x)", bt.fx, ch), MapRow("x + F(x)", bt.total, ch)]
        title = f"Block {bt.name}: what skips, what the branch adds, and the sum; channels {_list(ch)}"
    return maps_figure(rows, title=title)


def _list(ch: Sequence[int]) -> str:
    return ", ".join(map(str, ch))


def norms_figure(blocks: Sequence[BlockTrace], title: str = "Norms block by block, this image") -> go.Figure:
    names = [b.name for b in blocks]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=[b.norms["x"] for b in blocks], name="‖x‖ (what skips; plain: input)",
                         marker_color="#bbbbbb"))
    fig.add_trace(go.Bar(x=names, y=[b.norms["fx"] for b in blocks], name="‖F(x)‖", marker_color=PLAIN_STYLE[0]))
    if all(b.total is not None for b in blocks):
        fig.add_trace(go.Bar(x=names, y=[b.norms["total"] for b in blocks], name="‖x + F(x)‖",
                             marker_color=RESIDUAL_STYLE[0]))
    fig.update_layout(title={"text": title, "x": 0}, barmode="group", height=320, plot_bgcolor="white",
                      margin={"l": 60, "r": 20, "t": 60, "b": 60}, yaxis={"title": {"text": "norm"}},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def saliency_figure(image: torch.Tensor, smap: torch.Tensor, title: str) -> go.Figure:
    """The input (grey, C=1; or the mean over colour channels) and |d score / d pixel| beside it."""
    from plotly.subplots import make_subplots

    base = image.mean(0) if image.shape[0] > 1 else image[0]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("input", "|gradient| (saliency)"), horizontal_spacing=0.08)
    fig.add_trace(go.Heatmap(z=base.tolist(), colorscale="gray", showscale=False,
                             hovertemplate="row %{y}, col %{x}: %{z:.2f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=smap.tolist(), colorscale="Hot", reversescale=False, zmin=0,
                             colorbar={"thickness": 10, "len": 0.9},
                             hovertemplate="row %{y}, col %{x}: %{z:.3g}<extra></extra>"), row=1, col=2)
    for c in (1, 2):
        fig.update_xaxes(showticklabels=False, constrain="domain", row=1, col=c)
        fig.update_yaxes(showticklabels=False, autorange="reversed", scaleanchor=f"x{'' if c == 1 else c}",
                         row=1, col=c)
    fig.update_layout(title={"text": title, "x": 0}, height=300, margin={"l": 20, "r": 20, "t": 70, "b": 10})
    return fig


def change_figure(change: dict[str, list[BlockNorms]], title: str) -> go.Figure:
    """‖F(x)‖ / ‖x‖ per block, at initialisation (where known) and trained."""
    fig = go.Figure()
    for key, colour, label in (("initial", INITIAL_COLOUR, "at initialisation"), ("trained", TRAINED_COLOUR,
                                                                                   "trained")):
        if key not in change:
            continue
        rows = change[key]
        fig.add_trace(go.Scatter(
            x=[r.name for r in rows], y=[r.ratio for r in rows], mode="lines+markers", name=label,
            line={"color": colour, "width": 3}, customdata=[[r.fx, r.x] for r in rows],
            hovertemplate="%{x}: ‖F(x)‖/‖x‖ = %{y:.3g} (‖F(x)‖ %{customdata[0]:.3g}, ‖x‖ %{customdata[1]:.3g})"
                          "<extra>" + label + "</extra>"))
    fig.update_layout(title={"text": title, "x": 0}, height=330, plot_bgcolor="white",
                      margin={"l": 70, "r": 20, "t": 60, "b": 60},
                      yaxis={"type": "log", "title": {"text": "‖F(x)‖ / ‖x‖"}, "gridcolor": "#e5e5e5"},
                      legend={"orientation": "h", "y": -0.25})
    return fig
