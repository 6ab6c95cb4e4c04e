"""Training figures: the numbers behind the colours, checked against a hand computation."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from resnet_core.figures import training as T

LAYERS = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "fc"]


def _grads(values: np.ndarray, steps, layers=LAYERS, kind="weight_grad") -> pd.DataFrame:
    """Long-format records from a (layers, steps) array, in a shuffled row order."""
    rows = [(s, layer, kind, values[i, j]) for i, layer in enumerate(layers) for j, s in enumerate(steps)]
    df = pd.DataFrame(rows, columns=["step", "layer", "kind", "value"])
    return df.sample(frac=1, random_state=0)


def _z(fig) -> np.ndarray:
    return np.asarray(fig.data[0].z, dtype=float)


def test_grid_keeps_layer_order_and_sorts_steps():
    v = np.arange(1, 16, dtype=float).reshape(5, 3)
    df = pd.concat([_grads(v, [30, 10, 20]), _grads(v * 0 + 7, [10], ["not-in-order"] * 5)])
    grid, steps = T.layer_grid(df, "weight_grad", LAYERS[::-1])
    assert steps.tolist() == [10, 20, 30]
    assert np.array_equal(grid, v[::-1][:, [1, 2, 0]])  # reversed order, step 10 first
    with pytest.raises(ValueError, match="act_grad"):
        T.layer_grid(df, "gradient", LAYERS)


def test_heatmap_shape_layers_bottom_up_and_log_values():
    v = 10.0 ** -np.arange(1, 16).reshape(5, 3)
    fig = T.heatmap_figure(_grads(v, [0, 1, 2]), "weight_grad", LAYERS)
    assert _z(fig).shape == (5, 3)
    assert list(fig.data[0].y) == LAYERS  # row 0 is drawn at the bottom: the input end
    assert list(fig.data[0].x) == [0, 1, 2]
    assert np.allclose(_z(fig), np.log10(v), atol=1e-5)
    assert np.allclose(np.asarray(fig.data[0].customdata)[..., 0], v, rtol=1e-5)


def test_layers_without_records_are_left_out_in_order():
    v = np.ones((5, 2))
    df = _grads(v, [0, 1])
    fig = T.heatmap_figure(df[df["layer"] != "layer1.0.conv2"], "weight_grad", LAYERS)
    assert list(fig.data[0].y) == [n for n in LAYERS if n != "layer1.0.conv2"]


@pytest.mark.parametrize("n", [1, 299, 300, 301, 599, 600, 601, 1000, 4321])
def test_downsampling_bounds_columns_and_keeps_the_last_step(n):
    steps = np.arange(n) * 5 + 7
    fig = T.heatmap_figure(_grads(np.ones((5, n)), steps), "weight_grad", LAYERS, max_columns=300)
    x = np.asarray(fig.data[0].x)
    assert len(x) <= 300 and _z(fig).shape == (5, len(x))
    assert x[-1] == steps[-1] and np.all(np.diff(x) > 0)
    assert len(x) == math.ceil(n / math.ceil(n / 300))


def test_binned_value_is_the_geometric_mean():
    # Four steps, two columns: each column is the mean of two log10 values, placed at its last step.
    v = np.array([[1e-2, 1e-4, 1e-6, 1e-6]] * 5)
    fig = T.heatmap_figure(_grads(v, [0, 10, 20, 30]), "weight_grad", LAYERS, max_columns=2)
    assert list(fig.data[0].x) == [10, 30]
    assert np.allclose(_z(fig)[0], [-3, -6])
    assert "geometric mean of 2 steps" in fig.data[0].hovertemplate


def test_zeros_are_a_separate_grey_layer():
    v = np.full((5, 4), 1e-3)
    v[0, :2] = 0  # first column of layer 0: all zero
    v[1, 0] = 0  # first column of layer 1: a zero and 1e-3
    fig = T.heatmap_figure(_grads(v, [0, 1, 2, 3]), "weight_grad", LAYERS, max_columns=2)
    z, zero = _z(fig), np.asarray(fig.data[1].z, dtype=float)
    assert np.isnan(z[0, 0]) and zero[0, 0] == 1
    assert math.isclose(z[1, 0], -3, abs_tol=1e-5) and np.isnan(zero[1, 0])
    assert "exactly 0" in fig.data[1].hovertemplate and fig.data[1].colorscale[0][1] == T.ZERO_COLOUR
    no_zero = T.heatmap_figure(_grads(np.ones((5, 2)), [0, 1]), "weight_grad", LAYERS)
    assert len(no_zero.data) == 1


def test_zrange_is_respected_and_shared():
    a = _grads(np.full((5, 3), 1e-2), [0, 1, 2])
    b = _grads(np.full((5, 3), 1e-6), [0, 1, 2])
    rng = T.shared_zrange(a, b, kind="weight_grad")
    assert rng == (1e-6, 1e-2)
    for df in (a, b):
        fig = T.heatmap_figure(df, "weight_grad", LAYERS, zrange=rng)
        assert (fig.data[0].zmin, fig.data[0].zmax) == pytest.approx((-6, -2))
    assert list(fig.data[0].colorbar.ticktext) == ["1e-6", "1e-5", "1e-4", "1e-3", "1e-2"]
    with pytest.raises(ValueError, match="zrange"):
        T.heatmap_figure(a, "weight_grad", LAYERS, zrange=(0, 1))


def test_cursor_line():
    fig = T.heatmap_figure(_grads(np.ones((5, 3)), [0, 5, 9]), "weight_grad", LAYERS, cursor_step=5)
    assert fig.layout.shapes and all(s.x0 == 5 == s.x1 for s in fig.layout.shapes)
    assert not T.heatmap_figure(_grads(np.ones((5, 3)), [0, 5, 9]), "weight_grad", LAYERS).layout.shapes


def test_log_ratio_on_shared_layers_and_steps():
    va = 10.0 ** -np.arange(5 * 4).reshape(5, 4)
    vb = np.full((4, 3), 1e-3)
    a = _grads(va, [0, 1, 2, 3])
    b = _grads(vb, [1, 2, 3], LAYERS[:4])  # no "fc" record and no step 0 in run b
    fig = T.log_ratio_heatmap(a, b, "weight_grad", LAYERS, names=("plain", "resnet"))
    assert list(fig.data[0].y) == LAYERS[:4] and list(fig.data[0].x) == [1, 2, 3]
    assert np.allclose(_z(fig), np.log10(va[:4, 1:] / vb), atol=1e-4)
    assert fig.data[0].zmin == -fig.data[0].zmax  # centred: white means equal
    assert fig.data[0].colorscale[0][1] != fig.data[0].colorscale[-1][1]
    assert "plain / resnet" in fig.data[0].hovertemplate


def test_log_ratio_marks_a_zero_in_one_run():
    va, vb = np.full((5, 2), 1e-3), np.full((5, 2), 1e-3)
    va[2, 0] = 0
    fig = T.log_ratio_heatmap(_grads(va, [0, 1]), _grads(vb, [0, 1]), "weight_grad", LAYERS)
    assert np.isnan(_z(fig)[2, 0]) and np.asarray(fig.data[1].z, dtype=float)[2, 0] == 1
    assert np.allclose(np.nan_to_num(_z(fig)), 0)


def _metrics(run=None, n=50):
    rows = []
    for s in range(n):
        rows.append(dict(step=s, split="train", loss=2.0 / (s + 1), accuracy=s / n, lr=0.1, seconds=s,
                         samples_per_s=100.0))
        if s % 10 == 9:
            rows.append(dict(step=s, split="test", loss=2.5 / (s + 1), accuracy=s / n / 2, lr=0.1,
                             seconds=s, samples_per_s=100.0))
    df = pd.DataFrame(rows)
    return df if run is None else df.assign(run=run)


def test_curves_single_run():
    fig = T.curves_figure(_metrics())
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.tickformat == ".0%"
    names = [(t.name, t.yaxis) for t in fig.data]
    assert names == [("train", "y"), ("train", "y2"), ("test", "y"), ("test", "y2")]
    assert fig.data[0].line.color != fig.data[2].line.color
    assert list(fig.data[2].x) == [9, 19, 29, 39, 49]


def test_curves_several_runs_get_distinct_colours_and_thinning_keeps_the_last_point():
    df = pd.concat([_metrics("plain-20", 5000), _metrics("resnet-20", 5000)])
    fig = T.curves_figure(df, max_points=300)
    colours = {t.name.split(" · ")[0]: t.line.color for t in fig.data}
    assert set(colours) == {"plain-20", "resnet-20"} and len(set(colours.values())) == 2
    train = fig.data[0]
    assert len(train.x) <= 300 and train.x[-1] == 4999 and train.x[0] == 0
    assert {t.line.dash for t in fig.data} == {"solid", "dot"}


def test_empty_inputs_draw_a_message():
    assert "no metrics" in T.curves_figure(pd.DataFrame()).layout.annotations[0].text
    empty = pd.DataFrame(columns=["step", "layer", "kind", "value"])
    assert "no gradient" in T.heatmap_figure(empty, "act_grad", LAYERS).layout.annotations[0].text


def test_many_layers_fewer_labels_and_fast_enough():
    layers = ["conv1"] + [f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in range(18) for c in (1, 2)]
    layers.append("fc")
    steps = np.arange(0, 20000, 10)
    v = np.random.default_rng(0).random((len(layers), len(steps))) + 0.1
    df = pd.DataFrame({"step": np.tile(steps, len(layers)), "layer": np.repeat(layers, len(steps)),
                       "kind": "act_grad", "value": v.ravel()})
    start = time.perf_counter()
    fig = T.heatmap_figure(df, "act_grad", layers, max_columns=300)
    assert time.perf_counter() - start < 2.0  # ~50 ms here; loose for a shared CI box
    ticks = list(fig.layout.yaxis.tickvals)
    assert 5 <= len(ticks) <= T.MAX_TICKS and ticks == sorted(ticks, key=layers.index)
    assert {"layer2.0.conv1", "layer3.0.conv1", "fc"} <= set(ticks)
    assert len(fig.data[0].y) == len(layers)  # every row still there, named in the hover


@pytest.mark.parametrize(("lo", "hi"),
                         [(1.8, 2.4), (0.0009, 2.5), (0.3, 2.4), (0.012, 0.019), (3.0, 30.0), (1.56, 2.3)])
def test_the_loss_axis_has_four_to_eight_labelled_ticks_inside_the_data(lo, hi):
    steps = np.arange(1, 21)
    metrics = pd.DataFrame({"step": steps, "split": "train", "loss": np.geomspace(hi, lo, 20),
                            "accuracy": np.linspace(0.1, 0.9, 20)})
    axis = T.curves_figure(metrics).layout.yaxis
    ticks = list(axis.tickvals)
    assert axis.type == "log" and 4 <= len(ticks) <= 8
    assert all(lo - 1e-12 <= t <= hi + 1e-12 for t in ticks) and ticks == sorted(ticks)
    assert [float(t) for t in axis.ticktext] == pytest.approx(ticks, rel=1e-2)  # the labels say the values
