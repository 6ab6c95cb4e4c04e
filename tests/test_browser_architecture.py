"""The Architecture page in real headless Chromium: widgets redraw the diagram; screenshots for review."""

from __future__ import annotations

import pytest

from tests.conftest import screenshot, wait_for_app

pytestmark = pytest.mark.browser

TITLE_JS = "document.querySelector('[data-testid=\"stPlotlyChart\"] .gtitle')"


def chart_title(tab) -> str:
    return tab.evaluate(f"() => {TITLE_JS} ? {TITLE_JS}.textContent : ''")


def chart_svg(tab) -> str:
    return tab.locator('[data-testid="stPlotlyChart"] .main-svg').first.inner_html()


def wait_for_title(tab, prefix: str) -> None:
    tab.wait_for_function(f"() => {TITLE_JS} && {TITLE_JS}.textContent.startsWith({prefix!r})",
                          timeout=60_000)
    wait_for_app(tab)


def open_architecture(tab, query: str = "", chart: bool = True) -> None:
    # The root URL opens the Overview now; Architecture has its own path.
    tab.goto(f"{tab.base_url}/architecture{query}")
    wait_for_app(tab)
    if chart:
        tab.wait_for_selector('[data-testid="stPlotlyChart"] .gtitle', timeout=60_000)


def metric(tab, label: str) -> str:
    box = tab.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def test_skip_toggle_redraws_the_diagram(page):
    open_architecture(page)
    assert chart_title(page).startswith("ResNet-20: 1 + 18 + 1 = 20 layers")
    before = chart_svg(page)
    assert before.count("zero-pad") >= 2  # the two option A shortcuts are labelled on the figure
    screenshot(page, "architecture_resnet20")

    page.locator('[data-testid="stSidebar"]').get_by_text("Skip connections").click()
    wait_for_title(page, "plain-20")
    after = chart_svg(page)
    assert after != before and "zero-pad" not in after
    assert metric(page, "Parameters") == "269,722"  # option A: the plain twin has the same weights
    assert "arch_skip=0" in page.url  # the link reproduces the net
    screenshot(page, "architecture_plain20")


def test_preset_choice_and_deep_net(page):
    open_architecture(page)
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="ResNet-152 (ImageNet)").click()
    wait_for_title(page, "ResNet-152")
    assert metric(page, "Parameters") == "60,192,808"
    svg = chart_svg(page)
    assert "1x1 conv, /2" in svg and "layer3" in svg
    screenshot(page, "architecture_resnet152")


def test_link_opens_the_net_and_compare(page):
    open_architecture(page, "?arch_preset=resnet18&arch_compare_plain=1")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stPlotlyChart\"]').length == 2",
                           timeout=60_000)
    titles = page.evaluate("() => [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .gtitle')]"
                           ".map(e => e.textContent)")
    assert titles[0].startswith("ResNet-18") and titles[1].startswith("plain-18")
    assert metric(page, "Parameters (residual)") == "11,689,512"
    screenshot(page, "architecture_compare_resnet18")


def test_a_bad_custom_net_shows_the_reason_not_a_traceback(page):
    open_architecture(page, "?arch_preset=custom&arch_layout=blocks&arch_layers=2,2,2&arch_widths=16,32",
                      chart=False)
    page.wait_for_selector('[data-testid="stAlertContentError"]', timeout=60_000)
    error = page.locator('[data-testid="stAlertContentError"]').first.inner_text()
    assert "one width per stage" in error
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 0
    screenshot(page, "architecture_custom_error")
    page.locator('[data-testid="stSidebar"] input[aria-label="Widths per stage"]').fill("16,32,64")
    page.keyboard.press("Enter")
    wait_for_title(page, "custom residual net: 1 + 12 + 1 = 14")
    screenshot(page, "architecture_custom_blocks")


def test_the_net_survives_a_page_switch(page):
    open_architecture(page, "?arch_preset=resnet56&arch_skip=0")
    wait_for_title(page, "plain-56")
    page.locator(".st-key-app_nav").get_by_text("Gradient flow", exact=True).click()
    page.wait_for_url("**/gradient-flow**", timeout=60_000)
    wait_for_app(page)
    page.locator(".st-key-app_nav").get_by_text("Architecture", exact=True).click()
    wait_for_title(page, "plain-56")
    assert metric(page, "Parameters") == "853,018"
    assert "arch_preset=resnet56" in page.url and "arch_skip=0" in page.url
