"""The Overview page through Streamlit's AppTest: it is the landing page, its pieces react, a link reopens it."""

from __future__ import annotations

import functools
import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from resnet_core.config import cifar_config
from resnet_core.figures.gradflow import fmt_norm
from resnet_core.probe import gradflow
from tests import apptest
from tests.apptest import charts, rerun
from tests.trainkit import one_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


open_app = functools.partial(apptest.open_page, None, timeout=120)  # no page: the root opens the Overview


def text(at: AppTest) -> str:
    return "\n".join([md.value for md in at.markdown] + [i.value for i in at.info] + [c.value for c in at.caption])


def test_root_opens_the_overview_quickly_drawn():
    at = open_app()
    assert at.title[0].value == "Residual networks, from the ground up"
    assert set(charts(at)) == {"ov_diagram", "ov_update", "ov_digit_fig", "ov_residual_fig", "ov_shortcut_fig"}
    assert not at.button(key="ov_grad_btn").disabled  # the gradient plot waits for its button
    assert "ResNet-18: 1 + 16 + 1 = 18" in text(at)
    assert at.query_params["ov_digit"] == "700"
    links = {(p.proto.page, p.proto.query_string) for p in at.main.get("page_link")}  # the page's, not the sidebar's
    pages = {p for p, _ in links}
    assert {"architecture", "gradient-flow", "train", "compare", "degradation"} <= pages
    assert any("gf_bn=1" in q for p, q in links if p == "gradient-flow")  # the caveat's link shows BN
    assert any(p.proto.label == "Vanishing gradients in ten seconds" for p in at.get("page_link"))  # demos


def test_gradient_button_shows_plain_vanishing_and_residual_intact():
    at = open_app()
    at.button(key="ov_grad_btn").click()
    rerun(at)
    chart = charts(at)["ov_grad_chart"]
    names = {t["name"] for t in chart["data"]}
    assert {"ResNet-56 (with skips)", "plain-56 (no skips)"} <= names
    said = text(at)
    cfg = cifar_config(56, in_channels=1, image_size=28, batchnorm=False)
    plain = gradflow(cfg.plain_twin(), seed=0, batch_size=32).ratio
    assert plain < 1e-10  # vanished: 0 where it underflows, ~1e-21 where float64 still holds it
    words = "0 (underflow)" if plain == 0 else f"{fmt_norm(plain)} times"
    assert f"In the 56-layer plain net the first block receives {words}" in said
    residual = float(re.search(r"with skip connections it receives ([0-9.]+)×", said).group(1))
    assert residual > 0.1
    assert at.query_params["ov_grad"] == "1" and at.button(key="ov_grad_btn").disabled


def test_changing_the_digit_changes_the_images():
    at = open_app()
    before = charts(at)
    at.number_input(key="ov_digit").set_value(100)
    rerun(at)
    after = charts(at)
    for key in ("ov_digit_fig", "ov_residual_fig", "ov_shortcut_fig"):
        assert after[key]["data"][0]["z"] != before[key]["data"][0]["z"], key
    assert "test digit #100: a 1" in json.dumps(after["ov_digit_fig"]["layout"])
    assert at.query_params["ov_digit"] == "100"


def test_channels_and_zero_init():
    at = open_app()
    at.select_slider(key="ov_channels").set_value(12)
    at.toggle(key="ov_zero_init").set_value(True)
    rerun(at)
    titles = [a["text"] for a in charts(at)["ov_residual_fig"]["layout"]["annotations"]]
    assert "ch 12" in titles and "ch 15" in titles
    assert "F(x) is exactly 0" in text(at)


def test_update_rule_sliders():
    at = open_app()
    assert "lost altogether" not in text(at)
    at.slider(key="ov_grad_exp").set_value(-12)
    rerun(at)
    values = {m.label: m.value for m in at.metric}
    assert values["Gradient ∂L/∂W"] == "1×10⁻¹²" and values["Step lr·∂L/∂W"] == "1×10⁻¹³"
    assert any("New weight **W = 0.4999999999999**" in m.value for m in at.markdown)
    assert "lost altogether" in text(at)  # in float32 the weight does not move


def test_layer_count_follows_the_choice():
    at = open_app()
    at.radio(key="ov_depth").set_value(50)
    rerun(at)
    assert "ResNet-50: 1 + 48 + 1 = 50" in text(at)


def test_batchnorm_button():
    at = open_app()
    at.button(key="ov_bn_btn").click()
    rerun(at)
    assert "ov_bn_chart" in charts(at) and "ov_grad_chart" not in charts(at)
    said = text(at)
    assert "explodes towards the input" in said and "degradation problem" in said


def test_link_reopens_a_view_and_bad_values_fall_back():
    at = open_app(ov_digit="5", ov_grad="1", ov_depth="34")
    assert "ov_grad_chart" in charts(at)
    assert "test digit #5: a 0" in json.dumps(charts(at)["ov_digit_fig"]["layout"])
    assert "ResNet-34: 1 + 32 + 1 = 34" in text(at)
    bad = open_app(ov_digit="99999", ov_lr="3")
    notes = " ".join(w.value for w in bad.warning)
    assert "ov_digit" in notes and "ov_lr" in notes
    assert bad.query_params["ov_digit"] == "700" and bad.query_params["ov_lr"] == "0.1"
