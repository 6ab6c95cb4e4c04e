"""The Train page's twin runs and time scrubber through AppTest."""

from __future__ import annotations

import functools

import pytest

from tests.apptest import charts, open_page
from tests.test_app_train import wait_until
from ui import live

TINY_NET = {"tr_preset": "custom", "tr_layout": "blocks", "tr_layers": "1,1,1", "tr_widths": "4,8,8"}


@pytest.fixture
def open_train(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path / "runs"))
    live.manager.clear()
    yield functools.partial(open_page, "train", root_first=True)
    live.manager().shutdown()
    live.manager.clear()


def test_twin_run_shows_both_nets_on_one_scale_with_their_log_ratio(open_train):
    at = open_train(tr_twin="1", tr_steps="24", tr_batch_size="16", **TINY_NET)
    assert at.toggle(key="tr_twin").value is True
    at.button(key="tr_start").click().run()
    assert not at.exception
    jobs = live.manager().jobs()
    assert len(jobs) == 2
    res = live.manager().get(at.session_state["tr_job"])
    plain = live.manager().get(res.twin)
    assert res.model_cfg.skip and not plain.model_cfg.skip and plain.twin == res.id
    wait_until(at, lambda: res.done and plain.done and not at.session_state["tr_was_active"])
    assert res.state == plain.state == "finished"
    assert not at.exception
    figs = charts(at)
    assert set(figs) == {"tr_curves", "tr_heatmap", "tr_heatmap_plain", "tr_ratio", "tr_diagram", "tr_diagram_plain"}
    runs_drawn = {t["name"].split(" · ")[0] for t in figs["tr_curves"]["data"]}
    assert runs_drawn == {"residual", "plain"}
    heat_r, heat_p = (figs[k]["data"][0] for k in ("tr_heatmap", "tr_heatmap_plain"))
    assert (heat_r["zmin"], heat_r["zmax"]) == (heat_p["zmin"], heat_p["zmax"])  # one colour scale
    ratio = figs["tr_ratio"]["data"][0]
    assert "residual / plain" in ratio["colorbar"]["title"]["text"]
    markdown = " ".join(m.value for m in at.markdown)
    assert "Residual net" in markdown and "Plain twin" in markdown  # a status row for each


def test_scrubber_moves_the_cursor_and_recolours_the_diagram(open_train):
    at = open_train(tr_steps="12", tr_batch_size="16", **TINY_NET)
    at.button(key="tr_start").click().run()
    job = live.manager().jobs()[0]
    wait_until(at, lambda: job.done and not at.session_state["tr_was_active"])
    slider = at.slider(key="tr_scrub")
    assert slider.value == 12  # followed the run to its last step
    before = charts(at)
    at.slider(key="tr_scrub").set_value(3).run()
    assert not at.exception
    after = charts(at)
    cursor = [s["x0"] for s in after["tr_heatmap"]["layout"]["shapes"]]
    assert cursor and set(cursor) == {3}
    assert "step 3," in after["tr_diagram"]["layout"]["title"]["text"]
    colours = [t.get("marker", {}).get("color") for t in after["tr_diagram"]["data"] if t.get("name") == "blocks"]
    old = [t.get("marker", {}).get("color") for t in before["tr_diagram"]["data"] if t.get("name") == "blocks"]
    assert colours and colours != old  # recoloured with step 3's gradients
    assert at.query_params["tr_scrub"] in ("3", ["3"])  # a link reproduces the scrubber
