"""Demo links and refused-URL notes in real headless Chromium: what the address bar and the page show."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlparse

import pytest

from tests.conftest import open_path, screenshot, wait_for_app
from ui.classroom import DEMOS, link_labels

pytestmark = pytest.mark.browser
BY_KEY = {d.key: d for d in DEMOS}


def query(tab) -> dict[str, str]:
    return dict(parse_qsl(urlparse(tab.url).query))


def open_gradient_flow(tab) -> None:
    open_path(tab, "gradient-flow", '[data-testid="stPlotlyChart"] .gtitle')


def sentence(tab) -> str:
    return tab.locator('[data-testid="stMarkdownContainer"] strong').filter(has_text="first").first.inner_text()


def test_demo_link_from_its_own_page_sets_the_url_and_survives_a_toggle_and_a_reload(page):
    open_gradient_flow(page)
    assert "56-layer" in sentence(page)
    demo = BY_KEY["clean-path"]
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("Classroom demos").click()
    sidebar.get_by_role("link", name=demo.title).click()
    page.wait_for_function("() => location.search.includes('gf_depth=20')", timeout=120_000)
    wait_for_app(page, timeout=180_000)
    page.wait_for_function("() => document.body.innerText.includes('20-layer')", timeout=120_000)
    assert query(page) == demo.query  # the address bar is the demo's

    sidebar.get_by_text("BatchNorm", exact=True).click()  # the next toggle keeps the demo's other settings
    page.wait_for_function("() => location.search.includes('gf_bn=1')", timeout=120_000)
    wait_for_app(page, timeout=180_000)
    assert query(page) == {**demo.query, "gf_bn": "1"}
    assert "20-layer" in sentence(page)

    page.reload()  # reloading (or sharing the link) gives the demo, with the toggle
    wait_for_app(page, timeout=180_000)
    page.wait_for_selector('[data-testid="stPlotlyChart"] .gtitle', timeout=180_000)
    assert "20-layer" in sentence(page)
    assert query(page) == {**demo.query, "gf_bn": "1"}
    screenshot(page, "links_demo_after_toggle_and_reload")


def test_sidebar_demo_titles_are_not_cut(page):
    open_path(page, "compare", '[data-testid="stMultiSelect"]')
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("Classroom demos").click()
    sidebar.get_by_role("link", name=DEMOS[-1].title).wait_for(timeout=30_000)
    labels = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid="stSidebar"] [data-testid="stExpander"] [data-testid="stPageLink-NavLink"] p')]
        .filter(p => p.offsetWidth)  // the demos' links: the page links above them are the navigation
        .map(p => [p.textContent, p.scrollWidth, p.clientWidth, p.getBoundingClientRect().right,
                   p.closest('[data-testid="stSidebar"]').getBoundingClientRect().right])""")
    assert sorted(t for t, *_ in labels) == sorted(label for d in DEMOS for label in link_labels(d))
    for title, scroll, client, right, sidebar_right in labels:
        assert scroll <= client and right <= sidebar_right, title  # whole, and inside the sidebar
    screenshot(page, "links_sidebar_demos")


def test_demo_links_to_the_open_page_are_not_drawn_as_the_current_page(page):
    """On Gradient flow, its demos' links are plain links; only the navigation marks the page."""
    open_gradient_flow(page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("Classroom demos").click()
    here = [d for d in DEMOS if d.page == "pages/gradient-flow.py"]
    assert len(here) >= 2
    sidebar.get_by_role("link", name=here[-1].title).wait_for(timeout=30_000)
    page.mouse.move(900, 5)  # away from every link: a hovered link has a background of its own
    page.wait_for_timeout(300)
    shown = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid="stSidebar"] [data-testid="stPageLink-NavLink"]')].filter(a => a.offsetWidth).map(a =>
        [a.innerText.split('\\n').map(s => s.trim()).filter(Boolean).pop(), !!a.closest('[data-testid="stExpander"]'),
         getComputedStyle(a).backgroundColor !== 'rgba(0, 0, 0, 0)'])""")
    demos = {label: marked for label, in_demos, marked in shown if in_demos}
    assert {d.title for d in here} <= set(demos), demos
    assert not any(demos.values()), [label for label, marked in demos.items() if marked]
    assert [label for label, in_demos, marked in shown if marked and not in_demos] == ["Gradient flow"]


def test_a_refused_url_value_on_train_stays_on_screen(page):
    page.goto(f"{page.base_url}/train?tr_steps=-5")
    wait_for_app(page, timeout=180_000)
    note = page.get_by_text("tr_steps='-5' was ignored")
    note.wait_for(timeout=120_000)
    page.wait_for_timeout(3000)  # past the preview's rerun (0.8 s) and a few more
    wait_for_app(page, timeout=180_000)
    assert note.count() == 1 and note.is_visible()
    assert "allowed: a whole number from 1 to" in note.inner_text()
    screenshot(page, "links_train_refused_note")
