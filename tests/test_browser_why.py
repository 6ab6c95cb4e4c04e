"""The "Why it works" page in real headless Chromium: a twin record's lesion study and loss landscape
started from their buttons, their progress seen, their charts drawn; screenshots for review."""

from __future__ import annotations

import pytest

from tests.trainkit import tiny_twin_records

try:
    from tests.conftest import screenshot, streamlit_server, wait_for_app
except ImportError:
    from conftest import screenshot, streamlit_server, wait_for_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def why_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("why")
    tiny_twin_records(tmp / "runs", steps=30, residual="resnet-tiny", plain="plain-tiny")
    with streamlit_server(tmp) as url:
        yield url


@pytest.fixture
def tab(browser, why_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    t = context.new_page()
    yield t
    errors = t.locator('[data-testid="stException"]').count()
    context.close()
    assert errors == 0


def test_lesion_and_landscape_in_the_browser(tab, why_server):
    tab.goto(f"{why_server}/why")
    wait_for_app(tab, timeout=120_000)
    screenshot(tab, "why-open")
    tab.get_by_role("heading", name="Delete a block").first.wait_for(timeout=120_000)
    tab.get_by_role("button", name="Run the lesion study").click()
    tab.locator('[data-testid="stProgress"]').first.wait_for(timeout=60_000)  # the queued job's progress
    assert "Lesion study" in tab.locator('[data-testid="stProgress"]').first.inner_text()
    tab.get_by_text("Delete k blocks at random").first.wait_for(timeout=300_000)
    tab.wait_for_timeout(1500)
    lesion = tab.locator('[data-testid="stPlotlyChart"]').first
    assert "Delete one block" in lesion.inner_text()
    assert tab.get_by_text("cannot be deleted").first.is_visible()
    lesion.scroll_into_view_if_needed()
    screenshot(tab, "why-lesion")

    tab.get_by_role("button", name="Compute the landscape").click()
    tab.locator('[data-testid="stProgress"]').first.wait_for(timeout=60_000)
    assert "Loss landscape" in tab.locator('[data-testid="stProgress"]').first.inner_text()
    tab.get_by_text("residual: contour").first.wait_for(timeout=600_000)
    tab.get_by_text("plain: surface").first.wait_for(timeout=60_000)
    tab.wait_for_timeout(2000)
    tab.get_by_text("residual: contour").first.scroll_into_view_if_needed()
    assert tab.locator('[data-testid="stPlotlyChart"]').count() >= 7  # 2 lesion, 2 contours, 2 surfaces, 1 line
    screenshot(tab, "why-landscape")
