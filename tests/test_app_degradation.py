"""The Degradation page through AppTest: a tiny experiment runs through the queue and is plotted."""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.test_app_train import APP
from ui import live


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path / "runs"))
    live.manager.clear()
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    yield at
    live.manager().shutdown()
    live.manager.clear()


def figure(at: AppTest) -> dict:
    [chart] = [c for c in at.get("plotly_chart") if c.proto.id.endswith("dg_figure")]
    return json.loads(chart.proto.spec)


def values(v) -> list:
    """A plotly JSON array: a list, or numpy's bytes as {"bdata": base64, "dtype": ...}."""
    if isinstance(v, dict):
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return list(v)


def drawn(fig: dict) -> dict[tuple[str, str], list]:
    """{(family or "paper", column): the depths drawn}."""
    return {tuple(t["meta"]): values(t["x"]) for t in fig["data"] if t.get("meta")}


def test_tiny_experiment_runs_through_the_queue_and_is_plotted(app):
    for k, v in {"dg_depths": "8,14", "dg_steps": "3", "dg_batch_size": "16"}.items():
        app.query_params[k] = v
    app.switch_page("pages/degradation.py").run()
    assert not app.exception
    assert app.multiselect(key="dg_pick").value == [8, 14]
    assert "Run the experiment" in app.info[0].value
    app.button(key="dg_start").click().run()
    assert not app.exception
    ids = app.session_state["dg_jobs"].split(",")
    assert len(ids) == 4 and app.query_params["dg_jobs"] in (",".join(ids), [",".join(ids)])
    deadline = time.time() + 180
    while not all(live.manager().get(i).done for i in ids) or app.session_state["dg_was_active"]:
        assert time.time() < deadline, "experiment did not finish in time"
        time.sleep(0.5)
        app.run()
    assert not app.exception
    assert [live.manager().get(i).state for i in ids] == ["finished"] * 4
    points = drawn(figure(app))
    for family in ("plain", "residual"):
        for column in ("train_loss", "test_error"):
            assert points[(family, column)] == [8, 14]  # one point per (family, depth)
    assert points[("paper", "test_error")] == [20, 32, 44, 56, 110]
    assert any("not ours" in t["name"] for t in figure(app)["data"])
    assert "4 of 4 runs done" in app.get("progress")[0].proto.text
    assert app.button(key="dg_start").disabled is False

    # the results stay after a page switch and back
    app.switch_page("pages/train.py").run()
    app.switch_page("pages/degradation.py").run()
    assert not app.exception
    assert app.session_state["dg_jobs"] == ",".join(ids)
    assert drawn(figure(app))[("residual", "train_loss")] == [8, 14]


def test_bad_url_values_fall_back_with_a_note(app):
    app.query_params["dg_depths"] = "7,9"
    app.query_params["dg_jobs"] = "../etc"
    app.switch_page("pages/degradation.py").run()
    assert not app.exception
    notes = " ".join(w.value for w in app.warning)
    assert "dg_depths" in notes and "dg_jobs" in notes
    assert app.multiselect(key="dg_pick").value == [8, 20, 32, 56]
