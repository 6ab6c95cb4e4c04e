"""Inspect: open a finished run's trained net; its predictions, one digit block by block, what training changed."""

from __future__ import annotations

import streamlit as st
import torch

from resnet_core.inspect.images import MNIST_FAMILY, to_pixels
from resnet_core.limits import LIMITS
from ui import state
from ui.inspect_view import canvas_digit, change_view, dataset, digit_view, load_net, predictions, show_problem
from ui.runs_view import catalogue, import_upload, option_labels
from ui.state import md_code

PAGE = "inspect"
LIMITS_SHOWN = {1000: "the first 1,000", 0: "all"}
FIELDS = [
    state.Field("ins_run", ""),  # a record's folder name; checked against the runs below
    state.Field("ins_n", 1000, options=tuple(LIMITS_SHOWN)),  # test images evaluated (0: all)
    state.Field("ins_src", "test", options=("test", "draw")),
    state.Field("ins_idx", 0, lo=0, hi=10**6),
    state.Field("ins_block", ""),
    state.Field("ins_draw", ""),  # the drawn digit, 784 hex digits (inspect/drawing.py)
]
ss = st.session_state


def ignored(key: str, allowed: str, using: str) -> None:
    """A URL value the page cannot use, named as ui.state names the ones it refuses itself."""
    state.show_notes([f"URL value {key}={str(ss.get(key, ''))[:40]!r} was ignored (allowed: {allowed}); "
                      f"using {using}."])

notes = state.restore(PAGE, FIELDS)
st.title("Inspect")
st.caption("Open a finished run and look inside its trained net: what it gets right and wrong, one digit "
           "passing through it block by block, and how much each block's branch adds since training began.")
state.show_notes(notes)

cat = catalogue()
with st.expander("Add a run record from a zip", icon=":material/upload_file:", expanded=bool(ss.get("ins_upload"))):
    st.caption(f"A zip downloaded from the Compare page; at most {LIMITS.max_upload_mb} MiB. It is checked in full, "
               "weights included, before anything is written; nothing in it is ever unpickled.")
    up = st.file_uploader("Run record (.zip)", type=["zip"], key="ins_upload",
                          max_upload_size=max(1, LIMITS.max_upload_mb))
    if up is not None:
        done = ss.setdefault("ins_imported", {})
        if up.file_id not in done:
            done[up.file_id] = import_upload(up)
            if done[up.file_id][0] is not None:
                ss["ins_run"] = done[up.file_id][0]
        name, why = done[up.file_id]
        if name is None:
            st.error(f"**Upload refused:** {md_code(why)}", icon=":material/block:")
        else:
            st.success(f"Imported as {md_code(name)}.", icon=":material/check_circle:")
        cat = catalogue()

finished = {n: r for n, r in cat.records.items() if n not in cat.jobs and r.status != "running"}
labels = option_labels(cat, set())
labels = {n: labels[n] + ("" if r.has_weights else " · no weights") for n, r in finished.items()}
options = list(finished)
if not options:
    st.info("No finished runs yet. Train one on the **Train** page (or upload a record above); it appears here "
            "when it ends.", icon=":material/model_training:")
    state.publish(FIELDS)
    st.stop()
if ss.get("ins_run") not in finished:
    newest = next((n for n in options if finished[n].has_weights), options[0])
    if ss.get("ins_run"):
        ignored("ins_run", "the folder name of a finished run here", "the newest run")
    ss["ins_run"] = newest
st.selectbox("Run", options, key="ins_run", format_func=labels.get,
             help="Finished runs of this server and saved records, newest first. A twin run opens with its twin.")
rec = finished[ss["ins_run"]]
pair = [rec]
twin = rec.meta.get("twin")
if twin in finished:
    pair = sorted([rec, finished[twin]], key=lambda r: not r.model.skip)  # residual first
nets = [load_net(r) for r in pair]
shown = [n for n in nets if n.model is not None]
for n in nets:
    if n.model is None:
        show_problem(n)
if not shown:
    state.publish(FIELDS)
    st.stop()
try:
    ds = dataset(rec.train.dataset)
except Exception as e:  # noqa: BLE001 - DatasetUnavailable and its relatives: the message says where and why
    st.error(f"**The run's dataset is not available here:** {md_code(str(e)[:400])}", icon=":material/block:")
    state.publish(FIELDS)
    st.stop()
classes = ds.classes
if len(shown) == 2:
    st.caption("A twin run: the residual net and its plain twin, trained in lockstep from the same weights on the "
               "same batches, side by side.")

# ---------------------------------------------------------------- predictions

st.header("Predictions")
st.radio("Test images", tuple(LIMITS_SHOWN), key="ins_n", format_func=LIMITS_SHOWN.get, horizontal=True)
limit = ss["ins_n"] or None
for col, net in zip(st.columns(len(shown)), shown, strict=True):
    with col:
        if len(shown) > 1:
            st.subheader(net.title)
        predictions(net, limit, f"ins_pred_{shown.index(net)}")

# ---------------------------------------------------------------- one digit

st.header("One image through the net")
drawable = rec.train.dataset in MNIST_FAMILY
sources = {"test": "a test image", "draw": "draw one"} if drawable else {"test": "a test image"}
if ss.get("ins_src") not in sources:
    ignored("ins_src", "test; drawings only for MNIST-family runs", "'test'")
    ss["ins_src"] = "test"
left, right = st.columns([1, 2])
with left:
    st.radio("Image", tuple(sources), key="ins_src", format_func=sources.get, horizontal=True)
    image = None
    if ss["ins_src"] == "test":
        if int(ss.get("ins_idx", 0)) > len(ds.y_test) - 1:
            ignored("ins_idx", f"a test image from 0 to {len(ds.y_test) - 1}", f"{len(ds.y_test) - 1}")
            ss["ins_idx"] = len(ds.y_test) - 1
        st.number_input(f"Test image (0–{len(ds.y_test) - 1:,})", 0, len(ds.y_test) - 1, key="ins_idx", step=1)
        image = ds.x_test[ss["ins_idx"]]
        st.image(to_pixels(image, ds.mean, ds.std), width=168,
                 caption=f"test image #{ss['ins_idx']}: a {classes[int(ds.y_test[ss['ins_idx']])]}")
    else:
        image, ss["ins_draw"] = canvas_digit(ds, ss.get("ins_draw", ""))
        st.caption("Draw with the mouse, white on black, filling the box; the bin clears it. The drawing is cropped, "
                   "scaled to 20 pixels and centred in 28×28 as MNIST's digits were, then normalised like the "
                   "training images.")
        if image is None:
            st.info("The canvas is empty: draw a digit to see what the net makes of it.", icon=":material/draw:")
        else:
            st.image(to_pixels(image, ds.mean, ds.std), width=112, caption="what the net sees (28×28)")
with right:
    if image is not None:
        blocks = [name for name, _ in shown[0].model.blocks()]
        if ss.get("ins_block") not in blocks:
            if ss.get("ins_block"):
                ignored("ins_block", "a block of this net, " + ", ".join(blocks[:3]) + "…", repr(blocks[0]))
            ss["ins_block"] = blocks[0]
        st.select_slider("Block", blocks, key="ins_block",
                         help="Which block's maps to draw; the norms chart shows every block.")
if image is not None:
    for col, net in zip(st.columns(len(shown)), shown, strict=True):
        with col:
            if len(shown) > 1:
                st.subheader(net.title)
            digit_view(net, image if isinstance(image, torch.Tensor) else torch.as_tensor(image), classes,
                       ss["ins_block"], f"ins_digit_{shown.index(net)}")
    st.caption("Saliency: the gradient of the predicted class's score (its logit, before the softmax) with respect "
               "to each input pixel, the largest over colour channels (Simonyan et al. 2014). Bright pixels are "
               "those where a small change would move that score most.")

# ---------------------------------------------------------------- what training changed

st.header("What changed in training")
st.caption(f"On the same {min(64, len(ds.y_test))} test images, the size of each block's branch output F(x) next to "
           "what its skip path carries (x), averaged over the images. The initial net runs with BatchNorm "
           "normalising by these images' own statistics, as on its first training step; the trained net as it is "
           "used, with the statistics it learned.")
for col, net in zip(st.columns(len(shown)), shown, strict=True):
    with col:
        change_view(net, f"ins_change_{shown.index(net)}")
state.publish(FIELDS)
