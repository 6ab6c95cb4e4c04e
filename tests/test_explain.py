"""The Overview page's computations against oracles: the block's own output, hand-written shortcuts,
parameter counts of freshly built modules, and the update rule done by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from resnet_core import explain
from resnet_core.config import ModelConfig, make_config
from resnet_core.data import load
from resnet_core.figures.explain import residual_figure, shortcut_figure, update_figure
from resnet_core.model import BasicBlock, Bottleneck
from tests.trainkit import one_thread, tiny_model


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def digit() -> torch.Tensor:
    return load("mnist-5k", "cpu").x_test[700]  # (1, 28, 28)


@pytest.fixture(scope="module")
def nets() -> tuple:
    with one_thread():
        return (explain.demo_model(explain.demo_config("A")), explain.demo_model(explain.demo_config("B")))


# ---------------------------------------------------------------- x + F(x)


@pytest.mark.parametrize("overrides", [
    {},
    {"batchnorm": False},
    {"shortcut": "B"},
    {"block": "bottleneck", "widths": (2, 4, 4)},
    {"activation": "tanh", "shortcut": "C"},
])
@pytest.mark.parametrize("name", ["layer1.0", "layer2.0"])
def test_sum_is_what_the_post_activation_block_activates(overrides, name):
    cfg = tiny_model(**overrides)
    model = explain.demo_model(cfg, seed=1)
    image = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(3))
    view = explain.block_view(model, image, name)
    block = dict(model.blocks())[name]
    last_act = block.act3 if isinstance(block, Bottleneck) else block.act2
    with torch.no_grad():
        assert torch.equal(last_act(view.total), view.out)
        assert torch.equal(view.out, block(view.x.unsqueeze(0))[0])  # the hooks saw the block's real output
        identity = view.x if block.downsample is None else block.downsample(view.x.unsqueeze(0))[0]
    assert torch.equal(view.shortcut, identity)
    assert view.fx.shape == view.shortcut.shape == view.out.shape
    assert not block._forward_hooks and not block._forward_pre_hooks  # removed again
    assert not block.branch_last()._forward_hooks


def test_pre_activation_block_output_is_the_sum_itself():
    model = explain.demo_model(tiny_model(style="pre"), seed=0)
    view = explain.block_view(model, torch.randn(1, 8, 8), "layer2.0")
    assert torch.equal(view.total, view.out)


def test_first_block_on_a_digit(nets, digit):
    view = explain.block_view(nets[0], digit, "layer1.0")
    assert view.x.shape == view.fx.shape == view.total.shape == (16, 28, 28)
    assert view.shortcut_kind == "identity"
    assert torch.equal(view.total, view.x + view.fx)
    assert torch.equal(torch.relu(view.total), view.out)
    assert 0 < view.branch_to_input < 1  # an untrained branch adds a correction smaller than x


def test_zero_init_branch_gives_x(digit):
    model = explain.demo_model(explain.demo_config("A", zero_init_residual=True))
    view = explain.block_view(model, digit)
    assert not view.fx.any()
    assert torch.equal(view.total, view.x)


def test_plain_block_and_unknown_block_are_refused():
    with pytest.raises(ValueError, match="no skip"):
        explain.block_view(explain.demo_model(tiny_model(skip=False)), torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="layer9.0"):
        explain.block_view(explain.demo_model(tiny_model()), torch.zeros(1, 8, 8), "layer9.0")


def test_hooks_are_removed_when_the_forward_fails():
    model = explain.demo_model(tiny_model())
    with pytest.raises(RuntimeError):
        explain.block_view(model, torch.zeros(3, 8, 8))  # 3 channels into a 1-channel net
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ---------------------------------------------------------------- option A and option B


def test_shortcut_shapes_and_contents(nets, digit):
    a_net, b_net = nets
    demo = explain.shortcut_demo(a_net, b_net, digit)
    assert demo.x.shape == (16, 28, 28)
    assert demo.fx.shape == demo.a.shape == demo.b.shape == (32, 14, 14)
    assert demo.stride == 2 and demo.pad_before == 8
    # option A by hand: every other pixel, 8 zero channels either side
    by_hand = F.pad(demo.x[:, ::2, ::2], (0, 0, 0, 0, 8, 8))
    assert torch.equal(demo.a, by_hand)
    assert [demo.a_channel_source(c) for c in (7, 8, 23, 24)] == [None, 0, 15, None]
    # option B by hand: the 1x1 conv with stride 2, then BatchNorm's evaluation formula
    conv, bn = b_net.layer2[0].downsample
    z = F.conv2d(demo.x.unsqueeze(0), conv.weight, stride=2)[0]
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(-1, 1, 1)
    expected = (z - bn.running_mean.view(-1, 1, 1)) * scale + bn.bias.view(-1, 1, 1)
    torch.testing.assert_close(demo.b, expected)
    assert demo.a_params == 0
    assert demo.b_conv_params == 16 * 32 and demo.b_params == 16 * 32 + 2 * 32


def test_shortcut_demo_needs_a_reshaping_block(nets, digit):
    with pytest.raises(ValueError, match="must reshape"):
        explain.shortcut_demo(nets[0], nets[1], digit, "layer1.0")


# ---------------------------------------------------------------- basic vs bottleneck


def _built(kind: str, inplanes: int, planes: int) -> torch.nn.Module:
    cfg = make_config(ModelConfig(), block=kind)
    return (Bottleneck if kind == "bottleneck" else BasicBlock)(cfg, inplanes, planes)


@pytest.mark.parametrize("kind, inplanes, planes, by_hand", [
    ("basic", 64, 64, 2 * 3 * 3 * 64 * 64 + 2 * 2 * 64),
    ("bottleneck", 256, 64, 256 * 64 + 3 * 3 * 64 * 64 + 64 * 256 + 2 * (64 + 64 + 256)),
    ("basic", 256, 256, 2 * 3 * 3 * 256 * 256 + 2 * 2 * 256),
])
def test_block_parameter_counts(kind, inplanes, planes, by_hand):
    cost = explain.block_cost(kind, inplanes, planes)
    real = _built(kind, inplanes, planes)
    assert cost.params == sum(p.numel() for p in real.parameters()) == by_hand
    assert sum(p for _, _, p in cost.layers) == cost.params
    assert [n for n, _, _ in cost.layers] == [n for n, m in real.named_children()
                                              if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    assert cost.width == planes and cost.out_channels == inplanes


def test_block_flops_follow_the_convs():
    cost = explain.block_cost("basic", 64, 64, side=56)
    assert cost.flops == 2 * (2 * 64 * 64 * 9 * 56 * 56)  # two 3x3 convs, 2 FLOPs per multiply-add


def test_block_cost_refuses_a_shortcut_that_reshapes():
    with pytest.raises(ValueError, match="identity shortcut"):
        explain.block_cost("basic", 32, 64)


# ---------------------------------------------------------------- counting layers


@pytest.mark.parametrize("depth, expression, params", [
    (18, "1 + 16 + 1 = 18", 11_689_512),
    (50, "1 + 48 + 1 = 50", 25_557_032),
])
def test_layer_count(depth, expression, params):
    count = explain.layer_count(depth)
    assert count.expression == expression
    assert count.total_params == params  # torchvision's figures (DESIGN.md)
    assert [r["name"] for r in count.stages] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert sum(r["params"] for r in count.stages) == params


def test_layer_count_refuses_other_depths():
    with pytest.raises(ValueError, match="depth=20"):
        explain.layer_count(20)


# ---------------------------------------------------------------- the update rule


@given(w=st.floats(-10, 10), exp=st.integers(-12, 0), lr=st.sampled_from([0.001, 0.01, 0.1, 1.0]))
def test_update_rule_by_hand(w, exp, lr):
    g = 10.0 ** exp
    u = explain.sgd_update(w, g, lr)
    assert u.step == lr * g and u.new_weight == w - lr * g
    assert u.new_weight_f32 == float(np.float32(w) - np.float32(lr) * np.float32(g))
    assert u.lost_in_f32 == (u.new_weight_f32 == float(np.float32(w)))


def test_tiny_step_is_lost_in_float32():
    assert explain.sgd_update(0.5, 1e-12, 0.1).lost_in_f32
    u = explain.sgd_update(0.5, 0.1, 0.1)
    assert not u.lost_in_f32 and u.new_weight == pytest.approx(0.49)
    assert u.f32_spacing == 2.0 ** -24  # float32 numbers in [0.5, 1) are 2^-24 apart


# ---------------------------------------------------------------- figures


def _heatmaps(fig) -> list:
    return [t for t in fig.data if t.type == "heatmap"]


def test_residual_figure_one_scale_right_way_up(nets, digit):
    view = explain.block_view(nets[0], digit)
    fig = residual_figure(view, (4, 5, 6, 7))
    maps = _heatmaps(fig)
    assert len(maps) == 12 and {t.coloraxis for t in maps} == {"coloraxis"}
    values = torch.stack([view.x[4:8], view.fx[4:8], view.total[4:8]])
    assert fig.layout.coloraxis.cmin == float(values.min()) and fig.layout.coloraxis.cmax == float(values.max())
    assert all(fig.layout[f"yaxis{k if k > 1 else ''}"].range[0] > 0 for k in range(1, 13))  # row 0 on top
    z = np.array(maps[4].z)  # row 2, first panel: F(x) channel 4, sent to the browser to 4 decimals
    assert np.array_equal(z, np.round(view.fx[4].double().numpy(), 4))
    assert np.abs(z - view.fx[4].numpy()).max() <= 5e-5 + 1e-12 and np.abs(z).max() > 1e-3
    assert "16×28×28" in fig.layout.yaxis.title.text


def test_shortcut_figure_names_shapes_and_zero_channels(nets, digit):
    demo = explain.shortcut_demo(*nets, digit)
    fig = shortcut_figure(demo)
    titles = [a.text for a in fig.layout.annotations]
    assert "ch 7: zeros" in titles and "ch 8 = x ch 0, /2" in titles
    row_titles = [fig.layout[f"yaxis{k}"].title.text for k in (1, 5, 9, 13)]
    assert "16×28×28" in row_titles[0] and all("32×14×14" in t for t in row_titles[1:])
    later = [a.text for a in shortcut_figure(demo, (4, 5, 6, 7)).layout.annotations]
    assert "ch 12 = x ch 4, /2" in later and "ch 13 = x ch 5, /2" in later  # copies of the channels shown
    half = _heatmaps(fig)[4]  # option A's first panel: 14 pixels drawn 2 wide, over the same 28
    assert list(half.x) == [2 * j + 0.5 for j in range(14)]


def test_maps_grid_is_laid_out_as_plotlys_make_subplots(nets, digit):
    """maps_figure lays its grid out by hand (it is faster): plotly's own make_subplots is the oracle
    for every panel's axes, their domains and the panel titles."""
    from plotly.subplots import make_subplots

    fig = shortcut_figure(explain.shortcut_demo(*nets, digit))  # 4 rows of 4 panels
    titles = [a.text for a in fig.layout.annotations]
    ref = make_subplots(rows=4, cols=4, subplot_titles=titles, horizontal_spacing=0.02, vertical_spacing=0.22 / 3)
    for k in range(1, 17):
        s = "" if k == 1 else str(k)
        for axis in ("xaxis", "yaxis"):
            assert fig.layout[axis + s].domain == pytest.approx(ref.layout[axis + s].domain), (axis, k)
            assert fig.layout[axis + s].anchor == ref.layout[axis + s].anchor, (axis, k)
        assert fig.layout["yaxis" + s].scaleanchor == "x" + s  # each panel square
    assert [a.text for a in ref.layout.annotations] == titles
    places = [v for a in fig.layout.annotations for v in (a.x, a.y)]
    assert places == pytest.approx([v for a in ref.layout.annotations for v in (a.x, a.y)])
    traces = _heatmaps(fig)
    assert [(t.xaxis, t.yaxis) for t in traces] == [("x" if k == 1 else f"x{k}", "y" if k == 1 else f"y{k}")
                                                     for k in range(1, 17)]


def test_update_figure_marks_float32_spacing():
    fig = update_figure(explain.sgd_update(0.5, 1e-9, 0.1))
    assert [t.y[0] for t in fig.data] == ["weight W", "gradient ∂L/∂W", "learning rate", "step lr·∂L/∂W"]
    assert fig.data[3].x[0] == pytest.approx(1e-10)
    assert any("float32" in a.text for a in fig.layout.annotations)
