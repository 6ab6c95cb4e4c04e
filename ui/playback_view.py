"""A shipped recording played on the Train page's live view (resnet_core/playback.py does the arithmetic).

The page keeps the recording's name, speed, position and play/pause in the URL (its Fields), so
a page switch or a reload finds the same moment; this module draws the banner that says it is a
recording, the controls, and the live view's own charts fed with what the player says is visible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st

from resnet_core import playback
from resnet_core.config import ModelConfig, TrainConfig, net_label
from resnet_core.figures.training import curves_figure
from ui import state, train_view

ss = st.session_state
_TICK = "rec_tick"  # after the page prefix: wall clock of the last advance (not in the URL: it means nothing elsewhere)


@dataclass
class RecordedNet:
    """What the live view's charts read of a job, taken from a record."""

    id: str
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    layers: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)


@st.cache_resource(max_entries=8, show_spinner=False)
def _load(path: str, mtime: float) -> playback.Recording:
    return playback.load_recording(path)


def recording(name: str) -> playback.Recording | None:
    """The named recording, read once per server (and again if its folder changes)."""
    if name not in playback.list_recordings():
        return None
    path = playback.root() / name
    return _load(str(path), (path / playback.INFO_FILE).stat().st_mtime)


def names(many: bool = False) -> list[str]:
    """The recordings the Train view can play (one run, or a twin pair); with `many`, the sets of
    runs trained one after another that the Degradation page plays."""
    return [n for n in playback.list_recordings()
            if (r := recording(n)) is not None and (len(r.runs) > 2) == many]


def label(name: str) -> str:
    rec = recording(name) if name else None
    return "none" if not name else (rec.title if rec is not None else name)


def banner(rec: playback.Recording) -> None:
    what = "a run" if len(rec.runs) <= 2 else f"{len(rec.runs)} runs"
    st.info(f"**Recording** ({rec.made_on}): {rec.title}. Nothing trains now: this replays {what} the app "
            f"recorded, at the speed chosen below. Its settings: {rec.settings_text()}.{_load_note(rec)} "
            f"Remade by `bench/make_recordings.py`.", icon=":material/movie:")


def _load_note(rec: playback.Recording) -> str:
    """The load it was made under: its times are that machine's, busy as it was."""
    loads = [x[0] for x in (rec.info.get("load_before"), rec.info.get("load_after"))
             if isinstance(x, list) and x and isinstance(x[0], (int, float))]
    return f" Load average while it was made: {max(loads):.1f} (the machine was shared)." if loads else ""


def arrived(page: str, p: str) -> None:
    """Called before the page's restore: coming from another page, the player resumes where it was."""
    if state.last_page() != page:
        ss.pop(p + _TICK, None)


def controls(rec: playback.Recording, close, p: str = "tr_") -> None:
    """Speed, Play/Pause, Restart, Close; `p` is the page's key prefix (tr_, dg_)."""
    c = st.columns([3, 1, 1, 1])
    c[0].selectbox("Playback speed", playback.SPEEDS, key=p + "rec_speed",
                   format_func=lambda s: playback.speed_label(s, rec.duration_s),
                   help="Recorded time per second of playing.")
    if playing(rec, p):
        c[1].button("Pause", icon=":material/pause:", key=p + "rec_pause", on_click=_set_play, args=(p, False))
    else:
        c[1].button("Play", icon=":material/play_arrow:", key=p + "rec_resume", on_click=_play, args=(rec, p))
    c[2].button("Restart", icon=":material/replay:", key=p + "rec_restart", on_click=_restart, args=(p,))
    c[3].button("Close", icon=":material/close:", key=p + "rec_close", on_click=close)


def _set_play(p: str, on: bool) -> None:
    ss[p + "rec_play"] = on
    ss.pop(p + _TICK, None)


def _play(rec: playback.Recording, p: str) -> None:
    if ss[p + "rec_pos"] >= rec.duration_s:
        _restart(p)
    _set_play(p, True)


def _restart(p: str) -> None:
    ss[p + "rec_pos"] = 0.0
    if p == "tr_":
        ss["tr_scrub"] = 0  # follow the replay from its start
    _set_play(p, True)


def playing(rec: playback.Recording, p: str = "tr_") -> bool:
    return bool(ss.get(p + "rec_play")) and ss.get(p + "rec_pos", 0.0) < rec.duration_s


def tick(rec: playback.Recording, p: str = "tr_") -> float:
    """Advance the position by the wall time since the last tick (while playing); the position."""
    now, key = time.monotonic(), p + "rec_pos"
    ss[key] = min(float(ss[key]), rec.duration_s)  # a link may ask for a moment past the end
    if playing(rec, p):
        ss[key] = round(playback.advance(float(ss[key]), ss.get(p + _TICK), now, ss[p + "rec_speed"],
                                         rec.duration_s), 2)
        ss[p + _TICK] = now
        if ss[key] >= rec.duration_s:
            ss[p + "rec_play"] = False
    else:
        ss.pop(p + _TICK, None)
    return float(ss[key])


def nets(rec: playback.Recording) -> list[RecordedNet]:
    return [RecordedNet(f"rec-{rec.name}-{r.name}", r.model, r.train, list(r.meta.get("layers", [])),
                        list(r.meta.get("blocks", []))) for r in rec.runs]


def status_row(rec: playback.Recording, net: RecordedNet, metrics: pd.DataFrame, name: str | None) -> None:
    step = int(metrics["step"].max()) if len(metrics) else 0
    train = metrics[metrics["split"] == "train"]
    test = metrics[metrics["split"] == "test"]
    ended = ss.tr_rec_pos >= rec.duration_s
    cells = [("Recording", "ended" if ended else "playing" if playing(rec) else "paused"),
             ("Step", f"{step:,} / {net.train_cfg.steps:,}"),
             ("Train loss", f"{train['loss'].iloc[-1]:.3f}" if len(train) else "–"),
             ("Test accuracy", f"{test['accuracy'].iloc[-1]:.1%}" if len(test) else "–"),
             ("Recorded time", f"{playback.fmt_clock(ss.tr_rec_pos)} of {playback.fmt_clock(rec.duration_s)}")]
    train_view.status_cells(cells, name)


def view(name: str, fields) -> None:
    """The recording's live view at the current position; run in the page's fragment while playing."""
    rec = recording(name)
    if rec is None or rec.damaged:
        return
    at = tick(rec)
    shown = nets(rec)
    rows = playback.visible(rec, at)
    if len(shown) > 2:  # a set of runs one after another (degradation): the Train view shows two at most
        st.caption("This recording holds more runs than the Train view shows; it plays on the Degradation page.")
        return
    twins = len(shown) > 1
    st.markdown(f"**Recording** · {rec.title} · {rec.made_on} · "
                f"{playback.speed_label(ss.tr_rec_speed, rec.duration_s)}")
    for net, (m, _) in zip(shown, rows, strict=True):
        status_row(rec, net, m, train_view.NAMES[train_view.family(net)] if twins else None)
    metrics = (pd.concat([m.assign(run=train_view.family(n)) for n, (m, _) in zip(shown, rows, strict=True)],
                         ignore_index=True) if twins else rows[0][0])
    fig = curves_figure(metrics)
    fig.update_layout(title={"text": f"Recording · {net_label(shown[0].model_cfg)} · {rec.made_on}", "x": 0.005,
                             "xanchor": "left", "y": 0.985, "yanchor": "top", "yref": "container",
                             "font": {"size": 13}},
                      margin={"t": 75})  # the title on a line of its own, above the legend
    st.plotly_chart(fig, key="tr_curves", config=train_view.plot_config("recording-curves"), width="stretch")
    c1, c2 = st.columns([3, 1])
    kind = c1.radio("Heatmap", tuple(train_view.KIND_LABELS), key="tr_kind", format_func=train_view.KIND_LABELS.get,
                    horizontal=True)
    show_bn = c2.toggle("BatchNorm layers", key="tr_show_bn", disabled=kind in ("act_grad", "shortcut_share"))
    grads = [g for _, g in rows]
    if not any(len(g) for g in grads):
        st.caption("Recording: the first logged step is a moment away.")
    else:
        step = train_view.scrubber(shown, grads)
        train_view.heatmaps(shown, grads, kind, show_bn, step)
        if kind != "shortcut_share":
            train_view.diagrams(shown, grads, kind, step)

    state.publish(fields)  # the position moved in a fragment rerun: the URL keeps it
    if not playing(rec) and ss.pop("tr_rec_was_playing", False):
        st.rerun()  # a full rerun switches the refresh off and shows Play again


def show(name: str, fields, close) -> bool:
    """The whole recording part of the page; False where `name` is no recording (nothing drawn)."""
    rec = recording(name)
    if rec is None:
        return False
    if rec.damaged:
        st.error(f"The recording {name!r} cannot be played: {rec.damaged}", icon=":material/block:")
        return True
    banner(rec)
    controls(rec, close)
    if playing(rec):
        ss["tr_rec_was_playing"] = True
        st.fragment(run_every=0.5)(view)(name, fields)
    else:
        view(name, fields)
    return True
