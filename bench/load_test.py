"""Load test: one server, a classroom of sessions each training a small run on the Train page.

    python bench/load_test.py                        # 20 sessions, ResNet-20, 20 steps at batch 16
    python bench/load_test.py --client browser       # 20 headless Chromium contexts instead
    python bench/load_test.py --sessions 30 --deadline 240
    python bench/load_test.py --server-cpus 0       # the server on CPU 0, Chromium and sessions on the rest
    python bench/load_test.py --ray-nodes 2         # jobs as Ray actors on a local 2-node cluster (1 CPU each)

Starts `streamlit run app.py` on a free loopback port (temporary runs folder, data root, home and
working directory) and opens N sessions at once on `/train?tr_steps=..&tr_batch_size=..`; each
clicks Start and keeps watching its run until it ends. Sessions are either

- `ws` (default): Streamlit's own websocket protocol, spoken as the browser's frontend speaks it:
  the page's script run, the Start click as a widget trigger, and the live view's fragment
  reruns at the interval the server asks for. The server does all the work a browser's session
  causes, and no CPU goes to drawing pages, which on a small machine would swamp the server; or
- `browser`: one headless Chromium, N contexts (on a 2-core machine Chromium's drawing dominates).

While the jobs train, fresh sessions load the Train page again and again: a real Chromium tab,
timed from navigation to a visible Start button (what a student waits for), once as a first
visit (a new browser context, nothing cached) and once as a return visit (one context kept
throughout, so Streamlit's JavaScript comes from the browser's cache); a protocol session,
timed from its request to the end of the page's script run; and the server's whole share of a
first visit: the HTML, the 61 static files it names (six at a time) and the script run. On a
small machine the browser, the load generator and the server share the same cores; in a
classroom each student's browser draws on the student's own machine. It
prints page-load p50/p95/max, jobs submitted / refused by a queue limit (expected past the
limits) / seen queued / finished / ended otherwise / still pending at the deadline / lost,
errors shown (exception boxes, and error boxes other than queue-limit refusals), the server's
RSS and threads over time, and the machine's load average.

With `--ray-nodes N` it first starts a Ray cluster of N nodes on this machine (ray.cluster_utils,
1 CPU and a 100 MB object store each, no dashboard) and points the server at it
(RESNET_RAY_ADDRESS; RESNET_MAX_RUNNING_JOBS=N and RESNET_RAY_WARM_ACTORS=N unless given), so
every job trains as a Ray actor; compare `--ray-nodes 2` with `--ray-nodes 1` for the time until
every job is done. The cluster is shut down at the end.

Bounded: it stops by itself at --deadline seconds, and talks to nothing but 127.0.0.1 (Chromium
gets a proxy that does not exist, bypassed only for the loopback address).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--proxy-server=127.0.0.1:9",
                 "--proxy-bypass-list=127.0.0.1"]
ACTIVE = ("queued", "running", "paused")
ENDED = ("finished", "stopped", "failed", "diverged", "interrupted")
STATE_HTML = re.compile(r"State</small><br>\*\*(" + "|".join(ACTIVE + ENDED) + r")\*\*")
STATE_TEXT = re.compile(r"State\s+(" + "|".join(ACTIVE + ENDED) + r")\b")
JOB_RE = re.compile(r"tr_job=([0-9a-f]{16})")
QUEUE_REFUSAL = "max_queued_"  # an expected refusal's message names its limit


# ---------------------------------------------------------------- the server


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`, all its threads (nan once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, home: Path, env: dict[str, str], cpus: str = ""):
        self.home, self.runs, self.cpus = home, home / "runs", cpus
        (home / "cwd").mkdir(parents=True)
        # Streamlit reads .streamlit/config.toml from its working directory: the app's own settings
        # (no file watcher, no gc.collect() after every run) hold in this one too
        shutil.copytree(ROOT / ".streamlit", home / "cwd" / ".streamlit")
        self.env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
                    "RESNET_RUNS_DIR": str(self.runs), "RESNET_DATA_DIR": str(home / "data"),
                    "PYTHONUNBUFFERED": "1", **env}
        self.samples: list[tuple[float, int, int, float]] = []  # (seconds since start, RSS MiB, threads, CPU s)
        self._stop = threading.Event()

    def start(self) -> str:
        port = free_port()
        self.log = open(self.home / "streamlit.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [*(["taskset", "-c", self.cpus] if self.cpus else []),
             sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=self.home / "cwd", env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("the server exited: " + (self.home / "streamlit.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise SystemExit(f"streamlit did not start on {self.url}")
        self.t0 = time.monotonic()
        threading.Thread(target=self._sample, daemon=True).start()
        return self.url

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            try:
                status = Path(f"/proc/{self.proc.pid}/status").read_text()
                rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) // 1024
                threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
            except (OSError, AttributeError, ValueError):
                return
            cpu = cpu_seconds(self.proc.pid)
            if cpu != cpu:  # gone
                return
            self.samples.append((time.monotonic() - self.t0, rss, threads, cpu))

    def records(self) -> dict[str, str]:
        """Run folder name -> the status its config.json holds."""
        out = {}
        for p in self.runs.glob("*"):
            if p.name.startswith("."):
                continue
            try:
                out[p.name] = json.loads((p / "config.json").read_text())["status"]
            except (OSError, ValueError, KeyError):
                out[p.name] = "unreadable"
        return out

    def stop(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# ---------------------------------------------------------------- one session's outcome


class Session:
    def __init__(self, index: int):
        self.index = index
        self.first_load = float("nan")
        self.job = ""  # the job id the page put in the URL once Start was accepted
        self.refused = ""  # a queue-limit refusal's text
        self.states: list[str] = []  # the states the status row showed, in order, without repeats
        self.errors: list[str] = []

    def saw(self, state: str) -> None:
        if not self.states or self.states[-1] != state:
            self.states.append(state)

    @property
    def ended(self) -> bool:
        return bool(self.states) and self.states[-1] in ENDED


# ---------------------------------------------------------------- Streamlit's websocket protocol


class Protocol:
    """One browser session as the server sees it: script runs requested over /_stcore/stream."""

    def __init__(self, url: str, page: str, query: str):
        self.ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
        self.origin, self.page, self.query = url, page, query
        self.widgets: dict[str, str] = {}  # widget key (the part after the last "-") -> id
        self.fragments: dict[str, float] = {}  # fragment id -> auto-rerun interval
        self.page_hash = ""
        self.markdown: list[str] = []
        self.alerts: list[str] = []  # error boxes and exceptions of the latest run
        self.finished = asyncio.Event()

    async def __aenter__(self) -> Protocol:
        import websockets

        self.ws = await websockets.connect(self.ws_url, subprotocols=["streamlit"], origin=self.origin,
                                           max_size=2**27, open_timeout=60, ping_interval=None)
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        self.reader.cancel()
        await self.ws.close()

    async def _read(self) -> None:
        from streamlit.proto.Alert_pb2 import Alert
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        async for raw in self.ws:
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            kind = msg.WhichOneof("type")
            if kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                el = msg.delta.new_element
                what = el.WhichOneof("type")
                widget_id = getattr(getattr(el, what), "id", "") if what else ""
                if isinstance(widget_id, str) and widget_id.startswith("$$ID-"):
                    self.widgets[widget_id.rsplit("-", 1)[-1]] = widget_id
                if what == "markdown":
                    self.markdown.append(el.markdown.body)
                elif what == "alert" and el.alert.format == Alert.ERROR:
                    self.alerts.append(el.alert.body[:300])
                elif what == "exception":
                    self.alerts.append(f"exception: {el.exception.type}: {el.exception.message[:200]}")
            elif kind == "page_info_changed":
                self.query = msg.page_info_changed.query_string
            elif kind == "navigation" and msg.navigation.page_script_hash:
                self.page_hash = msg.navigation.page_script_hash  # sent back with every rerun, as the
                # frontend does: a rerun without it (a fragment's st.rerun()) runs the default page
            elif kind == "new_session" and not msg.metadata.run.fragment_ids:
                self.fragments.clear()  # a full run: the frontend drops every timer, the run sets its own
            elif kind == "auto_rerun":
                self.fragments[msg.auto_rerun.fragment_id] = msg.auto_rerun.interval
            elif kind == "stop_auto_rerun":
                for fid in msg.stop_auto_rerun.fragment_ids:
                    self.fragments.pop(fid, None)
            elif kind == "script_finished" and msg.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                self.finished.set()

    async def run(self, trigger: str = "", fragment: str = "", timeout: float = 120.0) -> float:
        """Ask for a script run (a page view, a click on widget `trigger`, or a fragment's
        auto-rerun); seconds until it finished. A fragment's rerun is not waited for (0.0): the
        frontend's timer does not wait either, it skips a tick while a run is going on."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        state = msg.rerun_script
        state.query_string, state.page_name, state.page_script_hash = self.query, self.page, self.page_hash
        if trigger:
            w = state.widget_states.widgets.add()
            w.id, w.trigger_value = self.widgets[trigger], True
        if fragment:
            state.fragment_id, state.is_auto_rerun = fragment, True
        else:
            self.markdown, self.alerts = [], []
        self.finished.clear()
        t = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        if fragment:
            return 0.0
        await asyncio.wait_for(self.finished.wait(), timeout)
        return time.perf_counter() - t

    def state(self) -> str | None:
        for body in reversed(self.markdown):
            m = STATE_HTML.search(body)
            if m:
                return m.group(1)
        return None


async def ws_session(s: Session, url: str, query: str, deadline: float) -> None:
    try:
        async with Protocol(url, "train", query) as p:
            s.first_load = await p.run(timeout=max(1.0, deadline - time.monotonic()))
            await p.run(trigger="tr_start", timeout=max(1.0, deadline - time.monotonic()))
            s.refused = next((a for a in p.alerts if QUEUE_REFUSAL in a), "")
            m = JOB_RE.search(urllib.parse.unquote(p.query))
            s.job = m.group(1) if m else ""
            due: dict[str, float] = {}
            while s.job and time.monotonic() < deadline:
                if (state := p.state()) is not None:
                    s.saw(state)
                if s.ended:
                    break
                now = time.monotonic()
                for fid, every in list(p.fragments.items()):  # what the frontend's interval timers do
                    if fid not in due:
                        due[fid] = now + every
                    elif now >= due[fid]:
                        due[fid] = now + every
                        if p.finished.is_set():
                            await p.run(fragment=fid)
                await asyncio.sleep(0.05)
            s.errors += [a for a in dict.fromkeys(p.alerts) if QUEUE_REFUSAL not in a]
    except Exception as e:  # one session's failure is reported and never stops the others
        s.errors.append(f"session error: {type(e).__name__}: {str(e)[:200]}")


async def ws_probe(url: str) -> float:
    async with Protocol(url, "train", "") as p:
        return await p.run()


async def server_page_load(url: str) -> float:
    """Seconds for everything the server does for a first visit, without a browser's drawing: the
    HTML, the scripts and styles it names (six at a time, as a browser fetches), then the page's
    script run over a new session."""
    t = time.perf_counter()
    html = (await asyncio.to_thread(_get, url + "/train")).decode()
    assets = re.findall(r'(?:src|href)="\./(static/[^"]+)"', html)
    gate = asyncio.Semaphore(6)

    async def fetch(path: str) -> None:
        async with gate:
            await asyncio.to_thread(_get, f"{url}/{path}")

    await asyncio.gather(*(fetch(a) for a in assets))
    await ws_probe(url)
    return time.perf_counter() - t


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


# ---------------------------------------------------------------- headless Chromium


async def browser_load(page, url: str, timeout_ms: float) -> float:
    """Seconds from navigation to a visible Start button: the page is usable."""
    t = time.perf_counter()
    await page.goto(url, wait_until="commit", timeout=timeout_ms)
    await page.get_by_role("button", name="Start").wait_for(state="visible", timeout=timeout_ms)
    return time.perf_counter() - t


async def browser_errors(page) -> list[str]:
    found = [f"exception: {(await b.inner_text())[:200]}"
             for b in await page.locator('[data-testid="stException"]').all()]
    for box in await page.locator('[data-testid="stAlertContentError"]').all():
        text = (await box.inner_text())[:300]
        if QUEUE_REFUSAL not in text:
            found.append(text)
    return found


async def browser_session(browser, s: Session, url: str, query: str, deadline: float) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    try:
        s.first_load = await browser_load(page, f"{url}/train?{query}", max(1.0, deadline - time.monotonic()) * 1e3)
        await page.wait_for_timeout(500)  # let the run settle: a click mid-rerun can be lost
        await page.get_by_role("button", name="Start").click()
        while time.monotonic() < deadline and not (s.job or s.refused):
            if m := JOB_RE.search(page.url):
                s.job = m.group(1)
            refusal = page.locator('[data-testid="stAlertContentError"]', has_text=QUEUE_REFUSAL)
            if await refusal.count():
                s.refused = (await refusal.first.inner_text())[:200]
            await asyncio.sleep(0.2)
        while s.job and time.monotonic() < deadline and not s.ended:
            if m := STATE_TEXT.search(await page.locator('[data-testid="stMain"]').inner_text()):
                s.saw(m.group(1))
            await asyncio.sleep(1.0)
        s.errors += await browser_errors(page)
    except Exception as e:
        s.errors.append(f"session error: {type(e).__name__}: {str(e)[:200]}")
    finally:
        await context.close()


# ---------------------------------------------------------------- figures


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def fmt(values: list[float]) -> str:
    if not values:
        return "none"
    return f"n={len(values)}  p50 {pct(values, 50):.2f} s  p95 {pct(values, 95):.2f} s  max {max(values):.2f} s"


async def main_async(args) -> int:
    home = Path(tempfile.mkdtemp(prefix="resnet-load-"))
    env = {"RESNET_TORCH_THREADS": str(args.torch_threads)}
    if args.max_running:
        env["RESNET_MAX_RUNNING_JOBS"] = str(args.max_running)
    cluster = None
    if args.ray_nodes:
        cluster, ray_env = ray_cluster(args.ray_nodes)
        env = {**ray_env, **env}
    try:
        return await _main_async(args, home, env)
    finally:
        if cluster is not None:
            cluster.shutdown()


def ray_cluster(nodes: int):
    """A local Ray cluster of `nodes` nodes of 1 CPU each, and the server's environment for it."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every node on 127.0.0.1 (conftest.py)
    from ray.cluster_utils import Cluster

    t = time.monotonic()
    node = {"num_cpus": 1, "object_store_memory": 100 * 1024**2}
    cluster = Cluster(initialize_head=True, shutdown_at_exit=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    print(f"Ray cluster of {nodes} node(s), 1 CPU each, at {cluster.address}: up in {time.monotonic() - t:.1f} s",
          flush=True)
    return cluster, {"RESNET_RAY_ADDRESS": cluster.address, "RESNET_MAX_RUNNING_JOBS": str(nodes),
                     "RESNET_RAY_WARM_ACTORS": str(nodes)}


async def _main_async(args, home: Path, env: dict[str, str]) -> int:
    if args.server_cpus:  # the server on these CPUs, this process (and so Chromium) on the others
        others = set(os.sched_getaffinity(0)) - _cpu_list(args.server_cpus)
        if not others:
            raise SystemExit("--server-cpus leaves no CPU for the browser and the sessions")
        os.sched_setaffinity(0, others)
    server = Server(home, env, args.server_cpus)
    url = server.start()
    try:
        return await _measure(args, home, server, url)
    except BaseException:
        server.stop()  # a failed run leaves no server behind (nor, with --ray-nodes, actors: they are its)
        raise


async def _measure(args, home: Path, server: Server, url: str) -> int:
    query = f"tr_steps={args.steps}&tr_batch_size={args.batch_size}" + (f"&{args.extra}" if args.extra else "")
    load_before = os.getloadavg()
    print(f"server {url} (pid {server.proc.pid}); {args.sessions} {args.client} sessions on /train?{query}; "
          f"deadline {args.deadline:.0f} s; load average {load_before[0]:.2f} ({os.cpu_count()} CPUs)", flush=True)

    sessions = [Session(i) for i in range(args.sessions)]
    browser_probes: list[float] = []  # a first visit: a new browser context, nothing cached
    return_probes: list[float] = []  # a return visit: one context throughout, its HTTP cache warm
    ws_probes: list[float] = []
    server_probes: list[float] = []
    if args.no_browser:  # protocol sessions and probes only: no CPU for Chromium
        quiet = [await ws_probe(url) for _ in range(3)]
        print(f"Train page script run with no jobs: {fmt(quiet)}", flush=True)
        t0 = time.monotonic()
        deadline = t0 + args.deadline
        tasks = [asyncio.create_task(ws_session(s, url, query, deadline)) for s in sessions]
        await asyncio.sleep(args.probe_after)
        while not all(t.done() for t in tasks) and time.monotonic() < deadline:
            try:
                ws_probes.append(await ws_probe(url))
            except Exception as e:
                print(f"  probe failed: {type(e).__name__}: {str(e)[:150]}", flush=True)
            await asyncio.sleep(args.probe_every)
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
    else:
        from playwright.async_api import async_playwright

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            warm = await browser.new_context()  # the first view of a fresh server pays for its imports
            first = await browser_load(await warm.new_page(), url + "/train", 120e3)
            print(f"first page view of the fresh server: {first:.1f} s", flush=True)
            await warm.close()
            quiet = [await ws_probe(url) for _ in range(3)]
            print(f"Train page script run with no jobs: {fmt(quiet)}", flush=True)
            quiet = []
            for _ in range(3):  # what Chromium itself takes on this machine, before any job
                context = await browser.new_context(viewport={"width": 1280, "height": 900})
                quiet.append(await browser_load(await context.new_page(), url + "/train", 60e3))
                await context.close()
            print(f"Train page load in Chromium with no jobs: {fmt(quiet)}", flush=True)
            returning = await browser.new_context(viewport={"width": 1280, "height": 900})
            quiet = []
            for _ in range(3):
                tab = await returning.new_page()
                quiet.append(await browser_load(tab, url + "/train", 60e3))
                await tab.close()
            print(f"Train page load in Chromium with no jobs, a return visit: {fmt(quiet)}", flush=True)

            t0 = time.monotonic()
            deadline = t0 + args.deadline
            if args.client == "ws":
                tasks = [asyncio.create_task(ws_session(s, url, query, deadline)) for s in sessions]
            else:
                tasks = [asyncio.create_task(browser_session(browser, s, url, query, deadline)) for s in sessions]
            await asyncio.sleep(args.probe_after)
            while not all(t.done() for t in tasks) and time.monotonic() < deadline:
                context = await browser.new_context(viewport={"width": 1280, "height": 900})
                try:
                    browser_probes.append(await browser_load(await context.new_page(), url + "/train", 60e3))
                    tab = await returning.new_page()
                    return_probes.append(await browser_load(tab, url + "/train", 60e3))
                    await tab.close()
                    ws_probes.append(await ws_probe(url))
                    server_probes.append(await server_page_load(url))
                except Exception as e:
                    print(f"  probe failed: {type(e).__name__}: {str(e)[:150]}", flush=True)
                finally:
                    await context.close()
                await asyncio.sleep(args.probe_every)
            await asyncio.gather(*tasks)
            elapsed = time.monotonic() - t0
            await browser.close()

    time.sleep(2.5)  # the last records' final flush
    records = server.records()
    server.stop()
    load_after = os.getloadavg()

    submitted = [s for s in sessions if s.job]
    refused = [s for s in sessions if s.refused]
    unanswered = [s for s in sessions if not s.job and not s.refused]
    finished = sum(s.states[-1] == "finished" for s in submitted if s.states)
    ended_otherwise = sum(s.ended and s.states[-1] != "finished" for s in submitted)
    pending = sum(not s.ended for s in submitted)
    seen_queued = sum("queued" in s.states for s in submitted)
    on_disk = {k: list(records.values()).count(k) for k in sorted(set(records.values()))}
    # lost: submitted, not pending at the deadline, and no record on disk says how it ended
    lost = max(0, len(submitted) - pending - sum(v in ENDED for v in records.values()))
    errors = [(s.index, e) for s in sessions for e in s.errors]
    errors += [(s.index, "no answer to Start before the deadline") for s in unanswered]
    firsts = [s.first_load for s in sessions if s.first_load == s.first_load]
    rss = [r for _, r, _, _ in server.samples]
    threads = [n for _, _, n, _ in server.samples]

    print()
    print(f"sessions: {len(sessions)} ({args.client}), wall time {elapsed:.0f} s of a {args.deadline:.0f} s deadline")
    if args.ray_nodes:
        done = elapsed if pending == 0 else float("nan")
        print(f"Ray, {args.ray_nodes} node(s) of 1 CPU: every job done {done:.0f} s after the first Start; "
              f"jobs lost {lost}; errors shown {len(errors)}")
    print(f"page view, the first {len(sessions)} at once ({args.client}):  {fmt(firsts)}")
    print(f"page load while jobs train, Chromium (to a visible Start):  {fmt(browser_probes)}")
    print(f"  the same, a return visit (HTTP cache warm):             {fmt(return_probes)}")
    print(f"page view while jobs train, server script run:           {fmt(ws_probes)}")
    print(f"page load while jobs train, server side (HTML, static files, script run): {fmt(server_probes)}")
    print(f"jobs submitted {len(submitted)}, refused by a queue limit {len(refused)}, seen queued {seen_queued}")
    print(f"jobs finished {finished}, ended otherwise {ended_otherwise}, pending at the deadline {pending}, "
          f"lost {lost}")
    print(f"records on disk: {on_disk}")
    print(f"errors shown: {len(errors)}")
    for i, e in errors[:10]:
        print(f"  session {i}: {e}")
    if rss:
        print(f"server RSS: start {rss[0]} MiB, max {max(rss)} MiB, end {rss[-1]} MiB; "
              f"threads: start {threads[0]}, max {max(threads)}, end {threads[-1]}")
        marks = [server.samples[round(i * (len(server.samples) - 1) / 6)] for i in range(7)]
        print("  over time (s, MiB, threads): " + ", ".join(f"({t:.0f}, {r}, {n})" for t, r, n, _ in marks))
        (t_a, *_, cpu_a), (t_b, *_, cpu_b) = server.samples[0], server.samples[-1]
        print(f"server CPU: {cpu_b - cpu_a:.0f} s over {t_b - t_a:.0f} s, {(cpu_b - cpu_a) / max(t_b - t_a, 1e-9):.2f} "
              f"cores on average (training, page views and the sessions' refreshes together)")
    print(f"load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} CPUs)")
    if args.keep:
        print(f"kept: {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    ok = lost == 0 and not errors and pending == 0 and finished == len(submitted) and len(submitted) > 0
    print("RESULT:", "every job finished, none lost, no error shown" if ok else "NOT every target met")
    return 0 if ok else 1


def _cpu_list(spec: str) -> set[int]:
    """CPUs of a taskset list such as "0", "0-2" or "0,3"."""
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--client", choices=("ws", "browser"), default="ws")
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--extra", default="", help="more of the Train page's query string, e.g. tr_preset=custom&...")
    p.add_argument("--deadline", type=float, default=300.0, help="seconds; the test stops by itself then")
    p.add_argument("--max-running", type=int, default=0,
                   help="RESNET_MAX_RUNNING_JOBS for the server (0: its default, one job on a CPU)")
    p.add_argument("--torch-threads", type=int, default=1, help="RESNET_TORCH_THREADS for the server")
    p.add_argument("--probe-after", type=float, default=3.0, help="seconds before the first probe page load")
    p.add_argument("--probe-every", type=float, default=2.0, help="seconds between probe page loads")
    p.add_argument("--server-cpus", default="",
                   help="pin the server to these CPUs (taskset list, e.g. 0) and the browser and the sessions "
                        "to the rest, as if students' browsers ran on their own machines")
    p.add_argument("--no-browser", action="store_true",
                   help="no Chromium: protocol sessions and protocol probes only (with --client ws)")
    p.add_argument("--ray-nodes", type=int, default=0,
                   help="train the jobs as Ray actors on a local cluster of this many 1-CPU nodes (0: no Ray)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (runs, server log)")
    args = p.parse_args()
    if not 0 <= args.ray_nodes <= 4:
        p.error("--ray-nodes 0..4")
    if args.no_browser and args.client != "ws":
        p.error("--no-browser needs --client ws")
    if not 1 <= args.sessions <= 100 or not 10 <= args.deadline <= 1800:
        p.error("--sessions 1..100 and --deadline 10..1800 keep the test bounded")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
