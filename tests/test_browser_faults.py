"""Faults that only a real server shows, driven through headless Chromium:

- the server is killed with SIGKILL while a run started from the Train page trains: the record
  reads back up to its last flush, marked interrupted, and a restarted server lists it so;
- a browser tab closes while its run trains: the idle rule stops the run and the server's
  thread count returns to where it was.

Each test starts its own `streamlit run app.py` (its working directory, home, runs folder and
data root all temporary), since it kills or watches that process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from resnet_core import runs
from tests.conftest import _free_port, keep_speed, seed_speed, wait_for_app

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
TINY = "tr_preset=custom&tr_layout=blocks&tr_layers=1,1,1&tr_widths=4,8,8&tr_batch_size=8"


class Server:
    """`streamlit run app.py` on a free loopback port, with everything it may write in `home`."""

    def __init__(self, home: Path, **env: str):
        self.home, self.runs = home, home / "runs"
        (home / "cwd").mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
                    "RESNET_RUNS_DIR": str(self.runs), "RESNET_DATA_DIR": str(home / "data"),
                    "RESNET_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env}
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        port = _free_port()
        seed_speed(self.home / "data")
        self.log = open(self.home / f"streamlit-{port}.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=self.home / "cwd", env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, (self.home / self.log.name).read_text()[-2000:]
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2):
                    return self.url
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"streamlit did not start on {self.url}")

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def settled_threads(self, still_s: float = 11.0, timeout: float = 60.0) -> int:
        """The thread count once it has held for `still_s`: the server's file-serving worker threads
        (anyio's) end after 10 s idle, and one ending mid-test can hide the job's thread (a full
        browser run once counted 16 before, 16 while training, 15 after)."""
        count, since, deadline = self.threads(), time.time(), time.time() + timeout
        while time.time() - since < still_s:
            assert time.time() < deadline, f"the thread count did not settle in {timeout:.0f} s"
            time.sleep(0.5)
            if (n := self.threads()) != count:
                count, since = n, time.time()
        return count

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()  # SIGKILL: no handler, no flush, no clean-up runs
        else:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        self.proc = None
        keep_speed(self.home / "data")


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.stop()


def wait_until(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def open_train(browser, url: str, query: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.goto(f"{url}/train?{query}")
    tab.get_by_role("button", name="Start").wait_for(timeout=90_000)
    wait_for_app(tab)
    return context, tab


def table_rows(tab) -> list[list[str]]:
    """The runs table's cells: st.dataframe draws on a canvas and keeps an accessible table beside it."""
    frame = tab.locator('[data-testid="stDataFrame"]').last
    frame.wait_for(timeout=60_000)
    frame.scroll_into_view_if_needed()  # the grid fills its rows once it is on screen
    frame.locator("tbody tr").first.wait_for(state="attached", timeout=30_000)
    return [r.locator("td").all_text_contents() for r in frame.locator("tbody tr").all()]


def no_exception(tab) -> None:
    boxes = tab.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.first.inner_text()[:500]


def record_status(run_dir: Path) -> str:
    try:
        return json.loads((run_dir / "config.json").read_text()).get("status", "")
    except (OSError, ValueError):
        return ""


def test_server_killed_mid_run_leaves_an_interrupted_record(browser, server):
    context, tab = open_train(browser, server.start(), f"{TINY}&tr_steps=20000")
    try:
        tab.get_by_role("button", name="Start").click()
        # a flush that holds gradients too (they are logged every 10th step here, the metrics from step
        # 1, so the first flush may hold metrics alone): part files of both, and config.json with a step
        run_dir = wait_until(lambda: next((p for p in server.runs.glob("*") if p.is_dir()
                                           and any(p.glob("metrics*.parquet")) and any(p.glob("grads*.parquet"))),
                                          None), 120, "a flush with gradients")
        wait_until(lambda: json.loads((run_dir / "config.json").read_text())["final"].get("step"), 30,
                   "a flushed step")
        no_exception(tab)
    finally:
        context.close()
    server.stop(kill=True)

    rec = runs.load_run(run_dir)  # the writer's process is gone: this marks it
    assert rec.damaged is None
    assert rec.status == "interrupted" and "ended without finishing" in rec.meta["message"]
    flushed = rec.meta["final"]["step"]
    assert len(rec.metrics) > 0 and len(rec.grads) > 0
    assert rec.metrics["step"].max() >= flushed > 0  # every row up to the last flush reads back
    assert sorted(rec.grads["kind"].unique()) == sorted(runs.KINDS)
    assert record_status(run_dir) == "interrupted"  # written back, so every reader agrees

    context, tab = open_train(browser, server.start(), TINY)  # a new server on the same runs folder
    try:
        rows = table_rows(tab)
        mine = [r for r in rows if r and r[-1] == str(run_dir)]
        assert mine and "interrupted" in mine[0], rows
        no_exception(tab)
    finally:
        context.close()
    assert not any((server.home / "cwd").iterdir())  # nothing written beside the server either


def test_a_closed_tab_stops_its_run_and_leaves_no_thread(browser, tmp_path):
    server = Server(tmp_path, RESNET_JOB_IDLE_S="2")
    try:
        url = server.start()
        # a first short run, so threads the server makes once (PyTorch's, Streamlit's) exist already
        context, tab = open_train(browser, url, f"{TINY}&tr_steps=3")
        tab.get_by_role("button", name="Start").click()
        # (it only has to end: on a loaded machine a slow poll can leave it to the 2 s idle rule instead)
        wait_until(lambda: any(record_status(p) in ("finished", "stopped") for p in server.runs.glob("*")), 90,
                   "warm-up run")
        wait_for_app(tab)

        tab.goto(f"{url}/train?{TINY}&tr_steps=20000")
        tab.get_by_role("button", name="Start").wait_for(timeout=60_000)
        wait_for_app(tab)
        baseline = server.settled_threads()
        tab.get_by_role("button", name="Start").click()
        long = wait_until(lambda: next((p for p in server.runs.glob("*") if record_status(p) == "running"), None),
                          60, "the long run starts")
        training = server.threads()
        context.close()  # the tab goes away mid-run

        wait_until(lambda: record_status(long) == "stopped", 60, "the idle rule stops the run")
        meta = json.loads((long / "config.json").read_text())
        assert meta["message"].startswith("stopped at step") and meta["final"]["step"] < 20_000
        assert "nobody looked at it for 2 s" in meta["message"]  # the record says why
        count = wait_until(lambda: (n := server.threads()) <= baseline and n or None, 30,
                           f"threads back to {baseline}")
        assert count <= baseline < training, (baseline, training, count)  # its thread was there, and is gone
    finally:
        server.stop()
