"""Degradation: plain and residual nets at several depths, one budget each, beside He et al. 2016."""

from __future__ import annotations

import math
import re

import pandas as pd
import streamlit as st

from resnet_core import experiments, playback, speed
from resnet_core.config import ConfigError
from resnet_core.experiments import DEPTH_CHOICES, Degradation
from resnet_core.figures.degradation import degradation_figure
from resnet_core.limits import LIMITS, LimitError
from ui import estimates, live, playback_view, state

PAGE = "degradation"
FIELDS = [
    state.Field("dg_depths", experiments.DEFAULT_DEPTHS, check=lambda v: bool(v) and set(v) <= set(DEPTH_CHOICES),
                allowed="depths from " + ", ".join(map(str, DEPTH_CHOICES)) + ", separated by commas"),
    state.Field("dg_steps", Degradation.steps, lo=1, hi=LIMITS.max_steps),
    state.Field("dg_batch_size", Degradation.batch_size, lo=1, hi=LIMITS.max_batch_size),
    state.Field("dg_jobs", "", check=lambda v: v == "" or re.fullmatch(r"[0-9a-f]{16}(,[0-9a-f]{16}){0,31}", v),
                allowed="up to 32 job ids of 16 hex digits, separated by commas"),
    # a shipped recording of the experiment played instead (ui/playback_view.py)
    state.Field("dg_rec", "", check=lambda v: v == "" or v in playback_view.names(many=True),
                allowed="the name of a shipped recording of the experiment ("
                        + (", ".join(playback_view.names(many=True)) or "none") + ")"),
    state.Field("dg_rec_speed", "fit", options=playback.SPEEDS),
    state.Field("dg_rec_pos", 0.0, lo=0.0, hi=1e7, volatile=True),
    state.Field("dg_rec_play", True),
]
PLOT = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2, "filename": "degradation"}}
ss = st.session_state


def experiment() -> Degradation:
    return Degradation(depths=tuple(sorted(ss.dg_depths)), steps=int(ss.dg_steps), batch_size=int(ss.dg_batch_size))


def start() -> None:
    try:
        ids = experiments.submit(live.manager(), experiment(), owner=live.session_owner())
    except (ConfigError, LimitError, ValueError, RuntimeError) as e:
        ss["dg_error"] = str(e)
        return
    ss["dg_error"] = ""
    ss["dg_rec"] = ""  # the experiment's own runs replace the recording
    ss["dg_jobs"] = ",".join(ids)


def stop(ids: list[str]) -> None:
    for i in ids:
        job = live.manager().get(i)
        if job is not None and not job.done:
            job.stop("the experiment was stopped")


def table(ids: list[str]) -> pd.DataFrame:
    """The experiment's rows; a job this server no longer holds keeps the row last seen (kept per session)."""
    seen = ss.setdefault("dg_rows", {})
    for i in ids:
        job = live.manager().get(i)
        if job is not None:
            job.snapshot()  # being looked at: the idle rule leaves the experiment's jobs alone
            seen[i] = experiments.job_row(job)
    return experiments.results(seen[i] for i in ids if i in seen)


def recording_table(name: str) -> pd.DataFrame:
    """The experiment's table as it stood at the recording's position (advanced while it plays)."""
    rec = playback_view.recording(name)
    at = playback_view.tick(rec, "dg_")
    rows = [experiments.result_row(r.model, r.train.steps, state_, step, m, run_dir=str(r.path))
            for r, (state_, step), (m, _) in zip(rec.runs, playback.states(rec, at), playback.visible(rec, at),
                                                 strict=True)]
    return experiments.results(rows)


def recording_view(name: str) -> None:
    rec = playback_view.recording(name)
    tab = recording_table(name)
    st.markdown(f"**Recording** · {rec.title} · {rec.made_on} · recorded time "
                f"{playback.fmt_clock(ss.dg_rec_pos)} of {playback.fmt_clock(rec.duration_s)} · "
                f"{playback.speed_label(ss.dg_rec_speed, rec.duration_s)}")
    draw(tab, recording=True)
    state.publish(FIELDS)  # the position moved in a fragment rerun: the URL keeps it
    if not playback_view.playing(rec, "dg_") and ss.pop("dg_rec_was_playing", False):
        st.rerun()


def close_recording() -> None:
    ss["dg_rec"] = ""


def results_view(ids: list[str]) -> None:
    tab = table(ids)
    missing = len(ids) - len(tab)
    if missing:
        st.warning(f"{missing} run{'s' * (missing > 1)} of this experiment are no longer on this server "
                   "(it restarted, or the link came from elsewhere).", icon=":material/link_off:")
    if tab.empty:
        return
    draw(tab)
    done, total = experiments.progress(tab)
    if done == total and ss.get("dg_was_active"):
        ss["dg_was_active"] = False
        st.rerun()  # a full rerun switches the refresh off and enables Run again


def draw(tab: pd.DataFrame, recording: bool = False) -> None:
    """Progress, figure, summary and table of the experiment's rows (live, or a recording's)."""
    done, total = experiments.progress(tab)
    st.progress(done / total, text=f"{done} of {total} runs done")
    running = tab[~tab["state"].isin(experiments.DONE)]
    if len(running) and not recording:
        now = running.iloc[0]
        st.caption(f":material/autorenew: {now['family']}-{now['depth']}: {now['state']}, step {now['step']:,} "
                   f"of {now['steps']:,}. This view refreshes every second. The runs go on if you switch pages, "
                   f"but runs nobody looks at for {live.manager().idle_s / 60:g} minutes are stopped: come back "
                   "to this page now and then.")
    steps = int(tab["steps"].max())
    st.plotly_chart(degradation_figure(tab, steps=steps), key="dg_figure", config=PLOT, width="stretch")
    st.caption(("Coloured lines: the recording's runs, measured on the machine named above" if recording else
                "Coloured lines: our runs, measured here")
               + " (final training loss = mean over the last tenth of the steps; test error on the held-out "
               "digits). Black diamonds: **the paper's figures, not ours**: "
               "He et al. 2016 (Table 6), ResNets trained for 64,000 steps on CIFAR-10, test error 8.75% (20 "
               "layers), 7.51% (32), 7.17% (44), 6.97% (56), 6.43% (110). The paper reports its plain nets "
               "only as curves (Fig. 6), where plain-56 ends with higher training and test error than plain-20: "
               "deeper was worse. Our budget is far shorter and our digits far easier, so compare the shapes, "
               "not the numbers.")
    summary(tab)
    shown = tab.assign(**{"test error": tab["test_error"], "train loss": tab["train_loss"]})
    st.dataframe(shown[["family", "depth", "state", "step", "steps", "train loss", "test error"]],
                 hide_index=True, width="stretch",
                 column_config={"train loss": st.column_config.NumberColumn(format="%.4f"),
                                "test error": st.column_config.NumberColumn(format="percent")})


def summary(tab: pd.DataFrame) -> None:
    """What the finished runs say, in words: the deepest net of each family against the shallowest."""
    lines = []
    for family in ("plain", "residual"):
        rows = tab[(tab["family"] == family) & tab["train_loss"].map(math.isfinite)].sort_values("depth")
        if len(rows) < 2:
            continue
        lo, hi = rows.iloc[0], rows.iloc[-1]
        word = "higher" if hi["train_loss"] > lo["train_loss"] else "lower"
        lines.append(f"- **{family}**: {family}-{hi['depth']} ended with a {word} training loss than "
                     f"{family}-{lo['depth']} ({hi['train_loss']:.3f} vs {lo['train_loss']:.3f}); test error "
                     f"{hi['test_error']:.1%} vs {lo['test_error']:.1%}.")
    if lines:
        st.markdown("**In these runs:**\n" + "\n".join(lines))


# ---------------------------------------------------------------- page

playback_view.arrived(PAGE, "dg_")  # from another page: the recording resumes where it was
notes = state.restore(PAGE, FIELDS)
st.title("Degradation")
st.caption("Is deeper always better? He et al. (2016) found that adding layers to a plain net made it worse, "
           "even on its own training data, while residual nets kept improving with depth. Train both "
           "families at several depths with the same short budget and see what happens here.")
state.show_notes(notes)

if "dg_pick" not in ss:
    ss["dg_pick"] = list(ss.dg_depths)
c1, c2, c3 = st.columns([2, 1, 1])
c1.multiselect("Depths (layers, 6n+2)", DEPTH_CHOICES, key="dg_pick",
               help="CIFAR layout of He et al.: 3 stages of 16/32/64 channels, n blocks each, zero-padding "
                    "shortcuts (option A), so a plain net and a residual net of one depth have the same parameters.")
c2.number_input("Steps each", 1, LIMITS.max_steps, step=50, key="dg_steps")
c3.number_input("Batch size", 1, LIMITS.max_batch_size, step=16, key="dg_batch_size")
if ss.dg_pick:
    ss["dg_depths"] = tuple(sorted(ss.dg_pick))
state.publish(FIELDS)

ids = [i for i in ss.dg_jobs.split(",") if i]
jobs = [live.manager().get(i) for i in ids]
active = any(j is not None and not j.done for j in jobs)
exp = experiment()
n = len(exp.depths) * len(exp.families)
est = experiments.estimate_seconds(exp, estimates.machine_speed())
st.caption(f"{n} nets, each {exp.steps:,} steps of {exp.batch_size} digits from mnist-5k "
           f"({exp.steps * exp.batch_size:,} images), SGD with Nesterov momentum, one-cycle "
           f"learning rate peaking at {exp.lr:g}, seed {exp.seed} for all. They queue behind other runs and train "
           "one after another" + (f"; {speed.fmt_duration(est)} in all on this machine "
                                  f"({estimates.basis()})." if est >= 1 else "."))
b = st.columns([2, 1, 3])  # room for the button's whole label
b[0].button("Run the experiment", icon=":material/play_arrow:", key="dg_start", type="primary",
            disabled=active or not ss.dg_pick, on_click=start)
b[1].button("Stop", icon=":material/stop:", key="dg_stop", disabled=not active, on_click=stop, args=(ids,))
if ss.get("dg_error"):
    st.error(ss["dg_error"], icon=":material/block:")

recordings = playback_view.names(many=True)
if recordings:
    st.selectbox("Or play a recording of the experiment", ["", *recordings], key="dg_rec",
                 format_func=playback_view.label, on_change=lambda: ss.update(dg_rec_pos=0.0, dg_rec_play=True),
                 help="Real runs of this experiment recorded with this app on a named machine and date, shipped "
                      "with it (recordings/), replayed at any speed.")
if ss.dg_rec and playback_view.recording(ss.dg_rec) is not None:
    rec = playback_view.recording(ss.dg_rec)
    playback_view.banner(rec)
    if rec.damaged:
        st.error(f"The recording cannot be played: {rec.damaged}", icon=":material/block:")
    else:
        playback_view.controls(rec, close_recording, "dg_")
        if playback_view.playing(rec, "dg_"):
            ss["dg_rec_was_playing"] = True
            st.fragment(run_every=0.5)(recording_view)(ss.dg_rec)
        else:
            recording_view(ss.dg_rec)
elif not ids:
    st.info("Press **Run the experiment** to queue the nets. The figure fills in as they finish.",
            icon=":material/stacked_line_chart:")
elif active:
    ss["dg_was_active"] = True
    st.fragment(run_every=1.0)(results_view)(ids)
else:
    results_view(ids)
