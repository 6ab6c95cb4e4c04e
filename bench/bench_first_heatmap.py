"""Start click to first heatmap drawn, in real headless Chromium, embedded data, CPU.

Starts `streamlit run app.py` on a free loopback port with a temporary runs folder, then
`--runs` times: opens the Train page (ResNet-20 on mnist-5k), waits until it has drawn (the
preview diagram included), clicks Start and measures until the heatmap has drawn its first
cells; stops the run and waits for it to end before the next. Prints every time and the
median (target: at most 3 s).

    python bench/bench_first_heatmap.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(runs: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "RESNET_RUNS_DIR": runs}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("streamlit did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as runs:
        proc, url = start_server(runs)
        times = []
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                for i in range(args.runs):
                    tab = browser.new_page(viewport={"width": 1400, "height": 1000})
                    tab.goto(url + "/train?tr_steps=300")
                    tab.wait_for_selector("text=to train. The default", timeout=120_000)
                    # the page has finished drawing (its preview diagram too) before anyone clicks
                    tab.wait_for_selector(".st-key-tr_preview .main-svg", timeout=120_000)
                    start = tab.get_by_role("button", name="Start")
                    t0 = time.perf_counter()
                    start.click()
                    tab.wait_for_selector(".st-key-tr_heatmap .heatmaplayer image", timeout=120_000)
                    times.append(time.perf_counter() - t0)
                    print(f"run {i + 1}: first heatmap {times[-1]:.2f} s after the click", flush=True)
                    tab.get_by_role("button", name="Stop").click()
                    tab.wait_for_selector("text=stopped", timeout=30_000)
                    tab.close()
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"start click to first heatmap: median {statistics.median(times):.2f} s, "
          f"min {min(times):.2f} s, max {max(times):.2f} s over {len(times)} runs (target <= 3 s)")


if __name__ == "__main__":
    main()
