"""Figures for the Overview page: one gradient-descent step, feature maps of a residual block,
and the two shortcuts side by side.

Feature maps are grayscale heatmaps drawn right way up (row 0 at the top), with one colour
scale shared by every panel of a figure, so a brighter pixel means a larger number wherever it
is. A map with half the resolution covers the same area with pixels twice as wide, so the eye
sees what a stride of 2 does. Each row names its tensor and its shape, read from the tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
import torch

from ..explain import BlockView, ShortcutDemo, Update
from .gradflow import PLAIN_STYLE, RESIDUAL_STYLE, fmt_norm

PANEL_PX = 150  # height of one row of maps


def shape_text(t: torch.Tensor) -> str:
    return "×".join(map(str, t.shape))


@dataclass(frozen=True)
class MapRow:
    label: str  # e.g. "x"; the row's tensor shape is added to it
    maps: torch.Tensor  # (C, H, W)
    channels: tuple[int, ...]  # which channels to draw
    titles: tuple[str, ...] = ()  # one per channel; default "ch c"
    scale: int = 1  # pixel width in units of the widest row's pixels (2 for a stride-2 map)


def maps_figure(rows: Sequence[MapRow], title: str, cols: int | None = None) -> go.Figure:
    """A grid of grayscale maps, one row per tensor, every panel on one colour scale.

    The grid is laid out here, as plotly's make_subplots would (axis k is panel k, row by row), and
    the figure is built in one call: make_subplots with a trace and an axis update per panel cost
    most of the Overview's script run (0.3-0.5 s a figure). Values go to the browser to 4 decimals
    (the hover shows 3): in full float precision the Overview's two map figures were 310 KB of JSON,
    and parsing and drawing them held up the page's first chart by about a second (bench/RESULTS.md)."""
    cols = cols or max(len(r.channels) for r in rows)
    n_rows = len(rows)
    h_space, v_space = 0.02, (0.22 / max(1, n_rows - 1) if n_rows > 1 else 0.0)
    width, height = (1 - h_space * (cols - 1)) / cols, (1 - v_space * (n_rows - 1)) / n_rows
    values = torch.cat([r.maps[list(r.channels)].flatten() for r in rows])
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:  # an all-equal figure still needs a scale to draw on
        lo, hi = lo - 1, hi + 1
    extent = max(r.maps.shape[-1] * r.scale for r in rows)
    hidden = {"showticklabels": False, "ticks": "", "showgrid": False, "zeroline": False, "constrain": "domain"}
    layout: dict = {}
    annotations, traces = [], []
    for i, r in enumerate(rows):
        h, w = r.maps.shape[-2:]
        xs = [r.scale * j + (r.scale - 1) / 2 for j in range(w)]  # centres of the wider pixels
        ys = [r.scale * j + (r.scale - 1) / 2 for j in range(h)]
        names = r.titles or tuple(f"ch {c}" for c in r.channels)
        top = 1 - i * (height + v_space)
        for j in range(cols):
            k = i * cols + j + 1
            sx, sy = ("", "") if k == 1 else (str(k), str(k))
            left = j * (width + h_space)
            layout[f"xaxis{sx}"] = {"anchor": f"y{sy}", "domain": [left, left + width],
                                    "range": [-0.5, extent - 0.5], **hidden}
            # reversed: row 0 of an image is its top, as everywhere outside a plot; each panel square
            layout[f"yaxis{sy}"] = {"anchor": f"x{sx}", "domain": [top - height, top],
                                    "range": [extent - 0.5, -0.5], "scaleanchor": f"x{sx}", **hidden}
            if j < len(names) and names[j]:
                annotations.append({"text": names[j], "x": left + width / 2, "y": top, "xref": "paper",
                                    "yref": "paper", "xanchor": "center", "yanchor": "bottom",
                                    "showarrow": False, "font": {"size": 11}})
            if j < len(r.channels):
                c = r.channels[j]
                z = r.maps[c].double().mul(1e4).round().div(1e4).tolist()  # 4 decimals: see above
                traces.append(go.Heatmap(
                    z=z, x=xs, y=ys, coloraxis="coloraxis", xaxis=f"x{sx}", yaxis=f"y{sy}",
                    hovertemplate=f"{r.label}, ch {c}<br>row %{{y}}, col %{{x}}<br>value %{{z:.3f}}<extra></extra>"))
        first = "" if i == 0 else str(i * cols + 1)
        layout[f"yaxis{first}"]["title"] = {"text": f"<b>{r.label}</b><br>{shape_text(r.maps)}", "font": {"size": 12}}
    layout.update(
        title={"text": title, "x": 0, "xanchor": "left"}, annotations=annotations,
        height=90 + PANEL_PX * n_rows, margin={"l": 90, "r": 90, "t": 70, "b": 20},
        coloraxis={"colorscale": "gray", "cmin": lo, "cmax": hi,
                   "colorbar": {"title": {"text": "value", "side": "right"}, "thickness": 12, "len": 0.9}},
        plot_bgcolor="white", template="plotly",
    )
    return go.Figure(data=traces, layout=layout)


def digit_figure(image: torch.Tensor, label: str, index: int) -> go.Figure:
    """The input digit (1, H, W) as the net sees it: normalised pixels."""
    fig = maps_figure([MapRow("input", image, (0,), (f"test digit #{index}: a {label}",))],
                      title="The digit", cols=1)
    fig.update_layout(height=380, margin={"l": 50, "r": 10, "t": 70, "b": 10})
    fig.update_coloraxes(colorbar={"title": {"text": "normalised<br>pixel"}})
    return fig


def residual_figure(view: BlockView, channels: Sequence[int] = (0, 1, 2, 3)) -> go.Figure:
    """x, F(x) and x + F(x) of one block, the same channels of each, on one colour scale."""
    ch = tuple(channels)
    rows = [MapRow("x", view.x, ch),
            MapRow("F(x)", view.fx, ch),
            MapRow("x + F(x)", view.total, ch)]
    return maps_figure(rows, title=f"Block {view.name}: input, branch and their sum, channels "
                                   f"{ch[0]}–{ch[-1]} of {view.x.shape[0]}")


def shortcut_figure(demo: ShortcutDemo, channels: Sequence[int] = (0, 1, 2, 3)) -> go.Figure:
    """The same input through option A and option B, and the branch output both must match."""
    ch = tuple(channels)
    s = demo.stride
    # a zero channel either side of copies of the first two input channels shown above
    a_ch = (demo.pad_before - 1, demo.pad_before + ch[0], demo.pad_before + ch[1], demo.a.shape[0] - 1)
    a_titles = tuple(f"ch {c}: zeros" if demo.a_channel_source(c) is None
                     else f"ch {c} = x ch {demo.a_channel_source(c)}, /{s}" for c in a_ch)
    rows = [MapRow("x", demo.x, ch),
            MapRow("option A", demo.a, a_ch, a_titles, scale=s),
            MapRow("option B", demo.b, ch, tuple(f"ch {c}: mix of all {demo.x.shape[0]}" for c in ch), scale=s),
            MapRow("F(x)", demo.fx, ch, scale=s)]
    return maps_figure(rows, title=f"{shape_text(demo.x)} → {shape_text(demo.fx)}: both shortcuts on the "
                                   "same input, one colour scale")


def update_figure(u: Update) -> go.Figure:
    """|W|, |dL/dW|, lr and the step |lr·dL/dW| as points on one log axis, with float32's resolution at W."""
    items = [("weight W", abs(u.weight), "#555555"),
             ("gradient ∂L/∂W", abs(u.grad), PLAIN_STYLE[0]),
             ("learning rate", u.lr, "#009E73"),
             ("step lr·∂L/∂W", abs(u.step), RESIDUAL_STYLE[0])]
    shown = [v for _, v, _ in items if v > 0]
    lo = min(shown + [u.f32_spacing]) / 10
    fig = go.Figure()
    for name, v, colour in items:
        fig.add_trace(go.Scatter(
            x=[v], y=[name], mode="markers+text", marker={"size": 14, "color": colour},
            text=[f"  {fmt_norm(v)}"], textposition="middle right", showlegend=False,
            hovertemplate=f"{name}: %{{x:.3g}}<extra></extra>", cliponaxis=False))
        fig.add_shape(type="line", x0=lo, x1=v, y0=name, y1=name, line={"color": colour, "width": 2})
    fig.add_vline(x=u.f32_spacing, line={"color": "#999", "dash": "dot"})
    fig.add_annotation(x=0, xref="paper", y=1.0, yref="paper", yanchor="bottom", xanchor="left", showarrow=False,
                       text=f"dotted: the gap between W and the next float32 number ({fmt_norm(u.f32_spacing)})",
                       font={"size": 11, "color": "#555"})
    fig.update_layout(
        height=280, margin={"l": 150, "r": 70, "t": 40, "b": 40}, plot_bgcolor="white", font={"size": 13},
        xaxis={"type": "log", "exponentformat": "power", "range": [math.log10(lo), 1],
               "title": {"text": "size (log scale)"}, "gridcolor": "#e5e5e5", "dtick": 2},
        yaxis={"autorange": "reversed"},
    )
    return fig
