"""Jobs in worker processes: a worker killed, aborted or hung fails its own job alone, with a
message that says what happened; its record keeps what it streamed; the other job trains on and
the next queued job starts. A paused worker's heartbeats keep it alive past the timeout.

The same faults through a real `streamlit run app.py` server: test_server_faults.py.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from resnet_core import runs, weights
from resnet_core.jobs import JobManager
from resnet_core.limits import from_env
from resnet_core.recorder import RunWriter
from resnet_core.train import train
from tests.trainkit import mnist_tiny, one_thread, tiny_train, wait, worker_fault

HEALTHY = (4, 8, 16)  # the widths of the jobs no fault touches
FAULTY = (4, 8, 8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z")  # a zombie has ended


def submit(m: JobManager, widths: tuple[int, ...], steps: int):
    return m.get(m.submit(mnist_tiny(widths=widths), tiny_train(steps=steps, batch_size=8), owner=str(widths)))


@pytest.mark.parametrize(("kind", "message"), [
    ("sigkill", "the training process was killed (SIGKILL), probably out of memory"),
    ("abort", "the training process aborted (SIGABRT), a crash in native code"),
])
def test_a_dead_worker_fails_its_job_alone_and_the_next_starts(tmp_path, monkeypatch, kind, message):
    worker_fault(monkeypatch, kind, step=6, widths=list(FAULTY))
    m = JobManager(root=tmp_path, limits=from_env({}), max_running=2, idle_s=600)
    try:
        other = submit(m, HEALTHY, 150)
        wait(lambda: other.step >= 1)
        bad = submit(m, FAULTY, 300)
        after = submit(m, HEALTHY, 5)  # waits for a slot: the dead job's
        assert after.state == "queued"
        wait(lambda: bad.done)
        assert bad.state == "failed" and bad.message.startswith(message), bad.message
        assert bad.where["backend"] == "process" and bad.where["pid"] != os.getpid()
        assert not alive(bad.where["pid"])
        assert not other.done  # the other job trains on
        wait(lambda: after.done and other.done, timeout=120)
        assert after.state == other.state == "finished", (after.message, other.message)

        rec = runs.load_run(bad.run_dir)
        assert rec.damaged is None and rec.status == "failed" and rec.meta["message"] == bad.message
        steps = rec.metrics[rec.metrics.split == "train"]["step"].tolist()
        assert steps == list(range(1, 6))  # every row the worker streamed before its 6th step
        assert sorted(rec.grads["step"].unique()) == steps
        assert rec.meta["where"] == {**bad.where, "device": "cpu"} and rec.meta["final"]["step"] == 5
        assert weights.path_of(bad.run_dir, "initial").exists()  # streamed at the start
        assert not weights.path_of(bad.run_dir, "final").exists()  # the dead worker never sent them
        assert runs.load_run(other.run_dir).meta["where"]["pid"] != bad.where["pid"]
    finally:
        m.shutdown()


def test_a_silent_worker_is_killed_after_the_timeout(tmp_path, monkeypatch):
    worker_fault(monkeypatch, "hang", step=4)
    m = JobManager(root=tmp_path, limits=from_env({}), max_running=1, idle_s=600, worker_timeout_s=2)
    try:
        job = submit(m, FAULTY, 300)
        wait(lambda: job.done)
        assert job.state == "failed"
        assert job.message == "the training process sent nothing for 2 s (RESNET_WORKER_TIMEOUT_S) and was killed"
        wait(lambda: not alive(job.where["pid"]), timeout=10)
        rec = runs.load_run(job.run_dir)
        assert rec.status == "failed" and rec.metrics["step"].tolist() == [1, 2, 3]
    finally:
        m.shutdown()


def test_a_paused_worker_outlives_the_timeout_and_resumes(tmp_path):
    m = JobManager(root=tmp_path, limits=from_env({}), max_running=1, idle_s=600, worker_timeout_s=1.5)
    try:
        job = submit(m, HEALTHY, 20_000)
        wait(lambda: job.step >= 2)
        job.pause()
        time.sleep(4)  # more than twice the timeout: only heartbeats come
        assert job.state == "paused"
        frozen = job.step
        job.resume()
        wait(lambda: job.step > frozen + 2)
        job.stop("test")
        wait(lambda: job.done)
        assert job.state == "stopped" and "test" in job.message
    finally:
        m.shutdown()


@pytest.mark.parametrize("backend", ["process", "thread"])
def test_both_backends_stream_the_same_record_weights_included(tmp_path, backend):
    """The same seeded run through either backend: the same rows, the same trained weights."""
    m = JobManager(root=tmp_path, limits=from_env({}), max_running=1, backend=backend)
    try:
        job = submit(m, HEALTHY, 4)
        wait(lambda: job.done)
    finally:
        m.shutdown()
    assert job.state == "finished" and job.where["backend"] == backend
    assert (job.where["pid"] == os.getpid()) == (backend == "thread")
    rec = runs.load_run(job.run_dir)
    assert rec.meta["where"]["backend"] == backend and rec.metrics["step"].tolist() == [1, 2, 3, 4, 4]
    trained = weights.load(job.run_dir)  # checked against the record's config, then read
    ref = tmp_path / "ref"
    train(mnist_tiny(widths=HEALTHY), tiny_train(steps=4, batch_size=8), [RunWriter(mnist_tiny(widths=HEALTHY),
          tiny_train(steps=4, batch_size=8), run_dir=ref)])
    expected = weights.load(ref)
    assert trained.keys() == expected.keys()
    assert all(torch.equal(trained[k], expected[k]) for k in expected)
