"""Train: train a net live and watch its gradients while it learns."""

from __future__ import annotations

import math
import re

import pandas as pd
import streamlit as st

from resnet_core import data, runs
from resnet_core.anatomy import describe
from resnet_core.config import ConfigError, ModelConfig, make_train_config
from resnet_core.device import DEVICES
from resnet_core.figures.diagram import architecture_figure
from resnet_core.figures.training import curves_figure, heatmap_figure
from resnet_core.limits import LIMITS, LimitError
from resnet_core.size import train_seconds_estimate
from resnet_core.train import DATASET_SHAPES
from ui import live, state
from ui.controls import model_controls, model_fields

PAGE, P = "train", "tr_"
KIND_LABELS = {"weight_grad": "weight gradients ‖∂L/∂W‖", "act_grad": "activation gradients ‖∂L/∂h‖",
               "update_ratio": "update ratio ‖ΔW‖/‖W‖"}
TRAIN_FIELDS = [
    state.Field("tr_dataset", data.DEFAULT, options=data.DATASETS),
    state.Field("tr_steps", 300, lo=1, hi=LIMITS.max_steps),
    state.Field("tr_batch_size", 128, lo=1, hi=LIMITS.max_batch_size),
    state.Field("tr_optimizer", "sgd", options=("sgd", "adam", "adamw")),
    state.Field("tr_lr", 0.1, lo=1e-6, hi=10.0),
    state.Field("tr_schedule", "onecycle", options=("onecycle", "cosine", "constant")),
    state.Field("tr_seed", 0, lo=0, hi=2**31 - 1),
    state.Field("tr_device", "auto", options=DEVICES),
    state.Field("tr_kind", "weight_grad", options=tuple(KIND_LABELS)),
    state.Field("tr_show_bn", False),
    state.Field("tr_job", "", check=lambda v: v == "" or re.fullmatch(r"[0-9a-f]{16}", v) is not None),
]
FIELDS = [*model_fields(P), *TRAIN_FIELDS]
PLOT = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
ss = st.session_state


@st.cache_data(max_entries=32, show_spinner=False)
def flops(cfg: ModelConfig) -> int:
    return describe(cfg).total_flops


def training_controls() -> None:
    with st.sidebar.expander("Data and training", expanded=True):
        st.selectbox("Dataset", data.DATASETS, key="tr_dataset",
                     help="mnist-5k ships with the app (5,000 real MNIST digits) and needs no network.")
        if ss.tr_dataset != data.DEFAULT:
            st.text_input("Data root", key="tr_data_root", placeholder=str(data.data_root()),
                          help="Where torchvision's files are read from (env RESNET_DATA_DIR).")
            st.checkbox("Download if missing", key="tr_download")
        st.number_input("Steps", 1, LIMITS.max_steps, step=50, key="tr_steps")
        st.number_input("Batch size", 1, LIMITS.max_batch_size, step=32, key="tr_batch_size")
        st.selectbox("Optimizer", ("sgd", "adam", "adamw"), key="tr_optimizer",
                     format_func={"sgd": "SGD + Nesterov momentum", "adam": "Adam", "adamw": "AdamW"}.get)
        st.number_input("Learning rate", 1e-6, 10.0, format="%.4g", key="tr_lr")
        st.selectbox("Schedule", ("onecycle", "cosine", "constant"), key="tr_schedule")
        st.number_input("Seed", 0, 2**31 - 1, step=1, key="tr_seed")
        st.selectbox("Device", DEVICES, key="tr_device", help="auto: CUDA, then Apple MPS, then the CPU.")


def train_config():
    steps = int(ss.tr_steps)
    return make_train_config(
        dataset=ss.tr_dataset, steps=steps, batch_size=int(ss.tr_batch_size), optimizer=ss.tr_optimizer,
        lr=float(ss.tr_lr), schedule=ss.tr_schedule, seed=int(ss.tr_seed), device=ss.tr_device,
        log_every=max(1, math.ceil(steps / 2000)),  # at most ~2,000 logged steps keeps the page fast
        eval_every=max(10, steps // 10),
    )


def start(cfg: ModelConfig) -> None:
    try:
        tcfg = train_config()
        job_id = live.manager().submit(cfg, tcfg, owner=live.session_owner(), label=_label(cfg, tcfg),
                                       data_root=ss.get("tr_data_root") or None,
                                       download=bool(ss.get("tr_download")))
    except (ConfigError, LimitError, ValueError, RuntimeError) as e:
        ss["tr_error"] = str(e)
        return
    ss["tr_error"] = ""
    ss["tr_job"] = job_id


def _label(cfg: ModelConfig, tcfg) -> str:
    net = f"{'resnet' if cfg.skip else 'plain'}{cfg.depth}"
    return f"{net} · {tcfg.dataset} · {tcfg.steps} steps · seed {tcfg.seed}"


def status_row(snap: dict) -> None:
    rate = snap["samples_per_s"]
    place = snap["queue_place"]
    eta = live.fmt_eta(snap["eta_s"]) if snap["state"] in ("running", "paused") else "–"
    cells = [("State", snap["state"]), ("Step", f"{snap['step']:,} / {snap['steps']:,}"),
             ("Samples/s", f"{rate:,.0f}" if rate == rate else "–"), ("ETA", eta),
             ("Device", snap["device"] or "–"), ("Queue place", str(place) if place else "–")]
    for col, (name, value) in zip(st.columns(len(cells)), cells, strict=True):
        col.markdown(f"<small>{name}</small><br>**{value}**", unsafe_allow_html=True)
    if snap["message"]:
        (st.error if snap["state"] in ("failed", "diverged") else st.info)(snap["message"])


def live_view() -> None:
    job = live.manager().get(ss.get("tr_job", ""))
    if job is None:
        return
    snap = job.snapshot()
    status_row(snap)
    h = live.history(job)
    st.plotly_chart(curves_figure(h.metrics), key="tr_curves", config=PLOT, width="stretch")
    c1, c2 = st.columns([3, 1])
    kind = c1.radio("Heatmap", tuple(KIND_LABELS), key="tr_kind", format_func=KIND_LABELS.get, horizontal=True)
    show_bn = c2.toggle("BatchNorm layers", key="tr_show_bn", disabled=kind == "act_grad",
                        help="BatchNorm scales have gradients of another size than convolutions; "
                             "hidden by default so the rows compare like with like.")
    if kind == "act_grad":
        order = job.blocks
    else:
        order = [n for n in job.layers if show_bn or ".bn" not in n and n != "bn1" and "downsample.1" not in n]
    st.plotly_chart(heatmap_figure(h.grads, kind, order), key="tr_heatmap", config=PLOT, width="stretch")
    values = live.block_values(h.grads, kind, job.blocks)
    st.plotly_chart(architecture_figure(job.model_cfg, describe(job.model_cfg), block_values=values,
                                        title="Latest step, coloured by " + KIND_LABELS[kind]),
                    key="tr_diagram", config=PLOT, width="stretch")
    if job.done and ss.get("tr_was_active"):
        ss["tr_was_active"] = False
        st.rerun()  # a full rerun switches the once-a-half-second refresh off


def runs_table() -> None:
    mine = live.manager().jobs(owner=live.session_owner())
    rows = [{"run": j.label, "state": j.state, "step": j.step, "test accuracy": j.test_accuracy,
             "record": j.run_dir} for j in mine]
    saved = runs.list_runs()
    rows += [{"run": r.label, "state": r.status, "step": (r.meta.get("final") or {}).get("step"),
              "test accuracy": (r.meta.get("final") or {}).get("test_accuracy"), "record": str(r.path)}
             for r in saved if str(r.path) not in {j.run_dir for j in mine}]
    st.subheader("Runs")
    if not rows:
        st.caption("No runs yet. Finished runs are kept as records and can be compared later.")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={"test accuracy": st.column_config.NumberColumn(format="percent")})


# ---------------------------------------------------------------- page

notes = state.restore(PAGE, FIELDS)
st.title("Train")
st.caption("Train a net live on real data and watch the gradient reach (or fail to reach) every layer. "
           "Training runs in the background: switch pages or reload, it goes on.")
state.show_notes(notes)
c, s, k = DATASET_SHAPES[ss.tr_dataset]
cfg = model_controls(P, fixed={"in_channels": c, "image_size": s, "num_classes": k})
training_controls()
state.publish(FIELDS)
if cfg is None:
    st.info("Fix the model settings in the sidebar to train.", icon="👈")
    st.stop()

job = live.manager().get(ss.get("tr_job", ""))
active = job is not None and not job.done
b = st.columns([1, 1, 1, 4])
b[0].button("Start", icon=":material/play_arrow:", key="tr_start", type="primary", disabled=active,
            on_click=start, args=(cfg,))
if job is not None and job.state == "paused":
    b[1].button("Resume", icon=":material/resume:", key="tr_resume", on_click=job.resume)
else:
    b[1].button("Pause", icon=":material/pause:", key="tr_pause", disabled=not (active and job.state == "running"),
                on_click=job.pause if job else None)
b[2].button("Stop", icon=":material/stop:", key="tr_stop", disabled=not active, on_click=job.stop if job else None)
if ss.get("tr_error"):
    st.error(ss["tr_error"], icon="🚫")

est = train_seconds_estimate(flops(cfg), int(ss.tr_batch_size), int(ss.tr_steps), ss.tr_device)
if est > 300:
    st.warning(f"On this machine's CPU this run would take about {est / 60:,.0f} minutes. "
               f"Try fewer steps (about {max(1, int(ss.tr_steps * 120 / est))} fit in two minutes), "
               "a smaller batch, or a smaller net.", icon="⏳")

job = live.manager().get(ss.get("tr_job", ""))
if job is None:
    st.info("Press **Start** to train. The default, ResNet-20 on the embedded MNIST digits, "
            "takes about a minute on a laptop CPU.", icon="▶")
elif not job.done:
    ss["tr_was_active"] = True
    st.fragment(run_every=0.5)(live_view)()
else:
    live_view()
runs_table()
