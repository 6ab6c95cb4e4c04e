"""Overview: the ideas behind residual networks, each next to something to touch. The landing page."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from resnet_core import explain
from resnet_core.anatomy import describe
from resnet_core.config import IMAGENET_LAYOUTS, ModelConfig, cifar_config
from resnet_core.data import TensorDataset, load
from resnet_core.figures.diagram import architecture_figure
from resnet_core.figures.explain import digit_figure, residual_figure, shape_text, shortcut_figure, update_figure
from resnet_core.figures.gradflow import explanation, fmt_norm, gradflow_figure, ratio_sentence
from resnet_core.model import ResNet
from resnet_core.probe import GradFlow, gradflow
from ui import state
from ui.classroom import demo_links

PAGE = "overview"
SEED = 0  # the demo net's weights and the gradient plot's batch; the Gradient flow page's default too
BATCH = 32  # the Gradient flow page's batch, so both pages show the same numbers
GRAD_DEPTH = 56
WEIGHT = 0.5  # the weight the update example starts from
LRS = (0.001, 0.01, 0.1, 1.0)
CHANNEL_STARTS = (0, 4, 8, 12)  # four of the first block's 16 channels at a time
PLOT_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


@st.cache_resource(show_spinner=False)
def digits() -> TensorDataset:
    return load("mnist-5k", "cpu")


# One seeded net per setting, shared by every session; explain.block_view locks around its hooks.
@st.cache_resource(max_entries=8, show_spinner=False)
def demo_net(shortcut: str, zero_init: bool) -> ResNet:
    return explain.demo_model(explain.demo_config(shortcut, zero_init), SEED)


# Keyed by the frozen config and the seed alone: the same cache key as the Gradient flow page's.
@st.cache_data(max_entries=8, show_spinner=False)
def measure(cfg: ModelConfig, seed: int) -> GradFlow:
    return gradflow(cfg, seed=seed, batch_size=BATCH)


@st.cache_data(max_entries=8, show_spinner=False)
def diagram(cfg: ModelConfig) -> tuple[go.Figure, int]:
    a = describe(cfg)
    name = f"ResNet-{a.depth}" if cfg.skip else f"plain-{a.depth}"
    title = f"{name}: {a.layer_count_expression} layers, input {'×'.join(map(str, a.input_shape))}"
    return architecture_figure(cfg, a, title=title), a.total_params


@st.cache_data(show_spinner=False)
def block_costs() -> list[explain.BlockCost]:
    return [explain.block_cost("basic", 64, 64), explain.block_cost("bottleneck", 256, 64),
            explain.block_cost("basic", 256, 256)]


@st.cache_data(show_spinner=False)
def layer_count(depth: int) -> explain.LayerCount:
    return explain.layer_count(depth)


def grad_nets(batchnorm: bool) -> dict[str, GradFlow]:
    cfg = cifar_config(GRAD_DEPTH, in_channels=1, image_size=28, batchnorm=batchnorm)
    with st.spinner(f"One forward and backward pass through two {GRAD_DEPTH}-layer nets…"):
        return {f"ResNet-{GRAD_DEPTH} (with skips)": measure(cfg, SEED),
                f"plain-{GRAD_DEPTH} (no skips)": measure(cfg.plain_twin(), SEED)}


def gradflow_link(batchnorm: bool) -> dict[str, str]:
    """The Gradient flow page's query string for the net measured here, so the link shows the same chart."""
    return {"gf_depth": str(GRAD_DEPTH), "gf_nets": "both", "gf_bn": "1" if batchnorm else "0",
            "gf_activation": "relu", "gf_style": "post", "gf_init": "default", "gf_zero_init": "0",
            "gf_seed": str(SEED), "gf_kind": "activation"}


def ask(key: str) -> None:
    # a callback, run before the script: a rerun early in the script (ui.state.restore makes one on a
    # visit that bypassed app.py) would otherwise drop the click
    st.session_state[key] = True


def show_gradients(results: dict[str, GradFlow], key: str) -> None:
    st.plotly_chart(gradflow_figure(results), width="stretch", config=PLOT_CONFIG, key=key)
    st.markdown(f"**{ratio_sentence(results)}**")
    for paragraph in explanation(results)[1:]:  # the first one explains the axes, which the caption does
        st.markdown(paragraph)


data = digits()
FIELDS = [
    state.Field("ov_skip", True),
    state.Field("ov_grad_exp", -1, lo=-12, hi=0),
    state.Field("ov_lr", 0.1, options=LRS),
    state.Field("ov_grad", False),  # the gradient plot has been asked for (set by its button)
    state.Field("ov_digit", 700, lo=0, hi=len(data.x_test) - 1),
    state.Field("ov_channels", 0, options=CHANNEL_STARTS),
    state.Field("ov_zero_init", False),
    state.Field("ov_depth", 18, options=tuple(IMAGENET_LAYOUTS)),
    state.Field("ov_grad_bn", False),  # the BatchNorm plot has been asked for
]
notes = state.restore(PAGE, FIELDS)
ss = st.session_state

st.title("Residual networks, from the ground up")
st.caption("Each idea comes with something to change or measure. Every number on this page is computed "
           "here, on the same PyTorch modules the other pages build and train.")
state.show_notes(notes)

# ---------------------------------------------------------------- what a ResNet is
st.header("What a residual network is", divider="gray")
left, right = st.columns([2, 3])
with left:
    st.markdown(
        "A neural network is a chain of layers; each one transforms what the previous one hands it. "
        "For years, making the chain longer helped, until it did not: **He et al. (2016)** trained *plain* "
        "convolutional nets of 20 and 56 layers on CIFAR-10, and the 56-layer net ended with a higher "
        "error **on its own training data** than the 20-layer one. That is not overfitting, which would "
        "show only on new data. The deeper net could have copied the shallower one and let its extra layers "
        "pass their input through unchanged, yet training never found that solution. They called this the "
        "**degradation problem**.")
    st.markdown(
        "Their fix: group the layers into *blocks*, and let each block add its input back to what it "
        "computes, **output = x + F(x)**. The path that carries x around the block is the *skip "
        "connection* (or shortcut). Now passing the input through unchanged only needs F(x) = 0, and the "
        "layers learn the *residual*, the correction to their input. Stacks of such blocks are "
        "**residual networks** (ResNets).")
with right:
    st.toggle("Skip connections", key="ov_skip",
              help="Off: the plain twin, the same layers with every addition removed.")
    cfg20 = cifar_config(20, in_channels=1, image_size=28, skip=ss.ov_skip)
    fig, params = diagram(cfg20)
    st.plotly_chart(fig, width="stretch", config=PLOT_CONFIG, key="ov_diagram")
    st.caption(f"He et al.'s 20-layer CIFAR net, sized for 1×28×28 digits: {params:,} parameters with the "
               "skips or without; these skips (zero-padding, “option A”) have no weights of their own.")
c1, c2 = st.columns(2)
c1.page_link("pages/architecture.py", label="Build and inspect any ResNet: Architecture",
             icon=":material/account_tree:")
c2.page_link("pages/degradation.py", label="Watch plain nets degrade with depth: Degradation",
             icon=":material/stacked_line_chart:")

# ---------------------------------------------------------------- gradients and the update rule
st.header("Gradients and the update rule", divider="gray")
left, right = st.columns([2, 3])
with left:
    st.markdown(
        "Training lowers a loss L, a number that says how wrong the net is on a batch of examples. For "
        "every weight W, the **gradient** ∂L/∂W says how fast L changes when W changes. Backpropagation "
        "computes these from the loss backwards, layer by layer: by the chain rule each layer multiplies "
        "the gradient it receives by its own local derivative before passing it on.")
    st.markdown("Gradient descent then moves every weight a small step downhill:")
    # In plain text, not st.latex: KaTeX is one more script for the browser to fetch and run before
    # this page's first chart draws (bench/bench_first_chart.py).
    st.markdown("#### W ← W − lr · ∂L/∂W")
    st.markdown("The step is proportional to the gradient: a gradient a million times smaller moves the "
                "weight a million times less. Try it.")
with right:
    a, b = st.columns(2)
    a.slider("Gradient ∂L/∂W = 10^k, k =", min_value=-12, max_value=0, step=1, key="ov_grad_exp")
    b.select_slider("Learning rate lr", options=LRS, key="ov_lr")
    u = explain.sgd_update(WEIGHT, 10.0 ** ss.ov_grad_exp, ss.ov_lr)
    m1, m2 = st.columns(2)
    m1.metric("Gradient ∂L/∂W", fmt_norm(u.grad))
    m2.metric("Step lr·∂L/∂W", fmt_norm(u.step))
    # Up to 15 digits: a metric tile a sixth of the page wide cut them off ("0.499999…"); text wraps.
    st.markdown(f"New weight **W = {u.new_weight:.15g}** (W = {WEIGHT} minus the step, computed in float64)")
    st.plotly_chart(update_figure(u), width="stretch", config=PLOT_CONFIG, key="ov_update")
    if u.lost_in_f32:
        st.info(f"In float32, the precision the net stores its weights in, this step is lost altogether: "
                f"numbers next to {WEIGHT} are {fmt_norm(u.f32_spacing)} apart, so W − step rounds back to "
                f"exactly {WEIGHT}. The weight does not move at all.", icon=":material/info:")
    else:
        st.caption(f"In float32 the new weight is {u.new_weight_f32:.9g}.")

# ---------------------------------------------------------------- vanishing gradients
st.header("The vanishing gradient", divider="gray")
st.markdown(
    "So what does the first layer of a deep net receive? Each layer on the way back multiplies the gradient "
    "by its own derivative. If those factors are below 1 on average, the product over dozens of "
    "layers is tiny, and the early layers, whose steps are proportional to it, barely learn. A skip "
    "connection adds a second path whose derivative is exactly 1, so some of the gradient always gets "
    "through. Measure it: one batch, one backward pass through a freshly initialised 56-layer net "
    "(ReLU, no BatchNorm, PyTorch's default initialisation) and its plain twin.")
st.button(f"Measure plain-{GRAD_DEPTH} against ResNet-{GRAD_DEPTH}", key="ov_grad_btn",
          icon=":material/trending_down:", type="primary", disabled=ss.ov_grad, on_click=ask, args=("ov_grad",))
if ss.ov_grad:
    show_gradients(grad_nets(False), key="ov_grad_chart")
    st.caption(f"A batch of {BATCH} random 1×28×28 images with random labels, seed {SEED}; the same "
               "measurement as the Gradient flow page.")
st.page_link("pages/gradient-flow.py", label="Change depth, activation, initialisation: Gradient flow",
             icon=":material/trending_down:", query_params=gradflow_link(False))

# ---------------------------------------------------------------- x + F(x) on a real digit
st.header("Residual learning: output = x + F(x)", divider="gray")
st.markdown(
    "Here is one block at work, on a real handwritten digit from the embedded MNIST sample. The digit goes "
    "through the stem (one 3×3 conv, BatchNorm, ReLU) of a freshly initialised ResNet-20 and into its "
    "first block. The block's input **x** has 16 channels (feature maps); its branch computes **F(x)**: "
    "conv, BatchNorm, ReLU, conv, BatchNorm. The skip adds x back, and a ReLU follows the sum.")
pick, zero, channels = st.columns(3)
pick.number_input("Test digit", min_value=0, max_value=len(data.x_test) - 1, step=1, key="ov_digit",
                  help=f"One of the {len(data.x_test):,} test digits of the embedded MNIST sample.")
channels.select_slider("Channels shown", options=CHANNEL_STARTS, key="ov_channels",
                       format_func=lambda c: f"{c}–{c + 3}")
zero.toggle("Zero-init the branch's last layer", key="ov_zero_init",
            help="Start the last BatchNorm of every branch at 0, so F(x) = 0 and each block starts as x.")
index = int(ss.ov_digit)
image, label = data.x_test[index], data.classes[int(data.y_test[index])]
net = demo_net("A", bool(ss.ov_zero_init))
view = explain.block_view(net, image, "layer1.0")
shown = tuple(range(ss.ov_channels, ss.ov_channels + 4))
left, right = st.columns([1, 3])
left.plotly_chart(digit_figure(image, label, index), width="stretch", config=PLOT_CONFIG, key="ov_digit_fig")
right.plotly_chart(residual_figure(view, shown), width="stretch", config=PLOT_CONFIG, key="ov_residual_fig")
size = view.branch_to_input
if ss.ov_zero_init:
    st.markdown("With the branch's last layer at zero, **F(x) is exactly 0** and x + F(x) is x: the block "
                "starts as the identity and learns only the correction it needs.")
else:
    st.markdown(
        f"In this untrained block F(x) is **{size:.0%}** of the size of x (‖F(x)‖/‖x‖ over all 16 channels), "
        "so x + F(x) still looks much like x: the block starts close to passing its input on, and training "
        "shapes F into a useful correction. One colour scale serves all the maps above, so equal greys are "
        "equal numbers.")
st.caption("The net runs in evaluation mode, with its BatchNorm statistics still at their starting values; "
           f"weights from seed {SEED}.")

# ---------------------------------------------------------------- shapes that differ
st.header("When the shapes differ", divider="gray")
demo = explain.shortcut_demo(net, demo_net("B", bool(ss.ov_zero_init)), image, "layer2.0")
x_s, f_s = shape_text(demo.x), shape_text(demo.fx)
st.markdown(
    f"Inside a stage, x and F(x) have the same shape and the skip adds x directly. The first block of the "
    f"second stage is different: its first conv has stride {demo.stride} and twice the channels, so for "
    f"this digit x is **{x_s}** while F(x) is **{f_s}**, and the two cannot be added as they are. The "
    "shortcut must reshape x. He et al. (2016) offer two ways:")
st.markdown(
    f"- **Option A** (their CIFAR nets): keep one pixel of every {demo.stride}×{demo.stride} square and add "
    f"channels of zeros, {demo.pad_before} before and {demo.a.shape[0] - demo.x.shape[0] - demo.pad_before} after: "
    f"{x_s} → **{shape_text(demo.a)}**, with **{demo.a_params} parameters**.\n"
    f"- **Option B** (their ImageNet nets, and torchvision's): a 1×1 convolution with stride {demo.stride} "
    f"mixes the {demo.x.shape[0]} channels into {demo.b.shape[0]} and halves the height and width, followed "
    f"by BatchNorm: {x_s} → **{shape_text(demo.b)}**, with **{demo.b_params:,} parameters** "
    f"({demo.b_conv_params:,} weights in the conv, {demo.b_params - demo.b_conv_params} in BatchNorm).")
st.plotly_chart(shortcut_figure(demo, shown), width="stretch", config=PLOT_CONFIG, key="ov_shortcut_fig")
st.caption("The same digit and channels as above. Maps of half the resolution are drawn with pixels twice "
           "as wide, covering the same area of the digit. Option B's conv comes from a ResNet-20 built "
           f"with option B shortcuts from the same seed ({SEED}).")

# ---------------------------------------------------------------- basic vs bottleneck
st.header("Basic and bottleneck blocks", divider="gray")
basic, bottle, wide = block_costs()
st.markdown(
    "ResNet-18 and ResNet-34 are built from **basic blocks**: two 3×3 convs. ResNet-50, 101 and 152 use "
    "**bottleneck blocks**: a 1×1 conv squeezes the channels, a 3×3 conv works on the narrow maps, and a "
    "second 1×1 conv widens them again by 4. Below, *equal width* means the same 3×3 conv in the middle "
    f"({basic.width} channels in, {basic.width} out, as in the first stage of ResNet-18 and ResNet-50); the "
    f"bottleneck block takes and returns {bottle.out_channels} channels around it. Parameters are counted on "
    "the real modules (convs and BatchNorm; the identity shortcut has none).")
cols = st.columns(3)
for col, cost, note in (
        (cols[0], basic, "A block of ResNet-18/34's first stage"),
        (cols[1], bottle, "A block of ResNet-50/101/152's first stage"),
        (cols[2], wide, f"For contrast: a basic block as wide as the bottleneck's {wide.in_channels} channels")):
    with col:
        st.metric(f"{cost.title}: parameters", f"{cost.params:,}")
        st.caption(f"{note}. {cost.flops / 1e9:.2f} GFLOPs on one {cost.in_channels}×{cost.side}×{cost.side} "
                   "map (PyTorch's FLOP counter, 2 per multiply-add).")
        st.table(pd.DataFrame([(m, w, f"{p:,}") for m, w, p in cost.layers], columns=["module", "what", "params"]),
                 hide_index=True)
st.markdown(
    f"The bottleneck block handles {bottle.out_channels}-channel maps for {bottle.params / basic.params:.2f}× "
    f"the parameters of the {basic.width}-channel basic block, while a basic block of the full "
    f"{wide.in_channels} channels would need {wide.params / bottle.params:.0f}× as many as the bottleneck. "
    "That is why the deep ImageNet ResNets use bottlenecks: depth at an affordable cost.")

# ---------------------------------------------------------------- counting layers
st.header("Counting layers", divider="gray")
left, right = st.columns([1, 2])
with left:
    st.radio("Net", tuple(IMAGENET_LAYOUTS), key="ov_depth", format_func=lambda d: f"ResNet-{d}",
             horizontal=True)
    count = layer_count(int(ss.ov_depth))
    kind = "bottleneck" if count.block == "bottleneck" else "basic"
    st.markdown(f"#### {count.name}: {count.expression}")
    blocks = sum(count.blocks_per_stage)
    st.markdown(
        f"The number in the name counts the layers with weights on the main path: the stem's conv, the "
        f"{count.convs_per_block} convs in each of the {blocks} {kind} blocks "
        f"({' + '.join(map(str, count.blocks_per_stage))} per stage: {count.convs_per_block} × {blocks} = "
        f"{count.convs_per_block * blocks}), "
        "and the final fully connected layer. The 1×1 shortcut convs and BatchNorm are not counted. "
        f"{count.name} has {count.total_params:,} parameters (3×224×224 input, 1,000 classes).")
with right:
    st.table(pd.DataFrame({
        "stage": [r["name"] for r in count.stages],
        "what": [r["kind"] for r in count.stages],
        "output": ["×".join(map(str, r["output_shape"])) for r in count.stages],
        "params": [f"{r['params']:,}" for r in count.stages],
    }), hide_index=True)
    st.page_link("pages/architecture.py", label="See every block and layer: Architecture",
                 icon=":material/account_tree:")

# ---------------------------------------------------------------- the BatchNorm caveat
st.header("An honest caveat: BatchNorm", divider="gray")
st.markdown(
    "The vanishing gradient is the classic story, but it is not the whole story. Real ResNets, and the plain "
    "nets He et al. compared them with, use **BatchNorm**, which rescales each layer's outputs batch by "
    "batch. With it, the plain net's gradient no longer vanishes; in our measurement it *grows* towards the "
    "input. He et al. checked that the gradients of their BatchNorm plain nets were healthy, and the deeper "
    "ones still trained worse. Degradation is a difficulty of optimisation, not only of vanishing gradients, and "
    "in their experiments skip connections overcame it. With skips, the growth stays mild.")
st.button("Measure again with BatchNorm", key="ov_bn_btn", icon=":material/science:", disabled=ss.ov_grad_bn,
          on_click=ask, args=("ov_grad_bn",))
if ss.ov_grad_bn:
    show_gradients(grad_nets(True), key="ov_bn_chart")
st.page_link("pages/gradient-flow.py", label="The same nets with BatchNorm: Gradient flow",
             icon=":material/trending_down:", query_params=gradflow_link(True))

# ---------------------------------------------------------------- where to go next
st.header("Explore", divider="gray")
st.page_link("pages/architecture.py", label="Architecture: build ResNets, compare with the plain twin, count "
             "parameters and FLOPs", icon=":material/account_tree:")
st.page_link("pages/gradient-flow.py", label="Gradient flow: how much gradient reaches each block",
             icon=":material/trending_down:")
st.page_link("pages/train.py", label="Train: watch a net learn, with its gradients live",
             icon=":material/model_training:")
st.page_link("pages/compare.py", label="Compare: runs side by side", icon=":material/compare_arrows:")
st.page_link("pages/degradation.py", label="Degradation: train plain and residual nets at several depths",
             icon=":material/stacked_line_chart:")
st.subheader("Classroom demos")
st.caption("Each link opens a page with every setting made, ready to show one thing.")
demo_links()
state.publish(FIELDS)
