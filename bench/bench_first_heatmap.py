"""Start click to first heatmap drawn, in real headless Chromium, embedded data, CPU.

Starts `streamlit run app.py` on a free loopback port with a temporary runs folder, once per job
backend (RESNET_JOB_BACKEND: worker processes, the default, and a thread of the server), then
`--runs` times, the backends taking turns to go first: opens the Train page (ResNet-20 on
mnist-5k), waits until it has drawn (the preview diagram included), clicks Start and measures
until the heatmap has drawn its first cells; stops the run and waits for it to end before the
next. Prints every time, each backend's median and their ratio (target: the process backend
within 1.2x of the thread backend's 1.37 s median, bench/RESULTS.md).

    python bench/bench_first_heatmap.py [--runs 5] [--backends process,thread]
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


def start_server(runs: str, backend: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "RESNET_RUNS_DIR": runs, "RESNET_JOB_BACKEND": backend}
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


def first_heatmap(browser, url: str) -> float:
    tab = browser.new_page(viewport={"width": 1400, "height": 1000})
    tab.goto(url + "/train?tr_steps=300")
    tab.get_by_role("button", name="Start").wait_for(timeout=120_000)
    # the page has finished drawing (its preview diagram too) before anyone clicks
    tab.wait_for_selector(".st-key-tr_preview .main-svg", timeout=120_000)
    start = tab.get_by_role("button", name="Start")
    t0 = time.perf_counter()
    start.click()
    tab.wait_for_selector(".st-key-tr_heatmap .heatmaplayer image", timeout=120_000)
    seconds = time.perf_counter() - t0
    tab.get_by_role("button", name="Stop").click()
    tab.wait_for_selector("text=stopped", timeout=60_000)
    tab.close()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--backends", default="process,thread")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    backends = args.backends.split(",")
    times: dict[str, list[float]] = {b: [] for b in backends}
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    with tempfile.TemporaryDirectory() as runs:
        try:
            for b in backends:
                servers[b] = start_server(os.path.join(runs, b), b)
            time.sleep(10)  # both warm up (the worker forkserver, or PyTorch in the server) before the first click
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                for i in range(args.runs):
                    for b in backends[i % len(backends):] + backends[:i % len(backends)]:
                        times[b].append(first_heatmap(browser, servers[b][1]))
                        print(f"run {i + 1} {b:>7}: first heatmap {times[b][-1]:.2f} s after the click   "
                              f"load {os.getloadavg()[0]:.1f}", flush=True)
                browser.close()
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(10)
    for b in backends:
        t = times[b]
        print(f"{b:>7} backend, start click to first heatmap: median {statistics.median(t):.2f} s, "
              f"min {min(t):.2f} s, max {max(t):.2f} s over {len(t)} runs")
    if {"process", "thread"} <= set(backends):
        ratio = statistics.median(times["process"]) / statistics.median(times["thread"])
        print(f"process / thread median: {ratio:.2f} (target <= 1.2); load average "
              + " ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
