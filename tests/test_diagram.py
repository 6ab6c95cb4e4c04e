"""The architecture diagram draws what the net is: one skip path per block, labelled shortcuts, values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from resnet_core.anatomy import describe
from resnet_core.config import preset
from resnet_core.figures.diagram import architecture_figure


def skip_paths(fig) -> dict[str, int]:
    """Drawn skip paths by kind: each is a run of points ended by None in a skip trace."""
    out = {}
    for tr in fig.data:
        if tr.meta and "skip_kind" in tr.meta:
            xs = list(tr.x or [])
            assert xs.count(None) == tr.meta["paths"]
            out[tr.meta["skip_kind"]] = xs.count(None)
    return out


def arcs(fig) -> list[np.ndarray]:
    """Each drawn skip path as an (n, 2) array of points."""
    out = []
    for tr in fig.data:
        if tr.meta and "skip_kind" in tr.meta:
            seg = []
            for x, y in zip(tr.x or [], tr.y or [], strict=True):
                if x is None:
                    out.append(np.array(seg, dtype=float))
                    seg = []
                else:
                    seg.append((x, y))
    return out


def trace(fig, name):
    found = [tr for tr in fig.data if tr.name == name]
    return found[0] if found else None


@pytest.mark.parametrize("name", ["resnet18", "resnet20", "resnet50", "resnet110", "resnet152"])
def test_one_skip_path_per_block_when_skip_is_on(name):
    cfg = preset(name)
    fig = architecture_figure(cfg)
    n_blocks = sum(cfg.layers)
    assert sum(skip_paths(fig).values()) == n_blocks
    assert len(trace(fig, "additions").x) == n_blocks  # each path ends in its own ⊕
    # every arc leaves the main path and rises above it, so no skip hides behind it
    block_rows = {float(y) for y in trace(fig, "blocks").y}
    for seg in arcs(fig):
        base = seg[0, 1]
        assert min(abs(base - r) for r in block_rows) < 1e-9 and seg[-1, 1] == pytest.approx(base)
        assert seg[:, 1].min() >= base - 1e-9 and seg[:, 1].max() >= base + 0.25


@pytest.mark.parametrize("name", ["plain20", "plain56", "plain18", "plain152"])
def test_no_skip_paths_when_skip_is_off(name):
    fig = architecture_figure(preset(name))
    assert sum(skip_paths(fig).values()) == 0
    assert trace(fig, "additions") is None
    assert trace(fig, "projection convs") is None
    assert trace(fig, "zero-pad labels") is None


def test_projection_shortcuts_are_labelled_with_their_stride():
    fig = architecture_figure(preset("resnet18"))  # option B: a projection where a stage starts
    assert skip_paths(fig) == {"identity": 5, "pad": 0, "proj": 3}
    assert list(trace(fig, "projection convs").text) == ["1x1 conv, /2"] * 3
    r50 = architecture_figure(preset("resnet50"))  # layer1.0 widens 64 -> 256 without a stride
    assert list(trace(r50, "projection convs").text) == ["1x1 conv"] + ["1x1 conv, /2"] * 3
    c = architecture_figure(preset("resnet20", shortcut="C"))
    assert skip_paths(c)["proj"] == 9
    assert list(trace(c, "projection convs").text).count("1x1 conv, /2") == 2


def test_option_a_shortcuts_are_zero_pad_identities():
    fig = architecture_figure(preset("resnet20"))
    assert skip_paths(fig) == {"identity": 7, "pad": 2, "proj": 0}
    assert list(trace(fig, "zero-pad labels").text) == ["zero-pad", "zero-pad"]
    styles = {tr.meta["skip_kind"]: tr.line.dash for tr in fig.data if tr.meta and "skip_kind" in tr.meta}
    assert styles["pad"] == "dash" and styles["identity"] == "solid"


def test_labels_show_stages_and_output_shapes():
    fig = architecture_figure(preset("resnet18"))
    text = " ".join(trace(fig, "labels").text)
    for shape in ("64×56×56", "128×28×28", "256×14×14", "512×7×7", "1000"):
        assert shape in text
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        assert f"<b>{stage}</b>" in text
    assert fig.layout.title.text == "ResNet-18: 1 + 16 + 1 = 18 layers, input 3×224×224"
    assert list(trace(fig, "blocks").text) == [r["name"] for r in describe(preset("resnet18")).level("block")]


@pytest.mark.parametrize("name, rows", [("resnet110", 5), ("resnet152", 5), ("resnet56", 3), ("resnet18", 1)])
def test_deep_nets_wrap_into_readable_rows(name, rows):
    fig = architecture_figure(preset(name))
    n = sum(preset(name).layers)
    assert fig.layout.meta["rows"] == rows
    assert fig.layout.meta["per_row"] <= 12 and fig.layout.meta["per_row"] * rows >= n
    assert fig.layout.height == 80 + 150 * rows
    assert len(fig.data) <= 12  # a dozen traces however deep: cheap to build and draw
    ys = sorted({float(y) for y in trace(fig, "blocks").y})
    assert len(ys) == rows


def test_max_per_row_narrows_the_figure():
    fig = architecture_figure(preset("resnet56"), max_per_row=6)
    assert fig.layout.meta["per_row"] <= 6 and fig.layout.meta["rows"] == 5


def test_block_values_colour_blocks_on_a_log_scale():
    cfg = preset("resnet20")
    names = [r["name"] for r in describe(cfg).level("block")]
    values = {n: 10.0 ** -(i + 1) for i, n in enumerate(names)}
    values["layer1.0"] = 0.0  # underflow: no place on a log scale, drawn apart
    fig = architecture_figure(cfg, block_values=values, value_label="|dL/dh|")
    coloured = trace(fig, "blocks")
    assert coloured.marker.colorscale is not None and coloured.marker.colorbar.title.text == "|dL/dh|"
    assert list(coloured.text) == names[1:]
    assert np.allclose(coloured.marker.color, [-(i + 1) for i in range(1, len(names))])
    assert coloured.marker.cmin == pytest.approx(-9) and coloured.marker.cmax == pytest.approx(-2)
    assert all(t.startswith("1e-") for t in coloured.marker.colorbar.ticktext)
    zero = trace(fig, "|dL/dh| 0 or missing")
    assert list(zero.text) == ["layer1.0"]
    # without values the blocks are plain, with no colour bar
    plain = trace(architecture_figure(cfg), "blocks")
    assert plain.marker.colorbar.title.text is None and plain.marker.color == "#e4e4e4"


def test_equal_values_still_give_a_colour_range():
    cfg = preset("resnet20")
    fig = architecture_figure(cfg, block_values={r["name"]: 0.5 for r in describe(cfg).level("block")})
    m = trace(fig, "blocks").marker
    assert m.cmin < math.log10(0.5) < m.cmax


def test_custom_title():
    assert architecture_figure(preset("resnet20"), title="mine").layout.title.text == "mine"
    assert architecture_figure(preset("resnet20", shortcut="C")).layout.title.text.startswith("custom residual")
