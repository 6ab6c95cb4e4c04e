"""The Inspect page in real headless Chromium: a short run trained, opened, a digit picked, a digit drawn."""

from __future__ import annotations

import re

import pytest

from resnet_core import data, runzip
from resnet_core.recorder import RunWriter
from resnet_core.train import model_for_dataset, train
from tests.conftest import screenshot, wait_for_app
from tests.trainkit import mnist_tiny, one_thread, tiny_train

pytestmark = pytest.mark.browser


def trained_zip(tmp_path) -> tuple[str, bytes]:
    """A short run on the embedded digits, good enough to tell a 1 from a 0 (~70% test accuracy)."""
    cfg = model_for_dataset(mnist_tiny(widths=(8, 16, 32)), "mnist-5k")
    train_cfg = tiny_train(steps=80, batch_size=64, optimizer="adam", lr=3e-3)
    w = RunWriter(cfg, train_cfg, root=tmp_path, label="inspect-browser", flush_s=0.0)
    with one_thread():
        result = train(cfg, train_cfg, [w], dataset=data.load("mnist-5k"))
    assert result.status == "finished"
    return w.run_dir.name, runzip.export_zip(w.run_dir)


def prediction(tab) -> str:
    text = tab.locator(".stMarkdown").filter(has_text="Prediction:").first.inner_text()
    return re.search(r"Prediction:\s*(\S+)", text).group(1)


def stroke(tab, points: list[tuple[float, float]]) -> None:
    """One mouse stroke through `points`, given as fractions of the canvas's width and height, at a hand's
    pace: Fabric.js drew nothing of a stroke whose moves came all at once."""
    box = tab.locator(".st-key-ins_canvas canvas").last.bounding_box()  # fabric's upper canvas takes the mouse
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    tab.mouse.move(xy[0][0] - 5, xy[0][1] - 5)
    tab.wait_for_timeout(200)
    tab.mouse.move(*xy[0])
    tab.wait_for_timeout(200)
    tab.mouse.down()
    for (x0, y0), (x1, y1) in zip(xy, xy[1:], strict=False):
        for k in range(1, 6):
            tab.mouse.move(x0 + (x1 - x0) * k / 5, y0 + (y1 - y0) * k / 5)
            tab.wait_for_timeout(15)
    tab.mouse.up()


def test_train_open_pick_and_draw(page, tmp_path):
    name, blob = trained_zip(tmp_path)
    tab = page
    tab.set_viewport_size({"width": 1400, "height": 2600})
    tab.goto(tab.base_url + "/")
    wait_for_app(tab)
    tab.goto(tab.base_url + "/inspect")
    wait_for_app(tab)
    # a cold server's first view also starts the job manager's workers: ~40 s on this loaded machine
    tab.get_by_text("Add a run record from a zip").click(timeout=180_000)
    tab.locator(".st-key-ins_upload input[type=file]").set_input_files(
        {"name": f"{name}.zip", "mimeType": "application/zip", "buffer": blob})
    tab.wait_for_selector(f"text=Imported as {name}", timeout=60_000)
    wait_for_app(tab)
    tab.wait_for_selector(".st-key-ins_pred_0_confusion .main-svg", timeout=60_000)
    assert re.search(r"ins_run=" + re.escape(name), tab.url)
    metric = tab.locator('[data-testid="stMetricValue"]').first.inner_text()
    assert re.fullmatch(r"\d+\.\d%", metric)
    assert tab.get_by_text("the same.").count() == 1  # the recorded accuracy, reproduced from the weights
    screenshot(tab, "inspect_predictions")

    # pick a digit by its index: the URL follows, the prediction is drawn
    box = tab.locator(".st-key-ins_idx input")
    box.fill("3")
    box.press("Enter")
    tab.wait_for_function("() => /ins_idx=3(&|$)/.test(location.search)", timeout=30_000)
    wait_for_app(tab)
    tab.wait_for_selector(".st-key-ins_digit_0_block .main-svg", timeout=60_000)
    tab.wait_for_selector(".st-key-ins_digit_0_saliency .heatmaplayer image", timeout=60_000)
    picked = prediction(tab)
    tab.locator(".st-key-ins_digit_0_probs").scroll_into_view_if_needed()
    screenshot(tab, "inspect_test_digit")

    # draw: an empty canvas gets a note; a 1 and then a 0 get predictions, and they differ
    tab.locator(".st-key-ins_src").get_by_text("draw one").click()
    tab.wait_for_function("() => /ins_src=draw/.test(location.search)", timeout=30_000)
    wait_for_app(tab)
    tab.wait_for_selector("text=The canvas is empty", timeout=30_000)
    tab.wait_for_selector(".st-key-ins_canvas canvas", timeout=30_000)
    stroke(tab, [(0.5, 0.12), (0.5, 0.5), (0.5, 0.88)])
    tab.wait_for_function("() => /ins_draw=[0-9a-f]{784}/.test(location.search)", timeout=30_000)
    wait_for_app(tab)
    tab.wait_for_selector("text=Prediction:", timeout=30_000)
    one = prediction(tab)
    one_url = tab.url
    screenshot(tab, "inspect_drawn_one")

    tab.get_by_role("button", name=re.compile("Reset canvas")).first.click()  # the canvas's own toolbar
    wait_for_app(tab)
    tab.wait_for_selector("text=The canvas is empty", timeout=30_000)
    import math

    ring = [(0.5 + 0.3 * math.sin(t / 24 * 2 * math.pi), 0.5 - 0.38 * math.cos(t / 24 * 2 * math.pi))
            for t in range(25)]
    stroke(tab, ring)
    tab.wait_for_function(f"() => location.href !== {one_url!r} && /ins_draw=[0-9a-f]{{784}}/.test(location.search)",
                          timeout=30_000)
    wait_for_app(tab)
    zero = prediction(tab)
    screenshot(tab, "inspect_drawn_zero")
    assert one != zero, (one, zero)
    assert one == "1" and zero == "0", (one, zero, picked)

    # the link carries the drawing: opened afresh it shows the same digit and the same answer
    tab.goto(one_url)
    wait_for_app(tab)
    tab.wait_for_selector("text=Prediction:", timeout=60_000)
    assert prediction(tab) == one
