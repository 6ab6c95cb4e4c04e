"""The figures' template: plotly_white's look for what the app draws, at a fraction of its weight."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.io as pio

from resnet_core.figures import theme
from resnet_core.figures import training as T


def test_it_is_plotly_white_less_only_what_the_app_never_draws():
    white = pio.templates["plotly_white"].to_plotly_json()
    slim = pio.templates[theme.TEMPLATE].to_plotly_json()
    for key, value in white["layout"].items():
        if key in theme._LAYOUT_OMITTED:
            assert key not in slim["layout"]
        else:
            assert slim["layout"][key] == value, key
    assert set(slim["data"]) == set(theme.TRACES)
    for kind in theme.TRACES:
        want = [{k: v for k, v in t.items() if k != "colorscale"} for t in white["data"][kind]]
        assert slim["data"][kind] == want, kind
    assert len(json.dumps(slim)) < len(json.dumps(white)) / 3  # what every chart carries to the browser


def test_the_live_figures_use_it_and_set_the_colours_it_leaves_out():
    steps = np.arange(1, 41)
    evals = steps[::10]
    metrics = pd.DataFrame({"step": np.r_[steps, evals], "split": ["train"] * 40 + ["test"] * 4,
                            "loss": np.r_[1 / steps, 1 / evals], "accuracy": np.r_[1 - 1 / steps, 1 - 1 / evals]})
    layers = ["conv1", "layer1.0.conv1", "fc"]
    grads = pd.DataFrame([(s, "weight_grad", n, 1e-3 * s) for s in steps for n in layers],
                         columns=["step", "kind", "layer", "value"])
    for fig in (T.curves_figure(metrics), T.heatmap_figure(grads, "weight_grad", layers, cursor_step=20)):
        sent = json.loads(fig.to_json())
        assert sent["layout"]["template"] == pio.templates[theme.TEMPLATE].to_plotly_json()
        assert sent["layout"]["template"]["layout"]["plot_bgcolor"] == "white"
        for trace in sent["data"]:
            if trace["type"] in ("heatmap", "contour", "surface"):
                assert trace.get("colorscale"), trace["type"]  # the template no longer gives one
