"""The "Why it works" page through AppTest: a twin record, the lesion study and the landscape started
from their buttons, queued in the background, then drawn from what the analyses return."""

from __future__ import annotations

import time

import pytest

from resnet_core.why.landscape import cached
from resnet_core.why.lesion import lesion_run
from tests import apptest
from tests.trainkit import tiny_twin_records


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    a, b = tiny_twin_records(root, steps=30)
    return root, a.run_dir, b.run_dir


def until(at, predicate, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        apptest.rerun(at)
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError("not reached in time")


def test_lesion_and_landscape_from_the_page(runs_dir, monkeypatch):
    root, res, plain = runs_dir
    monkeypatch.setenv("RESNET_RUNS_DIR", str(root))
    at = apptest.open_page("why", timeout=120, root_first=True)
    assert at.session_state["why_run"] == res.name  # the residual net of the twin pair, by default
    assert "why_lesion_chart" not in apptest.charts(at)
    at.button(key="why_lesion_start").click()
    until(at, lambda: "why_lesion_chart" in apptest.charts(at))
    fig = apptest.charts(at)["why_lesion_chart"]
    want = lesion_run(res)[0]
    bars = {t["name"]: t for t in fig["data"] if t["type"] == "bar"}
    assert bars["residual: one block deleted"]["y"] == pytest.approx(list(want.single))
    assert bars["plain: one block deleted"]["y"][1:] == [None, None]  # its downsampling blocks cannot go
    text = "\n".join(m.value for m in at.markdown)
    assert f"{want.baseline_accuracy:.1%} with nothing deleted" in text and "cannot be deleted" in text

    at.radio(key="why_grid").set_value(11)
    at.button(key="why_landscape_start").click()
    until(at, lambda: "why_contour_residual" in apptest.charts(at), timeout=600)
    charts = apptest.charts(at)
    assert {"why_contour_residual", "why_contour_plain", "why_surface_residual", "why_surface_plain",
            "why_line_chart"} <= set(charts)
    ls = cached(res, 11, 512)
    assert ls is not None and charts["why_contour_residual"]["data"][0]["zmax"] == \
        charts["why_contour_plain"]["data"][0]["zmax"]  # one colour scale for both
    assert at.query_params["why_grid"] in ("11", ["11"])
