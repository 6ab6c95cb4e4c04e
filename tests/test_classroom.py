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


def test_delete_block_caption():
    """Every residual block deletable; in the plain twin exactly the shape-changing blocks are not."""
    from resnet_core.model import build_model
    from resnet_core.why.lesion import lesion_study

    cfg = cifar_config(20, in_channels=1, image_size=28)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    res = lesion_study(build_model(cfg).eval(), x, y, draws=1)
    plain = lesion_study(build_model(cfg.plain_twin()).eval(), x, y, draws=1)
    assert all(res.removable)
    assert [n for n, r in zip(plain.names, plain.removable, strict=True) if not r] == ["layer2.0", "layer3.0"]


def test_landscape_caption():
    """One colour scale for both maps; the centre is the net's own loss on the subset."""
    from resnet_core.figures.why import contour_figure, shared_zmax
    from resnet_core.model import build_model
    from resnet_core.why.landscape import landscape, mean_loss

    cfg = cifar_config(8, in_channels=1, image_size=12)
    x, y = torch.randn(16, 1, 12, 12), torch.randint(0, 10, (16,))
    nets = {"residual": build_model(cfg).eval(), "plain": build_model(cfg.plain_twin()).eval()}
    maps = {k: landscape(m, x, y, grid=3) for k, m in nets.items()}
    zmax = shared_zmax(maps)
    figs = {k: contour_figure(ls, k, zmax) for k, ls in maps.items()}
    assert figs["residual"].data[0].zmax == figs["plain"].data[0].zmax == zmax
    for k, ls in maps.items():
        assert ls.centre == mean_loss(nets[k], x, y)
        assert list(figs[k].data[1].x) == [0] and list(figs[k].data[1].y) == [0]  # the ✕: the trained weights
