"""The Train page in real headless Chromium: start, watch it fill, pause, resume, stop."""

from __future__ import annotations

import re

import pytest

from tests.conftest import screenshot, wait_for_app, wait_or_say

pytestmark = pytest.mark.browser

HEATMAP = ".st-key-tr_heatmap"
CURVES = ".st-key-tr_curves"


def step_shown(tab) -> int:
    text = tab.locator("text=/\\d+ \\/ \\d+/").first.inner_text()
    return int(re.match(r"\s*([\d,]+)", text).group(1).replace(",", ""))


def test_train_page_start_pause_resume_stop(page):
    tab = page
    tab.goto(tab.base_url + "/train?tr_steps=150&tr_batch_size=32")
    tab.wait_for_selector("text=Press Start to train", timeout=60_000)  # the page before Start
    wait_for_app(tab)
    # a moment after the page, without a click: the diagram of the net Start will train (ResNet-20: 9 blocks)
    tab.wait_for_selector(".st-key-tr_preview .main-svg", timeout=30_000)
    stages = tab.locator(".st-key-tr_preview text", has_text=re.compile(r"layer\d · 3 × BasicBlock"))
    assert stages.count() == 3
    screenshot(tab, "train-before-start")
    tab.get_by_role("button", name="Start").click()

    # the heatmap has drawn real cells and the curves have a line
    tab.wait_for_selector(f"{HEATMAP} .heatmaplayer image", timeout=60_000)
    tab.wait_for_selector(f"{CURVES} .scatterlayer .trace path.js-line[d*='L']", timeout=60_000)  # a segment drawn
    assert "tr_job=" in tab.url  # the link reattaches to this run
    screenshot(tab, "train-running")

    tab.get_by_role("button", name="Pause").click()
    tab.wait_for_selector("text=paused", timeout=10_000)
    first = step_shown(tab)
    tab.wait_for_timeout(1500)
    assert step_shown(tab) <= first + 1
    screenshot(tab, "train-paused")

    tab.get_by_role("button", name="Resume").click()
    tab.wait_for_function(f"() => document.body.innerText.match(/(\\d+) \\/ 150/) && "
                          f"+document.body.innerText.match(/(\\d+) \\/ 150/)[1] > {first + 1}", timeout=30_000)

    # a reload in a new tab of the same URL finds the running job again
    other = tab.context.new_page()
    other.goto(tab.url)
    wait_for_app(other)
    wait_or_say(other, f"{HEATMAP} .heatmaplayer image", 90_000, "train-reopened-no-heatmap")
    other.close()

    tab.get_by_role("button", name="Stop").click()
    tab.wait_for_selector("text=stopped", timeout=10_000)
    screenshot(tab, "train-stopped")
    # the runs table lists it, once the rerun that follows the live view's "stopped" has drawn the page
    # (a fresh-clone run under ONEDNN_MAX_CPU_ISA=AVX2 looked before that rerun and found none)
    wait_or_say(tab, '[data-testid="stDataFrame"]', 30_000, "train-stopped-no-runs-table")
    assert tab.locator('[data-testid="stDataFrame"]').count() >= 1
