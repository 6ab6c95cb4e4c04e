"""Why it works: a trained net with blocks deleted, its loss landscape, and the lengths of its gradient's paths."""

from __future__ import annotations

import streamlit as st

from resnet_core.figures.why import (
    contour_figure,
    landscape_words,
    lesion_figure,
    lesion_k_figure,
    lesion_words,
    line_figure,
    paths_figure,
    paths_words,
    shared_zmax,
    surface_figure,
)
from resnet_core.why import landscape as L
from resnet_core.why.lesion import lesion_run
from ui import state
from ui.runs_view import catalogue, option_labels
from ui.state import md_code
from ui.why_view import pair_work, paths_task, progress_view, queue, result

PAGE = "why"
GRIDS = (11, 21)
SAMPLES = 512
PATH_SOURCES = {"record": "the chosen run's trained net", "init20": "ResNet-20 at initialisation",
                "init56": "ResNet-56 at initialisation", "init110": "ResNet-110 at initialisation"}
FIELDS = [
    state.Field("why_run", ""),
    state.Field("why_grid", 11, options=GRIDS),
    state.Field("why_paths", "init20", options=tuple(PATH_SOURCES)),
]
PLOT = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
ss = st.session_state

notes = state.restore(PAGE, FIELDS)
st.title("Why it works")
st.caption("Three measurements of why residual nets train, each made live on this app's nets, the residual net "
           "beside its plain twin, next to the published finding it tests (labelled as the paper's).")
state.show_notes(notes)

cat = catalogue()
finished = {n: r for n, r in cat.records.items()
            if n not in cat.jobs and r.status != "running" and r.has_weights and r.model is not None}
labels = option_labels(cat, set())
pair: list = []
if finished:
    if ss.get("why_run") not in finished:
        twins = [n for n, r in finished.items() if r.model.skip and r.meta.get("twin") in finished]
        ss["why_run"] = (twins or [n for n, r in finished.items() if r.model.skip] or list(finished))[0]
    st.selectbox("Run", list(finished), key="why_run", format_func=labels.get,
                 help="A finished run with its weights. A twin run (Train page, *Train the plain twin too*) opens "
                      "with its plain twin beside it.")
    rec = finished[ss["why_run"]]
    twin = rec.meta.get("twin")
    pair = sorted([rec] + ([finished[twin]] if twin in finished else []), key=lambda r: not r.model.skip)
else:
    st.info("No finished run with weights yet: train one on the **Train** page (tick the plain twin to see both "
            "side by side). Path lengths below work without one, at initialisation.", icon=":material/model_training:")
fam = {id(r): "residual" if r.model.skip else "plain" for r in pair}

# ---------------------------------------------------------------- lesion

st.header("Delete a block")
st.markdown("Each block of the trained net is deleted in turn at test time, then k blocks chosen at random "
            "(k = 1 … n, three seeded draws each), and the test accuracy is measured again. Deleting a residual "
            "block removes its branch F and keeps its shortcut, so the block passes on what its shortcut gives. "
            "A plain net has no shortcut: a block whose input and output have the same shape is replaced by the "
            "identity, and a block that changes the shape cannot be deleted.")
st.markdown("*Veit, Wilber and Belongie (2016), “Residual Networks Behave Like Ensembles of Relatively Shallow "
            "Networks”, found on their ResNet-110 (CIFAR-10) that deleting one block barely changed the error, "
            "except at downsampling blocks; that the error rose smoothly as more blocks were deleted; and that "
            "deleting one layer of a plain VGG net dropped it to chance.* A small net trained briefly here need not "
            "behave like theirs: the numbers below are this app's.")
if pair:
    lkey = "lesion:" + "|".join(str(r.path) for r in pair)
    lesion_fns = [lambda p, s, r=r: lesion_run(r.path, progress=p, should_stop=s)[0] for r in pair]
    st.button("Run the lesion study", key="why_lesion_start", icon=":material/content_cut:",
              on_click=queue().submit, args=(lkey, pair_work(lesion_fns)))
    progress_view({"Lesion study": lkey})
    done = result(lkey)
    if done is not None and done.state == "done":
        results = {fam[id(r)]: les for r, les in zip(pair, done.result, strict=True)}
        st.plotly_chart(lesion_figure(results), key="why_lesion_chart", width="stretch", config=PLOT)
        st.plotly_chart(lesion_k_figure(results), key="why_lesion_k_chart", width="stretch", config=PLOT)
        for line in lesion_words(results):
            st.markdown(line)
    elif done is not None:
        st.error(f"The lesion study did not finish: {md_code(done.error or done.state)}")

# ---------------------------------------------------------------- landscape

st.header("Smooth or chaotic: the loss landscape")
st.markdown("The training loss around the trained weights w, at w + α·d1 + β·d2 for two random directions d1 and "
            "d2 on a grid of α and β from −1 to 1, on a fixed, seeded subset of "
            f"{SAMPLES} training images. The directions are *filter-normalised*: each filter of a direction is "
            "scaled to the norm of the matching filter of the weights, and biases and BatchNorm parameters are not "
            "moved. Both nets are drawn on one colour scale. Where the run kept its initial weights, the dotted "
            "line is the loss on the straight line from the initial (t = 0) to the trained (t = 1) weights.")
st.markdown("*Li, Xu, Taylor, Studer and Goldstein (2018), “Visualizing the Loss Landscape of Neural Nets”, found "
            "that without skip connections deep nets (their ResNet-56 and -110 without shortcuts) have chaotic "
            "landscapes, and with skips smooth, nearly convex ones around the minimum.*")
if pair:
    st.radio("Grid", GRIDS, key="why_grid", format_func=lambda g: f"{g} × {g}", horizontal=True)
    grid = int(ss.why_grid)
    have = {fam[id(r)]: L.cached(r.path, grid, SAMPLES) for r in pair}
    gkey = f"landscape:{grid}:" + "|".join(str(r.path) for r in pair)
    if any(v is None for v in have.values()):
        land_fns = [lambda p, s, r=r: L.landscape_run(r.path, grid=grid, samples=SAMPLES, progress=p,
                                                      should_stop=s) for r in pair]
        st.button("Compute the landscape", key="why_landscape_start", icon=":material/landscape:",
                  on_click=queue().submit, args=(gkey, pair_work(land_fns)))
        progress_view({"Loss landscape": gkey})
        done = result(gkey)
        if done is not None and done.state == "done":
            have = {fam[id(r)]: ls for r, ls in zip(pair, done.result, strict=True)}
        elif done is not None:
            st.error(f"The landscape did not finish: {md_code(done.error or done.state)}")
    if all(v is not None for v in have.values()):
        zmax = shared_zmax(have)
        cols = st.columns(len(have))
        for col, (f, ls) in zip(cols, have.items(), strict=True):
            col.plotly_chart(contour_figure(ls, f"{f}: contour", zmax), key=f"why_contour_{f}", width="stretch",
                             config=PLOT)
        cols = st.columns(len(have))
        for col, (f, ls) in zip(cols, have.items(), strict=True):
            col.plotly_chart(surface_figure(ls, f"{f}: surface", zmax), key=f"why_surface_{f}", width="stretch",
                             config=PLOT)
        st.plotly_chart(line_figure(have), key="why_line_chart", width="stretch", config=PLOT)
        st.caption(f"Colours and heights are capped at {zmax:.3g} (the largest loss on the grids, or ten times the "
                   "larger loss at the trained weights if that is less), the same for both nets.")
        for line in landscape_words(have):
            st.markdown(line)

# ---------------------------------------------------------------- paths

st.header("How long are the paths the gradient takes?")
st.markdown("Unroll a residual net of n blocks: at each block a path goes through the shortcut or through the branch, "
            "so there are 2ⁿ paths and C(n, k) of them go through k branches (length k). As Veit et al. did, one "
            "forward pass, then backward passes that go through the branch of k randomly chosen blocks and only the "
            "shortcut of the others: the norm of the gradient arriving at the first block's input is what one path of "
            "length k carries. Multiplied by the number of paths it gives the gradient carried by all paths of that "
            "length.")
st.markdown("*Veit et al. (2016) found that in their trained ResNet-110 (54 blocks) almost all of the gradient came "
            "from paths 10 to 34 blocks long, although its paths are 27 blocks long on average and up to 54.*")
sources = [s for s in PATH_SOURCES if s != "record" or pair]
if ss.get("why_paths") not in sources:
    ss["why_paths"] = "init20"
st.radio("Net", sources, key="why_paths", format_func=PATH_SOURCES.get, horizontal=True)
src = ss.why_paths
pkey = f"paths:{pair[0].path}" if src == "record" else f"paths:{src}"
st.button("Measure path lengths", key="why_paths_start", icon=":material/route:", on_click=queue().submit,
          args=(pkey, paths_task(pair[0].path if src == "record" else None,
                                 None if src == "record" else int(src.removeprefix("init")))))
progress_view({"Path lengths": pkey})
done = result(pkey)
if done is not None and done.state == "done":
    st.plotly_chart(paths_figure(done.result), key="why_paths_chart", width="stretch", config=PLOT)
    st.markdown(paths_words(done.result))
elif done is not None:
    st.error(f"Path lengths did not finish: {md_code(done.error or done.state)}")
state.publish(FIELDS)
