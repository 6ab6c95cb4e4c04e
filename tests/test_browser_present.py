"""Presenter mode in real headless Chromium: every page in both modes, screenshots for review."""

from __future__ import annotations

import pytest

from tests.conftest import open_path, screenshot, wait_for_app

pytestmark = pytest.mark.browser

PAGES = {"overview": "h1", "architecture": ".st-key-arch_diagram .main-svg", "gradient-flow": ".main-svg",
         "train": ".st-key-tr_start", "compare": '[data-testid="stMultiSelect"]', "inspect": "h1", "why": "h1",
         "degradation": ".st-key-dg_start"}
ZOOM_JS = "() => getComputedStyle(document.querySelector('[data-testid=\"stMainBlockContainer\"]')).zoom"
# true once the page's main block exists with the given zoom (a rerun may redraw its style a moment later)
ZOOM_IS = ("(z) => {{ const m = document.querySelector('[data-testid=\"stMainBlockContainer\"]'); "
           "return !!m && (getComputedStyle(m).zoom === z) === {want}; }}")


def open_settled(tab, path: str, ready: str) -> None:
    open_path(tab, path, ready)
    wait_for_app(tab, timeout=180_000)  # and whatever the page drew after its ready element
    tab.wait_for_timeout(800)


@pytest.mark.parametrize("path", list(PAGES))  # a page a test: each well inside the per-test timeout
def test_every_page_in_both_modes(page, path):
    """Opened in presenter mode by its link, then switched off by its toggle: two page loads, not three."""
    page.set_default_timeout(120_000)  # 2 cores shared with other work: a full-page screenshot can take a while
    ready = PAGES[path]
    open_settled(page, f"{path}?present=1", ready)
    page.wait_for_function(ZOOM_IS.format(want="true"), arg="1.3", timeout=60_000)
    assert page.evaluate(ZOOM_JS) == "1.3"  # the page's text larger
    charts = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].map(g => [
        g.getBoundingClientRect().right,
        g.closest('[data-testid="stMainBlockContainer"]').getBoundingClientRect().right])""")
    assert all(right <= main + 1 for right, main in charts)  # every chart whole, inside the page
    assert not page.get_by_text("Device:").is_visible()  # the sidebar trimmed to what a demo needs
    assert "present=1" in page.url  # kept in the URL the page wrote
    screenshot(page, f"present_on_{path}")

    page.locator('[data-testid="stSidebar"]').get_by_text("Presenter mode").click()  # off again
    page.wait_for_function("() => !location.search.includes('present=1')", timeout=120_000)
    wait_for_app(page, timeout=180_000)
    page.wait_for_selector(ready, timeout=180_000)
    page.wait_for_function(ZOOM_IS.format(want="false"), arg="1.3", timeout=60_000)
    assert page.evaluate(ZOOM_JS) in ("1", "normal")  # the page's own size again
    assert page.get_by_text("Device:").is_visible()  # and the whole sidebar
    screenshot(page, f"present_off_{path}")
