"""The Degradation page in real headless Chromium: a tiny experiment queues, fills the figure, and stays."""

from __future__ import annotations

import pytest

from tests.conftest import screenshot, wait_for_app

pytestmark = pytest.mark.browser

FIGURE = ".st-key-dg_figure"


def test_tiny_degradation_experiment_fills_the_figure(page):
    tab = page
    tab.set_viewport_size({"width": 1400, "height": 2000})
    tab.goto(tab.base_url + "/degradation?dg_depths=8,14&dg_steps=4&dg_batch_size=16")
    tab.wait_for_selector("text=Run the experiment", timeout=60_000)
    wait_for_app(tab)
    tab.get_by_role("button", name="Run the experiment").click()
    tab.wait_for_selector("text=/\\d of 4 runs done/", timeout=60_000)
    assert "dg_jobs=" in tab.url
    tab.wait_for_selector("text=4 of 4 runs done", timeout=240_000)
    wait_for_app(tab)
    # our four points per panel and the paper's five, in SVG
    tab.wait_for_function(f"""() => {{
        const gd = document.querySelector('{FIGURE} .js-plotly-plot');
        return gd && gd.querySelectorAll('.scatterlayer .trace .point').length >= 4 + 4 + 5;
    }}""", timeout=30_000)
    legend = " ".join(tab.locator(f"{FIGURE} .legendtext").all_text_contents())
    assert "not ours" in legend and "ours: plain" in legend and "ours: residual" in legend
    screenshot(tab, "degradation_done")

    # another page and back: the results are still there
    tab.get_by_role("link", name="Train").click()
    wait_for_app(tab)
    tab.get_by_role("link", name="Degradation").click()
    tab.wait_for_selector("text=4 of 4 runs done", timeout=30_000)
    tab.wait_for_selector(f"{FIGURE} .scatterlayer .trace .point", timeout=30_000)
