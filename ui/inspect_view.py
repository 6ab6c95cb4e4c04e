"""Streamlit helpers of the Inspect page: cached nets, datasets and results, and the page's sections.

Everything expensive is cached by the record's path and its weights file's mtime, so a record
rewritten (or re-imported) is read again, and every browser session shares one copy of a net.
Nets shared this way are only ever run in eval mode with hooks placed under inspect.forward's lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from resnet_core import data, runs, weights
from resnet_core.figures import inspect as figs
from resnet_core.inspect import drawing
from resnet_core.inspect.evaluate import Evaluation, evaluate
from resnet_core.inspect.forward import Trace, trace
from resnet_core.inspect.images import as_input, to_pixels
from resnet_core.inspect.saliency import Saliency, saliency
from resnet_core.inspect.training_change import training_change
from ui.state import md_code, show_notes

CHANGE_IMAGES = 64  # the first test images, the same for the initial and the trained net


def stamp(path: Path, which: str = "final") -> int:
    try:
        return os.stat(weights.path_of(path, which)).st_mtime_ns
    except OSError:
        return 0


@st.cache_resource(max_entries=8, show_spinner=False)  # ResNet-20's are 1 MB; ResNet-152's 240 MB
def _net(path: str, which: str, stamp: int) -> tuple[torch.nn.Module, runs.RunRecord]:
    return weights.load_model(path, which, "cpu")


@st.cache_resource(max_entries=4, show_spinner="Loading the dataset…")
def dataset(name: str) -> data.TensorDataset:
    return data.load(name, "cpu")


@dataclass
class Net:
    """One net of the chosen run (a twin run has two), or why it cannot be shown."""

    rec: runs.RunRecord
    model: torch.nn.Module | None = None
    initial: torch.nn.Module | None = None
    problem: str = ""  # why there is no model: shown as is
    missing: bool = False  # the record simply has no weights (older records)

    @property
    def path(self) -> str:
        return str(self.rec.path)

    @property
    def title(self) -> str:
        kind = "residual" if self.rec.model is not None and self.rec.model.skip else "plain"
        return f"{kind} net · {self.rec.label}"


def load_net(rec: runs.RunRecord) -> Net:
    net = Net(rec)
    try:
        net.model, _ = _net(str(rec.path), "final", stamp(rec.path))
    except weights.MissingWeights as e:
        net.problem, net.missing = str(e), True
        return net
    except weights.WeightsError as e:
        net.problem = f"its weights were refused: {e}"
        return net
    if rec.has_initial_weights:
        try:
            net.initial, _ = _net(str(rec.path), "initial", stamp(rec.path, "initial"))
        except weights.WeightsError as e:
            net.problem = f"its initial weights were refused: {e}"
    return net


def show_problem(net: Net) -> None:
    if net.missing:
        st.info(f"**{md_code(net.rec.label)} has no saved weights**, so there is nothing to look inside: "
                "records written before weights were kept hold only their curves and gradients (the Compare "
                "page still shows those). Train it again to inspect it.", icon=":material/info:")
    else:
        st.error(f"**{md_code(net.rec.label)} cannot be inspected:** {md_code(net.problem)}",
                 icon=":material/block:")


# ---------------------------------------------------------------- cached results


@st.cache_data(max_entries=16, show_spinner="Evaluating on the test images…")
def evaluation(path: str, stamp: int, limit: int | None) -> Evaluation:
    model, rec = _net(path, "final", stamp)
    ds = dataset(rec.train.dataset)
    return evaluate(model, ds, rec.train, limit, rec.meta.get("final", {}).get("test_accuracy"))


@st.cache_data(max_entries=128, show_spinner=False)
def one_image(path: str, stamp: int, image: np.ndarray) -> tuple[Trace, Saliency]:
    """`image` (C, H, W) normalised, through the net: every block's maps, the probabilities, the saliency."""
    model, rec = _net(path, "final", stamp)
    x = as_input(torch.from_numpy(image), rec.model.image_size)
    return trace(model, x), saliency(model, x)


@st.cache_data(max_entries=16, show_spinner="Comparing the initial and the trained net…")
def change(path: str, stamp: int, initial_stamp: int) -> dict:
    model, rec = _net(path, "final", stamp)
    initial = _net(path, "initial", initial_stamp)[0] if initial_stamp else None
    ds = dataset(rec.train.dataset)
    images = torch.stack([as_input(x, rec.model.image_size) for x in ds.x_test[:CHANGE_IMAGES]])
    return training_change(model, images, initial)


# ---------------------------------------------------------------- sections


def predictions(net: Net, limit: int | None, key: str) -> Evaluation:
    ev = evaluation(net.path, stamp(net.rec.path), limit)
    ds = dataset(net.rec.train.dataset)
    n = len(ev.predictions.labels)
    rec_acc = ev.recorded_accuracy
    where = "all" if n == len(ds.y_test) else "the first"
    st.metric(f"Test accuracy, {where} {n:,} test images", f"{ev.test_accuracy:.1%}",
              help="Computed here from the saved weights, the way the training loop evaluates.")
    if rec_acc is not None:
        same = " — the same" if n == len(ds.y_test) and rec_acc == ev.test_accuracy else ""
        st.caption(f"The record says {rec_acc:.2%} on all {len(ds.y_test):,} test images{same}.")
    classes = ds.classes
    st.plotly_chart(figs.confusion_figure(ev.confusion, classes), key=f"{key}_confusion", width="stretch")
    st.plotly_chart(figs.per_class_figure(ev.per_class), key=f"{key}_per_class", width="stretch")
    st.markdown("**The most confident mistakes**")
    if not ev.mistakes:
        st.caption("No mistakes on these images.")
    else:
        images = [to_pixels(ds.x_test[m["index"]], ds.mean, ds.std) for m in ev.mistakes]
        captions = [f"#{m['index']}: {classes[m['true']]} → {classes[m['predicted']]} ({m['probability']:.0%})"
                    for m in ev.mistakes]
        st.image(images, caption=captions, width=96, clamp=True)
        st.caption("Each image: test index, true class → the net's answer (how sure it was).")
    return ev


def digit_view(net: Net, image: torch.Tensor, classes: tuple[str, ...], block: str, key: str) -> None:
    t, sal = one_image(net.path, stamp(net.rec.path), image.numpy().astype(np.float32))
    p = t.probabilities
    st.markdown(f"**Prediction: {md_code(classes[t.predicted])}** ({float(p[t.predicted]):.1%} sure)")
    st.plotly_chart(figs.probabilities_figure(p, classes), key=f"{key}_probs", width="stretch")
    names = [b.name for b in t.blocks]
    bt = t.blocks[names.index(block)] if block in names else t.blocks[0]
    st.plotly_chart(figs.block_figure(bt), key=f"{key}_block", width="stretch")
    n = bt.norms
    if bt.total is not None:
        st.caption(f"‖x‖ = {n['x']:.3g}, ‖F(x)‖ = {n['fx']:.3g}, ‖x + F(x)‖ = {n['total']:.3g}: the branch adds "
                   f"{n['fx'] / n['x'] if n['x'] else float('inf'):.2g}× the size of what skips it. One colour scale "
                   "across the block: a brighter pixel is a larger number in every panel.")
    else:
        st.caption(f"‖x‖ = {n['x']:.3g}, ‖F(x)‖ = {n['fx']:.3g}: without a skip the block's output is all F(x).")
    st.plotly_chart(figs.norms_figure(t.blocks), key=f"{key}_norms", width="stretch")
    x = as_input(image, net.rec.model.image_size)
    st.plotly_chart(figs.saliency_figure(x, sal.map, f"Where it looks: |∂ score of {classes[sal.target]} / ∂ pixel|"),
                    key=f"{key}_saliency", width="stretch")


def change_view(net: Net, key: str) -> None:
    has_initial = net.initial is not None
    c = change(net.path, stamp(net.rec.path), stamp(net.rec.path, "initial") if has_initial else 0)
    st.plotly_chart(figs.change_figure(c, f"{net.title}: ‖F(x)‖ / ‖x‖ per block"), key=f"{key}_change",
                    width="stretch")
    if not has_initial:
        st.caption("This record kept no initial weights (the app keeps them for twin runs and for nets up to "
                   "16 MiB; older records have none), so only the trained net is shown.")


def canvas_digit(ds: data.TensorDataset, link_code: str) -> tuple[torch.Tensor | None, str]:
    """(the drawn digit normalised (1, 28, 28), or None; its URL code). A link's drawing stands until one is drawn."""
    from streamlit_drawable_canvas import st_canvas

    st.space("medium")  # the canvas's toolbar floats above its top edge
    result = st_canvas(stroke_width=18, stroke_color="#FFFFFF", background_color="#000000", height=224, width=224,
                       drawing_mode="freedraw", key="ins_canvas", return_image_data=True, update_streamlit=True)
    objects = (result.json_data or {}).get("objects", []) if result is not None else []
    ss = st.session_state
    mean, std = ds.mean[0], ds.std[0]
    if objects:
        ss["ins_drew"] = True
        x = drawing.to_mnist(result.image_data, mean, std)
        if x is not None:
            code = drawing.encode(x, mean, std)
            return drawing.decode(code, mean, std), code
        return None, ""
    if ss.get("ins_drew"):  # drawn, then cleared: empty
        return None, ""
    if link_code:
        try:
            return drawing.decode(link_code, mean, std), link_code
        except ValueError as e:
            show_notes([f"URL value ins_draw={link_code[:40]!r} was ignored (allowed: {e}); draw a digit."])
    return None, ""
