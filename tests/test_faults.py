"""Faults in the middle of a classroom: the server goes on, nothing is lost, no thread leaks,
and the app writes only to its data root and its runs folder.

Covered elsewhere, not repeated here:
- SIGKILL of a CLI run mid-training: test_cli_train.py (test_sigkill_mid_run_...); of the
  server itself, through the browser: test_browser_faults.py.
- damaged parquet or config read directly: test_runs.py (test_truncated_or_corrupt_files_...);
  damaged records named in a Compare link: test_app_compare.py.
- a failed download's message from data.load: test_data.py (test_download_without_network).
- divergence and OOM with one job at a time: test_jobs.py; the idle rule on the manager alone:
  test_jobs.py (test_a_job_nobody_polls_is_stopped_and_its_thread_ends).
- zip uploads (zip-slip, links, size, schema, pickles): test_runs.py and test_app_compare.py.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from resnet_core import runs, runzip
from resnet_core.cli import main
from resnet_core.jobs import JobManager, forkserver
from resnet_core.limits import from_env
from tests.trainkit import mnist_tiny, one_thread, tiny_train, wait, worker_fault
from ui import live

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
TINY_URL = {"tr_preset": "custom", "tr_layout": "blocks", "tr_layers": "1,1,1", "tr_widths": "4,8,8",
            "tr_batch_size": "8"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def job_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("job-")]


@pytest.fixture
def manager(tmp_path):
    m = JobManager(root=tmp_path / "runs", limits=from_env({}), max_running=2, idle_s=600)
    yield m
    m.shutdown(timeout=10)
    assert not any(t.is_alive() for t in job_threads()), "a job thread outlived shutdown"


def start_long(m: JobManager, steps: int = 300):
    """A job that is still training when the fault comes, and then must finish."""
    job = m.get(m.submit(mnist_tiny(), tiny_train(steps=steps, batch_size=8), owner="other"))
    wait(lambda: job.step >= 2)
    return job


# ---------------------------------------------------------------- NaN/inf, OOM, failed download


def test_an_infinite_loss_is_diverged_while_another_job_trains_on(manager, monkeypatch):
    worker_fault(monkeypatch, "inf", num_classes=11)  # that job only: its loss becomes +inf, not NaN
    other = start_long(manager)
    bad = manager.get(manager.submit(mnist_tiny(num_classes=11), tiny_train(steps=50, batch_size=8), owner="a"))
    wait(lambda: bad.done)
    assert bad.state == "diverged" and "diverged at step 1" in bad.message and "inf" in bad.message
    assert not other.done, "the other job should still be training when the bad one ends"
    wait(lambda: other.done)
    assert other.state == "finished" and other.step == 300
    assert runs.load_run(bad.run_dir).status == "diverged"
    after = manager.get(manager.submit(mnist_tiny(), tiny_train(steps=3, batch_size=8), owner="a"))
    wait(lambda: after.done)
    assert after.state == "finished"  # the server takes new work


def test_out_of_memory_fails_one_job_while_another_trains_on(manager, monkeypatch):
    worker_fault(monkeypatch, "oom", num_classes=11)  # torch.OutOfMemoryError in that job's forward pass
    other = start_long(manager)
    oom = manager.get(manager.submit(mnist_tiny(num_classes=11), tiny_train(steps=50, batch_size=8), owner="a"))
    wait(lambda: oom.done)
    assert oom.state == "failed"
    assert "out of memory" in oom.message and "smaller batch" in oom.message and "Traceback" not in oom.message
    assert not other.done
    wait(lambda: other.done)
    assert other.state == "finished" and other.step == 300
    assert runs.load_run(oom.run_dir).status == "failed"


def test_a_failed_download_says_so_and_the_embedded_data_still_trains(manager, monkeypatch, tmp_path):
    # torchvision's mirrors at port 1 on loopback, in the worker: its own download code meets a real
    # network error, refused at once
    worker_fault(monkeypatch, "refuse-downloads")
    failed = manager.get(manager.submit(mnist_tiny(), tiny_train(dataset="mnist", steps=3, batch_size=8),
                                        owner="a", data_root=str(tmp_path / "data"), download=True))
    wait(lambda: failed.done)
    assert failed.state == "failed"
    assert "MNIST" in failed.message and "download failed" in failed.message and '"mnist-5k"' in failed.message
    assert "Traceback" not in failed.message and failed.run_dir == ""  # no record of a run that never began
    ok = manager.get(manager.submit(mnist_tiny(), tiny_train(dataset="mnist-5k", steps=3, batch_size=8), owner="a"))
    wait(lambda: ok.done)
    assert ok.state == "finished"
    assert [r.status for r in runs.list_runs(tmp_path / "runs")] == ["finished"]


# ---------------------------------------------------------------- damaged records on the pages


def test_damaged_records_are_listed_as_damaged_and_the_rest_load(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    code = main(["train", "--blocks", "1,1,1", "--widths", "4,8,8", "--batch-size", "8", "--steps", "3",
                 "--device", "cpu", "--quiet", "--out", str(root)])
    assert code == 0
    (good,) = list(root.iterdir())
    for name, damage in (("truncated", "metrics.parquet"), ("bad-config", "config.json")):
        copy = root / name
        copy.mkdir()
        for p in good.iterdir():
            (copy / p.name).write_bytes(p.read_bytes())
        blob = (copy / damage).read_bytes()
        (copy / damage).write_bytes(blob[: len(blob) // 2])
    listed = {r.name: r for r in runs.list_runs(root)}
    assert listed[good.name].status == "finished"
    assert listed["truncated"].status == "damaged" and listed["bad-config"].status == "damaged"

    monkeypatch.setenv("RESNET_RUNS_DIR", str(root))
    live.manager.clear()
    try:
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.switch_page("pages/compare.py").run()
        at.switch_page("pages/train.py").run()
        assert not at.exception
        (table,) = [d.value for d in at.get("dataframe") if "run" in d.value]
        states = dict(zip(table["record"].map(lambda p: Path(p).name), table["state"], strict=True))
        assert states == {good.name: "finished", "truncated": "damaged", "bad-config": "damaged"}
        at.query_params["cmp_runs"] = good.name
        at.switch_page("pages/compare.py").run()
        assert not at.exception
        assert at.multiselect(key="cmp_pick").value == [good.name]  # the sound one loads and is compared
        assert any("2 damaged records" in e.label for e in at.expander)
    finally:
        live.manager().shutdown()
        live.manager.clear()


# ---------------------------------------------------------------- a browser session that goes away


def test_a_closed_session_leaves_no_thread(tmp_path, monkeypatch):
    """A session starts a run and goes away: a short run finishes, a long one is stopped by the idle
    rule, and the threads of both end (the same through a real browser: test_browser_faults.py)."""
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path / "runs"))
    # long enough for the short run to start and finish on a busy machine (at 1.5 s, under load, the
    # idle rule stopped it first); short enough for the long run to be stopped well inside the wait
    monkeypatch.setenv("RESNET_JOB_IDLE_S", "5")
    live.manager.clear()
    forkserver.shared().wait_ready()  # as at a server's start-up: a cold one would keep the long run queued
    try:
        baseline = threading.active_count()
        ids = []
        for steps in (3, 20_000):
            at = AppTest.from_file(str(APP), default_timeout=60)
            at.switch_page("pages/compare.py").run()
            for k, v in {**TINY_URL, "tr_steps": str(steps)}.items():
                at.query_params[k] = v
            at.switch_page("pages/train.py").run()
            at.button(key="tr_start").click().run()
            assert not at.exception and not at.error, [e.value for e in at.error]
            ids.append(at.session_state["tr_job"])
            del at  # the tab is closed: nobody polls the job any more
        short, long = (live.manager().get(i) for i in ids)
        wait(lambda: short.done and long.done, timeout=90)
        assert short.state == "finished", short.message
        assert long.state == "stopped" and "nobody looked at it for 5 s" in long.message
        for job in (short, long):
            job.thread.join(5)
            assert not job.thread.is_alive()
        assert threading.active_count() <= baseline, [t.name for t in threading.enumerate()]
        record = runs.load_run(long.run_dir)  # the reason outlives the server: it is in the record
        assert record.status == "stopped" and "nobody looked at it for 5 s" in record.meta["message"]
    finally:
        live.manager().shutdown()
        live.manager.clear()


# ---------------------------------------------------------------- many sessions, one training slot


def open_train(**query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.switch_page("pages/compare.py").run()
    for k, v in {**TINY_URL, **query}.items():
        at.query_params[k] = v
    at.switch_page("pages/train.py").run()
    return at


def test_a_queued_run_draws_only_its_status_until_it_starts(tmp_path, monkeypatch):
    """A class's queued runs all poll the server; drawing empty charts for each every half second
    starved the one run training (bench/load_test.py). Queued, a run shows its status row alone."""
    from ui import train_view

    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path / "runs"))
    live.manager.clear()
    try:
        first = open_train(tr_steps="20000")
        first.button(key="tr_start").click().run()
        running = live.manager().get(first.session_state["tr_job"])
        wait(lambda: running.step >= 1)
        running.pause()  # holds the only training slot
        second = open_train(tr_steps="5")
        second.button(key="tr_start").click().run()
        queued = live.manager().get(second.session_state["tr_job"])
        assert queued.state == "queued" and not second.exception
        assert any("Waiting in the queue" in c.value for c in second.caption)
        assert not second.get("plotly_chart")
        assert train_view.refresh_s([queued]) == 2.0 and train_view.refresh_s([running]) == 0.5
        running.stop()
        wait(lambda: queued.done)
        second.run()
        assert queued.state == "finished" and not second.exception
        assert {c.proto.id.rsplit("-", 1)[-1] for c in second.get("plotly_chart")} >= {"tr_curves", "tr_heatmap"}
    finally:
        live.manager().shutdown()
        live.manager.clear()


# ---------------------------------------------------------------- where the app writes


def _listing(path: Path) -> set[str]:
    skip = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", "artifacts"}
    return {str(p.relative_to(path)) for p in path.rglob("*") if not skip & set(p.relative_to(path).parts)}


def test_the_app_writes_only_to_its_data_root_and_runs_folder(tmp_path, monkeypatch):
    """Training through the CLI and through the app, an export and an import, with the runs folder
    and the data root in temporary folders: nothing appears in the working directory, the home
    directory or the repository."""
    cwd, home, runs_dir, data_dir = (tmp_path / n for n in ("cwd", "home", "runs", "data"))
    for d in (cwd, home):
        d.mkdir()
    monkeypatch.chdir(cwd)
    for k, v in {"HOME": home, "XDG_CACHE_HOME": home / ".cache", "RESNET_RUNS_DIR": runs_dir,
                 "RESNET_DATA_DIR": data_dir}.items():
        monkeypatch.setenv(k, str(v))
    repo_before = _listing(ROOT)

    assert main(["train", "--blocks", "1,1,1", "--widths", "4,8,8", "--batch-size", "8", "--steps", "3",
                 "--device", "cpu", "--quiet", "--json"]) == 0
    live.manager.clear()
    try:
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.switch_page("pages/compare.py").run()
        for k, v in {**TINY_URL, "tr_steps": "3"}.items():
            at.query_params[k] = v
        at.switch_page("pages/train.py").run()
        at.button(key="tr_start").click().run()
        job = live.manager().get(at.session_state["tr_job"])
        wait(lambda: job.done)
        assert job.state == "finished", job.message
    finally:
        live.manager().shutdown()
        live.manager.clear()
    records = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(records) == 2
    blob = runzip.export_zip(records[0])
    imported = runzip.import_zip(blob, runs_dir)
    assert imported.damaged is None and imported.path.parent == runs_dir

    assert list(cwd.iterdir()) == [] and list(home.rglob("*")) == []
    new = {p for p in _listing(ROOT) - repo_before if not p.endswith((".py", ".md", ".png", ".toml", ".txt"))}
    assert not new, f"written into the repository: {sorted(new)[:10]}"  # others may add source files meanwhile
    for record in runs_dir.iterdir():  # and what is in the runs folder is records, nothing else
        assert record.is_dir() and (record / "config.json").exists()
        json.loads((record / "config.json").read_text())
    assert not data_dir.exists() or not any(data_dir.rglob("*"))  # the embedded data needs no files
    assert os.getcwd() == str(cwd)
