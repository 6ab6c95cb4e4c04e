"""The architecture diagram: stem → stages of blocks, each with its own skip path → pool/fc.

Blocks flow left to right and wrap into rows, so a 54-block net stays as
readable as an 8-block one. Each skip connection is its own arc from a block's
input over the block into the ⊕ where it is added back; the arc's style says
what the shortcut is (identity, zero-pad, or a 1x1 projection conv labelled
with its stride). The whole figure is a dozen traces however deep the net.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go

from ..anatomy import Anatomy, describe
from ..config import ModelConfig, display_name, preset_name

ROW_PX = 150  # height of one row of blocks; y is measured in rows
MAX_PER_ROW = 12
ARC_H = 0.3  # skip arcs rise this far (in rows) above the main path
# Okabe-Ito colours: distinguishable with every common colour-vision deficiency.
SKIP_STYLE = {
    "identity": ("#0072B2", "solid", "identity skip"),
    "pad": ("#E69F00", "dash", "zero-pad skip (option A)"),
    "proj": ("#D55E00", "solid", "1x1 conv projection"),
}
BAND_FILL = ("rgba(0,114,178,0.06)", "rgba(230,159,0,0.08)")


def _shape(s: tuple[int, ...]) -> str:
    return "×".join(map(str, s))


def _title(cfg: ModelConfig, anatomy: Anatomy) -> str:
    name = preset_name(cfg)
    label = display_name(name) if name else f"custom {'residual' if cfg.skip else 'plain'} net"
    return f"{label}: {anatomy.layer_count_expression} layers, input {_shape(anatomy.input_shape)}"


def _skip_kind(shortcut: str) -> str | None:
    if shortcut.startswith("none"):
        return None
    if shortcut.startswith("1x1"):
        return "proj"
    return "identity" if shortcut == "identity" else "pad"


def _proj_label(shortcut: str) -> str:
    """ "1x1 conv /2 + BN" -> "1x1 conv, /2": the conv and its stride, as drawn."""
    stride = next((p for p in shortcut.split() if p.startswith("/")), None)
    return "1x1 conv" + (f", {stride}" if stride else "")


def _log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    step = max(1, math.ceil((hi - lo) / 8))
    ticks = list(range(math.floor(lo), math.ceil(hi) + 1, step))
    return [float(t) for t in ticks], [f"1e{t}" for t in ticks]


def architecture_figure(
    cfg: ModelConfig,
    anatomy: Anatomy | None = None,
    block_values: Mapping[str, float] | None = None,
    title: str | None = None,
    *,
    value_label: str = "|gradient|",
    max_per_row: int | None = None,
) -> go.Figure:
    """The diagram of `cfg`'s net; `block_values` ("layer2.3" -> magnitude) colours blocks on a log scale."""
    anatomy = anatomy or describe(cfg)
    blocks = anatomy.level("block")
    stages = anatomy.level("stage")
    n = len(blocks)
    rows = math.ceil(n / (max_per_row or MAX_PER_ROW))
    per_row = math.ceil(n / rows)  # balanced rows: 50 blocks -> 5 rows of 10, not 4 of 12 and a 2
    label_every_block = per_row <= 8

    # Positions: the stem sits at x=0 of row 0, block k at (k % per_row + 1, -(k // per_row)).
    bx = np.array([k % per_row + 1.0 for k in range(n)])
    by = np.array([-float(k // per_row) for k in range(n)])
    head_x, head_y = bx[-1] + 1.0, by[-1]

    # Main path: along each row, then down and back to the start of the next (like wrapped text).
    mx: list[float | None] = [-0.6]
    my: list[float | None] = [0.0]
    for r in range(rows):
        y = -float(r)
        in_row = bx[by == y]
        end = head_x + 0.5 if r == rows - 1 else in_row[-1] + 0.5
        mx += [end] if r == 0 else [0.5, end]
        my += [y] if r == 0 else [y, y]
        if r < rows - 1:
            mx += [end, end, 0.5]
            my += [y - 0.5, y - 0.5, y - 0.5]

    # Skip paths: one half-ellipse per block, from its input point over it into its ⊕.
    t = np.linspace(math.pi, 0.0, 17)
    arcs: dict[str, tuple[list, list]] = {k: ([], []) for k in SKIP_STYLE}
    node_x, node_y, node_text = [], [], []
    pad_x, pad_y = [], []
    for k, b in enumerate(blocks):
        kind = _skip_kind(b["shortcut"])
        if kind is None:
            continue
        xs, ys = arcs[kind]
        xs += [*(bx[k] + 0.46 * np.cos(t) + 0.04), None]  # starts just past the previous ⊕
        ys += [*(by[k] + ARC_H * np.sin(t)), None]
        if kind == "proj":
            node_x.append(bx[k] + 0.04)
            node_y.append(by[k] + ARC_H)
            node_text.append(_proj_label(b["shortcut"]))
        elif kind == "pad":
            pad_x.append(bx[k] + 0.04)
            pad_y.append(by[k] + ARC_H)

    fig = go.Figure()
    line = dict(color="#555", width=2)
    fig.add_trace(go.Scatter(x=mx, y=my, mode="lines", line=line, hoverinfo="skip", showlegend=False,
                             name="main path"))
    for kind, (xs, ys) in arcs.items():
        color, dash, label = SKIP_STYLE[kind]
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines", line=dict(color=color, width=2, dash=dash), name=label,
            hoverinfo="skip", showlegend=bool(xs), meta={"skip_kind": kind, "paths": xs.count(None)},
        ))
    if node_x:
        fig.add_trace(go.Scatter(
            x=node_x, y=node_y, mode="markers+text", text=node_text, textposition="top center",
            textfont=dict(size=10, color=SKIP_STYLE["proj"][0]), hoverinfo="skip", showlegend=False,
            marker=dict(symbol="square", size=9, color="white", line=dict(color=SKIP_STYLE["proj"][0], width=2)),
            name="projection convs",
        ))
    if pad_x:
        fig.add_trace(go.Scatter(
            x=pad_x, y=pad_y, mode="text", text=["zero-pad"] * len(pad_x), textposition="top center",
            textfont=dict(size=10, color="#9a6a00"), hoverinfo="skip", showlegend=False, name="zero-pad labels",
        ))
    if cfg.skip:
        fig.add_trace(go.Scatter(
            x=bx + 0.5, y=by, mode="markers", hoverinfo="skip", showlegend=False, name="additions",
            marker=dict(symbol="circle-cross-open", size=13, color="#222", line=dict(width=1.5)),
        ))

    _add_blocks(fig, blocks, bx, by, block_values, value_label)
    stem, head = stages[0], stages[-1]
    fig.add_trace(go.Scatter(
        x=[0.0, head_x], y=[0.0, head_y], mode="markers", showlegend=False, name="stem and head",
        marker=dict(symbol="square", size=24, color="#bbb", line=dict(color="#333", width=1.5)),
        hovertemplate="%{customdata}<extra></extra>",
        customdata=[f"<b>stem</b>: {', '.join(r['kind'] for r in _children(anatomy, ''))}<br>"
                    f"{_shape(stem['input_shape'])} → {_shape(stem['output_shape'])}<br>"
                    f"params {stem['params']:,} · {stem['flops'] / 1e6:,.1f} MFLOPs",
                    f"<b>head</b>: global avg pool, Linear<br>"
                    f"{_shape(head['input_shape'])} → {_shape(head['output_shape'])}<br>"
                    f"params {head['params']:,} · {head['flops'] / 1e6:,.2f} MFLOPs"],
    ))

    # Labels: output shape under blocks, stage name at the bottom-left of its band.
    lx, ly, lt, lp = [0.0, head_x], [-0.2, head_y - 0.2], [], ["middle center"] * 2
    lt += [f"stem<br>{_shape(stem['output_shape'])}", f"pool+fc<br>{_shape(head['output_shape'])}"]
    shapes: list[dict[str, Any]] = []
    prev_stage = None
    for k, b in enumerate(blocks):
        stage = b["name"].split(".")[0]
        first_in_stage = stage != prev_stage
        if label_every_block or first_in_stage:
            lx.append(bx[k])
            ly.append(by[k] - 0.2)
            lt.append(_shape(b["output_shape"]))
            lp.append("middle center")
        starts_band = first_in_stage or bx[k] == 1.0
        if starts_band:
            srow = next(r for r in stages if r["name"] == stage)
            members = [j for j, o in enumerate(blocks) if o["name"].split(".")[0] == stage and by[j] == by[k]]
            x0, x1 = bx[members[0]] - 0.5, bx[members[-1]] + 0.5
            shapes.append(dict(type="rect", x0=x0, x1=x1, y0=by[k] - 0.42, y1=by[k] + 0.45, layer="below",
                               line=dict(width=0), fillcolor=BAND_FILL[int(stage[5:]) % 2]))
            lx.append(x0 + 0.04)
            ly.append(by[k] - 0.36)
            # A one-block band that another band follows on the same row has room for the name only.
            roomy = len(members) > 1 or bx[members[-1]] == bx[by == by[k]][-1]
            if not roomy:
                lt.append(f"<b>{stage}</b>")
            else:
                lt.append(f"<b>{stage}</b> · {srow['kind']}" if first_in_stage else f"<b>{stage}</b> (cont.)")
            lp.append("middle right")
        prev_stage = stage
    fig.add_trace(go.Scatter(x=lx, y=ly, mode="text", text=lt, textposition=lp, hoverinfo="skip",
                             textfont=dict(size=10, color="#333"), showlegend=False, name="labels"))

    fig.update_layout(
        title=dict(text=title if title is not None else _title(cfg, anatomy), font=dict(size=15), x=0.01),
        height=int(80 + rows * ROW_PX), margin=dict(l=10, r=10, t=60, b=10),
        shapes=shapes, plot_bgcolor="white", paper_bgcolor="white", hovermode="closest",
        legend=dict(orientation="h", x=1.0, xanchor="right", y=1.0, yanchor="bottom", font=dict(size=11)),
        meta={"blocks": n, "rows": rows, "per_row": per_row},
    )
    fig.update_xaxes(visible=False, range=[-0.8, per_row + 1.8], fixedrange=True)
    fig.update_yaxes(visible=False, range=[-(rows - 1) - 0.5, 0.55], fixedrange=True)
    return fig


def _children(anatomy: Anatomy, prefix: str) -> list[dict[str, Any]]:
    """Layer rows directly under the stem ("") or a block ("layer1.0.")."""
    if prefix:
        return [r for r in anatomy.rows if r["level"] == "layer" and r["name"].startswith(prefix)]
    out = []
    for r in anatomy.rows[1:]:
        if r["level"] != "layer":
            break
        out.append(r)
    return out


def _add_blocks(fig: go.Figure, blocks: list[dict[str, Any]], bx: np.ndarray, by: np.ndarray,
                values: Mapping[str, float] | None, value_label: str) -> None:
    """The blocks: grey, or coloured by log10 of `values` with a colour bar."""
    hover = [f"<b>{b['name']}</b> {b['kind']}<br>{_shape(b['input_shape'])} → {_shape(b['output_shape'])}<br>"
             f"params {b['params']:,} · {b['flops'] / 1e6:,.1f} MFLOPs<br>shortcut: {b['shortcut']}"
             for b in blocks]
    marker = dict(symbol="square", size=26, line=dict(color="#333", width=1.5))
    names = [b["name"] for b in blocks]
    if not values:
        fig.add_trace(go.Scatter(x=bx, y=by, mode="markers", marker={**marker, "color": "#e4e4e4"},
                                 customdata=hover, hovertemplate="%{customdata}<extra></extra>",
                                 text=names, showlegend=False, name="blocks"))
        return
    raw = np.array([float(values.get(nm, np.nan)) for nm in names])
    ok = np.isfinite(raw) & (raw > 0)  # a log scale has no place for 0 (underflow) or a missing value
    logs = np.log10(np.where(ok, raw, 1.0))
    lo, hi = (logs[ok].min(), logs[ok].max()) if ok.any() else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    tickvals, ticktext = _log_ticks(lo, hi)
    hover = [h + f"<br>{value_label}: {v:.3g}" for h, v in zip(hover, raw, strict=True)]
    idx = np.flatnonzero(ok)
    fig.add_trace(go.Scatter(
        x=bx[idx], y=by[idx], mode="markers", text=[names[i] for i in idx], showlegend=False, name="blocks",
        customdata=[hover[i] for i in idx], hovertemplate="%{customdata}<extra></extra>",
        marker={**marker, "color": logs[idx], "colorscale": "Viridis", "cmin": lo, "cmax": hi,
                "colorbar": dict(title=dict(text=value_label, side="right"), tickvals=tickvals,
                                 ticktext=ticktext, thickness=12, len=0.9)},
    ))
    bad = np.flatnonzero(~ok)
    if bad.size:
        fig.add_trace(go.Scatter(
            x=bx[bad], y=by[bad], mode="markers", text=[names[i] for i in bad], showlegend=True,
            name=f"{value_label} 0 or missing", customdata=[hover[i] for i in bad],
            hovertemplate="%{customdata}<extra></extra>",
            marker={**marker, "color": "white", "line": dict(color="#CC79A7", width=2.5)},
        ))
