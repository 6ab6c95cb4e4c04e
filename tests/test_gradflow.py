"""The gradient-flow figure and its words, checked against live gradflow() measurements."""

from __future__ import annotations

import math
import re

import pytest

from resnet_core.config import cifar_config
from resnet_core.figures.gradflow import (
    MORE_STYLES,
    PLAIN_STYLE,
    RESIDUAL_STYLE,
    explanation,
    fmt_norm,
    gradflow_figure,
    ratio_sentence,
    series,
    times,
)
from resnet_core.probe import GradFlow, gradflow


def measure(depth: int = 20, **kw) -> dict[str, GradFlow]:
    """The residual net and its plain twin, as the page measures them."""
    cfg = cifar_config(depth, in_channels=1, image_size=28, **kw)
    return {"residual": gradflow(cfg.residual_twin()), "plain": gradflow(cfg.plain_twin())}


@pytest.fixture(scope="module")
def relu20():
    return measure(20, batchnorm=False)


@pytest.fixture(scope="module")
def plain110():
    return measure(110, batchnorm=False)


# ---------------------------------------------------------------- numbers in words


@pytest.mark.parametrize("value, text", [
    (0.4921, "0.49"), (18.27, "18"), (4.79, "4.8"), (9569.2, "9,600"), (99.7, "100"), (0.0123, "0.012"),
    (2.3195e-21, "2.3×10⁻²¹"), (4.86e7, "4.9×10⁷"), (0.0099, "9.9×10⁻³"), (1e5, "1×10⁵"),
    (0.0, "0"), (math.nan, "n/a"), (math.inf, "∞"),
])
def test_fmt_norm(value, text):
    assert fmt_norm(value) == text


def test_times_reads_as_a_multiplier():
    assert times(0.49) == "0.49×" and times(9569) == "9,600×" and times(4.86e7) == "4.9×10⁷ times"


def test_ratio_sentence_states_the_measured_ratios(relu20, plain110):
    s = ratio_sentence(relu20)
    rp, rr = relu20["plain"].ratio, relu20["residual"].ratio
    assert s == (f"In the 20-layer plain net the first block receives {fmt_norm(rp)} times the gradient the "
                 f"last block receives; with skip connections it receives {fmt_norm(rr)}×.")
    s = ratio_sentence(plain110)
    assert "110-layer plain net the first block receives 0 (underflow) of the gradient" in s
    assert ratio_sentence({"r": relu20["residual"]}) == (
        f"In the 20-layer residual net the first block receives {fmt_norm(rr)}× the gradient the last "
        "block receives.")
    w = ratio_sentence(relu20, "weight")
    assert w.startswith("In the 20-layer plain net the first conv layer's weight gradient is ")
    assert fmt_norm(relu20["residual"].weight_ratio) in w
    assert ratio_sentence({}) == ""


# ---------------------------------------------------------------- the figure


def test_figure_has_both_nets_in_network_order_on_a_log_axis(relu20):
    fig = gradflow_figure({"ResNet-20": relu20["residual"], "plain-20": relu20["plain"]})
    res, plain = fig.data
    assert fig.layout.yaxis.type == "log"
    names = [n for n, _ in relu20["residual"].blocks]
    assert list(res.x) == list(plain.x) == list(range(1, len(names) + 1))  # input on the left
    assert [c[0] for c in res.customdata] == names
    assert list(res.y) == [v for _, v in relu20["residual"].blocks]
    assert (res.line.color, res.marker.symbol) == RESIDUAL_STYLE[:2]
    assert (plain.line.color, plain.marker.symbol) == PLAIN_STYLE[:2]
    assert "customdata[0]" in res.hovertemplate and "customdata[1]" in res.hovertemplate
    assert list(fig.layout.xaxis.ticktext) == names  # 9 blocks: every one labelled
    assert {a.text for a in fig.layout.annotations} >= {"stage 1", "stage 2", "stage 3"}


def test_zeros_are_drawn_on_a_labelled_floor_not_dropped(plain110):
    fig = gradflow_figure({"res": plain110["residual"], "plain": plain110["plain"]})
    plain_norms = [v for _, v in plain110["plain"].blocks]
    zeros = [i + 1 for i, v in enumerate(plain_norms) if v == 0]
    assert zeros, "plain-110 without BN underflows to exactly 0 at initialisation"
    line = next(t for t in fig.data if t.name == "plain")
    assert all(line.y[x - 1] is None for x in zeros)  # the line breaks instead of diving to 0
    floor = next(t for t in fig.data if t.name == "plain: 0 (underflow)")
    assert list(floor.x) == zeros
    smallest = min(v for g in plain110.values() for _, v in g.blocks if v > 0)
    assert all(0 < y < smallest for y in floor.y)
    assert math.log10(floor.y[0]) > fig.layout.yaxis.range[0]  # on screen
    assert any("0 (underflow)" in (a.text or "") for a in fig.layout.annotations)
    assert floor.marker.symbol.endswith("-open")


def test_zero_init_plain_zeros_are_called_exact_not_underflow():
    m = measure(8, batchnorm=False, zero_init_residual=True)
    fig = gradflow_figure({"plain": m["plain"]})
    assert any(t.name == "plain: 0 (exactly: behind a zero-initialised layer)" for t in fig.data)


def test_many_blocks_get_few_non_overlapping_ticks(plain110):
    fig = gradflow_figure({"res": plain110["residual"]})
    ticks = list(fig.layout.xaxis.ticktext)
    assert ticks == ["layer1.0", "layer2.0", "layer3.0", "layer3.17"]
    w = gradflow_figure({"res": plain110["residual"]}, "weight")
    wticks = list(w.layout.xaxis.tickvals)
    assert w.layout.xaxis.ticktext[0] == "conv1" and w.layout.xaxis.ticktext[-1] == "fc"
    assert min(b - a for a, b in zip(wticks, wticks[1:], strict=False)) >= 2


def test_weight_view_plots_conv_and_fc_but_not_batchnorm():
    g = gradflow(cifar_config(8, in_channels=1, image_size=28))
    names, norms = series(g, "weight")
    assert names[0] == "conv1" and names[-1] == "fc" and not any(".bn" in n or n == "bn1" for n in names)
    assert len(names) == g.config.depth  # the He et al. layer count: stem, block convs, fc
    fig = gradflow_figure({"g": g}, "weight")
    assert list(fig.data[0].y) == norms
    assert fig.layout.title.text.startswith("Weight gradient")
    with pytest.raises(ValueError, match="kind"):
        gradflow_figure({"g": g}, "bias")


def test_projection_shortcuts_line_up_with_the_plain_twin():
    cfg = cifar_config(8, in_channels=1, image_size=28, shortcut="B")
    res, plain = gradflow(cfg), gradflow(cfg.plain_twin())
    fig = gradflow_figure({"res": res, "plain": plain}, "weight")
    xr = dict(zip((c[0] for c in fig.data[0].customdata), fig.data[0].x, strict=True))
    xp = dict(zip((c[0] for c in fig.data[1].customdata), fig.data[1].x, strict=True))
    assert set(xr) > set(xp) and any("downsample" in n for n in xr)
    assert all(xr[n] == xp[n] for n in xp)  # shared layers at the same x


def test_more_nets_get_more_distinct_styles(relu20):
    fig = gradflow_figure({"a": relu20["residual"], "b": relu20["residual"], "c": relu20["plain"]})
    styles = {(t.line.color, t.marker.symbol) for t in fig.data}
    assert len(styles) == 3 and (MORE_STYLES[0][0], MORE_STYLES[0][1]) in styles


def test_nothing_to_show():
    fig = gradflow_figure({})
    assert not fig.data and "nothing to show" in fig.layout.annotations[-1].text


# ---------------------------------------------------------------- the explanation says what is measured


def paragraphs(results: dict[str, GradFlow], kind: str = "activation") -> str:
    return "\n".join(explanation(results, kind))


def numbers_in(text: str) -> set[str]:
    return set(re.findall(r"[\d.,]+(?:×10[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+)?", text))


def test_without_bn_vanishing_and_skips(relu20):
    text = paragraphs(relu20)
    assert "plain net's gradient vanishes" in text and "Skip connections carry it back" in text
    assert fmt_norm(relu20["plain"].ratio) in text and times(relu20["residual"].ratio) in text
    assert "With BatchNorm" not in text and "degradation" not in text


def test_with_bn_explodes_degradation_and_mild_skips():
    m = measure(56, batchnorm=True)
    rp, rr = m["plain"].ratio, m["residual"].ratio
    assert rp > 100 and 1 < rr < 100
    text = paragraphs(m)
    assert "explodes towards the input instead of vanishing" in text and times(rp) in text
    assert "degradation problem" in text and f"keep the growth mild: {times(rr)}" in text
    assert "vanishes" not in text


def test_sigmoid_post_is_not_clean_and_pre_is():
    post = measure(20, batchnorm=False, activation="sigmoid", style="post")
    text = paragraphs(post)
    assert post["residual"].ratio < 0.01 and "The skip path is not clean here" in text
    assert "at most 0.25" in text and fmt_norm(post["residual"].ratio) in text
    pre = measure(20, batchnorm=False, activation="sigmoid", style="pre")
    text = paragraphs(pre)
    assert pre["residual"].ratio > 0.1 and "Pre-activation blocks keep the skip path clean" in text
    assert "not clean" not in text


def test_kaiming_without_bn_residual_sums_grow():
    m = measure(56, batchnorm=False, init="kaiming")
    assert m["residual"].ratio > 100
    text = paragraphs(m)
    assert "Kaiming initialisation without BatchNorm lets the residual sums grow" in text
    assert times(m["residual"].ratio) in text
    zi = measure(56, batchnorm=False, init="kaiming", zero_init_residual=True)
    assert zi["residual"].ratio < 10 and "Kaiming" not in paragraphs(zi)


def test_zero_init(relu20):
    m = measure(20, batchnorm=True, zero_init_residual=True)
    text = paragraphs(m)
    assert "Zero-init residual" in text and "cuts the only path" in text
    assert m["plain"].blocks[0][1] == 0


@pytest.mark.parametrize("kw", [
    {"batchnorm": False}, {"batchnorm": True}, {"batchnorm": False, "activation": "tanh"},
    {"batchnorm": True, "activation": "gelu", "style": "pre"}, {"batchnorm": False, "init": "kaiming"},
    {"batchnorm": False, "activation": "gelu", "style": "post"},
])
def test_every_quoted_number_is_a_measured_one(kw):
    """No paragraph may state a number the measurement did not give (besides fixed facts)."""
    m = measure(14, **kw)
    measured = {fmt_norm(g.ratio) for g in m.values()} | {fmt_norm(g.weight_ratio) for g in m.values()}
    for kind in ("activation", "weight"):
        text = paragraphs(m, kind) + "\n" + ratio_sentence(m, kind)
        # the per-layer mean and the conv count are derived from the ratio and the depth
        text = re.sub(r"to about [\d.]+ of its size|the \d+ conv layers", "", text)
        fixed = {"1", "0.25", "2016", "2016b", "32", "28", "0", ",", ".", "14"}
        stated = {n.strip(".,") for n in numbers_in(text)} - {""}
        assert stated <= measured | fixed, (stated - measured - fixed, text)


def test_a_plain_net_with_no_gradient_anywhere_is_said_so():
    m = measure(110, batchnorm=False, style="pre")
    assert all(v == 0 for _, v in m["plain"].blocks)  # seed 0: even the last block underflows
    assert ("In the 110-layer plain net both the first and the last block receive 0 (underflow); with skip "
            "connections the first block receives ") in ratio_sentence(m)
    text = paragraphs(m)
    assert "nothing gets back through the plain net" in text and "shrinks layer after layer" not in text


def test_ratio_sentence_when_only_the_last_block_gets_nothing():
    g = gradflow(cifar_config(8, in_channels=1, image_size=28, skip=False))
    g = GradFlow(**{**g.__dict__, "blocks": (("a", 1.0), ("b", 0.0))})
    assert ratio_sentence({"p": g}) == (
        "In the 8-layer plain net the last block receives 0 (underflow) while the first block does not.")


def test_weight_view_says_whose_figures_the_paragraphs_quote_and_gives_the_weights(relu20):
    text = paragraphs(relu20, "weight")
    assert "quote the gradient at the block outputs" in text
    for g in relu20.values():  # the weights' own first/last ratio, as the headline gives it
        assert f"in the {g.config.depth}-layer" in text and times(g.weight_ratio) in text
    assert "quote the gradient at the block outputs" not in paragraphs(relu20)
