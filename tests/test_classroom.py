"""Classroom demos: every link sets every widget, and every caption is true of what the app measures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from resnet_core.anatomy import describe
from resnet_core.config import cifar_config, preset
from resnet_core.probe import gradflow
from ui.classroom import DEMOS
from ui.state import Field

APP = str(Path(__file__).resolve().parents[1] / "app.py")
BY_KEY = {d.key: d for d in DEMOS}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def measured(demo_key: str) -> dict[str, float]:
    """First/last activation-gradient ratio of both nets, built as the Gradient flow page builds them."""
    q = BY_KEY[demo_key].query
    cfg = cifar_config(int(q["gf_depth"]), in_channels=1, image_size=28, batchnorm=q["gf_bn"] == "1",
                       activation=q["gf_activation"], style=q["gf_style"], init=q["gf_init"],
                       zero_init_residual=q["gf_zero_init"] == "1")
    seed = int(q["gf_seed"])
    return {"residual": gradflow(cfg, seed=seed).ratio, "plain": gradflow(cfg.plain_twin(), seed=seed).ratio}


def test_vanishing_caption():
    r = measured("vanishing")
    assert r["plain"] < 1e-15  # "less than 10^-15"
    assert 0.3 < r["residual"] < 0.7  # "about half"


def test_clean_path_captions():
    assert 1e-7 < measured("clean-path")["residual"] < 1e-5  # "a few millionths"
    assert 0.3 < measured("clean-path-pre")["residual"] < 0.7  # "about half ... again"


def test_batchnorm_caption():
    r = measured("batchnorm")
    assert r["plain"] > 1000  # "over a thousand times"
    assert 1 < r["residual"] < 100  # "within a few tens"


def test_bottleneck_caption():
    r50, r34 = describe(preset("resnet50")), describe(preset("resnet34"))
    assert r50.layer_count_expression == "1 + 48 + 1 = 50" and round(r50.total_params / 1e6, 1) == 25.6
    assert r34.layer_count_expression == "1 + 32 + 1 = 34" and round(r34.total_params / 1e6, 1) == 21.8


@pytest.mark.parametrize("demo", DEMOS, ids=[d.key for d in DEMOS])
def test_demo_link_sets_every_widget(demo, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    for k, v in demo.query.items():
        at.query_params[k] = v
    at.switch_page(demo.page).run()
    assert not at.exception
    assert not at.warning or all("ignored" not in w.value for w in at.warning)
    for key, value in demo.query.items():
        got = at.session_state[key]
        assert Field(key, got).format(got) == value, key
