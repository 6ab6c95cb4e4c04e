"""The Overview page in real headless Chromium: the root URL opens it, the gradient button draws the
chart, the digit picker redraws the maps; screenshots of each section for review."""

from __future__ import annotations

import pytest

from tests.conftest import ARTIFACTS, screenshot, wait_for_app

pytestmark = pytest.mark.browser

CHART = '[data-testid="stPlotlyChart"]'


def open_overview(tab, query: str = "") -> None:
    tab.goto(f"{tab.base_url}/{query}")
    wait_for_app(tab)
    tab.get_by_role("heading", name="Residual networks, from the ground up").wait_for(timeout=60_000)
    # the page writes its state to the URL as its last step: then every section is drawn
    tab.wait_for_function("() => location.search.includes('ov_digit=')", timeout=90_000)
    tab.wait_for_function(f"() => document.querySelectorAll('{CHART} .main-svg').length >= 5", timeout=60_000)
    wait_for_app(tab)


def section_shot(tab, heading: str, name: str) -> None:
    """Scroll to a section and keep what the viewport shows, for a reviewer to read at full size."""
    tab.get_by_role("heading", name=heading).evaluate("e => e.scrollIntoView({block: 'start'})")
    tab.wait_for_timeout(500)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def chart_with(tab, text: str):
    return tab.locator(CHART).filter(has_text=text)


def test_landing_page_and_gradient_button(page):
    open_overview(page)
    screenshot(page, "overview_landing")
    assert page.url.split("?")[0].rstrip("/") in (page.base_url, page.base_url + "/overview")  # the default page
    assert page.get_by_text("1 + 16 + 1 = 18").count() >= 1
    assert chart_with(page, "plain-56 (no skips)").count() == 0  # not measured before the click
    section_shot(page, "Gradients and the update rule", "overview_update_rule")

    page.get_by_role("button", name="Measure plain-56 against ResNet-56").click()
    chart_with(page, "plain-56 (no skips)").first.wait_for(timeout=90_000)
    page.wait_for_function("() => location.search.includes('ov_grad=1')", timeout=60_000)  # the run ended
    wait_for_app(page)
    sentence = page.locator('[data-testid="stMarkdownContainer"] strong').filter(
        has_text="In the 56-layer plain net").first.inner_text()
    assert "with skip connections it receives" in sentence
    section_shot(page, "The vanishing gradient", "overview_vanishing_gradient")
    screenshot(page, "overview_after_gradient_button")


def test_digit_picker_redraws_the_maps(page):
    open_overview(page)
    section_shot(page, "Residual learning: output = x + F(x)", "overview_residual_digit700")
    before = chart_with(page, "Block layer1.0").first.inner_html()
    box = page.get_by_label("Test digit", exact=True)
    box.fill("300")
    box.press("Enter")
    page.wait_for_function(
        f"() => [...document.querySelectorAll('{CHART}')].some(e => e.textContent.includes('test digit #300'))",
        timeout=60_000)
    page.wait_for_function("() => location.search.includes('ov_digit=300')", timeout=60_000)
    wait_for_app(page)
    assert chart_with(page, "Block layer1.0").first.inner_html() != before
    section_shot(page, "Residual learning: output = x + F(x)", "overview_residual_digit300")
    section_shot(page, "When the shapes differ", "overview_shortcuts")
    section_shot(page, "Basic and bottleneck blocks", "overview_blocks")
    section_shot(page, "Counting layers", "overview_layer_count")


def test_batchnorm_caveat_and_links(page):
    open_overview(page, "?ov_grad_bn=1")  # the default page lives at the root; /overview is not routed
    chart_with(page, "plain-56 (no skips)").first.wait_for(timeout=90_000)
    wait_for_app(page)
    assert page.get_by_text("explodes towards the input").count() >= 1
    section_shot(page, "An honest caveat: BatchNorm", "overview_batchnorm")
    section_shot(page, "Explore", "overview_explore")
    page.get_by_role("link", name="The same nets with BatchNorm: Gradient flow").click()
    page.wait_for_url("**/gradient-flow?**", timeout=60_000)
    wait_for_app(page)
    assert "gf_bn=1" in page.url
