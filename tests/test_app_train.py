"""The Train page through AppTest: start a small run, watch metrics arrive, pause, stop."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ui import live

APP = Path(__file__).resolve().parents[1] / "app.py"


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path / "runs"))
    live.manager.clear()  # a fresh JobManager writing under this test's runs folder
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("pages/train.py").run()
    yield at
    live.manager().shutdown()
    live.manager.clear()


def small_run(at: AppTest, steps: int = 40) -> None:
    at.number_input(key="tr_steps").set_value(steps)
    at.number_input(key="tr_batch_size").set_value(16)
    at.run()


def wait_until(at: AppTest, predicate, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        at.run()
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError("condition not reached in time")


def current_job():
    jobs = live.manager().jobs()
    assert len(jobs) == 1
    return jobs[0]


def test_start_watch_metrics_appear_then_stop(app):
    small_run(app, steps=400)
    assert not app.exception
    assert "Press **Start**" in app.info[0].value
    preview = app.get("plotly_chart")  # before Start: the diagram of the net that Start will train
    assert len(preview) == 1 and "The net Start will train" in preview[0].proto.spec
    assert len(set(re.findall(r"layer\d\.\d+", preview[0].proto.spec))) == 9  # ResNet-20: 3 stages of 3 blocks
    app.button(key="tr_start").click().run()
    assert not app.exception
    job = current_job()
    assert app.session_state["tr_job"] == job.id
    assert app.query_params["tr_job"] in (job.id, [job.id])  # the URL reattaches a reload or another tab
    wait_until(app, lambda: len(app.session_state["_live_history"][job.id].metrics) >= 3)
    charts = [c for c in app.get("plotly_chart")]
    assert len(charts) == 3  # curves, heatmap, diagram
    history = app.session_state["_live_history"][job.id]
    assert len(history.metrics) >= 3 and (history.metrics["split"] == "train").all()
    assert set(history.grads["kind"]) == {"weight_grad", "weight_norm", "update_ratio", "act_grad",
                                          "shortcut_share"}

    app.button(key="tr_pause").click().run()
    assert job.state == "paused"
    step = job.step
    time.sleep(1.0)
    assert job.step <= step + 1  # paused within a step
    app.button(key="tr_resume").click().run()
    assert job.state == "running"

    app.button(key="tr_stop").click().run()
    deadline = time.time() + 5
    while not job.done and time.time() < deadline:
        time.sleep(0.1)
    assert job.state == "stopped"
    app.run()
    assert not app.exception
    assert any("**stopped**" in m.value for m in app.markdown)
    assert app.get("dataframe")  # the runs table lists the stopped run


def test_the_first_view_draws_the_preview_with_the_page_and_needs_no_second_run(tmp_path, monkeypatch):
    """The diagram of the net Start will train comes with the page's first run: an app-wide rerun
    a moment later (how it was drawn before) could overtake that run in a busy browser, which then
    showed the widgets' defaults and trained them on Start (ui/train_view.preview)."""
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("pages/train.py").run()
    assert at.button(key="tr_start")
    assert [c.proto.spec.count("The net Start will train") for c in at.get("plotly_chart")] == [1]
    assert at.selectbox(key="tr_preset").value == "resnet20" and at.number_input(key="tr_steps").value == 300


def test_bad_url_values_fall_back_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.query_params["tr_steps"] = "-5"
    at.query_params["tr_dataset"] = "imagenet"
    at.query_params["tr_job"] = "../../etc"
    at.switch_page("pages/train.py").run()
    assert not at.exception
    notes = " ".join(w.value for w in at.warning)
    assert "tr_steps" in notes and "tr_dataset" in notes and "tr_job" in notes
    assert at.number_input(key="tr_steps").value == 300
    assert at.selectbox(key="tr_dataset").value == "mnist-5k"


def test_a_refused_request_says_which_limit(app, monkeypatch):
    from resnet_core import limits

    tight = limits.from_env({"RESNET_MAX_TRAIN_MEMORY_MB": "1"})
    live.manager().limits = tight
    app.button(key="tr_start").click().run()
    assert not app.exception
    assert "max_train_memory_mb" in app.error[0].value
    assert live.manager().jobs() == []


def test_the_runs_table_lists_saved_records_and_sees_a_new_one(tmp_path, monkeypatch):
    from tests.test_exports import write_record

    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("RESNET_RUNS_DIR", str(root))
    write_record(root, "saved-first", skip=True, test_accuracy=0.75)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("pages/train.py").run()
    assert list(at.dataframe[0].value["run"]) == ["saved-first"]
    at.run()  # a second view reads the listing shared by every session
    assert list(at.dataframe[0].value["run"]) == ["saved-first"]
    time.sleep(0.02)  # a new folder moves the listing's stamp
    write_record(root, "saved-second", skip=False, test_accuracy=0.5)
    at.run()
    assert sorted(at.dataframe[0].value["run"]) == ["saved-first", "saved-second"]
    assert not at.exception


def test_shortcut_share_heatmap_shows_the_logged_shares(app):
    from tests.apptest import charts

    small_run(app, steps=20)
    app.button(key="tr_start").click().run()
    job = current_job()
    wait_until(app, lambda: job.done, timeout=180)
    app.radio(key="tr_kind").set_value("shortcut_share").run()
    assert not app.exception
    history = app.session_state["_live_history"][job.id]
    logged = history.grads[history.grads["kind"] == "shortcut_share"]
    assert len(logged) and logged["value"].between(0, 1).all() and logged["value"].nunique() > 1
    shown = charts(app)
    assert "tr_diagram" not in shown  # the diagram colours magnitudes: not drawn for a share
    (heat,) = [t for t in shown["tr_heatmap"]["data"] if t["type"] == "heatmap"]
    assert heat["zmin"] == 0 and heat["zmax"] == 1
    last = logged[logged["step"] == logged["step"].max()].set_index("layer")["value"]
    assert heat["y"] == list(job.blocks)
    assert [row[-1] for row in heat["z"]] == pytest.approx([last[b] for b in job.blocks], abs=1e-5)


def test_runs_table_accuracy_reads_as_a_percentage_and_private_runs_hide_other_browsers_records(tmp_path,
                                                                                                 monkeypatch):
    from tests.test_exports import write_record

    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("RESNET_RUNS_DIR", str(root))
    write_record(root, "someone-elses", skip=True, test_accuracy=0.75)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("pages/train.py").run()
    table = at.dataframe[0].value
    assert list(table["run"]) == ["someone-elses"] and list(table["test accuracy"]) == ["75.0%"]

    monkeypatch.setenv("RESNET_PRIVATE_RUNS", "1")  # the server option: each browser sees only its own
    at.run()
    assert not at.dataframe and any("No runs yet" in c.value for c in at.caption)
    at.switch_page("pages/compare.py").run()
    assert at.multiselect(key="cmp_pick").options == []
    monkeypatch.delenv("RESNET_PRIVATE_RUNS")
    at.run()
    assert len(at.multiselect(key="cmp_pick").options) == 1


def test_own_runs_are_listed_first(tmp_path, monkeypatch):
    from tests.test_exports import write_record
    from ui import runs_view

    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path))
    for label in ("a", "b", "c"):
        write_record(tmp_path, label, skip=True)
    listing = [r.name for r in runs_view.saved_runs()]
    monkeypatch.setattr(runs_view, "own_names", lambda: {listing[-1]})  # this browser made the last one
    assert [r.name for r in runs_view.visible_runs()] == [listing[-1], *listing[:-1]]


def test_the_live_view_refreshes_more_slowly_while_the_machine_is_busy(app, monkeypatch):
    import os

    from resnet_core import refresh

    small_run(app, steps=400)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # 9 processes for the core training leaves
    app.button(key="tr_start").click().run()
    job = current_job()
    # 0.5 s x 9 processes for 1 spare core = 4.5 s: the 8 s rung
    wait_until(app, lambda: job.state == "running" and app.session_state["tr_refresh_s"] == 8.0)
    assert not app.exception
    assert len(app.get("plotly_chart")) == 3  # the full rerun that set the new interval drew the live view

    # a run asked to stop is looked at every half second until it has, whatever the pace was
    from types import SimpleNamespace

    from ui import train_view
    assert train_view.refresh_s([SimpleNamespace(state="running", stopping=True)]) == refresh.base_interval() == 0.5

    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    monkeypatch.setattr(refresh, "DUTY", 0.0)  # the load alone (this machine's redraw time varies with its load)
    app.session_state["tr_refresh_at"] = 0.0  # as if the interval had held for longer than SWITCH_AFTER_S
    app.run()
    assert app.session_state["tr_refresh_s"] == 0.5  # a quiet machine: back to the base
    app.button(key="tr_stop").click().run()
