"""The default run's speed with its Train page open in headless Chromium, over the same run with no page open.

    python bench/bench_watch.py                        # 2 rounds of the default run at 150 steps, 1 of a twin run
    python bench/bench_watch.py --steps 300 --rounds 1 --twin-steps 0

One `streamlit run app.py` on 127.0.0.1 (its own temporary home and runs folder, the app's
.streamlit config), one headless Debian Chromium (Playwright, `--headless --no-sandbox
--disable-gpu`), all in this process, on this machine's cores. Each round trains the same run
twice, interleaved (the Train page's defaults: ResNet-20, mnist-5k, batch 128, seed 0; `--steps`
steps), each started as a Train page session starts it (its page run and the Start click, over
Streamlit's websocket protocol): once with nobody watching (the session leaves; the job trains in
its worker process, the server only writes the record), once with one Chromium tab on the run's
Train page (`tr_job=` in the link) from the moment it starts until it ends: the live view's
fragment reruns, the figures drawn. The tab loaded the app's scripts once at the start (a warm-up
run's page) and idles on a finished run's page between runs. Then a twin run (the residual net and its plain twin
in lockstep, `--twin-steps`) the same two ways.

For each run it prints the loop's own samples/s (the record's final figure: images over training
seconds) and the wall time from the start click to the finished record; for each pair the
watched/unwatched ratio of samples/s (target >= 0.75). Where a watched run's time went, read from
/proc while it ran: the CPU seconds of the worker process(es), the server, Chromium (its renderer
and the rest) and everything else on the machine (other users included), against the machine's
CPU-seconds (wall x cores); the live view's fragment reruns seen on the page's websocket (count,
seconds each from request to script_finished, bytes received per second); and the server's CPU
per rerun. At the end it times the server's own figure building for the live view at the length
of the run (curves, heatmap, diagram, each through plotly's JSON as st.plotly_chart sends it).
The load average is printed with every figure: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load_test import JOB_RE, Protocol, Server  # noqa: E402
from tests.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
ENDED = ("finished", "stopped", "failed", "diverged", "interrupted")
EXPECT = {"steps": 0}  # the steps of the run under way, checked against its record


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# ---------------------------------------------------------------- CPU time from /proc


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds: user + system) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def machine_busy_s() -> float:
    """CPU-seconds all cores spent busy since boot (everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICK


class CpuMeter:
    """Samples every process's CPU time 4 times a second, sorted into the parts of a watched run:
    the worker processes (the server's descendants), the server, Chromium's renderers, the rest of
    Chromium, this bench (its Python and Playwright's driver) and, from /proc/stat, all else."""

    PARTS = ("worker", "server", "chromium renderer", "chromium other", "bench", "others")

    def __init__(self, server_pid: int):
        self.server_pid, self.me = server_pid, os.getpid()
        self.seen: dict[int, tuple[str, float]] = {}  # pid -> (part, latest CPU seconds)
        self.start: dict[int, float] = {}
        self.t0 = self.busy0 = 0.0
        self._task: asyncio.Task | None = None

    def _part(self, pid: int, parents: dict[int, int]) -> str | None:
        chain, p = [], pid
        while p > 1 and len(chain) < 64:
            chain.append(p)
            p = parents.get(p, 0)
        if pid == self.server_pid:
            return "server"
        if self.server_pid in chain:
            return "worker"
        if self.me in chain:
            if "chromium" in _cmdline(pid):
                return "chromium renderer" if "--type=renderer" in _cmdline(pid) else "chromium other"
            return "bench"
        return None

    def sample(self) -> None:
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (s := _stat(int(entry))) is not None:
                stats[int(entry)] = s
        parents = {pid: s[0] for pid, s in stats.items()}
        for pid, (_, cpu) in stats.items():
            if pid in self.seen:
                self.seen[pid] = (self.seen[pid][0], cpu)
            elif (part := self._part(pid, parents)) is not None:
                self.seen[pid] = (part, cpu)
                self.start.setdefault(pid, 0.0)  # born during the phase: all its CPU time counts

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.25)

    def begin(self) -> None:
        self.sample()
        self.start = {pid: cpu for pid, (_, cpu) in self.seen.items()}
        self.t0, self.busy0 = time.monotonic(), machine_busy_s()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def end(self) -> dict[str, float]:
        """CPU seconds per part since begin(), with "wall" and "capacity" (wall x cores)."""
        self._task.cancel()
        self.sample()
        out = dict.fromkeys(self.PARTS, 0.0)
        for pid, (part, cpu) in self.seen.items():
            out[part] += cpu - self.start.get(pid, 0.0)
        wall = time.monotonic() - self.t0
        out["others"] = max(0.0, machine_busy_s() - self.busy0 - sum(out.values()))
        out["wall"], out["capacity"] = wall, wall * CORES
        return out


# ---------------------------------------------------------------- the page's websocket


@dataclass
class Wire:
    """What the Train page's websocket carried: fragment reruns (request to script_finished) and bytes."""

    bytes_in: int = 0
    reruns: list[float] = field(default_factory=list)
    intervals: list[float] = field(default_factory=list)  # every run_every the page was given, in order
    _sent: float | None = None

    def attach(self, page) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        def sent(payload) -> None:
            if isinstance(payload, bytes):
                msg = BackMsg()
                msg.ParseFromString(payload)
                if msg.WhichOneof("type") == "rerun_script" and msg.rerun_script.fragment_id:
                    self._sent = time.perf_counter()

        def received(payload) -> None:
            if not isinstance(payload, bytes):
                return
            self.bytes_in += len(payload)
            msg = ForwardMsg()
            msg.ParseFromString(payload)
            if msg.WhichOneof("type") == "auto_rerun":
                self.intervals.append(round(msg.auto_rerun.interval, 2))
            if msg.WhichOneof("type") == "script_finished" and self._sent is not None:
                self.reruns.append(time.perf_counter() - self._sent)
                self._sent = None

        page.on("websocket", lambda ws: (ws.on("framesent", sent), ws.on("framereceived", received)))


# ---------------------------------------------------------------- runs


def new_records(runs: Path, before: set[str]) -> list[Path]:
    return sorted(p for p in runs.glob("*") if p.name not in before and (p / "config.json").exists())


async def wait_ended(runs: Path, before: set[str], count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metas = []
        for p in new_records(runs, before):
            with contextlib.suppress(OSError, ValueError):
                metas.append(json.loads((p / "config.json").read_text()))
        if len(metas) >= count and all(m.get("status") in ENDED for m in metas):
            return metas
        await asyncio.sleep(0.2)
    raise SystemExit(f"the run did not end within {timeout:.0f} s")


@dataclass
class Result:
    watched: bool
    rate: float  # samples/s, the loop's own (the residual net's for twins)
    wall: float  # start click to the finished record
    status: str
    cpu: dict[str, float] | None = None
    wire: Wire | None = None
    paint: dict[str, float] | None = None  # the page's main thread: seconds of tasks, script, layout, style
    load: str = ""


async def start(url: str, query: str) -> str:
    """Start the run as a Train page session does (its page run, then the Start click) and leave;
    returns the job's id. Over Streamlit's websocket protocol rather than from Chromium: on this
    shared machine (load average 7-9), a Chromium tab opened after another had trained sometimes
    came up with its sidebar widgets at their own defaults (ResNet-18, skips off, 1 step) while
    the server held the link's values, and its Start click then trained the defaults."""
    async with Protocol(url, "train", query) as p:
        await p.run()
        await p.run(trigger="tr_start")
        m = JOB_RE.search(p.query)
        if not m:
            raise SystemExit(f"no job started: {p.alerts}")
        return m.group(1)


async def unwatched(url: str, server: Server, query: str, nets: int, timeout: float) -> Result:
    before = {p.name for p in server.runs.glob("*")}
    t = time.monotonic()
    await start(url, query)
    metas = await wait_ended(server.runs, before, nets, timeout)  # the session has left: nobody watches
    return _result(False, metas, time.monotonic() - t)


async def watched(url: str, server: Server, page, wire: Wire, query: str, nets: int, timeout: float,
                  meter: CpuMeter, shot: Path | None = None) -> Result:
    """The run with `page` (a Chromium tab that has the app's scripts loaded already) on its Train page
    from the moment it starts until it ends."""
    before = {p.name for p in server.runs.glob("*")}
    wire.bytes_in, wire.reruns, wire.intervals = 0, [], []
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Performance.enable")
    before_metrics = await page_metrics(cdp)
    meter.begin()
    t = time.monotonic()
    job = await start(url, query)
    await page.goto(f"{url}/train?{query}&tr_job={job}")
    metas = await wait_ended(server.runs, before, nets, timeout)
    wall = time.monotonic() - t
    cpu = meter.end()
    after = await page_metrics(cdp)
    paint = {k: after.get(k, 0.0) - before_metrics.get(k, 0.0) for k in PAGE_METRICS}
    await cdp.detach()
    if shot is not None:
        await page.wait_for_timeout(1500)
        await page.screenshot(path=str(shot), full_page=True)
    r = _result(True, metas, wall)
    r.cpu, r.wire, r.paint = cpu, wire, paint
    return r


PAGE_METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")


async def page_metrics(cdp) -> dict[str, float]:
    """The renderer's main-thread seconds so far (Chrome DevTools Performance.getMetrics)."""
    got = await cdp.send("Performance.getMetrics")
    return {m["name"]: float(m["value"]) for m in got["metrics"] if m["name"] in PAGE_METRICS}


def _result(watched: bool, metas: list[dict], wall: float) -> Result:
    lead = next((m for m in metas if m["model"].get("skip", True)), metas[0])  # twins: the residual net's
    got = (lead["model"].get("layers"), lead["model"].get("batchnorm"), lead["train"].get("steps"),
           lead["train"].get("batch_size"))
    want = ([3, 3, 3], True, EXPECT["steps"], 128)  # ResNet-20 with BatchNorm, the link's steps, batch 128
    if got != want or lead["status"] != "finished":  # the page trained what its link says
        raise SystemExit(f"the run trained blocks, BatchNorm, steps, batch {got} ({lead['status']}), not {want}: "
                         f"{lead.get('message')}")
    final = lead.get("final") or {}
    return Result(watched, float(final.get("samples_per_s") or float("nan")), wall, lead["status"], load=load())


def show(label: str, r: Result) -> None:
    print(f"  {label:<10} {'watched' if r.watched else 'unwatched':<9} {r.rate:7.1f} samples/s  wall {r.wall:6.1f} s"
          f"  ({r.status})  load {r.load}", flush=True)


def breakdown(r: Result) -> None:
    c, w = r.cpu, r.wire
    wall, cap = c["wall"], c["capacity"]
    idle = max(0.0, cap - sum(c[p] for p in CpuMeter.PARTS))
    print(f"    where the watched run's {wall:.1f} s x {CORES} cores = {cap:.1f} CPU-s went:")
    for part in (*CpuMeter.PARTS, "idle"):
        v = idle if part == "idle" else c[part]
        print(f"      {part:<18} {v:7.1f} CPU-s  {v / cap:6.1%} of the machine  ({v / wall:.2f} cores)")
    n = len(w.reruns)
    if n:
        per = statistics.median(w.reruns)
        print(f"    fragment reruns: {n} ({n / wall:.2f}/s), request to script_finished median {per * 1000:.0f} ms, "
              f"p90 {sorted(w.reruns)[int(0.9 * (n - 1))] * 1000:.0f} ms; server CPU per rerun "
              f"{c['server'] / n * 1000:.0f} ms; Chromium CPU per rerun "
              f"{(c['chromium renderer'] + c['chromium other']) / n * 1000:.0f} ms")
    p = r.paint
    other = p["TaskDuration"] - p["ScriptDuration"] - p["LayoutDuration"] - p["RecalcStyleDuration"]
    print(f"    the page's main thread: {p['TaskDuration']:.1f} s busy ({p['TaskDuration'] / wall:.0%} of the wall "
          f"time): JavaScript {p['ScriptDuration']:.1f} s, layout {p['LayoutDuration']:.1f} s, style "
          f"{p['RecalcStyleDuration']:.1f} s, paint and the rest {other:.1f} s")
    print(f"    websocket to the page: {w.bytes_in / 1024:.0f} KiB, {w.bytes_in / 1024 / wall:.0f} KiB/s; fragment "
          f"intervals the page was given, in order: {' '.join(f'{x:g}' for x in w.intervals)} s", flush=True)


# ---------------------------------------------------------------- the server's figure building


def figure_costs(run_dirs: list[Path], repeats: int = 5) -> None:
    """Milliseconds to build and serialise each live-view figure from the finished record (the
    run's full length), as the server does on a fragment rerun."""
    import plotly.io as pio

    from resnet_core import runs
    from resnet_core.anatomy import describe
    from resnet_core.figures.diagram import architecture_figure
    from resnet_core.figures.training import curves_figure, heatmap_figure

    rec = runs.load_run(run_dirs[0])
    metrics, grads = rec.metrics, rec.grads
    cfg = rec.model
    layers = [n for n in rec.meta["layers"] if ".bn" not in n and n != "bn1" and "downsample.1" not in n]
    anat = describe(cfg)
    jobs = {
        "curves": lambda: curves_figure(metrics),
        "heatmap": lambda: heatmap_figure(grads, "weight_grad", layers, cursor_step=int(grads["step"].max())),
        "diagram": lambda: architecture_figure(cfg, anat, block_values={b: 1e-3 for b in rec.meta["blocks"]},
                                               title="step", value_label="per block"),
    }
    print(f"  the live view's figures at {int(grads['step'].max())} logged steps (median of {repeats}):")
    for name, build in jobs.items():
        t_build, t_json, size = [], [], 0
        for _ in range(repeats):
            t = time.perf_counter()
            fig = build()
            t_build.append(time.perf_counter() - t)
            t = time.perf_counter()
            size = len(pio.to_json(fig, validate=False))
            t_json.append(time.perf_counter() - t)
        print(f"    {name:<8} build {statistics.median(t_build) * 1000:6.1f} ms  to JSON "
              f"{statistics.median(t_json) * 1000:6.1f} ms  {size / 1024:6.0f} KiB", flush=True)


# ---------------------------------------------------------------- main


@dataclass
class Side:
    """One server (this tree's app, or `--before`'s), its CPU meter, and the one Chromium tab watching it."""

    name: str
    server: Server
    url: str = ""
    meter: CpuMeter | None = None
    page: object = None
    wire: Wire | None = None


def start_server(name: str, root: Path, home: Path, env: dict[str, str]) -> Side:
    from bench import load_test

    saved = load_test.ROOT
    load_test.ROOT = root  # the app (and its .streamlit config) this server runs
    try:
        server = Server(home, env)
        side = Side(name, server, server.start())
    finally:
        load_test.ROOT = saved
    side.meter = CpuMeter(server.proc.pid)
    return side


async def open_tab(side: Side, browser) -> None:
    EXPECT["steps"] = 5
    warm = await start(side.url, "tr_steps=5")  # the worker, the dataset
    await wait_ended(side.server.runs, set(), 1, 300)
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    side.page = await context.new_page()  # one tab throughout, idle on a finished run between runs
    side.wire = Wire()
    side.wire.attach(side.page)
    await side.page.goto(f"{side.url}/train?tr_steps=5&tr_job={warm}")  # the app's scripts, loaded once
    await side.page.wait_for_selector(".st-key-tr_heatmap .main-svg", timeout=120_000)


async def main_async(args: argparse.Namespace) -> None:
    from playwright.async_api import async_playwright

    print(f"load average {load()} at the start; {CORES} cores; default run at {args.steps} steps, "
          f"twin run at {args.twin_steps} steps; {args.rounds} round(s)"
          + (f"; watched also on a server of {args.before} (before)" if args.before else ""), flush=True)
    env = {"RESNET_JOB_IDLE_S": "3600", **dict(kv.split("=", 1) for kv in args.env)}
    with tempfile.TemporaryDirectory() as home:
        sides = [start_server("this tree", ROOT, Path(home) / "a", env)]
        if args.before:
            sides.append(start_server("before", Path(args.before).resolve(), Path(home) / "b", env))
        main_side = sides[0]
        shots = Path(args.screenshots) if args.screenshots else None
        if shots:
            shots.mkdir(parents=True, exist_ok=True)
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for side in sides:
                    await open_tab(side, browser)
                pairs: dict[tuple[str, str], list[tuple[Result, Result]]] = {}
                plan = [("default", f"tr_steps={args.steps}", 1)] * args.rounds
                if args.twin_steps:
                    plan += [("twin", f"tr_steps={args.twin_steps}&tr_twin=1", 2)] * args.twin_rounds
                last_dirs: list[Path] = []
                for i, (label, query, nets) in enumerate(plan):
                    EXPECT["steps"] = int(query.split("tr_steps=")[1].split("&")[0])
                    print(f"{label} run, round {sum(1 for p in plan[:i] if p[0] == label) + 1}:", flush=True)
                    a = await unwatched(main_side.url, main_side.server, query, nets, args.timeout)
                    show(label, a)
                    for side in sides if i % 2 == 0 else sides[::-1]:  # the watched sides take turns going first
                        before = {p.name for p in side.server.runs.glob("*")}
                        shot = shots / f"watch-{label}-{i}-{side.name.replace(' ', '-')}.png" if shots else None
                        b = await watched(side.url, side.server, side.page, side.wire, query, nets, args.timeout,
                                          side.meter, shot)
                        show(f"{label} ({side.name})", b)
                        breakdown(b)
                        print(f"    ratio watched ({side.name}) / unwatched: {b.rate / a.rate:.3f} samples/s, "
                              f"{a.wall / b.wall:.3f} by wall time", flush=True)
                        pairs.setdefault((label, side.name), []).append((a, b))
                        if label == "default" and side is main_side:
                            last_dirs = new_records(side.server.runs, before)
                await browser.close()
            print("summary:")
            for (label, name), got in pairs.items():
                ratios = [b.rate / a.rate for a, b in got]
                alone, seen = statistics.median(a.rate for a, _ in got), statistics.median(b.rate for _, b in got)
                print(f"  {label}, watched on {name}: watched / unwatched samples/s, median of {len(ratios)}: "
                      f"{statistics.median(ratios):.3f} ({' '.join(f'{x:.3f}' for x in ratios)}; target >= 0.75)"
                      f"  unwatched {alone:.1f}, watched {seen:.1f} samples/s")
            print(f"load average {load()} at the end")
            if last_dirs:
                figure_costs(last_dirs)
        finally:
            for side in sides:
                side.server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="the default run's steps (the page's default is 300)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--twin-steps", type=int, default=60, help="0: no twin run")
    ap.add_argument("--twin-rounds", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds a run may take")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="for the server, e.g. a setting")
    ap.add_argument("--before", default="", metavar="DIR",
                    help="another tree of the app (e.g. `git archive <commit> | tar -x -C DIR`): each run is also "
                         "watched on a server of it, for a before/after in one process")
    ap.add_argument("--screenshots", default="", help="a folder for a screenshot of each watched run's page at its end")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
