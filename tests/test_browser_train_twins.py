"""Twin runs and the time scrubber on the Train page, in real headless Chromium."""

from __future__ import annotations

import pytest

from tests.conftest import block_fills, screenshot, scrub_to_first_step, wait_for_app

pytestmark = pytest.mark.browser

HEATMAPS = (".st-key-tr_heatmap", ".st-key-tr_heatmap_plain", ".st-key-tr_ratio")


def title(tab, key: str) -> str:
    return tab.locator(f".st-key-{key} .gtitle").text_content()


def test_twin_run_fills_both_heatmaps_and_the_scrubber_recolours(page):
    tab = page
    tab.set_viewport_size({"width": 1400, "height": 3600})  # the page scrolls inside: a tall window shows it all
    # a small net of three blocks: what is checked is the twin view, not the net (ResNet-20 took this
    # test twice as long on 2 cores, most of it the browser drawing its bigger heatmaps and diagrams)
    tab.goto(tab.base_url + "/train?tr_twin=1&tr_steps=30&tr_batch_size=16"
             "&tr_preset=custom&tr_layout=blocks&tr_layers=1,1,1&tr_widths=8,16,32")
    tab.wait_for_selector("text=Press Start to train", timeout=60_000)  # the page before Start
    wait_for_app(tab)
    assert tab.locator(".st-key-tr_twin input[type=checkbox]").is_checked()
    tab.get_by_role("button", name="Start").click()

    for sel in HEATMAPS:  # both nets' heatmaps and their log ratio draw real cells while training
        tab.wait_for_selector(f"{sel} .heatmaplayer image", timeout=90_000)
    # a curve with a drawn segment (a one-point trace's path is never "visible"): the first logs after step 1
    tab.wait_for_selector(".st-key-tr_curves .scatterlayer .trace path.js-line[d*='L']", state="attached",
                          timeout=120_000)
    assert "tr_twin=1" in tab.url and "tr_job=" in tab.url
    assert tab.get_by_text("Plain twin", exact=True).count() >= 1
    screenshot(tab, "train_twins_running")

    # both finish together (lockstep), and the page stops refreshing
    tab.wait_for_function("() => (document.body.innerText.match(/finished/g) || []).length >= 2", timeout=180_000)
    tab.wait_for_function("() => !document.querySelector('.st-key-tr_start button').disabled", timeout=30_000)
    wait_for_app(tab)
    tab.wait_for_function("() => /step 30,/.test(document.querySelector('.st-key-tr_diagram .gtitle')?.textContent)",
                          timeout=30_000)  # the scrubber followed training to its end
    before = {k: block_fills(tab, k) for k in ("tr_diagram", "tr_diagram_plain")}
    assert all(len(f) == 3 for f in before.values())  # three blocks coloured in each net
    screenshot(tab, "train_twins_finished")

    # the scrubber back to the first step: the cursor moves and both diagrams recolour
    scrub_to_first_step(tab, "tr_scrub")
    tab.wait_for_function("() => /step 1,/.test(document.querySelector('.st-key-tr_diagram_plain .gtitle')"
                          "?.textContent)", timeout=30_000)
    after = {k: block_fills(tab, k) for k in before}
    assert after["tr_diagram"] != before["tr_diagram"] and after["tr_diagram_plain"] != before["tr_diagram_plain"]
    assert title(tab, "tr_diagram").startswith("Residual net · step 1,")
    for sel in HEATMAPS:
        assert tab.locator(f"{sel} .layer-above path, {sel} .shapelayer path").count() >= 2  # the cursor
    screenshot(tab, "train_twins_scrubbed_to_step_1")
