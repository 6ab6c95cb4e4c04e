"""Compare: runs side by side, and a time scrubber to replay how their gradients changed."""

from __future__ import annotations

import streamlit as st

from resnet_core import compare
from resnet_core.anatomy import describe
from resnet_core.figures.diagram import architecture_figure
from resnet_core.figures.training import curves_figure, heatmap_figure, log_ratio_heatmap, shared_zrange
from resnet_core.limits import LIMITS
from ui import live, state
from ui.runs_view import Catalogue, block_range, catalogue, download_row, import_upload, option_labels, view
from ui.state import md_code

PAGE = "compare"
KIND_LABELS = {"weight_grad": "weight gradients ‖∂L/∂W‖", "act_grad": "activation gradients ‖∂L/∂h‖",
               "update_ratio": "update ratio ‖ΔW‖/‖W‖"}
SHORT = {"weight_grad": "‖∂L/∂W‖", "act_grad": "‖∂L/∂h‖", "update_ratio": "‖ΔW‖/‖W‖"}
FIELDS = [
    state.Field("cmp_runs", ""),  # comma-separated record folder names; checked against the catalogue below
    state.Field("cmp_kind", "weight_grad", options=tuple(KIND_LABELS)),
    state.Field("cmp_step", 0, lo=0, hi=10**9),  # 0: the latest logged step
    state.Field("cmp_a", ""),
    state.Field("cmp_b", ""),
    state.Field("cmp_axis", "step", options=("step", "fraction")),
    state.Field("cmp_show_bn", False),
]
AXES = {"step": "each run's own steps", "fraction": "fraction of each run"}
PER_ROW = 3  # heatmaps and diagrams side by side; more runs wrap to a new row
DIAGRAM_PER_ROW = 9  # blocks a diagram row holds: the page's width keeps their labels apart
ss = st.session_state


def plot_config(name: str) -> dict:
    """The chart's own camera button saves a PNG at twice the screen resolution."""
    return {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2, "filename": f"compare-{name}"}}


def upload_box() -> None:
    """Import an uploaded record zip once per file, and add it to the runs compared."""
    with st.expander("Add a run record from a zip", icon=":material/upload_file:",
                     expanded=bool(ss.get("cmp_upload"))):
        st.caption(f"A zip downloaded from this page (**Record (.zip)**): one folder holding config.json, "
                   f"metrics and grads parquet files; at most {LIMITS.max_upload_mb} MiB. "
                   "It is checked in full before anything is written, and nothing in it is ever unpickled.")
        up = st.file_uploader("Run record (.zip)", type=["zip"], key="cmp_upload",
                              max_upload_size=max(1, LIMITS.max_upload_mb))
        if up is None:
            return
        done = ss.setdefault("cmp_imported", {})  # file id -> (folder name or None, why refused)
        if up.file_id not in done:  # the file stays in the uploader across reruns: import it once
            done[up.file_id] = import_upload(up)
            name = done[up.file_id][0]
            if name is not None:
                ss.setdefault("cmp_uploaded", set()).add(name)
                ss["cmp_pick"] = ([n for n in ss["cmp_pick"] if n != name] + [name])[-compare.MAX_RUNS:]
        name, why = done[up.file_id]
        if name is None:
            st.error(f"**Upload refused:** {md_code(why)}", icon=":material/block:")
        else:
            st.success(f"Imported as {md_code(name)} and added to the runs compared.",
                       icon=":material/check_circle:")


def seed_selection(cat: Catalogue) -> None:
    """The picker's value: on arrival from the kept or linked list, minus what is not here (noted)."""
    if "cmp_pick" in ss:  # the picker is live: only drop records deleted since
        ss["cmp_pick"] = [n for n in ss["cmp_pick"] if n in cat.records][: compare.MAX_RUNS]
        return
    sel = compare.parse_selection(ss.get("cmp_runs", ""), cat.records, cat.damaged)
    ss["cmp_pick"] = sel.kept
    notes = []
    if sel.unknown:
        notes.append("Runs named in the link but not found here were left out: "
                     + ", ".join(md_code(n[:60]) for n in sel.unknown[:5])
                     + (f" and {len(sel.unknown) - 5} more." if len(sel.unknown) > 5 else "."))
    if sel.damaged:
        notes.append("Damaged records named in the link were left out: "
                     + "; ".join(f"{md_code(n)}: {md_code(cat.damaged[n])}" for n in sel.damaged[:5]))
    if sel.over:
        notes.append(f"At most {compare.MAX_RUNS} runs are compared at once; {len(sel.over)} more were left out.")
    ss["cmp_link_notes"] = notes  # shown for the rest of this visit, not only until the next click


def damaged_list(cat: Catalogue) -> None:
    if not cat.damaged:
        return
    with st.expander(f"{len(cat.damaged)} damaged record{'s' * (len(cat.damaged) > 1)} (not comparable)",
                     icon=":material/report:"):
        st.dataframe({"record": list(cat.damaged), "what is wrong": list(cat.damaged.values())},
                     hide_index=True, width="stretch")


def final_table(views, names) -> None:
    st.subheader("Final figures")
    params = {v.name: params_of(v.model) for v in views}
    table = compare.final_table(views, names, params)
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "params": st.column_config.NumberColumn(format="localized"),
        "time (s)": st.column_config.NumberColumn(format="%.1f"),
        "train loss": st.column_config.NumberColumn(format="%.4f"),
        "test accuracy": st.column_config.NumberColumn(format="percent")})
    st.download_button("Table (.csv)", compare.csv_bytes(table), file_name="compare-final-figures.csv",
                       mime="text/csv", key="cmp_table_csv", icon=":material/download:", on_click="ignore")


@st.cache_data(max_entries=64, show_spinner=False)
def params_of(cfg) -> int | None:
    return compare.params_of(cfg)


def run_length(v) -> int:
    """The run's planned steps (its own last logged step where the record does not say)."""
    if v.train is not None:
        return int(v.train.steps)
    steps = compare.logged_steps([v])
    return int(steps[-1]) if len(steps) else 1


def run_step(v, step: int | None, longest: int) -> int | None:
    """The scrubber's step as it falls in run `v`: the same step, or on the fraction axis the same
    fraction of the run (the scrubber then moves along the longest run)."""
    if step is None or ss.get("cmp_axis") != "fraction":
        return step
    return max(1, round(step / max(1, longest) * run_length(v)))


def rows(v, kind: str) -> list[str]:
    """The heatmap's rows: BatchNorm layers only when asked for (their gradients are of another size)."""
    order = compare.layer_order(v, kind)
    if kind == "act_grad" or ss.get("cmp_show_bn"):
        return order
    return [n for n in order if ".bn" not in n and n != "bn1" and "downsample.1" not in n]


def heatmaps(cat: Catalogue, views, names, kind: str, step: int | None) -> None:
    zrange = shared_zrange(*(v.grads for v in views), kind=kind)
    longest = max(run_length(v) for v in views)
    fraction = ss.get("cmp_axis") == "fraction"
    ranges = [r for r in (block_range(cat, v, kind) for v in views) if r is not None]
    diagram_range = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None
    for start in range(0, len(views), PER_ROW):
        cols = st.columns(min(PER_ROW, len(views)))
        for col, i in zip(cols, range(start, min(start + PER_ROW, len(views))), strict=False):
            v, name = views[i], names[i]
            with col:
                here = run_step(v, step, longest)
                fig = heatmap_figure(v.grads, kind, rows(v, kind), zrange=zrange, cursor_step=here,
                                     run_steps=run_length(v) if fraction else None)
                fig.update_layout(title={"text": compare.plot_text(name, 60), "font": {"size": 14}, "x": 0.01},
                                  margin={"t": 60, "l": 90})  # room for the layer names beside the axis title
                st.plotly_chart(fig, key=f"cmp_heat_{i}", config=plot_config(f"heatmap-{i + 1}"), width="stretch")
    # The diagrams one to a row, the page's whole width: in a third (or half) of a 1000-px window their
    # block labels, legend and title ran into each other.
    for i, (v, name) in enumerate(zip(views, names, strict=True)):
        diagram(v, name, kind, run_step(v, step, longest), diagram_range, i)


def diagram(v, name: str, kind: str, step: int | None, zrange, i: int) -> None:
    if v.model is None:
        return
    at = compare.step_at(v.grads, kind, step) if step is not None else None
    values = live.block_values(v.grads, kind, v.blocks, step=at) if at is not None else {}
    # the step first: a long name is cut, the step never
    title = f"step {at:,} · {compare.plot_text(name, 60)}" if at is not None else "no gradients logged"
    fig = architecture_figure(v.model, describe(v.model), block_values=values, title=title,
                              value_label=SHORT[kind] + " per block", max_per_row=DIAGRAM_PER_ROW)
    compare.share_diagram_scale(fig, zrange)
    # the legend under the diagram, not beside the title, where a narrow window made them overlap
    fig.update_layout(legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 0, "yanchor": "top"},
                      margin={"b": 40}, height=(fig.layout.height or 230) + 30)
    st.plotly_chart(fig, key=f"cmp_diagram_{i}", config=plot_config(f"diagram-{i + 1}"), width="stretch")


def scrubber(views) -> int | None:
    steps = compare.logged_steps(views)
    if not len(steps):
        return None
    lo, hi = int(steps[0]), int(steps[-1])
    now = int(ss.get("cmp_step", 0))
    if not lo <= now <= hi or now == ss.get("cmp_step_hi"):  # 0 (the default), a link's step beyond these
        ss["cmp_step"] = hi  # runs, or the latest step of a run still training: follow the latest
    ss["cmp_step_hi"] = hi
    if lo == hi:
        st.caption(f"Gradients were logged at step {hi:,} only.")
        return hi
    return st.slider("Time scrubber: step", lo, hi, key="cmp_step",
                     help="Moves the cursor on every heatmap and recolours each diagram with the gradients "
                          "of the last step logged at or before it. Drag it to replay training.")


def ratio_view(views, names, kind: str, step: int | None) -> None:
    st.subheader("Log ratio of two runs")
    if len(views) < 2:
        st.caption("Choose two or more runs to see where one run's gradients are larger than another's.")
        return
    by_name = {v.name: (v, n) for v, n in zip(views, names, strict=True)}
    options = list(by_name)
    for key, default in (("cmp_a", options[0]), ("cmp_b", options[1])):
        if ss.get(key) not in by_name:
            ss[key] = default
    left, right = st.columns(2)
    left.selectbox("A", options, key="cmp_a", format_func=lambda n: by_name[n][1])
    right.selectbox("B", options, key="cmp_b", format_func=lambda n: by_name[n][1])
    (a, _), (b, _) = by_name[ss.cmp_a], by_name[ss.cmp_b]
    shown = set(rows(a, kind))
    layers = [n for n in compare.common_layers(a, b, kind) if n in shown]
    if not layers:
        st.info("These two runs have no layer in common, so there is nothing to divide.", icon=":material/info:")
        return
    fig = log_ratio_heatmap(a.grads, b.grads, kind, layers, cursor_step=step, names=("A", "B"))
    st.plotly_chart(fig, key="cmp_ratio", config=plot_config("log-ratio"), width="stretch")
    st.caption(f"Colour is log10 of {SHORT[kind]} in A divided by the same in B, layer by layer, on the steps "
               "both runs logged: blue where A's is larger, red where B's is, white where they are equal.")


def views_section(cat: Catalogue, names_picked: list[str], refreshing: bool = False) -> None:
    """Everything drawn from the chosen runs; a fragment that refreshes itself while one of them trains."""
    if refreshing and all(cat.jobs[n].done for n in names_picked if n in cat.jobs):
        st.rerun()  # the last one finished: a full rerun reads the records and stops the refresh
    views = [view(cat, n) for n in names_picked]
    for v in views:
        if v.damaged:  # sound at a glance (config and file footers), damaged once its rows were read
            st.warning(f"{md_code(v.name)} is left out: {md_code(v.damaged)}", icon=":material/report:")
    views = [v for v in views if not v.damaged]
    if not views:
        return
    names = compare.unique_names(views)
    final_table(views, names)

    st.subheader("Loss and accuracy")
    st.plotly_chart(curves_figure(compare.combine_metrics(views, names)), key="cmp_curves",
                    config=plot_config("curves"), width="stretch")
    st.caption("Colour is the run; solid lines are training (averaged over each logging interval), "
               "dotted lines with markers the test set.")

    st.subheader("Gradients, one colour scale for all runs")
    c1, c2 = st.columns([3, 2])
    kind = c1.radio("Quantity", tuple(KIND_LABELS), key="cmp_kind", format_func=KIND_LABELS.get, horizontal=True)
    c2.radio("Step axis", tuple(AXES), key="cmp_axis", format_func=AXES.get, horizontal=True,
             help="Each heatmap on its own steps, or all on the fraction of their run (0 to 100%), so runs of "
                  "different lengths line up. On the fraction axis the scrubber moves along the longest run.")
    st.toggle("BatchNorm layers", key="cmp_show_bn", disabled=kind == "act_grad",
              help="BatchNorm scales have gradients of another size than convolutions; hidden by default so "
                   "the rows compare like with like (as on the Train page).")
    step = scrubber(views)
    heatmaps(cat, views, names, kind, step)
    st.caption("Heatmaps: layers (input at the bottom) by step, coloured by log10 of the quantity; every heatmap "
               "uses the same colours for the same values, and so do the diagrams. The line marks the scrubber's "
               "step.")
    ratio_view(views, names, kind, step)

    st.subheader("Downloads")
    st.caption("Each chart saves itself as a PNG from the camera icon in its corner.")
    for i, (v, n) in enumerate(zip(views, names, strict=True)):
        download_row(v, n, i)
    state.publish(FIELDS)  # again here: in a fragment rerun the widgets above changed without the page's publish


# ---------------------------------------------------------------- page

notes = state.restore(PAGE, FIELDS)
st.title("Compare")
st.caption("Put runs side by side: this server's runs, saved records and records uploaded as a zip. "
           "Then drag the time scrubber to replay how their gradients changed as they trained.")
for note in notes:
    st.warning(md_code(note), icon=":material/warning:")

cat = catalogue()
seed_selection(cat)
picker = st.container()  # drawn above the upload box, filled after it: an upload adds to the picker's value
upload_box()
cat = catalogue()  # an upload just now is a new record
labels = option_labels(cat, ss.get("cmp_uploaded", set()))
with picker:
    for note in ss.get("cmp_link_notes", []):
        st.warning(note, icon=":material/link_off:")
    st.multiselect("Runs to compare", list(cat.records), key="cmp_pick", max_selections=compare.MAX_RUNS,
                   format_func=labels.get, placeholder="Choose runs (newest first)")
    damaged_list(cat)
    if cat.queued:
        st.caption(f"{cat.queued} queued job{'s' * (cat.queued > 1)} will appear here once they start.")
ss["cmp_runs"] = ",".join(ss["cmp_pick"])
state.publish(FIELDS)

picked = list(ss["cmp_pick"])
if not picked:
    st.info("Choose one or more runs above. Runs trained on the **Train** page are saved here by themselves.",
            icon=":material/compare_arrows:")
    st.stop()
if any(n in cat.jobs for n in picked):
    st.caption(":material/autorenew: A chosen run is still training: this view refreshes every 2 seconds.")
    st.fragment(run_every=2.0)(views_section)(cat, picked, refreshing=True)
else:
    views_section(cat, picked)
