"""The figures' look: plotly's "plotly_white", cut down to what these figures draw.

Plotly deep-copies a named template into every figure that uses it, and every chart sends it to
the browser on every redraw. "plotly_white" carries defaults for two dozen kinds of trace and for
maps, polar and ternary axes: 7 KB of JSON. On a 2-core Xeon VM an empty figure took 9 ms to
build and 8 ms to serialise with it, against 0.4 and 0.9 ms without, and the Train page's live view
pays that three to six times a redraw, for every student watching (bench/bench_redraw.py times a
whole redraw's figures: 55 ms with it, 41 ms with this one). TEMPLATE is the same look for
what the app draws (cartesian axes and the landscape's 3-D scene; scatter, bar, heatmap, contour and
surface traces, each of which sets its own colour scale) in a quarter of the bytes.
"""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

TEMPLATE = "resnet_white"  # pass as template=TEMPLATE
TRACES = ("scatter", "bar", "heatmap", "contour", "surface")  # the kinds of trace the app draws
_LAYOUT_OMITTED = ("polar", "ternary", "geo", "colorscale")  # never drawn; every trace sets its own colours
_TRACE_OMITTED = ("colorscale",)


def _slim(source: dict) -> dict:
    layout = {k: v for k, v in source.get("layout", {}).items() if k not in _LAYOUT_OMITTED}
    data = {kind: [{k: v for k, v in t.items() if k not in _TRACE_OMITTED} for t in traces]
            for kind, traces in source.get("data", {}).items() if kind in TRACES}
    return {"layout": layout, "data": data}


def register() -> None:
    """Make TEMPLATE a named template (idempotent; done on import)."""
    if TEMPLATE not in pio.templates:
        pio.templates[TEMPLATE] = go.layout.Template(_slim(pio.templates["plotly_white"].to_plotly_json()))


register()
