"""The Architecture page through Streamlit's AppTest: widgets change the net, the URL opens one."""

from __future__ import annotations

import functools
import json

import pytest
from streamlit.testing.v1 import AppTest

from resnet_core.anatomy import describe
from resnet_core.config import preset
from tests import apptest
from tests.apptest import rerun

open_page = functools.partial(apptest.open_page, "architecture")


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def params_of(name: str, **kw) -> str:
    return f"{describe(preset(name, **kw)).total_params:,}"


def test_default_is_resnet20():
    at = open_page()
    m = metrics(at)
    assert m["Parameters"] == "269,722" and m["Layers"] == "20" and m["Blocks"] == "9"
    assert m["FLOPs per image"] == "81.1 M"
    assert "1 + 18 + 1 = 20" in " ".join(md.value for md in at.markdown)
    (fig,) = charts(at)
    assert fig["layout"]["title"]["text"].startswith("ResNet-20: 1 + 18 + 1 = 20")
    df = at.dataframe[0].value
    assert len(df) == 2 + 3 + 9  # stem, head, 3 stages, 9 blocks
    assert df["shortcut"].str.startswith("zero-pad").sum() == 2
    assert at.query_params["arch_preset"] == "resnet20"


@pytest.mark.parametrize("key, value, expected", [
    ("arch_preset", "resnet50", params_of("resnet50")),
    ("arch_preset", "resnet152", params_of("resnet152")),
    ("arch_batchnorm", False, params_of("resnet20", batchnorm=False)),
    ("arch_shortcut", "B", params_of("resnet20", shortcut="B")),
    ("arch_style", "pre", params_of("resnet20", style="pre")),
])
def test_widgets_change_the_net(key, value, expected):
    at = open_page()
    widget = at.selectbox(key=key) if key in ("arch_preset", "arch_style") else (
        at.toggle(key=key) if isinstance(value, bool) else at.radio(key=key))
    widget.set_value(value)
    rerun(at)
    assert metrics(at)["Parameters"] == expected
    assert not at.error


def test_skip_off_is_the_plain_twin_and_drops_every_skip_path():
    at = open_page()
    at.selectbox(key="arch_preset").set_value("resnet56")
    rerun(at)
    with_skip = charts(at)[0]
    at.toggle(key="arch_skip").set_value(False)
    rerun(at)
    assert metrics(at)["Parameters"] == "853,018"  # option A: exactly the residual net's count
    assert any("exactly **plain-56**" in c.value for c in at.caption)
    fig = charts(at)[0]
    paths = lambda f: sum(t.get("meta", {}).get("paths", 0) for t in f["data"])  # noqa: E731
    assert paths(with_skip) == 27 and paths(fig) == 0
    assert set(at.dataframe[0].value["shortcut"]) == {"", "none (plain)"}


def test_changing_the_depth_changes_diagram_and_table():
    at = open_page()
    at.selectbox(key="arch_preset").set_value("custom")
    rerun(at)
    assert at.radio(key="arch_layout").value == "cifar" and at.number_input(key="arch_depth").value == 20
    before_fig, before_df = charts(at)[0], at.dataframe[0].value
    at.number_input(key="arch_depth").set_value(56)
    rerun(at)
    after_fig, after_df = charts(at)[0], at.dataframe[0].value
    assert after_fig != before_fig
    assert after_fig["layout"]["meta"]["blocks"] == 27 and before_fig["layout"]["meta"]["blocks"] == 9
    assert len(before_df) == 14 and len(after_df) == 32
    assert "layer3.8" in set(after_df["name"].str.strip()) and "layer3.8" not in set(before_df["name"].str.strip())
    assert metrics(at)["Parameters"] == "853,018"
    assert at.query_params["arch_depth"] == "56"


def test_custom_blocks_and_a_bad_combination():
    at = open_page()
    at.selectbox(key="arch_preset").set_value("custom")
    rerun(at)
    at.radio(key="arch_layout").set_value("blocks")
    rerun(at)
    at.text_input(key="arch_layers").input("2,2")
    rerun(at)  # three widths for two stages: refused with the ConfigError's words
    assert "one width per stage" in at.error[0].value and not at.metric
    at.text_input(key="arch_widths").input("16,32")
    rerun(at)
    assert not at.error and metrics(at)["Layers"] == "10"
    assert "1 + 8 + 1 = 10" in " ".join(md.value for md in at.markdown)
    at.radio(key="arch_layout").set_value("cifar")
    rerun(at)
    assert at.number_input(key="arch_depth").value == 20  # a new layout starts at a depth it allows
    at.number_input(key="arch_depth").set_value(21)
    rerun(at)
    assert "6n+2" in at.error[0].value and not at.metric


def test_url_opens_that_net():
    at = open_page(arch_preset="resnet50", arch_skip="0")
    assert metrics(at)["Parameters"] == params_of("plain50")
    assert at.selectbox(key="arch_preset").value == "resnet50"
    assert at.toggle(key="arch_skip").value is False
    assert charts(at)[0]["layout"]["title"]["text"].startswith("plain-50")
    assert at.query_params["arch_image_size"] == "224"  # filled from the preset, not the default


def test_bad_url_values_give_a_note_not_an_exception():
    at = open_page(arch_preset="resnet999", arch_depth="abc", arch_skip="maybe")
    notes = " ".join(w.value for w in at.warning)
    assert "arch_preset='resnet999' was ignored" in notes
    assert "arch_skip='maybe' was ignored" in notes
    assert metrics(at)["Parameters"] == "269,722"  # the defaults: ResNet-20


def test_compare_shows_the_plain_twin_side_by_side():
    at = open_page(arch_preset="resnet18")
    at.toggle(key="arch_compare_plain").set_value(True)
    rerun(at)
    figs = charts(at)
    assert len(figs) == 2
    assert figs[1]["layout"]["title"]["text"].startswith("plain-18")
    m = metrics(at)
    assert m["Parameters (residual)"] == "11,689,512" and m["Parameters (plain)"] == params_of("plain18")
    assert any("more parameters" in c.value for c in at.caption)


def test_table_levels():
    at = open_page()
    at.radio(key="arch_table_level").set_value("layer")
    rerun(at)
    names = at.dataframe[0].value["name"].str.strip().tolist()
    assert names[:3] == ["stem", "conv1", "bn1"] and "layer2.0.downsample" in names and names[-1] == "fc"
    at.radio(key="arch_table_level").set_value("stage")
    rerun(at)
    assert at.dataframe[0].value["name"].tolist() == ["stem", "layer1", "layer2", "layer3", "head"]
