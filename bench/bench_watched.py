"""A job's throughput while 20 Train pages watch it, over the same job with nobody watching.

    python bench/bench_watched.py [--sessions 20 --phase 20 --rounds 3]

Starts `streamlit run app.py` (its own temporary home, runs folder and the app's config; jobs in
worker processes, the default backend), starts one long ResNet-20 run from a Train page session
(Streamlit's websocket protocol: bench/load_test.py's client) and then alternates phases of
`--phase` seconds: nobody watching, then `--sessions` protocol sessions watching it as the page
does (the page with the job in its URL, then the live view's fragment reruns at the interval the
server asks for, 0.5 s while it trains). A phase's rate is read from the record the server
writes: two consecutive flushes of config.json hold (step, training seconds) pairs, so the rate
between them is exact. Each watched phase sits between two unwatched ones, and its ratio is over
their mean (the VM's speed drifts over minutes). Prints each phase's images/s and the cores that
the server, the worker and the watching sessions used in it, the median watched/unwatched ratio of
the rounds (target >= 0.95) and the load average. The sessions run in this process, on the same
cores as the server and the worker; `--client-nice 19` lets them take only the CPU that the
server and the worker leave, as browsers on the students' own machines would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load_test import JOB_RE, Protocol, Server, cpu_seconds  # noqa: E402

BATCH = 64


def snapshot(run_dir: Path) -> tuple[str, int, float]:
    meta = json.loads((run_dir / "config.json").read_text())
    return meta["updated_at"], int(meta["final"].get("step") or 0), float(meta["final"].get("seconds") or 0.0)


async def next_flush(run_dir: Path, after: str) -> tuple[str, int, float]:
    while True:
        try:
            snap = snapshot(run_dir)
            if snap[0] != after:
                return snap
        except (OSError, ValueError, KeyError):
            pass
        await asyncio.sleep(0.05)


REDRAWS: list[tuple[float, float]] = []  # (when, interval) of every fragment rerun asked for


async def watch(url: str, query: str, stop: asyncio.Event) -> None:
    async with Protocol(url, "train", query) as p:
        await p.run()
        due: dict[str, float] = {}
        while not stop.is_set():
            now = time.monotonic()
            for fid, every in list(p.fragments.items()):
                if fid not in due or now >= due[fid]:
                    due[fid] = now + every
                    if p.finished.is_set():
                        REDRAWS.append((now, every))
                        await p.run(fragment=fid)
            await asyncio.sleep(0.05)


async def phase(url: str, query: str, run_dir: Path, sessions: int, seconds: float,
                settle: float, pids: dict[str, int]) -> tuple[float, float, float, dict[str, float]]:
    """(images/s, redraws asked for per second, median interval, {process: cores used}) over `seconds`,
    after `settle` s in which the sessions open the page and their live views find their pace."""
    stop = asyncio.Event()
    watchers = [asyncio.create_task(watch(url, query, stop)) for _ in range(sessions)]
    await asyncio.sleep(settle)
    first = await next_flush(run_dir, snapshot(run_dir)[0])
    t0, cpu0 = time.monotonic(), {k: cpu_seconds(pid) for k, pid in pids.items()}
    await asyncio.sleep(seconds)
    last = await next_flush(run_dir, snapshot(run_dir)[0])
    t1, cpu1 = time.monotonic(), {k: cpu_seconds(pid) for k, pid in pids.items()}
    stop.set()
    await asyncio.gather(*watchers, return_exceptions=True)
    seen = [every for when, every in REDRAWS if t0 <= when <= t1]
    return ((last[1] - first[1]) * BATCH / (last[2] - first[2]), len(seen) / (t1 - t0),
            statistics.median(seen) if seen else float("nan"), {k: (cpu1[k] - cpu0[k]) / (t1 - t0) for k in pids})


def cores(used: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in used.items())


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as home:
        server = Server(Path(home), {"RESNET_JOB_IDLE_S": "3600", "RESNET_MAX_RUNNING_JOBS": "1"})
        url = server.start()
        if args.client_nice:  # after the server started: it keeps its own priority
            os.nice(args.client_nice)
        try:
            query = f"tr_steps=20000&tr_batch_size={BATCH}"
            async with Protocol(url, "train", query) as p:
                await p.run()
                await p.run(trigger="tr_start")
                job = JOB_RE.search(p.query).group(1)
            while not [d for d in server.runs.glob("*") if (d / "config.json").exists()]:
                await asyncio.sleep(0.2)
            (run_dir,) = [d for d in server.runs.glob("*") if (d / "config.json").exists()]
            await next_flush(run_dir, "")
            watched_query = f"{query}&tr_job={job}"
            worker = int(json.loads((run_dir / "config.json").read_text())["where"]["pid"])
            pids = {"server": server.proc.pid, "worker": worker, "clients": os.getpid()}
            # each watched phase sits between two unwatched ones, and its baseline is their mean: the
            # VM's speed drifts over minutes, and a drift then moves both sides alike
            ratios = []
            alone, _, _, used = await phase(url, watched_query, run_dir, 0, args.phase, 3.0, pids)
            print(f"unwatched {alone:6.1f} img/s   cores used: {cores(used)}", flush=True)
            for r in range(args.rounds):
                watched, per_s, every, used = await phase(url, watched_query, run_dir, args.sessions, args.phase,
                                                          args.settle, pids)
                print(f"round {r + 1}: watched by {args.sessions} pages {watched:6.1f} img/s   ({per_s:.2f} "
                      f"redraws/s in all, median interval {every:g} s)   cores used: {cores(used)}   "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
                after, _, _, used = await phase(url, watched_query, run_dir, 0, args.phase, 3.0, pids)
                ratios.append(watched / ((alone + after) / 2))
                print(f"unwatched {after:6.1f} img/s   cores used: {cores(used)}   round {r + 1}: ratio "
                      f"{ratios[-1]:.3f} (watched over the mean of the unwatched phases before and after)",
                      flush=True)
                alone = after
            where = json.loads((run_dir / "config.json").read_text()).get("where", {})
            print(f"watched / unwatched, median of {len(ratios)} rounds: {statistics.median(ratios):.3f} "
                  f"(target >= 0.95); ResNet-20, batch {BATCH}, mnist-5k, CPU, backend {where.get('backend')}, "
                  f"{args.phase:g} s phases after {args.settle:g} s, clients at nice {args.client_nice}; "
                  f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        finally:
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--phase", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds between the sessions opening the page and the measurement (their first page "
                         "runs, and the live views finding their pace)")
    ap.add_argument("--client-nice", type=int, default=0,
                    help="run the watching sessions (this process) at this niceness, e.g. 19: they stand in for "
                         "students' browsers, which run on machines of their own")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
