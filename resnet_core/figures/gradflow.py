"""The gradient-flow chart: gradient norm at each block (or layer), residual and plain on one log axis.

The x axis is the position in the network, input on the left, loss on the
right, so the gradient travels right to left. Stages are shaded bands. A norm
of exactly 0 cannot sit on a log axis: it is drawn as an open marker on a
dotted floor line labelled "0", never dropped. Also here: the words the page
uses for a ratio, so the page and its tests say the same thing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from ..probe import GradFlow

KINDS = ("activation", "weight")
# Okabe-Ito colours (safe for every common colour-vision deficiency); residual blue, plain vermillion.
RESIDUAL_STYLE = ("#0072B2", "circle", "solid")
PLAIN_STYLE = ("#D55E00", "square", "dash")
MORE_STYLES = (("#009E73", "diamond", "dot"), ("#CC79A7", "triangle-up", "dashdot"),
               ("#E69F00", "cross", "longdash"), ("#56B4E9", "x", "solid"))
BAND_FILL = ("rgba(0,0,0,0.035)", "rgba(0,0,0,0)")
_STAGE = re.compile(r"^layer(\d+)\.")
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


# ---------------------------------------------------------------- numbers in words


def fmt_norm(v: float) -> str:
    """A norm or ratio for people, two significant figures: 0.47, 18, 9,600, 2.3×10⁻²¹, 0."""
    if v != v:
        return "n/a"
    if v == 0:
        return "0"
    if math.isinf(v):
        return "∞"
    rounded = float(f"{v:.2g}")
    if 0.01 <= abs(rounded) < 100:
        return f"{rounded:g}"
    if 100 <= abs(rounded) < 1e5:
        return f"{rounded:,.0f}"
    mant, exp = f"{v:.1e}".split("e")
    return f"{mant.removesuffix('.0')}×10{str(int(exp)).translate(_SUPERSCRIPT)}"


def zero_label(g: GradFlow, kind: str = "activation") -> str:
    """Why a norm is exactly 0 for this net: underflow, or a layer initialised to zero."""
    if g.config.zero_init_residual and (kind == "weight" or not g.config.skip):
        return "0 (exactly: behind a zero-initialised layer)"
    return "0 (underflow)"


def _amount(r: float, zero: str, end: bool) -> str:
    """How much, as a multiplier: '0.49×', '9,600×', '2.3×10⁻²¹ times', '0 (underflow)'."""
    if r == 0:
        return zero if end else f"{zero} of"
    text = fmt_norm(r)
    if "10" in text and "×" in text:  # scientific notation reads badly with a trailing ×
        return f"{text} times" + (" as much" if end else "")
    return f"{text}×"


def times(r: float) -> str:
    """A multiplier for 'gets {times} what the last block gets': '0.49×', '9,600×', '4.9×10⁷ times'."""
    text = fmt_norm(r)
    return f"{text} times" if "10" in text and "×" in text else f"{text}×"


def net_name(g: GradFlow) -> str:
    return f"{g.config.depth}-layer {'residual' if g.config.skip else 'plain'} net"


def _pick(results: Mapping[str, GradFlow]) -> tuple[GradFlow | None, GradFlow | None]:
    """(residual, plain): the first net with skips and the first without, if shown."""
    res = next((g for g in results.values() if g.config.skip), None)
    plain = next((g for g in results.values() if not g.config.skip), None)
    return res, plain


def ratio_sentence(results: Mapping[str, GradFlow], kind: str = "activation") -> str:
    """The first/last ratio of each net in words, plain net first, as the page states it."""
    res, plain = _pick(results)
    nets = [g for g in (plain, res) if g is not None]
    if not nets:
        return ""
    if kind == "activation":
        def ratio(g: GradFlow) -> float:
            return g.ratio
        subject, obj, again = "the first block receives", " the gradient the last block receives", "it receives"
        both, last_only = ("both the first and the last block receive {z}",
                           "the last block receives {z} while the first block does not")
    else:
        def ratio(g: GradFlow) -> float:
            return g.weight_ratio
        subject, obj, again = "the first conv layer's weight gradient is", " that of the last conv layer", "it is"
        both, last_only = ("the weight gradients of both the first and the last conv layer are {z}",
                           "the last conv layer's weight gradient is {z} while the first one's is not")

    def defined(g: GradFlow) -> bool:
        r = ratio(g)
        return r == r and not math.isinf(r)

    def clause(g: GradFlow, short: bool) -> str:
        r = ratio(g)
        z = zero_label(g, kind)
        if not defined(g):  # the last is 0: say so rather than print a ratio that does not exist
            return (both if r != r else last_only).format(z=z)
        amount = _amount(r, z, short)
        return f"{again} {amount}" if short else f"{subject} {amount}{obj}"

    first = nets[0]
    text = f"In the {net_name(first)} " + clause(first, short=False)
    if len(nets) == 2:
        text += "; with skip connections " + clause(res, short=defined(first) and defined(res))
    return text + "."


def _convs_between(g: GradFlow) -> int:
    """Conv layers on the main path from the first block's output to the last block's."""
    return (len(g.blocks) - 1) * g.config.convs_per_block


def _per_layer(g: GradFlow) -> float | None:
    """Geometric mean change of |dL/dh| per conv layer between the last block and the first."""
    convs = _convs_between(g)
    r = g.ratio
    return r ** (1 / convs) if convs and 0 < r < math.inf else None


def explanation(results: Mapping[str, GradFlow], kind: str = "activation") -> list[str]:
    """Markdown paragraphs saying what the chart shows for these nets, from their measured ratios.

    Each paragraph states a measured number and is only given when the measurement shows
    what it says: the claims follow DESIGN.md's table and are checked in test_gradflow.py.
    """
    res, plain = _pick(results)
    g = res or plain
    if g is None:
        return []
    cfg = g.config
    act = {"relu": "ReLU", "leaky_relu": "leaky ReLU", "gelu": "GELU", "tanh": "tanh",
           "sigmoid": "sigmoid"}[cfg.activation]
    rr = res.ratio if res else math.nan
    rp = plain.ratio if plain else math.nan
    what = ("the size of the gradient of the loss with respect to a block's output, ‖dL/dh‖" if kind == "activation"
            else "the size of the gradient of the loss with respect to a layer's weights, ‖dL/dW‖")
    out = [f"Each point is {what}, measured on one batch of {g.batch_size} random "
           f"{cfg.in_channels}×{cfg.image_size}×{cfg.image_size} images straight after initialisation: "
           "one forward pass, the cross-entropy loss, one backward pass. The loss is on the right, so the "
           "gradient starts there and travels leftwards to the input. A flat line means every block gets a "
           "learning signal of the same size; a line falling to the left means the early blocks barely learn; "
           "one rising to the left means the early blocks get the largest gradients."]

    all_zero = plain is not None and rp != rp and plain.blocks[0][1] == 0  # even the last block gets 0
    if plain and not cfg.batchnorm and not cfg.zero_init_residual and (rp < 0.01 or all_zero):
        per = _per_layer(plain)
        how = (f"to about {per:.2f} of its size at each conv layer on average here, " if per else "")
        tail = (f"the first block gets {fmt_norm(rp)} of what the last block gets, far too little to "
                "learn from." if rp > 0 else
                "in the first blocks it falls below the smallest number float32 can hold and reads "
                "0 (underflow).")
        if all_zero:
            out.append("**Without BatchNorm nothing gets back through the plain net.** Here every block's "
                       "gradient, even the last block's, is below the smallest number float32 can hold and "
                       "reads 0 (underflow).")
        else:
            out.append(f"**Without BatchNorm the plain net's gradient vanishes.** On its way back it "
                       f"shrinks layer after layer ({how}compounding over the {_convs_between(plain)} conv "
                       "layers between the last block and the first): " + tail)
        if res and 0.1 <= rr <= 10:
            out.append("**Skip connections carry it back.** Each residual block adds its input back to its "
                       "output, and the gradient of that identity path is exactly 1, so the gradient reaches "
                       f"the first block undiminished in order of magnitude: it gets {times(rr)} what the "
                       "last block gets.")

    if cfg.batchnorm and plain and rp > 2:
        word = "explodes" if rp > 100 else "grows"
        text = (f"**With BatchNorm the plain net's gradient {word} towards the input instead of vanishing:** "
                f"its first block gets {times(rp)} what its last block gets. Yet He et al. (2016) "
                "found that plain nets with BatchNorm still train worse the deeper they are, although their "
                "gradients were healthy: the *degradation problem*, which residual learning was made to solve.")
        if res and rr <= 100:
            text += f" Skip connections keep the growth mild: {times(rr)}."
        elif res:
            text += f" Here even the residual net's gradient grows {times(rr)}."
        out.append(text)
    elif cfg.batchnorm and res and not plain and 1 < rr <= 100:
        out.append(f"With BatchNorm the residual net's gradient grows mildly towards the input "
                   f"({times(rr)}). Show the plain twin to compare.")

    if res and cfg.style == "post" and cfg.activation not in ("relu", "leaky_relu") and rr < 0.1:
        slope = "; sigmoid's slope is at most 0.25" if cfg.activation == "sigmoid" else ""
        out.append(f"**The skip path is not clean here.** In post-activation blocks {act} comes after the "
                   f"addition, so the gradient returning along the identity path is multiplied by {act}'s "
                   f"slope at every block{slope}. Even the residual net's first block gets only "
                   f"{fmt_norm(rr) if rr > 0 else zero_label(res)} of what its last block gets. "
                   "In pre-activation blocks (He et al. 2016b) the addition comes last and nothing sits on "
                   "the identity path: switch *Block style* to see the difference.")
    elif res and cfg.batchnorm and cfg.style == "post" and cfg.activation not in ("relu", "leaky_relu") \
            and rr > 100:
        out.append(f"With {act} after each addition (post-activation blocks) the skip path is not clean: "
                   "switch *Block style* to pre-activation to see the difference.")

    if res and cfg.style == "pre" and cfg.activation in ("sigmoid", "tanh", "gelu") \
            and not cfg.zero_init_residual and 0.1 <= rr <= 10:
        vs = (f", while the plain net's gets {times(rp) if rp > 0 else zero_label(plain)}"
              if plain and rp == rp else "")
        out.append(f"**Pre-activation blocks keep the skip path clean** (He et al. 2016b, *Identity Mappings*): "
                   f"{act} sits inside each branch and nothing sits on the identity path, so even with {act} "
                   f"the residual net's first block gets {times(rr)} what the last block gets{vs}.")

    if res and cfg.init == "kaiming" and not cfg.batchnorm and not cfg.zero_init_residual and rr > 10:
        out.append("**Kaiming initialisation without BatchNorm lets the residual sums grow.** Kaiming init is "
                   "made to keep each layer's output about as large as its input, so every branch adds a "
                   "signal as large as the one it received; the sums grow block after block and the gradient "
                   f"coming back grows with them: the first block gets {times(rr)} what the last "
                   "block gets. BatchNorm, or *zero-init residual* (the last layer of each branch starts at "
                   "zero), keeps this in check.")

    if cfg.zero_init_residual:
        if res and 0.1 <= rr <= 10:
            out.append("**Zero-init residual:** the last layer of each branch starts at zero, so every "
                       "residual block starts out passing its input straight through (zero-padded where a "
                       "stage widens), and the gradient reaches the first block at "
                       f"{times(rr)} what the last block gets.")
        if plain and plain.blocks[0][1] == 0:
            out.append("In the plain net the same zeroing cuts the only path: no gradient at all reaches the "
                       "earlier blocks (exact zeros, not underflow). Zero-init only makes sense with skip "
                       "connections.")

    if kind == "weight":
        # The paragraphs above quote the block outputs' ratios: say so, and give the weights' own.
        if len(out) > 1:
            out.insert(1, "*The paragraphs below quote the gradient at the block outputs, ‖dL/dh‖ (the other "
                          "view), not the weights' gradients drawn above.*")
        mine = "; ".join(f"in the {net_name(n)} {times(n.weight_ratio)}" for n in (plain, res)
                         if n is not None and n.weight_ratio == n.weight_ratio and not math.isinf(n.weight_ratio))
        out.append("A layer's weight gradient is the gradient at its output times the signal at its input, so "
                   "where the forward signal grows or shrinks along the net, the weight gradients can tell a "
                   "different story from the gradients at the block outputs"
                   + (f". Here the first conv layer's weight gradient is, of the last conv layer's: {mine}"
                      if mine else "")
                   + ". BatchNorm's scale parameters are left out of this view.")
    return out


# ---------------------------------------------------------------- the chart


def series(g: GradFlow, kind: str) -> tuple[list[str], list[float]]:
    """(names, norms) drawn for `kind`: block outputs, or conv and fc weights in network order.

    BatchNorm scale gradients are left out of the weight view: they are on another scale and
    would zigzag the line (they are in GradFlow.layers and the CLI's output).
    """
    if kind == "activation":
        return [n for n, _ in g.blocks], [v for _, v in g.blocks]
    if kind == "weight":
        pairs = [p for p, k in zip(g.layers, g.layer_kinds, strict=True) if k != "bn"]
        return [n for n, _ in pairs], [v for _, v in pairs]
    raise ValueError(f"kind={kind!r} is not allowed: one of {', '.join(KINDS)}")


def _merged_order(lists: Sequence[Sequence[str]]) -> list[str]:
    """One x order for all nets: a plain twin lacks projection shortcuts, so insert the extras
    where they occur and the shared layers line up."""
    order: list[str] = []
    for names in lists:
        prev = -1
        for n in names:
            if n in order:
                prev = order.index(n)
            else:
                prev += 1
                order.insert(prev, n)
    return order


def _stage(name: str) -> str:
    m = _STAGE.match(name)
    if m:
        return f"stage {m.group(1)}"
    return "head" if name in ("fc", "final_norm") else "stem"


def _styles(results: Mapping[str, GradFlow]) -> list[tuple[str, str, str]]:
    spare = iter(MORE_STYLES)
    used: set[tuple[str, str, str]] = set()
    out = []
    for g in results.values():
        style = RESIDUAL_STYLE if g.config.skip else PLAIN_STYLE
        if style in used:
            style = next(spare, style)
        used.add(style)
        out.append(style)
    return out


def gradflow_figure(results: Mapping[str, GradFlow], kind: str = "activation") -> go.Figure:
    """Per-block ‖dL/dh‖ (kind="activation") or per-layer ‖dL/dW‖ (kind="weight"), one trace per net."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not allowed: one of {', '.join(KINDS)}")
    fig = go.Figure()
    data = {label: series(g, kind) for label, g in results.items()}
    order = _merged_order([names for names, _ in data.values()])
    pos = {n: i + 1 for i, n in enumerate(order)}
    values = [v for _, vs in data.values() for v in vs if v == v and not math.isinf(v)]
    positive = [v for v in values if v > 0]
    lo, hi = (min(positive), max(positive)) if positive else (1e-30, 1.0)
    floor = lo / 30  # the zeros' line: a decade and a half under the smallest real value
    what = "‖dL/dh‖ at the block's output" if kind == "activation" else "‖dL/dW‖ of the layer's weights"
    zero_notes: set[str] = set()

    for (label, g), (color, symbol, dash), (names, norms) in zip(
            results.items(), _styles(results), data.values(), strict=True):
        xs = [pos[n] for n in names]
        shown = [v if v > 0 and not math.isinf(v) else None for v in norms]  # None breaks the line
        fig.add_trace(go.Scatter(
            x=xs, y=shown, name=label, legendgroup=label, mode="lines+markers",
            line={"color": color, "width": 2.5, "dash": dash},
            marker={"color": color, "symbol": symbol, "size": 7 if len(xs) <= 30 else 5},
            customdata=[[n, fmt_norm(v)] for n, v in zip(names, norms, strict=True)],
            hovertemplate=f"<b>{label}</b><br>%{{customdata[0]}}<br>{what}: %{{customdata[1]}}<extra></extra>",
        ))
        zeros = [(x, n) for x, n, v in zip(xs, names, norms, strict=True) if v == 0]
        if zeros:
            note = zero_label(g, kind)
            zero_notes.add(note)
            fig.add_trace(go.Scatter(
                x=[x for x, _ in zeros], y=[floor] * len(zeros), name=f"{label}: {note}",
                legendgroup=label, mode="markers",
                marker={"color": color, "symbol": symbol + "-open", "size": 9, "line": {"width": 2}},
                customdata=[[n] for _, n in zeros],
                hovertemplate=f"<b>{label}</b><br>%{{customdata[0]}}<br>{what}: {note}<extra></extra>",
            ))

    _stage_bands(fig, order, pos)
    if zero_notes:
        fig.add_hline(y=floor, line={"color": "#555", "width": 1, "dash": "dot"})
        fig.add_annotation(x=0, xref="paper", y=math.log10(floor), yref="y", xanchor="left",
                           yanchor="bottom", showarrow=False, font={"size": 12, "color": "#333"},
                           text=" and ".join(sorted(zero_notes)) + " drawn on this line")
    ticks = _ticks(order)
    y0, y1 = math.log10(floor) - 0.5, math.log10(hi) + 0.5
    unit = "block" if kind == "activation" else "layer (conv and fc)"
    fig.update_layout(
        height=520, margin={"l": 70, "r": 20, "t": 60, "b": 110}, hovermode="closest",
        title={"text": ("Gradient at each block's output" if kind == "activation"
                        else "Weight gradient of each layer") + " at initialisation (one batch)",
                "x": 0, "xanchor": "left"},
        # below the axis title: above the plot it would cover the stage labels
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "xanchor": "left", "x": 0},
        xaxis={"title": {"text": f"{unit}: input ← position in the network → loss"},
               "tickvals": [pos[n] for n in ticks], "ticktext": ticks, "tickangle": 0,
               "range": [0.5, len(order) + 0.5], "showgrid": False, "zeroline": False},
        yaxis={"title": {"text": what + " (log scale)"}, "type": "log", "exponentformat": "power",
               "range": [y0, y1], "dtick": max(1, math.ceil((y1 - y0) / 8))},  # whole decades only
        plot_bgcolor="white",
    )
    fig.update_yaxes(showgrid=True, gridcolor="#e5e5e5", showline=True, linecolor="#999")
    fig.update_xaxes(showline=True, linecolor="#999")
    if not order:
        fig.add_annotation(text="nothing to show: pick at least one net", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def _ticks(order: list[str]) -> list[str]:
    """All names when few; otherwise the first, the first of each stage and the last, spaced so
    that labels never overlap (the stem conv and layer1.0.conv1 are neighbours)."""
    if len(order) <= 12:
        return order
    gap = max(2, len(order) // 10)
    candidates = [n for i, n in enumerate(order) if i == 0 or _stage(n) != _stage(order[i - 1])]
    keep: list[int] = []
    for i in (order.index(n) for n in candidates):
        if not keep or i - keep[-1] >= gap:
            keep.append(i)
    last = len(order) - 1
    if keep[-1] != last:
        if last - keep[-1] < gap and len(keep) > 1:
            keep.pop()
        keep.append(last)
    return [order[i] for i in keep]


def _stage_bands(fig: go.Figure, order: list[str], pos: dict[str, int]) -> None:
    start = 0
    bands = []
    for i in range(1, len(order) + 1):
        if i == len(order) or _stage(order[i]) != _stage(order[start]):
            bands.append((_stage(order[start]), pos[order[start]], pos[order[i - 1]]))
            start = i
    for j, (name, a, b) in enumerate(bands):
        fig.add_vrect(x0=a - 0.5, x1=b + 0.5, fillcolor=BAND_FILL[j % 2], line_width=0, layer="below")
        if name.startswith("stage"):
            fig.add_annotation(x=(a + b) / 2, y=1.0, xref="x", yref="paper", yanchor="bottom",
                               text=name, showarrow=False, font={"size": 12, "color": "#555"})
