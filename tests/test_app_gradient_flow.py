"""The Gradient flow page through Streamlit's AppTest: widgets change the measurement, the URL opens one."""

from __future__ import annotations

import functools

import pytest
from streamlit.testing.v1 import AppTest

from resnet_core.config import cifar_config
from resnet_core.figures.gradflow import fmt_norm
from resnet_core.probe import gradflow
from tests import apptest
from tests.apptest import rerun

PAGE = "pages/gradient-flow.py"


open_page = functools.partial(apptest.open_page, "gradient-flow", timeout=120, root_first=True)


def chart(at: AppTest) -> dict:
    return apptest.charts(at)["gf_chart"]


def lines(at: AppTest) -> dict[str, list]:
    """trace name -> x positions of the measured points (zeros are separate traces)."""
    return {t["name"]: t["x"] for t in chart(at)["data"]}


def text(at: AppTest) -> str:
    return "\n".join(md.value for md in at.markdown)


def test_default_is_56_layers_both_nets_no_bn():
    at = open_page()
    traces = lines(at)
    assert set(traces) == {"ResNet-56 (with skips)", "plain-56 (no skips)"}
    assert all(len(x) == 27 for x in traces.values())  # 3 stages of 9 blocks
    expected = gradflow(cifar_config(56, in_channels=1, image_size=28, batchnorm=False, skip=False))
    assert f"first block receives {fmt_norm(expected.ratio)} times" in text(at)
    assert "vanishes" in text(at) and "Skip connections carry it back" in text(at)
    assert at.query_params["gf_depth"] == "56" and at.query_params["gf_bn"] == "0"


def test_changing_depth_changes_the_chart():
    at = open_page()
    before = chart(at)
    at.select_slider(key="gf_depth").set_value(20)
    rerun(at)
    after = chart(at)
    assert after != before
    assert {t["name"] for t in after["data"]} == {"ResNet-20 (with skips)", "plain-20 (no skips)"}
    assert all(len(t["x"]) == 9 for t in after["data"])
    assert "20-layer plain net" in text(at)
    assert at.query_params["gf_depth"] == "20"


@pytest.mark.parametrize("settings, says", [
    ({"gf_bn": True}, "degradation problem"),
    ({"gf_activation": "sigmoid", "gf_depth": 20}, "The skip path is not clean here"),
    ({"gf_activation": "sigmoid", "gf_style": "pre", "gf_depth": 20}, "Pre-activation blocks keep the skip"),
    ({"gf_init": "kaiming", "gf_depth": 110}, "Kaiming initialisation without BatchNorm"),
    ({"gf_zero_init": True, "gf_depth": 20}, "the same zeroing cuts the only path"),
    ({"gf_nets": "plain", "gf_depth": 8}, "8-layer plain net"),
    ({"gf_nets": "residual", "gf_bn": True}, "Show the plain twin"),
    ({"gf_kind": "weight", "gf_depth": 14}, "conv layer's weight gradient"),
    ({"gf_activation": "gelu", "gf_style": "pre", "gf_seed": 3, "gf_depth": 14}, "14-layer"),
])
def test_settings_run_and_the_text_follows_them(settings, says):
    at = open_page()
    for key, value in settings.items():
        widget = {"gf_depth": at.select_slider, "gf_bn": at.toggle, "gf_zero_init": at.toggle,
                  "gf_activation": at.selectbox, "gf_style": at.selectbox, "gf_init": at.selectbox,
                  "gf_nets": at.radio, "gf_kind": at.radio, "gf_seed": at.number_input}[key]
        widget(key=key).set_value(value)
    rerun(at)
    assert says in text(at), text(at)
    nets = settings.get("gf_nets", "both")
    assert len([t for t in chart(at)["data"] if ": 0" not in t["name"]]) == (2 if nets == "both" else 1)


def test_url_opens_that_configuration():
    at = open_page(gf_depth="110", gf_bn="1", gf_nets="plain", gf_kind="weight", gf_seed="2")
    assert at.select_slider(key="gf_depth").value == 110
    assert at.toggle(key="gf_bn").value is True
    assert at.radio(key="gf_kind").value == "weight"
    names = [t["name"] for t in chart(at)["data"]]
    assert names == ["plain-110 (no skips)"]
    assert chart(at)["layout"]["title"]["text"].startswith("Weight gradient")
    assert not at.warning


@pytest.mark.parametrize("query, key", [({"gf_depth": "57"}, "gf_depth"), ({"gf_activation": "swish"},
                                                                            "gf_activation"),
                                        ({"gf_seed": "many"}, "gf_seed")])
def test_bad_url_value_shows_a_note_and_falls_back(query, key):
    at = open_page(**query)
    notes = [w.value for w in at.warning]
    assert len(notes) == 1 and key in notes[0] and "ignored" in notes[0]
    assert "56-layer" in text(at)


def test_settings_survive_a_page_switch():
    at = open_page()
    at.select_slider(key="gf_depth").set_value(14)
    at.toggle(key="gf_bn").set_value(True)
    rerun(at)
    at.switch_page("pages/architecture.py")
    rerun(at)
    at.switch_page(PAGE)
    rerun(at)
    assert at.select_slider(key="gf_depth").value == 14 and at.toggle(key="gf_bn").value is True
    assert "14-layer plain net" in text(at)


def test_split_chart_shows_what_gradflow_measures_and_the_words_say_it():
    at = open_page(gf_depth="20", gf_bn="0", gf_zero_init="1")
    fig = apptest.charts(at)["gf_split_chart"]
    cfg = cifar_config(20, in_channels=1, image_size=28, batchnorm=False, zero_init_residual=True)
    g = gradflow(cfg, seed=0, batch_size=32, split=True)
    bars = next(t for t in fig["data"] if t["type"] == "bar")
    assert bars["y"] == pytest.approx(list(g.shares)) and set(bars["y"]) == {1.0}
    assert "all of the gradient comes through the shortcuts" in text(at)
    at = open_page(gf_depth="20", gf_bn="1")
    shares = gradflow(cfg.__class__(**{**cfg.__dict__, "batchnorm": True, "zero_init_residual": False}),
                      seed=0, batch_size=32, split=True).shares
    assert f"(median {sorted(shares)[len(shares) // 2]:.0%})" in text(at)
