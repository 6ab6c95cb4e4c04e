"""The gradient's two roads at each addition, at initialisation: a chart and the words for it.

Top: per residual block, the norm of the gradient's part that came through the shortcut and of
the part that came back through the branch F (log axis). Bottom: the shortcut's share
|g_s| / (|g_s| + |g_b|). The words state only what these numbers show.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from ..probe import GradFlow
from .gradflow import fmt_norm, times
from .theme import TEMPLATE
from .training import _layer_ticks, bin_steps, layer_grid

SHORTCUT_COLOUR, BRANCH_COLOUR = "#0072B2", "#E69F00"  # Okabe-Ito blue and orange
ACT = {"relu": "ReLU", "leaky_relu": "leaky ReLU", "gelu": "GELU", "tanh": "tanh", "sigmoid": "sigmoid"}


def split_figure(g: GradFlow, title: str = "") -> go.Figure:
    names = [n for n, _ in g.blocks]
    short = np.array([s for s, _ in g.split or ()], float)
    branch = np.array([b for _, b in g.split or ()], float)
    share = np.array(g.shares, float)
    fig = go.Figure()
    pos = [v for v in np.concatenate([short, branch]) if v > 0 and math.isfinite(v)]
    lo = min(pos) if pos else 1e-3
    for label, vals, colour, symbol in (("through the shortcut", short, SHORTCUT_COLOUR, "circle"),
                                        ("back through the branch F", branch, BRANCH_COLOUR, "square")):
        fig.add_trace(go.Scatter(
            x=names, y=[v if v > 0 else lo / 30 for v in vals], name=label, mode="lines+markers",
            line={"color": colour, "width": 2.5}, marker={"color": colour, "symbol": symbol, "size": 6},
            customdata=[[fmt_norm(v)] for v in vals],
            hovertemplate=f"%{{x}}<br>{label}: %{{customdata[0]}}<extra></extra>"))
    fig.add_trace(go.Bar(x=names, y=share.tolist(), name="shortcut's share", marker={"color": SHORTCUT_COLOUR},
                         xaxis="x2", yaxis="y2", opacity=0.75, showlegend=False,
                         hovertemplate="%{x}<br>shortcut's share %{y:.1%}<extra></extra>"))
    fig.add_hline(y=0.5, line={"color": "#555", "width": 1, "dash": "dot"}, xref="x2", yref="y2")
    fig.update_layout(
        title={"text": title or "The gradient at each block's fork, by road", "x": 0, "xanchor": "left"},
        height=520, margin={"l": 70, "r": 20, "t": 60, "b": 60}, template=TEMPLATE,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1},
        xaxis={"domain": [0, 1], "anchor": "y", "showticklabels": False, "matches": "x2"},
        yaxis={"domain": [0.42, 1], "type": "log", "exponentformat": "power",
               "title": {"text": "‖part of dL/dx‖ (log)"}},
        xaxis2={"domain": [0, 1], "anchor": "y2", "title": {"text": "block: input ← → loss"}},
        yaxis2={"domain": [0, 0.32], "range": [0, 1], "tickformat": ".0%",
                "title": {"text": "shortcut's share"}})
    return fig


def split_explanation(res: GradFlow | None, plain: GradFlow | None) -> list[str]:
    """Markdown paragraphs for the split, each stating a number the chart shows."""
    out = ["At every addition out = x + F(x) the gradient that reaches x arrives by two roads: straight "
           "through the shortcut, and back through the branch F. Their sum is the whole gradient at x. "
           "The chart shows the size (norm) of each part at each block of a freshly initialised net, and "
           "the shortcut's share, ‖shortcut part‖ / (‖shortcut part‖ + ‖branch part‖): 100% means all of it "
           "came through the shortcut, 50% that both parts are the same size."]
    if res is not None and res.split:
        cfg = res.config
        short = np.array([s for s, _ in res.split])
        branch = np.array([b for _, b in res.split])
        share = np.array(res.shares)
        act = ACT[cfg.activation]
        if (branch == 0).all():
            out.append("**Zero-init residual:** every branch starts at zero, so each block's branch sends back "
                       "exactly 0 and all of the gradient comes through the shortcuts (a share of 100% "
                       "everywhere).")
        else:
            more = int((branch > short).sum())
            out.append(f"Here the shortcut's share is {np.nanmin(share):.0%} to {np.nanmax(share):.0%} "
                       f"(median {np.nanmedian(share):.0%}) over the {len(share)} blocks; the branch sends "
                       + (f"back more than the shortcut at {more} of them." if more else
                          "back less than the shortcut at every one."))
        ratio = short[0] / short[-1] if short[-1] > 0 else math.nan
        if cfg.style == "post" and ratio == ratio and ratio < 0.01:
            slope = " (at most 0.25 for sigmoid)" if cfg.activation == "sigmoid" else ""
            out.append(f"**The shortcut's road is not clean in post-activation blocks.** {act} comes after the "
                       "addition, so the gradient at the sum, which is what the identity shortcut passes on, "
                       f"has already been multiplied by {act}'s slope{slope} at every block. However large its "
                       f"share, the shortcut's part at the first block is only {fmt_norm(ratio)} of that at "
                       "the last block.")
        elif ratio == ratio:
            where = ("In pre-activation blocks nothing follows the addition: the shortcut's part is the "
                     "gradient at the block's output, passed on unchanged. " if cfg.style == "pre" else "")
            out.append(f"{where}The shortcut's part at the first block is {times(ratio)} that at the last block.")
        if cfg.batchnorm and short[0] > 0 and short[-1] > 0 and not (branch == 0).all():
            out.append(f"With BatchNorm the branch's part is {times(branch[0] / short[0])} the shortcut's at the "
                       f"first block and {times(branch[-1] / short[-1])} at the last.")
        if cfg.shortcut in ("B", "C") and cfg.style == "pre":
            out.append("In pre-activation blocks with a projection shortcut both roads leave from the "
                       "normalised input act(BN(x)); the split is measured there.")
    if plain is not None and plain.split:
        out.append("The plain twin has no shortcut: at each of its blocks the whole gradient comes back "
                   "through the branch (a share of 0).")
    return out


def share_heatmap(grads, blocks: list[str], max_columns: int = 300, cursor_step: int | None = None,
                  title: str = "") -> go.Figure:
    """Blocks (input at the bottom) by steps, coloured by the shortcut's share on a fixed 0-100% scale.

    A linear scale, unlike the magnitude heatmaps: the share is a fraction. Bins of several steps
    show the mean share of their steps.
    """
    fig = go.Figure()
    grid, steps = layer_grid(grads, "shortcut_share", blocks)
    has = np.isfinite(grid).any(1)
    names = [n for n, h in zip(blocks, has, strict=True) if h]
    if not names or not len(steps):
        fig.add_annotation(text="no shortcut shares logged yet (records from before this measurement have none)",
                           x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
        fig.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, height=240, template=TEMPLATE)
        return fig
    z, _, x, k = bin_steps(grid[has], np.zeros_like(grid[has], bool), steps, max_columns)
    over = f"<br>(mean of {k} steps ending here)" if k > 1 else ""
    fig.add_trace(go.Heatmap(
        z=[[None if v != v else round(float(v), 5) for v in row] for row in z], x=x.tolist(), y=names,
        zmin=0, zmax=1, colorscale="Cividis", hoverongaps=False,
        hovertemplate=f"%{{y}}<br>step %{{x}}<br>shortcut's share %{{z:.1%}}{over}<extra></extra>",
        colorbar={"title": {"text": "shortcut's share"}, "tickformat": ".0%"}))
    shapes = []
    if cursor_step is not None:
        for colour, width in (("black", 4), ("white", 1.5)):
            shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": cursor_step, "x1": cursor_step,
                           "y0": 0, "y1": 1, "line": {"color": colour, "width": width}})
    fig.update_layout(
        title={"text": title, "font": {"size": 14}, "x": 0.01} if title else None,
        xaxis={"title": {"text": "step"}}, shapes=shapes, template=TEMPLATE, uirevision="shortcut_share",
        yaxis={"title": {"text": "block (input at the bottom)"}, "type": "category",
               "tickvals": _layer_ticks(names), "ticktext": _layer_ticks(names), "automargin": True},
        height=min(900, 240 + 8 * len(names)), margin={"l": 20, "r": 20, "t": 60 if title else 30, "b": 40})
    return fig
