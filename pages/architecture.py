"""Architecture: build a net and see its diagram, its anatomy and its size."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from resnet_core.anatomy import describe
from resnet_core.config import ModelConfig
from resnet_core.figures.diagram import architecture_figure
from ui import state
from ui.controls import config_error, model_controls, model_fields

PAGE, P = "architecture", "arch_"
LEVELS = {"stage": "stages", "block": "blocks", "layer": "every layer"}
FIELDS = [
    *model_fields(P),
    state.Field("arch_compare_plain", False),
    state.Field("arch_table_level", "block", options=tuple(LEVELS)),
]
PLOT_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


# Cached on the frozen config alone: nothing else goes in, so every session can share them.
@st.cache_data(max_entries=64, show_spinner=False)
def summary(cfg: ModelConfig) -> dict:
    a = describe(cfg)
    return {"params": a.total_params, "flops": a.total_flops, "expr": a.layer_count_expression,
            "depth": a.depth, "blocks": len(a.level("block"))}


@st.cache_data(max_entries=64, show_spinner=False)
def figure(cfg: ModelConfig, max_per_row: int | None) -> go.Figure:
    return architecture_figure(cfg, describe(cfg), max_per_row=max_per_row)


@st.cache_data(max_entries=64, show_spinner=False)
def table(cfg: ModelConfig, level: str) -> pd.DataFrame:
    depth = {"stage": 0, "block": 1, "layer": 2}
    keep = {"stage": ("stage",), "block": ("stage", "block"), "layer": ("stage", "block", "layer")}[level]
    rows = [r for r in describe(cfg).rows if r["level"] in keep]
    return pd.DataFrame({
        "name": ["\u2003" * depth[r["level"]] + r["name"] for r in rows],  # em-space indent shows the tree
        "kind": [r["kind"] for r in rows],
        "input": ["×".join(map(str, r["input_shape"])) for r in rows],
        "output": ["×".join(map(str, r["output_shape"])) for r in rows],
        "params": [r["params"] for r in rows],
        "MFLOPs": [r["flops"] / 1e6 for r in rows],
        "shortcut": [r["shortcut"] or "" for r in rows],
    })


def flops_text(flops: int) -> str:
    """Short enough for a metric tile: 81.1 M, 8.18 G."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return str(flops)


notes = state.restore(PAGE, FIELDS)
st.title("Architecture")
st.caption("Pick a ResNet or build your own in the sidebar. Every number below is measured on the "
           "PyTorch module the app trains: shapes by forward hooks, FLOPs by `torch.utils.flop_counter`.")
state.show_notes(notes)
cfg = model_controls(P)
if cfg is None:
    state.publish(FIELDS)
    st.error(f"{config_error(P)}. Change the settings in the sidebar to see the net.")
    st.stop()

s = summary(cfg)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Parameters", f"{s['params']:,}")
c2.metric("FLOPs per image", flops_text(s["flops"]),
          help="Convolutions and the fc layer, 2 FLOPs per multiply-add; BatchNorm, activations "
               "and additions are not counted.")
c3.metric("Layers", s["depth"], help="Weighted layers on the main path, as in the name 'ResNet-50'.")
c4.metric("Blocks", s["blocks"])
per_block = "3 per Bottleneck" if cfg.block == "bottleneck" else "2 per BasicBlock"
st.markdown(f"**Counting layers:** {s['expr']} — the stem conv, the convs inside the {s['blocks']} blocks "
            f"({per_block}) and the fc layer. Shortcut convs and BatchNorm are not counted.")

twin_word = "plain" if cfg.skip else "residual"
compare = st.toggle(f"Compare with the {twin_word} twin side by side", key="arch_compare_plain",
                    help="The same net with the skip connections removed (or put back): nothing else changes.")
if compare:
    twin = cfg.plain_twin() if cfg.skip else cfg.residual_twin()
    t = summary(twin)
    left, right = st.columns(2)
    for col, c, info in ((left, cfg, s), (right, twin, t)):
        with col:
            st.plotly_chart(figure(c, 6), width="stretch", config=PLOT_CONFIG,
                            key=f"arch_diagram_{'skip' if c.skip else 'plain'}")
            st.metric(f"Parameters ({'residual' if c.skip else 'plain'})", f"{info['params']:,}")
    diff = s["params"] - t["params"] if cfg.skip else t["params"] - s["params"]
    if diff == 0:
        st.caption("Same parameter count: identity and zero-pad shortcuts have no weights, so the "
                   "skip connections are free.")
    else:
        st.caption(f"The residual net has {diff:,} more parameters: those of its 1x1 projection shortcuts.")
else:
    st.plotly_chart(figure(cfg, None), width="stretch", config=PLOT_CONFIG, key="arch_diagram")

st.subheader("Anatomy")
level = st.radio("Show", tuple(LEVELS), key="arch_table_level", format_func=LEVELS.get, horizontal=True)
st.dataframe(
    table(cfg, level), hide_index=True, width="stretch",
    column_config={
        "params": st.column_config.NumberColumn("params", format="localized"),
        "MFLOPs": st.column_config.NumberColumn("MFLOPs", format="%.2f"),
    },
)
state.publish(FIELDS)
