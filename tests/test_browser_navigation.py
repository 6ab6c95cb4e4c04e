"""The sidebar's navigation on a first visit to a freshly started server, in real headless Chromium.

A `pages/` folder sits beside app.py, so Streamlit's first script run in a new server process is
its pre-st.navigation one: it lists the folder's files ("app", "architecture", "gradient flow", ...)
until app.py has run far enough to call st.navigation. Each test starts a server of its own (a
server that has served one page never shows that list again), opens one URL and samples the
sidebar's navigation entries every 100 ms, and on every change of the page, from the first paint
until the page has drawn; any entry that is not one of the app's pages fails the test.
"""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ARTIFACTS, ROOT, streamlit_server, wait_for_app

pytestmark = pytest.mark.browser

# Installed before any of the page's own scripts: keeps every distinct list of navigation entries
# the sidebar showed, with the time it first showed it. Entries are Streamlit's own navigation
# links and the page links of the sidebar outside its expanders (the classroom demos are page
# links with their own labels). `active` are the entries drawn as the current page.
SAMPLER = r"""
(() => {
  const seen = [];
  let last = null;
  const t0 = performance.now();
  const read = () => {
    const bar = document.querySelector('[data-testid="stSidebar"]');
    if (!bar) return;
    const links = [...bar.querySelectorAll('[data-testid="stSidebarNavLink"], [data-testid="stPageLink-NavLink"]')]
      .filter(a => !a.closest('[data-testid="stExpander"]'));
    // a link's text is its icon's name (a ligature of the icon font), then its label
    const label = a => a.innerText.split('\n').map(s => s.trim()).filter(Boolean).pop() || '';
    const entries = links.map(label);
    const active = links.filter(a => getComputedStyle(a).backgroundColor !== 'rgba(0, 0, 0, 0)').map(label);
    const dialog = [...document.querySelectorAll('[role="dialog"]')].map(d => d.innerText.trim()).join(' | ');
    const key = JSON.stringify([entries, active, dialog]);
    if (key !== last) { last = key; seen.push({t: Math.round(performance.now() - t0), entries, active, dialog}); }
  };
  window.__navSamples = seen;
  window.__navSamplesCount = 0;
  setInterval(() => { window.__navSamplesCount++; read(); }, 100);
  new MutationObserver(read).observe(document, {childList: true, subtree: true, attributes: true});
})();
"""




def app_pages() -> list[dict]:
    """app.py's pages in their order, each {title, url_path, default, icon}, read from its source: the
    tests follow PAGES (other pages may be added to it) rather than a copy of it."""
    tree = ast.parse((ROOT / "app.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "Page"]
    calls.sort(key=lambda n: (n.lineno, n.col_offset))
    return [{"default": False, **{k.arg: ast.literal_eval(k.value) for k in n.keywords}} for n in calls]


def page_titles() -> list[str]:
    return [p["title"] for p in app_pages()]


@pytest.mark.parametrize(("path", "title", "heading"), [
    ("/", "Overview", "Residual networks, from the ground up"),
    ("/gradient-flow", "Gradient flow", "Gradient flow"),  # a page whose URL is not a Python name
])  # a fresh server each (a minute on 2 cores): the default page and one deep link
def test_first_visit_shows_only_the_apps_pages(browser, tmp_path, path, title, heading):
    titles = page_titles()
    assert {"Overview", "Gradient flow"} <= set(titles), titles  # the pages opened here are the app's
    with streamlit_server(tmp_path) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            context.add_init_script(SAMPLER)
            tab = context.new_page()
            tab.goto(url + path, wait_until="commit")
            tab.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=120_000)
            wait_for_app(tab, timeout=120_000)
            tab.wait_for_timeout(1500)  # and a little longer: a late list would show here
            samples = tab.evaluate("window.__navSamples")
            ticks = tab.evaluate("window.__navSamplesCount")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)  # the viewport: the sidebar is what this test is about
            tab.screenshot(path=str(ARTIFACTS / f"navigation_first_visit_{title.lower().replace(' ', '_')}.png"),
                           timeout=120_000)
            errors = tab.locator('[data-testid="stException"]').count()
        finally:
            context.close()
    # the server warmed itself up as it started (ui/boot.py), every step done
    from ui.boot import STEPS, WARMED_PREFIX

    warmed = [line for line in (tmp_path / "streamlit.log").read_text().splitlines() if line.startswith(WARMED_PREFIX)]
    assert len(warmed) == 1, warmed
    assert "failed" not in warmed[0] and all(f"{name} " in warmed[0] for name, _ in STEPS), warmed[0]
    assert ticks >= 10, f"the sampler ran {ticks} times"  # it really sampled, every 100 ms
    strangers = [(s["t"], e) for s in samples for e in s["entries"] if e not in titles]
    assert not strangers, f"the sidebar listed entries that are not the app's pages (ms, entry): {strangers[:12]}"
    dialogs = [(s["t"], s["dialog"]) for s in samples if s["dialog"]]
    # a fresh server's first run resolves the URL against the pages/ folder's file names before app.py
    # routes it: a page file not named as its URL (gradient_flow.py for /gradient-flow) showed "Page not found"
    assert not dialogs, f"a dialog showed on the first visit: {dialogs[:3]}"
    final = samples[-1]
    assert final["entries"] == titles, f"the sidebar ends without the app's pages in order: {final['entries']}"
    assert final["active"] == [title], f"the current page is not the one marked: {final['active']}"
    assert errors == 0
