"""The shipped recordings played in AppTest: labelled as recordings, the player's moment on screen and in the URL."""

from __future__ import annotations

import base64
import time

import numpy as np

from resnet_core import playback
from tests.apptest import charts, follow_link, rerun
from ui.classroom import DEMOS, links

BY_KEY = {d.key: d for d in DEMOS}


def arr(v) -> list:
    """A plotly JSON array: a list, or numpy's bytes as {"bdata": base64, "dtype": ...}."""
    if isinstance(v, dict):
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return list(v)


def cells(at) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("<small>")]


def test_the_train_page_plays_the_twin_recording_with_its_label_scrubber_and_speed_in_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path))
    demo = BY_KEY["twin56"]
    rec = playback.load_recording(playback.root() / "twin56")
    mid = round(rec.duration_s / 2, 2)
    at = follow_link("train", {**demo.recording_query(), "tr_rec_pos": str(mid), "tr_rec_play": "0",
                               "tr_rec_speed": "40x"}, timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    banner = " ".join(i.value for i in at.info)
    assert "**Recording**" in banner and rec.made_on in banner and "steps 200" in banner and "batch size 64" in banner
    assert "Press **Start**" not in banner  # the recording has the view, not the empty live view
    shown = playback.visible_steps(rec, mid)
    assert 0 < shown[0] < 200 and shown[1] in (shown[0] - 1, shown[0])  # lockstep: the plain net steps second
    assert f"<small>Step</small><br>**{shown[0]:,} / 200**" in cells(at)
    assert f"<small>Recorded time</small><br>**{playback.fmt_clock(mid)} of {playback.fmt_clock(rec.duration_s)}**" \
        in cells(at)
    logged = [int(r.grads["step"][r.grads["step"] <= s].max()) for r, s in zip(rec.runs, shown, strict=True)]
    assert at.slider(key="tr_scrub").label.startswith(f"Time scrubber: step {max(logged):,}")
    figs = charts(at)
    assert "Recording" in figs["tr_curves"]["layout"]["title"]["text"]
    assert max(arr(figs["tr_heatmap"]["data"][0]["x"])) == logged[0]  # the heatmaps stop at the moment played
    assert max(arr(figs["tr_heatmap_plain"]["data"][0]["x"])) == logged[1]
    assert {"tr_heatmap_plain", "tr_ratio"} <= set(figs)
    assert at.query_params["tr_rec"] == "twin56" and at.query_params["tr_rec_speed"] == "40x"
    assert float(at.query_params["tr_rec_pos"]) == mid

    at.button(key="tr_rec_resume").click()
    t0 = time.monotonic()
    rerun(at)  # Play: the first tick starts the clock
    assert at.session_state["tr_rec_pos"] == mid
    time.sleep(0.6)
    rerun(at)
    played = at.session_state["tr_rec_pos"] - mid
    assert 0.6 * 40 <= played <= (time.monotonic() - t0) * 40 + 0.05  # 40x: 40 recorded seconds a second
    assert float(at.query_params["tr_rec_pos"]) == at.session_state["tr_rec_pos"]

    pos = at.session_state["tr_rec_pos"]
    at.switch_page("pages/compare.py").run()
    at.switch_page("pages/train.py")
    rerun(at)  # back after more than the player's gap: it resumes where it was
    assert at.session_state["tr_rec"] == "twin56" and at.session_state["tr_rec_speed"] == "40x"
    assert at.session_state["tr_rec_pos"] == pos
    at.button(key="tr_rec_close").click()
    rerun(at)
    assert at.query_params["tr_rec"] == "" and not any("**Recording**" in i.value for i in at.info)


def test_the_degradation_page_plays_the_experiments_recording(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path))
    demo = BY_KEY["degradation"]
    rec = playback.load_recording(playback.root() / "degradation")
    at_s = round((rec.offsets[2] + rec.offsets[3]) / 2, 2)  # the third net training, two finished
    at = follow_link("degradation", {**demo.recording_query(), "dg_rec_pos": str(at_s), "dg_rec_play": "0"},
                     timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert any("**Recording**" in i.value and rec.made_on in i.value for i in at.info)
    table = at.dataframe[0].value
    want = {(r.model.skip, r.model.depth): s for r, s in zip(rec.runs, playback.states(rec, at_s), strict=True)}
    got = {(f == "residual", int(d)): (s, int(n)) for f, d, s, n in
           zip(table["family"], table["depth"], table["state"], table["step"], strict=True)}
    assert got == want
    assert sorted(s for s, _ in want.values()) == ["finished"] * 2 + ["queued"] * 5 + ["running"]


def test_every_training_demo_links_its_quick_budget_and_its_recording():
    for key in ("twin56", "degradation"):
        labels = [label for label, _, _ in links(BY_KEY[key])]
        assert labels == [BY_KEY[key].title, "… quick: about a minute", "… or play its recording"]
        caption = links(BY_KEY[key])[2][2]
        assert caption.startswith("**Recording** made on ") and "replayed in 30 s" in caption


def test_a_recording_that_is_not_shipped_is_refused_with_the_names_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path))
    at = follow_link("train", {"tr_rec": "degradation", "tr_rec_speed": "3x"}, timeout=120)  # not a Train recording
    notes = " ".join(w.value for w in at.warning)
    assert "tr_rec='degradation' was ignored (allowed: the name of a shipped recording (twin56))" in notes
    assert "tr_rec_speed='3x' was ignored (allowed: one of 1x, 10x, 40x, 100x, fit)" in notes
    assert at.session_state["tr_rec"] == "" and not any("**Recording**" in i.value for i in at.info)
