"""Navigation to the Overview's first drawn chart, in real headless Chromium: cold and warm, ours and a baseline.

    python bench/bench_first_chart.py [--rounds 3] [--warm 2] [--before DIR]

Each round starts, one after the other (interleaved, so both see the same load on a shared machine):

- ours: `streamlit run app.py` from the repository root, a fresh server process;
- the baseline: a minimal Streamlit app written into a temporary folder, the same settings
  (a copy of `.streamlit/config.toml`), the same command, that draws as many plotly charts as the
  Overview draws on a first visit (five).

For each server, once it answers its health check, a new browser context (nothing cached) opens
its root URL: that load is *cold* (the server's first visitor: its script runs for the first
time). Ours warms itself up as it starts (ui/boot.py, in the background, while it already answers)
and says so in its log; its cold load waits for that line, as a class arriving a minute after the
teacher started the server would find it. Each round also starts one more server of ours whose
first visitor comes at once, before its warm-up ended: *cold, at once*. Then `--warm` more loads,
each in a new context: *warm* (the server has served a page).
Times are read inside the page, from navigation start (performance.timeOrigin) to the first
`.main-svg` of a plotly chart in the DOM (the first chart drawn), and to the last of the five.
`--before DIR` adds a third app to each round: another checkout of this repository (e.g. one made
with `git worktree add DIR <commit>`), to see a change's effect measured alongside.
Prints every load, the medians and the ratios: ours warm / baseline warm, ours cold / ours warm
(targets: at most 1.5 each), with the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--proxy-server=127.0.0.1:9",
                 "--proxy-bypass-list=127.0.0.1"]
CHARTS = 5  # what the Overview draws on a first visit (tests/test_app_overview.py checks the five keys)

BASELINE = '''\
import numpy as np
import plotly.graph_objects as go
import streamlit as st

st.set_page_config(page_title="baseline", layout="wide")
st.title("Baseline: {n} plotly charts")
rng = np.random.default_rng(0)
for i in range({n}):
    st.markdown(f"Chart {{i}}")
    fig = go.Figure(go.Scatter(x=np.arange(50), y=rng.standard_normal(50).cumsum(), mode="lines"))
    st.plotly_chart(fig, key=f"chart{{i}}")
'''

# Installed before the page's own scripts: the time each chart's first SVG appeared, from navigation start.
TIMER = """
(() => {
  window.__charts = [];
  const seen = new WeakSet();
  const look = () => {
    for (const svg of document.querySelectorAll('[data-testid="stPlotlyChart"] .main-svg')) {
      const chart = svg.closest('[data-testid="stPlotlyChart"]');
      if (!seen.has(chart)) { seen.add(chart); window.__charts.push(performance.now()); }
    }
  };
  new MutationObserver(look).observe(document, {childList: true, subtree: true});
})();
"""


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`streamlit run app.py` in `cwd`, a fresh process; `start()` returns once its health check answers."""

    def __init__(self, cwd: Path, home: Path):
        self.cwd, self.home = cwd, home

    def start(self) -> str:
        port = free_port()
        env = {**os.environ, "RESNET_RUNS_DIR": str(self.home / "runs"), "RESNET_DATA_DIR": str(self.home / "data"),
               "PYTHONUNBUFFERED": "1"}
        self.log = open(self.home / f"streamlit-{port}.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=self.cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server in {self.cwd} exited; see {self.log.name}")
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2):
                    return url
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit(f"streamlit did not start on {url}")

    def warmed_up(self, timeout: float = 180) -> float | None:
        """Wait for the app's start-up warm-up line in the log (ui/boot.py); its seconds, None if it never
        came (an app without one, e.g. the baseline or an older checkout: checked for 5 s only)."""
        from ui.boot import WARMED_PREFIX

        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in Path(self.log.name).read_text().splitlines():
                if line.startswith(WARMED_PREFIX):
                    return float(line[len(WARMED_PREFIX):].split()[1])
            if "boot.lifespan" not in (self.cwd / "app.py").read_text():
                return None
            time.sleep(0.2)
        return None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def load(browser, url: str) -> tuple[float, float]:
    """One visit in a new context: seconds from navigation start to the first chart and to the last."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        context.add_init_script(TIMER)
        tab = context.new_page()
        tab.goto(url + "/", wait_until="commit")
        tab.wait_for_function(f"() => window.__charts && window.__charts.length >= {CHARTS}", timeout=180_000)
        times = tab.evaluate("window.__charts")
    finally:
        context.close()
    return times[0] / 1000, times[CHARTS - 1] / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warm", type=int, default=2, help="warm loads per server after the cold one")
    ap.add_argument("--before", type=Path, help="another checkout of the app, measured alongside as 'before'")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        base = Path(tmp) / "baseline"
        base.mkdir()
        (base / "app.py").write_text(BASELINE.format(n=CHARTS))
        shutil.copytree(ROOT / ".streamlit", base / ".streamlit")
        apps = {"ours": ROOT, "baseline": base, **({"before": args.before.resolve()} if args.before else {})}
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        print(f"load average at the start: {load_average()}")
        for r in range(args.rounds):
            order = list(apps)
            for name in order[r % len(order):] + order[:r % len(order)]:  # each app goes first in turn
                home = Path(tmp) / f"{name}-{r}"
                home.mkdir()
                server = Server(apps[name], home)
                url = server.start()
                try:
                    warm_s = server.warmed_up()
                    if warm_s is not None:
                        print(f"round {r + 1} {name:8} the server's start-up warm-up took {warm_s:.1f} s")
                    for i in range(1 + args.warm):
                        kind = "cold" if i == 0 else "warm"
                        first, last = load(browser, url)
                        results.setdefault((name, kind), []).append((first, last))
                        print(f"round {r + 1} {name:8} {kind}: first chart {first:5.2f} s, all {CHARTS} "
                              f"{last:5.2f} s   (load average {load_average()})", flush=True)
                finally:
                    server.stop()
                if name == "ours":  # and a visitor who comes the moment the server answers
                    (home / "at-once").mkdir()
                    server = Server(apps[name], home / "at-once")
                    url = server.start()
                    try:
                        first, last = load(browser, url)
                        results.setdefault((name, "cold, at once"), []).append((first, last))
                        print(f"round {r + 1} {name:8} cold, at once: first chart {first:5.2f} s, all {CHARTS} "
                              f"{last:5.2f} s   (load average {load_average()})", flush=True)
                    finally:
                        server.stop()
        browser.close()

    def med(name: str, kind: str, i: int = 0) -> float:
        return statistics.median(t[i] for t in results[(name, kind)])

    print()
    print("median seconds from navigation to the first chart (to all five):")
    for name in apps:
        for kind in ("cold", "warm", "cold, at once"):
            if (name, kind) not in results:
                continue
            print(f"  {name:8} {kind}: {med(name, kind):5.2f} ({med(name, kind, 1):5.2f})")
    print(f"ours warm / baseline warm: {med('ours', 'warm') / med('baseline', 'warm'):.2f} (target <= 1.5)")
    print(f"ours cold / ours warm:     {med('ours', 'cold') / med('ours', 'warm'):.2f} (target <= 1.5)")
    print(f"ours cold, at once / ours warm: {med('ours', 'cold, at once') / med('ours', 'warm'):.2f}")
    print(f"baseline cold / warm:      {med('baseline', 'cold') / med('baseline', 'warm'):.2f}")
    if "before" in apps:
        print(f"before warm / baseline warm: {med('before', 'warm') / med('baseline', 'warm'):.2f}; "
              f"before cold / before warm: {med('before', 'cold') / med('before', 'warm'):.2f}")
    print(f"load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
