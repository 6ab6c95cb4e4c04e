"""Figures and words for "Why it works": lesion study, loss landscape, path lengths.

Residual net blue, plain twin vermillion (Okabe-Ito), as on the Gradient flow page. The words
state what these numbers show; the papers' findings are labelled as theirs by the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go

from ..why.landscape import Landscape
from ..why.lesion import Lesion
from ..why.paths import PathLengths
from .theme import TEMPLATE

COLOURS = {"residual": "#0072B2", "plain": "#D55E00"}
LANDSCAPE_SCALE = "Viridis"


# ---------------------------------------------------------------- lesion


def lesion_figure(results: Mapping[str, Lesion]) -> go.Figure:
    """Test accuracy with each block deleted (bars), the undamaged net's as a dashed line; blocks that
    cannot be deleted get an ✕ on the axis instead of a bar."""
    fig = go.Figure()
    for fam, r in results.items():
        acc = [a if a is not None else None for a in r.single]
        fig.add_trace(go.Bar(x=list(r.names), y=acc, name=f"{fam}: one block deleted",
                             marker={"color": COLOURS[fam]}, offsetgroup=fam,
                             hovertemplate=f"{fam}<br>%{{x}} deleted<br>accuracy %{{y:.1%}}<extra></extra>"))
        fig.add_trace(go.Scatter(x=list(r.names), y=[r.baseline_accuracy] * len(r.names), mode="lines",
                                 name=f"{fam}: nothing deleted", line={"color": COLOURS[fam], "dash": "dash"}))
        blocked = [n for n, ok in zip(r.names, r.removable, strict=True) if not ok]
        if blocked:
            fig.add_trace(go.Scatter(x=blocked, y=[0.02] * len(blocked), mode="markers+text", text=["✕"] * len(blocked),
                                     textposition="top center", marker={"color": COLOURS[fam], "symbol": "x",
                                                                         "size": 10},
                                     name=f"{fam}: cannot be deleted (changes shape, no shortcut)",
                                     hovertemplate="%{x} changes the shape and has no shortcut: cannot be "
                                                   "deleted<extra></extra>"))
    fig.update_layout(barmode="group", height=420, template=TEMPLATE, title={"text": "Delete one block",
                      "x": 0}, yaxis={"range": [0, 1.02], "tickformat": ".0%", "title": {"text": "test accuracy"}},
                      xaxis={"title": {"text": "deleted block (input on the left)"}},
                      legend={"orientation": "h", "y": -0.25}, margin={"l": 60, "r": 20, "t": 50, "b": 40})
    return fig


def lesion_k_figure(results: Mapping[str, Lesion]) -> go.Figure:
    fig = go.Figure()
    for fam, r in results.items():
        if not r.random_k:
            continue
        fig.add_trace(go.Scatter(x=[0, *r.random_k], y=[r.baseline_accuracy, *r.random_mean], mode="lines+markers",
                                 name=fam, line={"color": COLOURS[fam], "width": 2.5},
                                 hovertemplate=f"{fam}<br>%{{x}} blocks deleted<br>mean accuracy %{{y:.1%}}"
                                               "<extra></extra>"))
    fig.update_layout(height=380, template=TEMPLATE, title={"text": "Delete k blocks at random", "x": 0},
                      yaxis={"range": [0, 1.02], "tickformat": ".0%", "title": {"text": "mean test accuracy"}},
                      xaxis={"title": {"text": "blocks deleted, k"}, "dtick": 1},
                      legend={"orientation": "h", "y": -0.25}, margin={"l": 60, "r": 20, "t": 50, "b": 40})
    return fig


def lesion_words(results: Mapping[str, Lesion], chance: float = 0.1) -> list[str]:
    out = []
    res, plain = results.get("residual"), results.get("plain")
    if res is not None:
        drops = [res.baseline_accuracy - a for a in res.single if a is not None]
        worst = int(np.argmax(drops))
        out.append(f"**Here, residual net:** {res.baseline_accuracy:.1%} with nothing deleted on {res.images:,} test "
                   f"images; deleting one block leaves {min(res.single):.1%} to {max(res.single):.1%} "
                   f"(the largest drop, {drops[worst]:.1%} points, at {res.names[worst]}). "
                   f"With all {len(res.names)} branches deleted it gets {res.random_mean[-1]:.1%}.")
    if plain is not None:
        ok = [a for a in plain.single if a is not None]
        blocked = [n for n, r in zip(plain.names, plain.removable, strict=True) if not r]
        text = f"**Plain twin:** {plain.baseline_accuracy:.1%} with nothing deleted"
        if len(ok) == 1:
            text += f"; deleting its one deletable block leaves {ok[0]:.1%}"
        elif ok:
            text += f"; deleting one block leaves {min(ok):.1%} to {max(ok):.1%}"
        if blocked:
            text += (f". {len(blocked)} of its blocks ({', '.join(blocked)}) change the shape of what passes through "
                     "and have no shortcut, so they cannot be deleted at all")
        out.append(text + f" (chance is {chance:.0%}).")
    return out


# ---------------------------------------------------------------- landscape


def shared_zmax(landscapes: Mapping[str, Landscape]) -> float:
    """One colour scale for all: up to the largest finite loss, capped at 10x the largest centre so
    one exploding corner does not wash out the rest."""
    vals = [v for ls in landscapes.values() for row in ls.loss for v in row if math.isfinite(v)]
    top = max(vals) if vals else 1.0
    centres = [ls.centre for ls in landscapes.values() if math.isfinite(ls.centre)]
    return min(top, 10 * max(centres)) if centres else top


def contour_figure(ls: Landscape, name: str, zmax: float) -> go.Figure:
    z = np.array(ls.loss).T  # plotly: z[row = beta][col = alpha]
    fig = go.Figure(go.Contour(x=list(ls.alphas), y=list(ls.betas), z=np.minimum(z, zmax).tolist(), zmin=0,
                               zmax=zmax, colorscale=LANDSCAPE_SCALE, contours={"coloring": "heatmap"},
                               colorbar={"title": {"text": "loss"}},
                               hovertemplate="α %{x:.2f}, β %{y:.2f}<br>loss %{z:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0], y=[0], mode="markers", marker={"symbol": "x", "color": "white", "size": 10},
                             name="trained weights", hovertemplate=f"trained weights<br>loss {ls.centre:.3f}"
                                                                   "<extra></extra>"))
    fig.update_layout(title={"text": name, "x": 0}, height=420, template=TEMPLATE, showlegend=False,
                      xaxis={"title": {"text": "α (direction 1)"}}, yaxis={"title": {"text": "β (direction 2)"}},
                      margin={"l": 60, "r": 20, "t": 50, "b": 40})
    return fig


def surface_figure(ls: Landscape, name: str, zmax: float) -> go.Figure:
    z = np.minimum(np.array(ls.loss).T, zmax)
    fig = go.Figure(go.Surface(x=list(ls.alphas), y=list(ls.betas), z=z.tolist(), cmin=0, cmax=zmax,
                               colorscale=LANDSCAPE_SCALE, colorbar={"title": {"text": "loss"}}))
    fig.update_layout(title={"text": name, "x": 0}, height=460, template=TEMPLATE,
                      scene={"xaxis": {"title": {"text": "α"}}, "yaxis": {"title": {"text": "β"}},
                             "zaxis": {"title": {"text": "loss"}, "range": [0, zmax]}},
                      margin={"l": 0, "r": 0, "t": 50, "b": 0})
    return fig


def line_figure(landscapes: Mapping[str, Landscape]) -> go.Figure:
    fig = go.Figure()
    for fam, ls in landscapes.items():
        fig.add_trace(go.Scatter(x=list(ls.alphas), y=list(ls.line), mode="lines+markers", name=f"{fam}: along d1",
                                 line={"color": COLOURS[fam], "width": 2.5}))
        if ls.interpolation_t:
            fig.add_trace(go.Scatter(x=list(ls.interpolation_t), y=list(ls.interpolation_loss), mode="lines",
                                     name=f"{fam}: initial (t=0) → trained (t=1)",
                                     line={"color": COLOURS[fam], "dash": "dot", "width": 2}))
    fig.update_layout(height=380, template=TEMPLATE, title={"text": "1-D slices", "x": 0},
                      xaxis={"title": {"text": "α along d1, or t from the initial to the trained weights"}},
                      yaxis={"title": {"text": "loss (log scale)"}, "type": "log"},
                      legend={"orientation": "h", "y": -0.25}, margin={"l": 60, "r": 20, "t": 50, "b": 40})
    return fig


def landscape_words(landscapes: Mapping[str, Landscape]) -> list[str]:
    out = []
    for fam, ls in landscapes.items():
        grid = np.array(ls.loss)
        finite = grid[np.isfinite(grid)]
        at_min = bool(np.isfinite(ls.centre) and ls.centre <= finite.min() + 1e-12)
        edge = np.concatenate([grid[0], grid[-1], grid[:, 0], grid[:, -1]])
        edge = edge[np.isfinite(edge)]
        out.append(f"**{fam.capitalize()}:** loss {ls.centre:.3f} at the trained weights, "
                   + ("the lowest point of the grid" if at_min else f"while the lowest on the grid is "
                      f"{finite.min():.3f}")
                   + (f"; {np.median(edge) / ls.centre:.3g}× as high, in the median, at the grid's edge"
                      if ls.centre > 0 and len(edge) else "")
                   + f" ({len(ls.alphas)}×{len(ls.betas)} points, {ls.samples:,} training images).")
    return out


# ---------------------------------------------------------------- paths


def paths_figure(p: PathLengths) -> go.Figure:
    k = list(p.lengths)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=k, y=list(p.count), name="number of paths C(n, k)", marker={"color": "#999"},
                         xaxis="x", yaxis="y", hovertemplate="length %{x}: %{y:,} paths<extra></extra>"))
    fig.add_trace(go.Scatter(x=k, y=list(p.gradient), name="gradient of one path (mean norm)", mode="lines+markers",
                             line={"color": COLOURS["residual"]}, xaxis="x2", yaxis="y2",
                             hovertemplate="length %{x}: %{y:.3e}<extra></extra>"))
    fig.add_trace(go.Bar(x=k, y=list(p.total), name="count × gradient", marker={"color": "#009E73"},
                         xaxis="x3", yaxis="y3", hovertemplate="length %{x}: %{y:.3e}<extra></extra>"))
    a, b = p.central(0.9)
    fig.add_vrect(x0=a - 0.5, x1=b + 0.5, xref="x3", fillcolor="rgba(0,158,115,0.12)", line_width=0)
    fig.update_layout(
        height=380, template=TEMPLATE, legend={"orientation": "h", "y": -0.3},
        xaxis={"domain": [0, 0.3], "title": {"text": "path length k"}},
        xaxis2={"domain": [0.36, 0.64], "title": {"text": "path length k"}, "anchor": "y2"},
        xaxis3={"domain": [0.7, 1], "title": {"text": "path length k"}, "anchor": "y3"},
        yaxis={"title": {"text": "paths"}, "type": "log"},
        yaxis2={"anchor": "x2", "type": "log", "title": {"text": "‖gradient‖ at the input"}},
        yaxis3={"anchor": "x3", "title": {"text": "total ‖gradient‖"}},
        margin={"l": 60, "r": 20, "t": 30, "b": 40})
    return fig


def paths_words(p: PathLengths) -> str:
    n = len(p.lengths) - 1
    a, b = p.central(0.9)
    g = np.array(p.gradient)
    slope = g[min(n, 10)] / g[0] if g[0] > 0 else math.nan
    return (f"**Here:** {n} blocks, so {2 ** n:,} paths, most of them of length near {n // 2} (the binomial counts). "
            f"One path's gradient at the first block's input is {slope:.2g}× as large at length {min(n, 10)} as at "
            f"length 0, so 90% of the total (count × gradient) comes from paths of length {a} to {b}: "
            f"{p.share_up_to(b):.0%} from paths of length {b} or less. Measured at {p.source} on {p.batch_size} "
            f"images, {p.samples} random path(s) per length.")
