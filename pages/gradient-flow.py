"""Gradient flow: how much gradient reaches each block at initialisation, with and without skips."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from resnet_core.config import ACTIVATIONS, INITS, STYLES, ModelConfig, cifar_config
from resnet_core.figures.gradflow import explanation, gradflow_figure, ratio_sentence, series
from resnet_core.figures.split import split_explanation, split_figure
from resnet_core.probe import GradFlow, gradflow
from ui import state

PAGE = "gradient_flow"
DEPTHS = tuple(range(8, 111, 6))  # the CIFAR layout: 6n + 2 layers, n = 1 … 18
NETS = {"both": "both", "residual": "residual only", "plain": "plain twin only"}
KINDS = {"activation": "at block outputs ‖dL/dh‖", "weight": "of layer weights ‖dL/dW‖"}
ACT_LABELS = {"relu": "ReLU", "leaky_relu": "leaky ReLU", "gelu": "GELU", "tanh": "tanh", "sigmoid": "sigmoid"}
STYLE_LABELS = {"post": "post-activation (2015)", "pre": "pre-activation (2016)"}
INIT_LABELS = {"default": "PyTorch default", "kaiming": "Kaiming normal, fan-out"}
BATCH, SIDE, CHANNELS = 32, 28, 1  # DESIGN.md's measuring conditions: MNIST-sized inputs
FIELDS = [
    state.Field("gf_depth", 56, options=DEPTHS),
    state.Field("gf_nets", "both", options=tuple(NETS)),
    state.Field("gf_bn", False),
    state.Field("gf_activation", "relu", options=ACTIVATIONS),
    state.Field("gf_style", "post", options=STYLES),
    state.Field("gf_init", "default", options=INITS),
    state.Field("gf_zero_init", False),
    state.Field("gf_seed", 0, lo=0, hi=9999),
    state.Field("gf_kind", "activation", options=tuple(KINDS)),
]
PLOT_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


# Keyed by the frozen config and the seed alone, so every session shares the measurements.
@st.cache_data(max_entries=256, show_spinner=False)
def measure(cfg: ModelConfig, seed: int) -> GradFlow:
    return gradflow(cfg, seed=seed, batch_size=BATCH, split=True)


def norms_table(results: dict[str, GradFlow], kind: str) -> pd.DataFrame:
    columns: dict[str, dict[str, float]] = {}
    for label, g in results.items():
        names, norms = series(g, kind)
        columns[label] = dict(zip(names, norms, strict=True))
    return pd.DataFrame(columns).rename_axis("block" if kind == "activation" else "layer").reset_index()


def cli_command(cfg: ModelConfig, seed: int, nets: str) -> str:
    n = cfg.layers[0]
    flags = [f"--blocks {n},{n},{n}", "--bn" if cfg.batchnorm else "--no-bn", f"--activation {cfg.activation}",
             f"--style {cfg.style}", f"--init {cfg.init}"]
    flags += ["--zero-init-residual"] if cfg.zero_init_residual else []
    flags += ["--no-skip"] if nets == "plain" else []
    return f"python -m resnet_core gradflow --preset resnet20 {' '.join(flags)} --seed {seed} --json"


notes = state.restore(PAGE, FIELDS)
st.title("Gradient flow")
st.caption("How much of the loss's gradient reaches each block of a freshly initialised net, with skip "
           "connections and without. Change the net in the sidebar; every number is measured live.")
state.show_notes(notes)

with st.sidebar:
    st.select_slider("Depth (layers)", options=DEPTHS, key="gf_depth",
                     help="He et al.'s CIFAR ResNet: 6n+2 layers in 3 stages of 16, 32 and 64 channels.")
    st.radio("Nets", tuple(NETS), key="gf_nets", format_func=NETS.get, horizontal=True,
             help="The plain twin is the same net with the additions removed; nothing else changes.")
    st.toggle("BatchNorm", key="gf_bn")
    st.selectbox("Activation", ACTIVATIONS, key="gf_activation", format_func=ACT_LABELS.get)
    st.selectbox("Block style", STYLES, key="gf_style", format_func=STYLE_LABELS.get,
                 help="Post: the activation comes after the addition. Pre: BN and activation come "
                      "first inside the branch, and the addition comes last.")
    st.selectbox("Initialisation", INITS, key="gf_init", format_func=INIT_LABELS.get)
    st.toggle("Zero-init last layer of each branch", key="gf_zero_init")
    st.number_input("Seed", min_value=0, max_value=9999, step=1, key="gf_seed",
                    help="Seeds the weights and the random batch; the same seed gives the same numbers.")

ss = st.session_state
cfg = cifar_config(ss.gf_depth, in_channels=CHANNELS, image_size=SIDE, batchnorm=ss.gf_bn,
                   activation=ss.gf_activation, style=ss.gf_style, init=ss.gf_init,
                   zero_init_residual=ss.gf_zero_init, skip=True)
nets = {"residual": (f"ResNet-{cfg.depth} (with skips)", cfg),
        "plain": (f"plain-{cfg.depth} (no skips)", cfg.plain_twin())}
chosen = ("residual", "plain") if ss.gf_nets == "both" else (ss.gf_nets,)
with st.spinner("Running one forward and backward pass…"):
    results = {nets[k][0]: measure(nets[k][1], int(ss.gf_seed)) for k in chosen}

kind = st.radio("Gradients", tuple(KINDS), key="gf_kind", format_func=KINDS.get, horizontal=True)
st.plotly_chart(gradflow_figure(results, kind), width="stretch", config=PLOT_CONFIG, key="gf_chart")
st.markdown(f"**{ratio_sentence(results, kind)}**")
for paragraph in explanation(results, kind):
    st.markdown(paragraph)
residual = next((g for g in results.values() if g.config.skip), None)
plain = next((g for g in results.values() if not g.config.skip), None)
st.subheader("The gradient's two roads at each addition")
if residual is not None:
    st.plotly_chart(split_figure(residual, f"ResNet-{cfg.depth}: the gradient at each block's fork, by road"),
                    width="stretch", config=PLOT_CONFIG, key="gf_split_chart")
for paragraph in split_explanation(residual, plain):
    st.markdown(paragraph)
with st.expander("The numbers"):
    st.dataframe(norms_table(results, kind), hide_index=True, width="stretch",
                 column_config={label: st.column_config.NumberColumn(label, format="%.3e")
                                for label in results})
    st.caption(f"Batch of {BATCH} standard-normal {CHANNELS}×{SIDE}×{SIDE} images with random labels, "
               f"seed {ss.gf_seed}; the net in train mode (BatchNorm uses the batch's statistics); "
               "norms computed in float64 from float32 gradients. The same numbers, from the command line:")
    st.code(cli_command(cfg, int(ss.gf_seed), ss.gf_nets) + " --split", language="bash")
state.publish(FIELDS)
