"""The Train page's live view: one run, or a residual net and its plain twin side by side, and the
time scrubber that replays how their gradients changed. Drawn inside the page's fragment, which
reruns every half second to 16 s while a run trains (resnet_core/refresh.py).
"""

from __future__ import annotations

import os
import time

import pandas as pd
import streamlit as st

from resnet_core import compare, refresh
from resnet_core.anatomy import describe
from resnet_core.config import ModelConfig
from resnet_core.figures.diagram import architecture_figure
from resnet_core.figures.split import share_heatmap
from resnet_core.figures.training import curves_figure, heatmap_figure, log_ratio_heatmap, shared_zrange
from resnet_core.jobs import Job
from ui import live, state

KIND_LABELS = {"weight_grad": "weight gradients ‖∂L/∂W‖", "act_grad": "activation gradients ‖∂L/∂h‖",
               "update_ratio": "update ratio ‖ΔW‖/‖W‖", "shortcut_share": "shortcut's share at each addition"}
SHORT = {"weight_grad": "‖∂L/∂W‖", "act_grad": "‖∂L/∂h‖", "update_ratio": "‖ΔW‖/‖W‖",
         "shortcut_share": "shortcut's share"}
SHARE_NOTE = ("The shortcut's share of the gradient at each block's fork, ‖shortcut part‖ / (‖shortcut part‖ + "
              "‖branch part‖), measured on every logged step: 100% means all of the gradient reaching the block "
              "came through the shortcut, 0% all of it back through the branch (a plain net has no shortcut).")
NAMES = {"residual": "Residual net", "plain": "Plain twin"}
ss = st.session_state


def plot_config(name: str) -> dict:
    """The chart's own camera button saves a PNG at twice the screen resolution."""
    return {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2, "filename": f"train-{name}"}}


@st.cache_data(max_entries=32, show_spinner=False)
def anatomy(cfg: ModelConfig):
    return describe(cfg)


def family(job: Job) -> str:
    return "residual" if job.model_cfg.skip else "plain"


def jobs_shown(job: Job | None) -> list[Job]:
    """The followed job, or both twins (residual first) when it has one."""
    if job is None:
        return []
    twin = live.manager().get(job.twin) if job.twin else None
    if twin is None:
        return [job]
    return sorted([job, twin], key=lambda j: family(j) != "residual")


def active(jobs: list[Job]) -> bool:
    return any(not j.done for j in jobs)


def status_cells(cells: list[tuple[str, str]], name: str | None = None) -> None:
    """A row of small labels over bold values (a live run's status, a recording's), the net's name first."""
    if name:
        cells = [("Net", name), *cells]
    for col, (label, value) in zip(st.columns(len(cells)), cells, strict=True):
        col.markdown(f"<small>{label}</small><br>**{value}**", unsafe_allow_html=True)


def status_row(snap: dict, name: str | None = None) -> None:
    rate = snap["samples_per_s"]
    place = snap["queue_place"]
    eta = live.fmt_eta(snap["eta_s"]) if snap["state"] in ("running", "paused") else "–"
    cells = [("State", snap["state"]), ("Step", f"{snap['step']:,} / {snap['steps']:,}"),
             ("Samples/s", f"{rate:,.0f}" if rate == rate else "–"), ("ETA", eta),
             ("Device", snap["device"] or "–"), ("Queue place", str(place) if place else "–")]
    acc = snap.get("test_accuracy")
    if acc is not None and acc == acc:  # the test split's figure, once evaluated (finally at the end)
        cells.insert(3, ("Test accuracy", f"{acc:.1%}"))
    status_cells(cells, name)
    if snap["message"]:
        (st.error if snap["state"] in ("failed", "diverged") else st.info)(
            f"{name}: {snap['message']}" if name else snap["message"])


def layer_order(job: Job, kind: str, show_bn: bool) -> list[str]:
    if kind in ("act_grad", "shortcut_share"):
        return list(job.blocks)
    return [n for n in job.layers if show_bn or ".bn" not in n and n != "bn1" and "downsample.1" not in n]


def scrubber(jobs: list[Job], grads: list[pd.DataFrame]) -> int | None:
    """The time scrubber: the step shown, between 1 and the run's last step.

    Its range is the whole run from the start, and any position past the latest logged step means
    "the latest". So a new run starts with the slider at its end and the view follows training
    without the page ever setting the slider: setting a widget's value while a half-second refresh
    runs races with the browser, which may send back the value of the refresh before (measured: it
    stopped following after a few steps), and a new range would make a new widget, dropping a drag.
    """
    logged = [int(g["step"].max()) for g in grads if len(g)]
    if not logged:
        return None
    latest, last = max(logged), max(j.train_cfg.steps for j in jobs)
    if last <= 1:
        return latest
    if not 1 <= int(ss.get("tr_scrub", 0)) <= last:  # 0: a new run (or a step of another run): follow it
        ss["tr_scrub"] = last
    chosen = int(ss["tr_scrub"])  # what the slider below returns in this run
    shown = min(chosen, latest)
    following = chosen >= latest and latest < last
    if following:  # the handle sits at the run's end, past the step shown: its number would contradict the label
        st.html('<style>.st-key-tr_scrub [data-testid="stSliderThumbValue"] { visibility: hidden; }</style>')
    st.slider(f"Time scrubber: step {shown:,}" + (" (the latest: drag left to go back in time)" if following else ""),
              1, last, key="tr_scrub",
              help="Moves the cursor on the heatmaps and recolours the diagrams with the gradients of the last "
                   "step logged at or before it. Past the latest step it follows training as it goes.")
    return shown


def diagrams(jobs: list[Job], grads: list[pd.DataFrame], kind: str, step: int | None) -> None:
    """Each net's diagram coloured by the chosen step's gradients, on one colour scale for all steps and nets."""
    zrange = _join([block_range(j, g, kind) for j, g in zip(jobs, grads, strict=True)])
    cols = st.columns(len(jobs))
    for col, job, g in zip(cols, jobs, grads, strict=True):
        at = compare.step_at(g, kind, step) if step is not None else None
        values = live.block_values(g, kind, job.blocks, step=at) if at is not None else {}
        who = f"{NAMES[family(job)]} · " if len(jobs) > 1 else ""
        title = f"{who}step {at:,}, coloured by {SHORT[kind]}" if at is not None else "no gradients logged yet"
        fig = architecture_figure(job.model_cfg, anatomy(job.model_cfg), block_values=values, title=title,
                                  value_label=SHORT[kind] + " per block", max_per_row=6 if len(jobs) > 1 else None)
        compare.share_diagram_scale(fig, zrange)
        suffix = "" if family(job) == "residual" or len(jobs) == 1 else "_plain"
        col.plotly_chart(fig, key=f"tr_diagram{suffix}", config=plot_config(f"diagram{suffix}"), width="stretch")


def block_range(job: Job, grads: pd.DataFrame, kind: str) -> tuple[float, float] | None:
    """(smallest, largest) per-block value over every logged step: the diagram's colour scale.

    Kept per job and kind and extended with the rows added since the last refresh (a run's rows only
    ever grow at the end, a whole logged step at a time), so a long live run costs the same each
    refresh: combining every step's layers into blocks anew took ~70 ms a net at 2,000 steps.
    """
    memo = ss.setdefault("tr_range_memo", {})
    done, known = memo.get((job.id, kind), (0, None))
    if done > len(grads):  # the history was rebuilt (e.g. read back from the record): start again
        done, known = 0, None
    if done < len(grads):
        known = _join([known, compare.value_range([compare.block_series(grads.iloc[done:], kind, job.blocks)])])
        memo[(job.id, kind)] = (len(grads), known)
    return known


def _join(ranges: list[tuple[float, float] | None]) -> tuple[float, float] | None:
    got = [r for r in ranges if r is not None]
    return (min(r[0] for r in got), max(r[1] for r in got)) if got else None


def share_heatmaps(jobs: list[Job], grads: list[pd.DataFrame], step: int | None) -> None:
    """The shortcut's share on its own fixed 0-100% scale, side by side for twins (no log ratio: plain is 0)."""
    cols = st.columns(len(jobs)) if len(jobs) > 1 else [st.container()]
    for col, job, g in zip(cols, jobs, grads, strict=True):
        title = NAMES[family(job)] if len(jobs) > 1 else ""
        key = "tr_heatmap" if family(job) == "residual" or len(jobs) == 1 else "tr_heatmap_plain"
        col.plotly_chart(share_heatmap(g, list(job.blocks), cursor_step=step, title=title), key=key,
                         config=plot_config(key[3:]), width="stretch")
    st.caption(SHARE_NOTE)


def heatmaps(jobs: list[Job], grads: list[pd.DataFrame], kind: str, show_bn: bool, step: int | None) -> None:
    if kind == "shortcut_share":
        share_heatmaps(jobs, grads, step)
        return
    if len(jobs) == 1:
        fig = heatmap_figure(grads[0], kind, layer_order(jobs[0], kind, show_bn), cursor_step=step)
        st.plotly_chart(fig, key="tr_heatmap", config=plot_config("heatmap"), width="stretch")
        return
    zrange = shared_zrange(*grads, kind=kind)  # one colour scale: the same colour is the same value in both
    for col, job, g in zip(st.columns(2), jobs, grads, strict=True):
        fig = heatmap_figure(g, kind, layer_order(job, kind, show_bn), zrange=zrange, cursor_step=step)
        fig.update_layout(title={"text": NAMES[family(job)], "font": {"size": 14}, "x": 0.01},
                          margin={"t": 60, "l": 90})
        key = "tr_heatmap" if family(job) == "residual" else "tr_heatmap_plain"
        col.plotly_chart(fig, key=key, config=plot_config(key[3:]), width="stretch")
    plain_rows = set(layer_order(jobs[1], kind, show_bn))
    common = [n for n in layer_order(jobs[0], kind, show_bn) if n in plain_rows]
    st.markdown(f"**Log ratio, residual over plain** · {SHORT[kind]}")
    fig = log_ratio_heatmap(grads[0], grads[1], kind, common, cursor_step=step, names=("residual", "plain"))
    st.plotly_chart(fig, key="tr_ratio", config=plot_config("log-ratio"), width="stretch")
    st.caption(f"log10 of the residual net's {SHORT[kind]} divided by the plain twin's, layer by layer and step by "
               "step: blue where the residual net's is larger, red where the plain net's is, white where they "
               "are equal. Both nets started from the same weights and see the same batches.")


def preview(cfg: ModelConfig) -> None:
    """The net that Start will train, before it has any gradients to colour it.

    Drawn with the page's first run. Drawing it a moment later instead, by a fragment that reran the
    whole app 0.8 s after the first paint, let the Start button come sooner, but on a busy machine
    that rerun overtook the first one in the browser: the tab then showed the widgets' defaults
    (ResNet-18, 1 step) instead of the session's values, and Start trained what it showed.
    """
    title = "The net Start will train (coloured by its gradients once it runs)"
    fig = architecture_figure(cfg, anatomy(cfg), title=title)
    st.plotly_chart(fig, key="tr_preview", config=plot_config("diagram"), width="stretch")


def refresh_s(jobs: list[Job]) -> float:
    """How often the live view redraws: every 2 s while a run only waits in the queue (a whole class's
    queued runs poll at once, and at half a second their redraws took the server's every cycle from
    the one run training: bench/load_test.py); while it trains, at the interval the live view chose
    from the server's live views' redraw time together and the machine's load (resnet_core/refresh.py),
    from half a second (RESNET_LIVE_REFRESH_S) on a machine with room to 16 s on a busy one or with a
    class watching. A run asked to stop is looked at every half second (the base) until it has stopped,
    so the page shows "stopped" within a second of the click, however slowly it was redrawing."""
    if all(j.state == "queued" for j in jobs):
        return 2.0
    return refresh.base_interval() if any(j.stopping for j in jobs) else _training_refresh_s()


def _training_refresh_s() -> float:
    return float(ss.get("tr_refresh_s") or refresh.base_interval())


def table_refresh_s(jobs: list[Job]) -> float | None:
    """The runs table, while something trains: four times slower than the live view, at least every 2 s
    (it reads the records on disk, and the browser redraws the whole table)."""
    return max(2.0, 4 * refresh_s(jobs)) if jobs and active(jobs) else None


def _pace(started: float) -> None:
    """After a live redraw that began at `started` (perf_counter): move the refresh to the interval
    that the server's live views' redraw time together (this one's included) and the load average
    call for; the new interval takes a full rerun."""
    took = time.perf_counter() - started
    current = _training_refresh_s()  # the interval the page's fragment was given
    total = live.redraws().record(live.view_id(), took, current)
    wanted = refresh.live_interval(total, os.getloadavg()[0], os.cpu_count() or 1, base=refresh.base_interval())
    now = time.monotonic()
    if refresh.should_switch(current, wanted, now - ss.get("tr_refresh_at", 0.0)):
        ss["tr_refresh_s"], ss["tr_refresh_at"] = wanted, now
        st.rerun()  # a full rerun gives the fragment its new run_every


def live_view(job_id: str, fields: list[state.Field]) -> None:
    """Status, curves, heatmaps, scrubber and diagrams of the followed run (and its twin)."""
    started = time.perf_counter()
    jobs = jobs_shown(live.manager().get(job_id))
    if not jobs:
        return
    twins = len(jobs) > 1
    for job in jobs:
        status_row(job.snapshot(), NAMES[family(job)] if twins else None)
    if all(j.state == "queued" for j in jobs):  # nothing to chart yet: the status row is all
        ss["tr_was_queued"] = True
        st.caption("Waiting in the queue: the charts appear as soon as the run starts.")
        return
    if ss.pop("tr_was_queued", False):
        st.rerun()  # it left the queue: a full rerun gives the fragment the live interval from now on
    histories = [live.history(job) for job in jobs]
    metrics = (pd.concat([h.metrics.assign(run=family(j)) for j, h in zip(jobs, histories, strict=True)],
                         ignore_index=True) if twins else histories[0].metrics)
    st.plotly_chart(curves_figure(metrics), key="tr_curves", config=plot_config("curves"), width="stretch")
    c1, c2 = st.columns([3, 1])
    kind = c1.radio("Heatmap", tuple(KIND_LABELS), key="tr_kind", format_func=KIND_LABELS.get, horizontal=True)
    show_bn = c2.toggle("BatchNorm layers", key="tr_show_bn", disabled=kind in ("act_grad", "shortcut_share"),
                        help="BatchNorm scales have gradients of another size than convolutions; "
                             "hidden by default so the rows compare like with like.")
    grads = [h.grads for h in histories]
    step = scrubber(jobs, grads)
    heatmaps(jobs, grads, kind, show_bn, step)
    if kind != "shortcut_share":  # the diagrams' colours are log magnitudes; a share has its heatmap alone
        diagrams(jobs, grads, kind, step)
    state.publish(fields)  # in a fragment rerun the widgets above changed without the page's own publish
    if not active(jobs):
        live.redraws().forget(live.view_id())
        if ss.get("tr_was_active"):
            ss["tr_was_active"] = False
            st.rerun()  # a full rerun switches the refresh off
    else:
        _pace(started)
