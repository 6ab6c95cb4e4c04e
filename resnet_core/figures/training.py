"""Training figures: loss/accuracy curves and the layer-by-step gradient heatmap.

A live page rebuilds these every 0.5-1 s, so they are built from numpy arrays straight into one
`go.Figure` (no make_subplots, no per-cell Python loop), and the heatmap never has more than
`max_columns` step columns, whatever the length of the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pyarrow as pa
import pyarrow.compute as pc

from .theme import TEMPLATE

# Okabe & Ito's palette: told apart with every common colour-vision deficiency.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
KINDS = ("weight_grad", "act_grad", "update_ratio", "weight_norm", "shortcut_share")
KIND_LABELS = {"weight_grad": "‖∂L/∂W‖", "act_grad": "‖∂L/∂h‖", "update_ratio": "‖ΔW‖ / ‖W‖",
               "weight_norm": "‖W‖", "shortcut_share": "shortcut's share"}
HEATMAP_SCALE = "Viridis"
RATIO_SCALE = "RdBu"  # diverging, red below 1, blue above, white at 1
ZERO_COLOUR = "#9e9e9e"  # neutral grey: outside Viridis and RdBu for every kind of colour vision
MAX_TICKS = 24  # layer labels on the y axis; hover always names the layer


# ---------------------------------------------------------------- curves

def curves_figure(metrics: pd.DataFrame, max_points: int = 2000) -> go.Figure:
    """Loss (log scale) and accuracy against step, train and test, one colour per run if several."""
    fig = go.Figure()
    if metrics is None or metrics.empty:
        return _empty(fig, "no metrics yet")
    runs = list(dict.fromkeys(metrics["run"])) if "run" in metrics else [None]
    percent = float(np.nanmax(metrics["accuracy"].to_numpy(float), initial=0)) <= 1
    for r, run in enumerate(runs):
        rows = metrics if run is None else metrics[metrics["run"] == run]
        for s, split in enumerate(("train", "test")):
            part = rows[rows["split"] == split].sort_values("step")
            if part.empty:
                continue
            # One run: colour tells train from test. Several: colour is the run, dash the split.
            colour = OKABE_ITO[s if run is None else r % len(OKABE_ITO)]
            label = split if run is None else f"{run} · {split}"
            line = {"color": colour, "width": 2, "dash": "solid" if split == "train" else "dot"}
            mode = "lines" if split == "train" else "lines+markers"
            step = part["step"].to_numpy()
            for column, axes in (("loss", ("x", "y")), ("accuracy", ("x2", "y2"))):
                y = part[column].to_numpy(float)
                keep = np.isfinite(y) & ((y > 0) if column == "loss" else True)  # log axis: positives
                idx = _thin(np.flatnonzero(keep), max_points)
                fmt = ".1%" if column == "accuracy" and percent else ".4g"
                fig.add_trace(go.Scatter(
                    x=step[idx], y=y[idx], mode=mode, line=line, marker={"size": 4, "color": colour},
                    name=label, legendgroup=label, showlegend=column == "loss", xaxis=axes[0],
                    yaxis=axes[1], hovertemplate=f"{label}<br>step %{{x}}<br>{column} %{{y:{fmt}}}<extra></extra>"))
    fig.update_layout(
        xaxis={"domain": [0, 0.46], "title": {"text": "step"}},
        xaxis2={"domain": [0.54, 1], "title": {"text": "step"}, "matches": "x"},
        yaxis={"type": "log", "title": {"text": "loss (log scale)"}, **log_ticks(metrics["loss"])},
        yaxis2={"anchor": "x2", "title": {"text": "accuracy"}, "tickformat": ".0%" if percent else None,
                "range": [0, 1.02] if percent else [0, 102]},
        # above the plots: plotly widens the top margin for as many rows as the legend needs, while under
        # them a legend that wrapped (a narrow window, long run names) covered the axis titles
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"},
        margin={"l": 60, "r": 20, "t": 30, "b": 40},
        height=360, uirevision="curves", template=TEMPLATE)
    return fig


# Tick mantissas for a log axis, coarse to fine; log_ticks picks the coarsest giving four ticks.
LOG_LADDERS = ((1,), (1, 2, 5), (1, 1.5, 2, 3, 4, 5, 7), (1, 1.2, 1.4, 1.6, 1.8, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9),
               tuple(round(1 + 0.05 * i, 2) for i in range(180)))


def log_ticks(values: pd.Series | np.ndarray) -> dict:
    """Tick values and labels for a log axis over `values`' positive finite range.

    Plotly labels a log axis at its own decades and digits: a loss between 1.8 and 2.4 (the first
    steps of a run) got one tick, "2". Four to eight readable ticks whatever the range.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v):
        return {}
    lo, hi = float(v.min()), float(v.max())
    decades = range(int(np.floor(np.log10(lo))), int(np.floor(np.log10(hi))) + 1)
    for ladder in LOG_LADDERS:
        ticks = [round(m * 10.0**e, 12) for e in decades for m in ladder if lo <= m * 10.0**e <= hi]
        if len(ticks) >= 4:  # three left a third of a short range unlabelled (1.6, 1.8, 2 for 1.56-2.3)
            break
    else:
        ticks = [lo, hi] if hi > lo else [lo]
    if len(ticks) > 8:  # a fine ladder over several decades: keep every k-th
        ticks = ticks[:: int(np.ceil(len(ticks) / 8))]
    return {"tickvals": ticks, "ticktext": [f"{t:.3g}" for t in ticks]}


def _thin(idx: np.ndarray, max_points: int) -> np.ndarray:
    """At most `max_points` of `idx`, evenly spread, always keeping the first and the last."""
    if len(idx) <= max_points:
        return idx
    return idx[np.unique(np.linspace(0, len(idx) - 1, max_points).round().astype(int))]


# ---------------------------------------------------------------- heatmaps

def layer_grid(grads: pd.DataFrame, kind: str, layer_order: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Values of `kind` as a (layers, steps) array in `layer_order` (NaN where nothing was logged)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not allowed: one of {', '.join(KINDS)}")
    mask = (grads["kind"] == kind).to_numpy()
    rows = _codes(grads["layer"], list(layer_order))[mask]  # -1: a layer not in the order
    step = grads["step"].to_numpy()[mask]
    steps = np.unique(step)
    grid = np.full((len(layer_order), len(steps)), np.nan)  # (L, S)
    known = rows >= 0
    grid[rows[known], np.searchsorted(steps, step[known])] = grads["value"].to_numpy(float)[mask][known]
    return grid, steps


def _codes(layers: pd.Series, order: list[str]) -> np.ndarray:
    """Position of each layer name in `order`, -1 if absent; fast for arrow, object and categorical."""
    if isinstance(layers.dtype, pd.CategoricalDtype):
        where = pd.Index(order).get_indexer(layers.cat.categories)  # per category
        codes = layers.cat.codes.to_numpy()
        return np.where(codes >= 0, where[codes], -1)
    try:  # arrow's index_in is ~6x faster than pandas' hashing of 200k strings
        names = pa.array(layers, type=pa.string())  # no copy for pandas' arrow-backed strings
        return pc.index_in(names, value_set=pa.array(order, pa.string())).fill_null(-1).to_numpy()
    except (pa.ArrowException, TypeError):
        return pd.Index(order).get_indexer(layers)


def bin_steps(logv: np.ndarray, zero: np.ndarray, steps: np.ndarray,
              max_columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """At most `max_columns` columns: the mean of log10 (a geometric mean) over k consecutive steps.

    The mean of the logs keeps every logged step's say, so a spike or a slow drift survives, where
    taking one step a bin would alias. Bins start at the first step, so old columns do not move as a
    live run grows, and each column is placed at its bin's last step: the last column is the latest
    step. A bin is 0 only if all its values are 0; otherwise its zeros are left out of the mean.
    Returns (z (L, B), zero (L, B), x (B,), k).
    """
    n = len(steps)
    k = max(1, math.ceil(n / max(1, max_columns)))
    if k == 1:
        return logv, zero, steps, 1
    nb = math.ceil(n / k)
    pad = nb * k - n
    lv = np.pad(logv, ((0, 0), (0, pad)), constant_values=np.nan).reshape(len(logv), nb, k)  # (L, B, k)
    zb = np.pad(zero, ((0, 0), (0, pad))).reshape(len(zero), nb, k)
    count = np.isfinite(lv).sum(-1)  # (L, B)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(count > 0, np.nansum(lv, -1) / count, np.nan)
    x = steps[np.minimum(np.arange(1, nb + 1) * k, n) - 1]
    return z, zb.any(-1) & (count == 0), x, k


def heatmap_figure(grads: pd.DataFrame, kind: str, layer_order: Sequence[str], max_columns: int = 300,
                   zrange: tuple[float, float] | None = None, cursor_step: int | None = None,
                   run_steps: int | None = None) -> go.Figure:
    """Layers (input at the bottom) by steps, coloured by log10 of `kind`; exact zeros in grey.

    `zrange` is (low, high) in real units, e.g. (1e-8, 1e-1): give several heatmaps the same one to
    compare them by colour. `run_steps`, the run's length, puts the x axis in fractions of the run
    (0 to 100%), so runs of different lengths line up; else the axis is the run's own steps.
    """
    grid, steps = layer_grid(grads, kind, layer_order)
    with np.errstate(divide="ignore", invalid="ignore"):
        logv = np.where(grid > 0, np.log10(grid), np.nan)
    return _heatmap(logv, grid == 0, steps, list(layer_order), max_columns, zrange, cursor_step,
                    KIND_LABELS[kind], HEATMAP_SCALE, "exactly 0", ratio=False, run_steps=run_steps)


def log_ratio_heatmap(a: pd.DataFrame, b: pd.DataFrame, kind: str, layer_order: Sequence[str],
                      max_columns: int = 300, zrange: tuple[float, float] | None = None,
                      cursor_step: int | None = None, names: tuple[str, str] = ("a", "b")) -> go.Figure:
    """log10(a / b) per layer and step, for the layers and steps both runs logged; white is equal.

    `zrange` is (low, high) as ratios, e.g. (1e-3, 1e3); by default symmetric about 1.
    """
    ga, sa = layer_grid(a, kind, layer_order)
    gb, sb = layer_grid(b, kind, layer_order)
    common, ia, ib = np.intersect1d(sa, sb, return_indices=True)
    ga, gb = ga[:, ia], gb[:, ib]  # (L, S) on the shared steps
    with np.errstate(divide="ignore", invalid="ignore"):
        logv = np.where((ga > 0) & (gb > 0), np.log10(ga) - np.log10(gb), np.nan)
    one_zero = ((ga == 0) & (gb >= 0)) | ((gb == 0) & (ga >= 0))  # ratio 0, infinite or 0/0: grey
    label = f"{KIND_LABELS[kind]} {names[0]} / {names[1]}"
    return _heatmap(logv, one_zero, common, list(layer_order), max_columns, zrange, cursor_step,
                    label, RATIO_SCALE, "0 in a run: no ratio", ratio=True)


def shared_zrange(*frames: pd.DataFrame, kind: str) -> tuple[float, float] | None:
    """The (smallest, largest) positive value of `kind` over all frames: one colour scale for all."""
    vals = [f.loc[f["kind"] == kind, "value"].to_numpy(float) for f in frames if not f.empty]
    pos = np.concatenate(vals + [np.empty(0)])
    pos = pos[np.isfinite(pos) & (pos > 0)]
    return (float(pos.min()), float(pos.max())) if len(pos) else None


def _heatmap(logv, zero, steps, names, max_columns, zrange, cursor_step, label, scale, zero_text, ratio,
             run_steps=None):
    fig = go.Figure()
    has = np.isfinite(logv).any(1) | zero.any(1)  # layers with no record of this kind are left out
    logv, zero, names = logv[has], zero[has], [n for n, h in zip(names, has, strict=True) if h]
    if not names or len(steps) == 0:
        return _empty(fig, "no gradient records yet")
    z, zb, x, k = bin_steps(logv, zero, steps, max_columns)
    # The axis spans this run's steps and no more: a cursor past its end (a longer run's step) is left
    # out rather than stretching the axis, which made a 100-step run a sliver of a 300-step one.
    x_range = [float(x[0]) - 0.5, float(x[-1]) + 0.5] if len(x) else None
    if cursor_step is not None and x_range and not x_range[0] <= cursor_step <= x_range[1]:
        cursor_step = None
    step_hover = "step %{x}"
    if run_steps:  # by fraction of the run
        x = np.asarray(x, dtype=float) / run_steps
        x_range = [0.0, 1.0]
        cursor_step = None if cursor_step is None else cursor_step / run_steps
        step_hover = "%{x:.0%} of the run"
    z = z.astype(np.float32)  # half the bytes sent to the browser each refresh; colours need no more
    lo, hi = _zlimits(z, zrange, ratio)
    over = f"<br>(geometric mean of {k} steps ending here)" if k > 1 else ""
    fig.add_trace(go.Heatmap(
        z=z, x=x, y=names, zmin=lo, zmax=hi, colorscale=scale, hoverongaps=False,
        customdata=np.power(np.float32(10), z)[..., None],  # (L, B, 1): plotly >= 6 wants heatmap customdata 3-D
        hovertemplate=f"%{{y}}<br>{step_hover}<br>{label} %{{customdata[0]:.3~e}}{over}<extra></extra>",
        colorbar={"title": {"text": label}, **_decade_ticks(lo, hi)}))
    if zb.any():
        # All rows, not just those with zeros: plotly.js 3 fails ("reading 'length'") on a second
        # heatmap holding a subset of a category axis.
        fig.add_trace(go.Heatmap(
            z=np.where(zb, np.float32(1), np.float32(np.nan)), x=x, y=names,
            colorscale=[[0, ZERO_COLOUR], [1, ZERO_COLOUR]], showscale=False, hoverongaps=False,
            hovertemplate=f"%{{y}}<br>{step_hover}<br>{zero_text}<extra></extra>"))
        fig.add_annotation(text=f"grey: {zero_text}", xref="paper", yref="paper", x=0, y=1.01,
                           xanchor="left", yanchor="bottom", showarrow=False, font={"size": 11})
    shapes = []
    if cursor_step is not None:  # black under white: visible on every colour of both scales
        for colour, width in (("black", 4), ("white", 1.5)):
            shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": cursor_step,
                           "x1": cursor_step, "y0": 0, "y1": 1, "line": {"color": colour, "width": width}})
    xaxis = {"title": {"text": "fraction of the run" if run_steps else "step"}, "range": x_range}
    if run_steps:
        xaxis["tickformat"] = ".0%"
    fig.update_layout(
        xaxis=xaxis,
        yaxis={"title": {"text": "layer (input at the bottom)"}, "type": "category",
               "tickvals": _layer_ticks(names), "ticktext": _layer_ticks(names), "automargin": True},
        shapes=shapes, height=min(900, 240 + 8 * len(names)), margin={"l": 20, "r": 20, "t": 30, "b": 40},
        uirevision=label, template=TEMPLATE)
    return fig


def _zlimits(z: np.ndarray, zrange, ratio: bool) -> tuple[float, float]:
    if zrange is not None:
        lo, hi = (float(v) for v in zrange)
        if not 0 < lo < hi:
            raise ValueError(f"zrange={zrange!r} is not allowed: (low, high) with 0 < low < high")
        return math.log10(lo), math.log10(hi)
    finite = z[np.isfinite(z)]
    if not len(finite):
        return (-1.0, 1.0) if ratio else (0.0, 1.0)
    if ratio:  # centred on equal (log ratio 0), so white always means "the same"
        m = max(float(np.abs(finite).max()), 0.1)
        return -m, m
    lo, hi = float(finite.min()), float(finite.max())
    return (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo, hi)


def _decade_ticks(lo: float, hi: float) -> dict:
    """Colour-bar ticks at powers of ten (at most ~8), labelled with real values: 1e-3, 1, 10."""
    decades = list(range(math.ceil(lo), math.floor(hi) + 1))
    if len(decades) < 2:
        vals = [lo, hi]
        return {"tickvals": vals, "ticktext": [f"{10 ** v:.2g}" for v in vals]}
    decades = decades[:: math.ceil(len(decades) / 8)]
    return {"tickvals": decades, "ticktext": ["1" if e == 0 else "10" if e == 1 else f"1e{e}" for e in decades]}


def _layer_ticks(names: list[str]) -> list[str]:
    """Every layer when few; else the first layer of each stage plus evenly spaced ones."""
    if len(names) <= MAX_TICKS:
        return names
    starts = [i for i, n in enumerate(names) if i == 0 or n.split(".")[0] != names[i - 1].split(".")[0]]
    gap = math.ceil(len(names) / MAX_TICKS)  # rows between labels, so that they never overlap
    ticks: list[int] = []
    for i in starts + np.linspace(0, len(names) - 1, MAX_TICKS).round().astype(int).tolist():
        if all(abs(i - t) >= gap for t in ticks):  # stage starts first, then evenly spaced rows
            ticks.append(i)
    return [names[i] for i in sorted(ticks)]


def _empty(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
    fig.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, height=240, template=TEMPLATE)
    return fig
