"""Train: train a net live and watch its gradients while it learns."""

from __future__ import annotations

import math
import re

import pandas as pd
import streamlit as st

from resnet_core import data, playback, speed
from resnet_core.config import ConfigError, ModelConfig, make_train_config, net_label
from resnet_core.device import DEVICES
from resnet_core.limits import LIMITS, LimitError
from resnet_core.train import DATASET_SHAPES
from ui import estimates, live, playback_view, runs_view, state, train_view
from ui.controls import model_controls, model_fields

PAGE, P = "train", "tr_"
TRAIN_FIELDS = [
    state.Field("tr_dataset", data.DEFAULT, options=data.DATASETS),
    state.Field("tr_steps", 300, lo=1, hi=LIMITS.max_steps),
    state.Field("tr_batch_size", 128, lo=1, hi=LIMITS.max_batch_size),
    state.Field("tr_optimizer", "sgd", options=("sgd", "adam", "adamw")),
    state.Field("tr_lr", 0.1, lo=1e-6, hi=10.0),
    state.Field("tr_schedule", "onecycle", options=("onecycle", "cosine", "constant")),
    state.Field("tr_seed", 0, lo=0, hi=2**31 - 1),
    state.Field("tr_device", "auto", options=DEVICES),
    state.Field("tr_kind", "weight_grad", options=tuple(train_view.KIND_LABELS)),
    state.Field("tr_show_bn", False),
    state.Field("tr_twin", False),
    state.Field("tr_scrub", 0, lo=0, hi=LIMITS.max_steps),  # 0: follow the latest logged step
    state.Field("tr_job", "", check=lambda v: v == "" or re.fullmatch(r"[0-9a-f]{16}", v) is not None,
                allowed="a job id of 16 hex digits, or nothing"),
    # a shipped recording played instead of a run (ui/playback_view.py): its name, speed, position, playing
    state.Field("tr_rec", "", check=lambda v: v == "" or v in playback_view.names(),
                allowed="the name of a shipped recording (" + (", ".join(playback_view.names()) or "none") + ")"),
    state.Field("tr_rec_speed", "fit", options=playback.SPEEDS),
    state.Field("tr_rec_pos", 0.0, lo=0.0, hi=1e7, volatile=True),  # recorded seconds reached
    state.Field("tr_rec_play", True),
]
FIELDS = [*model_fields(P), *TRAIN_FIELDS]
ss = st.session_state


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
    recordings = playback_view.names()
    if recordings:
        with st.sidebar.expander("Recordings", expanded=bool(ss.tr_rec)):
            st.selectbox("Play a recording", ["", *recordings], key="tr_rec", format_func=playback_view.label,
                         on_change=_new_recording,
                         help="Real runs recorded with this app on a named machine and date, shipped with it "
                              "(recordings/), replayed at any speed: a long run in front of a class in seconds.")


def _new_recording() -> None:
    ss["tr_rec_pos"], ss["tr_rec_play"], ss["tr_scrub"] = 0.0, True, 0


def close_recording() -> None:
    ss["tr_rec"] = ""


def train_config():
    steps = int(ss.tr_steps)
    return make_train_config(
        dataset=ss.tr_dataset, steps=steps, batch_size=int(ss.tr_batch_size), optimizer=ss.tr_optimizer,
        lr=float(ss.tr_lr), schedule=ss.tr_schedule, seed=int(ss.tr_seed), device=ss.tr_device,
        log_every=max(1, math.ceil(steps / 2000)),  # at most ~2,000 logged steps keeps the page fast
        eval_every=max(10, steps // 10),
    )


def start(cfg: ModelConfig) -> None:
    where = {"owner": live.session_owner(), "data_root": ss.get("tr_data_root") or None,
             "download": bool(ss.get("tr_download"))}
    try:
        tcfg = train_config()
        if ss.get("tr_twin"):
            job_id, _ = live.manager().submit_twins(cfg, tcfg, labels=(_label(cfg.residual_twin(), tcfg, " · twin"),
                                                                       _label(cfg.plain_twin(), tcfg, " · twin")),
                                                    **where)
        else:
            job_id = live.manager().submit(cfg, tcfg, label=_label(cfg, tcfg), **where)
    except (ConfigError, LimitError, ValueError, RuntimeError) as e:
        ss["tr_error"] = str(e)
        return
    ss["tr_error"] = ""
    ss["tr_rec"] = ""  # a run of one's own replaces the recording on the view
    ss["tr_job"] = job_id
    ss["tr_scrub"] = 0  # a new run: the scrubber follows its latest step


def _label(cfg: ModelConfig, tcfg, suffix: str = "") -> str:
    return f"{net_label(cfg)} · {tcfg.dataset} · {tcfg.steps} steps · seed {tcfg.seed}{suffix}"


def runs_table() -> None:
    mine = live.manager().jobs(owner=live.session_owner())[::-1]  # this browser's runs first, newest first
    rows = [{"run": j.label, "state": j.state, "step": j.step, "test accuracy": _accuracy(j.test_accuracy, j.state),
             "record": j.run_dir} for j in mine]
    saved = runs_view.visible_runs()
    rows += [{"run": r.label, "state": r.status, "step": (r.meta.get("final") or {}).get("step"),
              "test accuracy": _accuracy((r.meta.get("final") or {}).get("test_accuracy"), r.status),
              "record": str(r.path)}
             for r in saved if str(r.path) not in {j.run_dir for j in mine}]
    st.subheader("Runs")
    if not rows:
        st.caption("No runs yet. Finished runs are kept as records and can be compared later.")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if runs_view.private_runs():
        st.caption("This server shows each browser only its own runs (RESNET_PRIVATE_RUNS).")


def _accuracy(value: float | None, status: str) -> str:
    """The test accuracy as the table shows it: a percentage, or when it will come."""
    if value is not None and value == value:
        return f"{value:.1%}"
    return "at the end" if status in ("queued", "running", "paused") else "–"


# ---------------------------------------------------------------- page

playback_view.arrived(PAGE, "tr_")  # from another page: the recording resumes where it was
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
    st.info("Fix the model settings in the sidebar to train.", icon=":material/arrow_back:")
    st.stop()

st.toggle("Train the plain twin beside it (lockstep)", key="tr_twin",
          help="Trains this net with skip connections and without, side by side: same seed, same starting "
               "weights wherever the layers are the same, the same batches in the same order. Only the "
               "skips differ, so every difference you see is theirs. Two nets train each step: a twin-20 run "
               "took 1.9 times as long as a single one on a 2-core CPU (bench/bench_estimates.py twin-factor); "
               "the estimate below counts both.")
if ss.tr_twin and not cfg.skip:
    st.caption("The net in the sidebar has its skips off: the twin run trains it beside its residual twin.")
shown = train_view.jobs_shown(live.manager().get(ss.get("tr_job", "")))
active = train_view.active(shown)
job = next((j for j in shown if not j.done), shown[0] if shown else None)  # twins: pause and stop act on both
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
    st.error(ss["tr_error"], icon=":material/block:")

try:
    est = estimates.run_seconds(cfg, train_config(), nets=2 if ss.tr_twin else 1)  # twins: two nets a step
except (ConfigError, ValueError):
    est = 0.0
if est > 300 and not (ss.tr_rec and playback_view.recording(ss.tr_rec)):  # a recording plays: Start is not the point
    st.warning(f"On this machine this run would take {speed.fmt_duration(est)} ({estimates.basis()}). "
               f"Try fewer steps (about {max(1, int(ss.tr_steps * 120 / est))} fit in two minutes), "
               "a smaller batch, or a smaller net.", icon=":material/hourglass_top:")

shown = train_view.jobs_shown(live.manager().get(ss.get("tr_job", "")))
if ss.tr_rec and playback_view.show(ss.tr_rec, FIELDS, close=close_recording):
    pass  # a recording plays on the live view; Start trains a run of one's own instead
elif not shown:
    when = (f" On this machine it takes {speed.fmt_duration(est)} ({estimates.basis()})." if est > 0 else "")
    st.info("Press **Start** to train." + when, icon=":material/play_arrow:")
    train_view.preview(cfg)
elif train_view.active(shown):
    ss["tr_was_active"] = True
    st.fragment(run_every=train_view.refresh_s(shown))(train_view.live_view)(shown[0].id, FIELDS)
else:
    train_view.live_view(shown[0].id, FIELDS)
# While something trains, the table's steps and states refresh too (less often: it reads the disk).
st.fragment(run_every=train_view.table_refresh_s(shown))(runs_table)()
