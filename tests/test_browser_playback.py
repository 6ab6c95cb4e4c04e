"""A shipped recording playing on the Train page in real headless Chromium: labelled, moving, in the address."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlparse

import pytest

from resnet_core import playback
from tests.conftest import screenshot, wait_for_app
from ui.classroom import DEMOS

pytestmark = pytest.mark.browser


def test_the_twin_recording_plays_on_the_train_page(page):
    demo = next(d for d in DEMOS if d.key == "twin56")
    rec = playback.load_recording(playback.root() / "twin56")
    query = "&".join(f"{k}={v}" for k, v in demo.recording_query().items())
    page.set_viewport_size({"width": 1400, "height": 2600})  # the screenshot shows the heatmaps too
    page.goto(f"{page.base_url}/train?{query}")
    wait_for_app(page, timeout=180_000)
    page.get_by_text(f"({rec.made_on})").first.wait_for(timeout=180_000)  # the banner: Recording (made on …)
    page.wait_for_selector('.st-key-tr_scrub [data-testid="stSlider"]', timeout=180_000)
    # it plays: the position in the address moves on (the whole run in 30 s: ~40 recorded seconds a second)
    page.wait_for_function("() => parseFloat(new URLSearchParams(location.search).get('tr_rec_pos')) > 60",
                           timeout=120_000)
    address = dict(parse_qsl(urlparse(page.url).query))
    assert address["tr_rec"] == "twin56" and address["tr_rec_speed"] == "fit"
    banner = page.locator('[data-testid="stAlert"]').filter(has_text="Recording").first.inner_text()
    assert "Nothing trains now" in banner and "steps 200" in banner
    page.locator(".st-key-tr_rec_pause button").click()  # paused: a still picture to look at
    page.locator(".st-key-tr_rec_resume").wait_for(timeout=120_000)
    wait_for_app(page, timeout=180_000)
    for key in ("tr_heatmap", "tr_heatmap_plain", "tr_ratio"):
        page.wait_for_selector(f'.st-key-{key} [data-testid="stPlotlyChart"] .heatmaplayer', timeout=120_000)
    page.wait_for_timeout(1500)
    screenshot(page, "playback_train_twin56")

