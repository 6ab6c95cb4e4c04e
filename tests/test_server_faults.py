"""Faults in worker processes under a real `streamlit run app.py`, its jobs started as a browser
starts them (Streamlit's websocket protocol, bench/load_test.py's client):

- a worker killed with SIGKILL, one that aborts, one that hangs: each job fails with a message
  that says what happened, its record keeps what was streamed and says failed, the server and
  the other job go on, and the queued job starts;
- the server itself killed with SIGKILL: its workers and their forkserver exit by themselves.

Which job meets which fault is set by RESNET_TEST_WORKER_FAULT (resnet_core/jobs/faults.py),
matched on each job's channel widths.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.load_test import Protocol
from tests.test_browser_faults import Server, wait_until

BASE = "tr_preset=custom&tr_layout=blocks&tr_layers=1,1,1&tr_batch_size=8"
FAULTS = {(4, 8, 8): "sigkill", (4, 8, 12): "abort", (4, 8, 16): "hang"}
MESSAGES = {"sigkill": "the training process was killed (SIGKILL), probably out of memory",
            "abort": "the training process aborted (SIGABRT), a crash in native code",
            "hang": "the training process sent nothing for 3 s (RESNET_WORKER_TIMEOUT_S) and was killed"}
HEALTHY = (4, 8, 24)


def start_run(url: str, widths: tuple[int, ...], steps: int) -> None:
    """A page session that opens the Train page and clicks Start, as a browser does."""

    async def go() -> None:
        query = f"{BASE}&tr_widths={','.join(map(str, widths))}&tr_steps={steps}"
        async with Protocol(url, "train", query) as p:
            await p.run()
            await p.run(trigger="tr_start")
            # accepted: the link follows the job, and no alert but its own fault (a job meant to fail at
            # step 6 may already have failed when the page's run after the click, or one more, ends)
            assert "tr_job=" in p.query and all(a.startswith(tuple(MESSAGES.values())) for a in p.alerts), p.alerts

    # A thread of its own: the session's Playwright browser (tests/conftest.py) keeps an event loop
    # running in the main thread, and asyncio.run() refuses to start inside it.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, go()).result()


def records(server: Server) -> dict[tuple[int, ...], dict]:
    """config.json of every record, by the widths of its net."""
    out = {}
    for p in server.runs.glob("*/config.json"):
        try:
            meta = json.loads(p.read_text())
        except ValueError:
            continue
        out[tuple(meta["model"]["widths"])] = {**meta, "dir": p.parent}
    return out


def alive(pid: int) -> bool:
    try:
        return not open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    faults = [{"kind": k, "step": 6, "match": {"widths": list(w)}} for w, k in FAULTS.items()]
    s = Server(tmp_path_factory.mktemp("server"), RESNET_TEST_WORKER_FAULT=json.dumps(faults),
               RESNET_WORKER_TIMEOUT_S="3", RESNET_MAX_RUNNING_JOBS="2", RESNET_JOB_IDLE_S="600")
    s.start()
    yield s
    s.stop()


def test_dead_and_hung_workers_fail_their_jobs_alone(server):
    from resnet_core import runs

    start_run(server.url, HEALTHY, 400)
    wait_until(lambda: records(server).get(HEALTHY, {}).get("final", {}).get("step"), 90, "the healthy run trains")
    for widths in FAULTS:
        start_run(server.url, widths, 300)
    start_run(server.url, (4, 8, 32), 5)  # queued until a faulty job's slot frees
    for widths, kind in FAULTS.items():
        meta = wait_until(lambda w=widths: (r := records(server).get(w)) and r["status"] != "running" and r, 120,
                          f"the {kind} job ends")
        assert meta["status"] == "failed" and meta["message"].startswith(MESSAGES[kind]), meta["message"]
        rec = runs.load_run(meta["dir"])
        assert rec.damaged is None and rec.status == "failed"
        assert rec.metrics[rec.metrics.split == "train"]["step"].tolist() == [1, 2, 3, 4, 5]  # all it streamed
        assert sorted(rec.grads["step"].unique()) == [1, 2, 3, 4, 5]
        where = meta["where"]
        assert where["backend"] == "process" and where["pid"] != server.proc.pid and not alive(where["pid"])
    # it trained on through all three: not failed (on a fast machine its 400 steps may be done already)
    assert records(server)[HEALTHY]["status"] in ("running", "finished")
    queued = wait_until(lambda: (r := records(server).get((4, 8, 32))) and r["status"] == "finished" and r, 120,
                        "the queued job finishes")
    assert queued["final"]["step"] == 5
    healthy = wait_until(lambda: (r := records(server)[HEALTHY])["status"] != "running" and r, 180,
                         "the healthy job finishes")
    assert healthy["status"] == "finished" and healthy["final"]["step"] == 400
    with urllib.request.urlopen(server.url + "/_stcore/health", timeout=10) as r:
        assert r.status == 200  # and the server is still up


def test_a_killed_server_leaves_no_worker_training(server):
    start_run(server.url, (4, 8, 40), 20_000)
    meta = wait_until(lambda: (r := records(server).get((4, 8, 40))) and r.get("where") and r, 90, "the run starts")
    worker = meta["where"]["pid"]
    children = [int(p) for p in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()]
    assert alive(worker) and worker not in children  # its parent is the forkserver, not the server
    server.stop(kill=True)
    wait_until(lambda: not alive(worker), 15, "the worker exits")
    wait_until(lambda: not any(alive(c) for c in children), 15, "the forkserver exits")
