"""The Compare page in real headless Chromium: upload two records, open them by link, scrub through time."""

from __future__ import annotations

import pickle

import pytest

from resnet_core import runzip
from tests.conftest import block_fills, screenshot, scrub_to_first_step, wait_for_app
from tests.test_exports import _zip, write_record

pytestmark = pytest.mark.browser

LABEL = "<b>residual</b> **tiny** %{x}"  # user text: must show as itself everywhere
CHARTS = ("cmp_curves", "cmp_heat_0", "cmp_heat_1", "cmp_diagram_0", "cmp_diagram_1", "cmp_ratio")


def upload(tab, name: str, data: bytes) -> None:
    tab.locator(".st-key-cmp_upload input[type=file]").set_input_files(
        {"name": name, "mimeType": "application/zip", "buffer": data})


def diagram_title(tab, i: int) -> str:
    return tab.locator(f".st-key-cmp_diagram_{i} .gtitle").text_content()


def test_upload_open_by_link_and_scrub(page, tmp_path):
    a = write_record(tmp_path, LABEL, skip=True, steps=(1, 10, 20, 30, 40))
    b = write_record(tmp_path, "plain tiny", skip=False, scale=1e-3, steps=(1, 10, 20, 30, 40), test_accuracy=0.5,
                     loss_scale=1.5)
    tab = page
    tab.goto(tab.base_url + "/")  # the router's first run: a fresh server opened at a page's URL skips it
    wait_for_app(tab)
    tab.goto(tab.base_url + "/compare")
    wait_for_app(tab)

    # a stranger's zip with a pickle in it is refused, saying what is wrong and what a record holds
    tab.get_by_text("Add a run record from a zip").click()
    config = (a / "config.json").read_bytes()
    upload(tab, "evil.zip", _zip({"run/config.json": config, "run/model.pkl": pickle.dumps(object)}))
    tab.wait_for_selector("text=Upload refused", timeout=30_000)
    wait_for_app(tab)
    tab.wait_for_timeout(500)  # the expander's opening animation
    assert "not part of a run record, which holds only config.json" in tab.locator(
        '[data-testid="stAlert"]').filter(has_text="Upload refused").inner_text()
    screenshot(tab, "compare_upload_refused")

    for record in (a, b):  # two real records, through the uploader the page shows
        upload(tab, f"{record.name}.zip", runzip.export_zip(record))
        tab.wait_for_selector(f"text=Imported as {record.name}", timeout=30_000)
    wait_for_app(tab)

    # a link names both runs (and one that is not here)
    tab.set_viewport_size({"width": 1400, "height": 3000})  # the page scrolls inside: a tall window shows it all
    tab.goto(f"{tab.base_url}/compare?cmp_runs={a.name},{b.name},no-such-run")
    wait_for_app(tab)
    for key in CHARTS:
        tab.wait_for_selector(f".st-key-{key} .main-svg", timeout=60_000)
    tab.wait_for_selector(".st-key-cmp_heat_0 .heatmaplayer image", timeout=30_000)
    tab.wait_for_selector(".st-key-cmp_curves .scatterlayer .trace path.js-line", timeout=30_000)
    assert tab.get_by_text("no-such-run").count() == 1  # the note names what was left out
    legend = tab.locator(".st-key-cmp_curves .legendtext").all_text_contents()
    assert f"{LABEL} · train" in legend  # markup and template characters shown as themselves
    assert tab.locator('[data-testid="stDataFrame"]').count() >= 1
    assert diagram_title(tab, 0).startswith("step 40 · ")
    before = [block_fills(tab, f"cmp_diagram_{i}") for i in (0, 1)]
    assert all(len(f) == 3 for f in before)  # three blocks coloured in each net
    screenshot(tab, "compare_two_runs_latest")

    # the scrubber back to the first step: the cursor moves, every diagram recolours
    thumb = scrub_to_first_step(tab, "cmp_step")
    tab.wait_for_function(
        "() => document.querySelector('.st-key-cmp_diagram_1 .gtitle')?.textContent.startsWith('step 1 · ')",
        timeout=30_000)
    after = [block_fills(tab, f"cmp_diagram_{i}") for i in (0, 1)]
    assert after[0] != before[0] and after[1] != before[1]
    cursor = tab.locator(".st-key-cmp_heat_0 .layer-above path, .st-key-cmp_heat_0 .shapelayer path")
    assert cursor.count() >= 2  # black under white
    screenshot(tab, "compare_scrubbed_to_step_1")

    thumb.press("ArrowRight")  # one step on: step 2, still drawn from step 1's gradients
    tab.wait_for_function("() => /cmp_step=2(&|$)/.test(location.search)", timeout=30_000)
    wait_for_app(tab)
    assert diagram_title(tab, 0).startswith("step 1 · ")


TEXT_BOXES_JS = """key => {
    const gd = document.querySelector(`.st-key-${key} .js-plotly-plot`);
    if (!gd) return null;
    const sel = '.gtitle, .legendtext, .annotation-text, .textpoint text, .xtitle, .ytitle, .cbtitle text, '
              + '.xtick text, .ytick text';
    const svg = gd.querySelector('.main-svg').getBoundingClientRect();
    return {svg: [svg.left, svg.right],
            boxes: [...gd.querySelectorAll(sel)].filter(e => e.textContent.trim()).map(e => {
                const r = e.getBoundingClientRect();
                const cls = e.closest('[class]').getAttribute('class').split(' ')[0];
                return [cls, e.textContent.trim(), r.left, r.top, r.right, r.bottom];
            }).filter(b => b[4] > b[2] && b[5] > b[3])};
}"""


def overlaps(boxes) -> list[tuple[str, str]]:
    """Pairs of text boxes that cover each other by more than a pixel each way (ticks of one axis
    touching their neighbours are the axis's own business and are checked too)."""
    out = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            w = min(a[4], b[4]) - max(a[2], b[2])
            h = min(a[5], b[5]) - max(a[3], b[3])
            if w > 1 and h > 1:
                out.append((a[1], b[1]))
    return out


def test_compare_layout_has_no_overlapping_text_at_1400_and_1000_px(page, tmp_path):
    short = write_record(tmp_path, "ResNet-8 · mnist-5k · 100 steps · seed 0", skip=True, steps=tuple(range(1, 101, 3)))
    long = write_record(tmp_path, "plain-8 · mnist-5k · 300 steps · seed 0", skip=False, scale=1e-3,
                        steps=tuple(range(1, 301, 5)))
    tab = page
    tab.goto(tab.base_url + "/")
    wait_for_app(tab, timeout=180_000)
    tab.goto(tab.base_url + "/compare")
    wait_for_app(tab, timeout=180_000)
    dialog = tab.get_by_role("dialog").filter(has_text="Page not found")  # see test_browser_gradient_flow
    if dialog.count():
        tab.keyboard.press("Escape")
    tab.get_by_text("Add a run record from a zip").click(timeout=180_000)
    for record in (short, long):
        upload(tab, f"{record.name}.zip", runzip.export_zip(record))
        tab.wait_for_selector(f"text=Imported as {record.name}", timeout=60_000)
    for width in (1400, 1000):
        tab.set_viewport_size({"width": width, "height": 3600})
        tab.goto(f"{tab.base_url}/compare?cmp_runs={short.name},{long.name}")
        wait_for_app(tab, timeout=180_000)
        for key in CHARTS:
            tab.wait_for_selector(f".st-key-{key} .main-svg", timeout=120_000)
        tab.wait_for_timeout(1500)  # plotly's second layout pass (automargin)
        for key in CHARTS:
            got = tab.evaluate(TEXT_BOXES_JS, key)
            assert got and got["boxes"], key
            assert overlaps(got["boxes"]) == [], (width, key)
            left, right = got["svg"]
            cut = [b[1] for b in got["boxes"] if b[2] < left - 1 or b[4] > right + 1]
            assert cut == [], (width, key)  # nothing runs out of its chart
        assert diagram_title(tab, 0).startswith("step 100 · ")  # the step is never the part that is cut
        screenshot(tab, f"compare_layout_{width}")
