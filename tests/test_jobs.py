"""The job manager: pause/resume/stop within a second, queueing, divergence, OOM, the idle rule, since()."""

from __future__ import annotations

import functools
import time

import pandas as pd
import pytest

from resnet_core import runs
from resnet_core.jobs import JobManager
from resnet_core.limits import LimitError, from_env
from tests import trainkit
from tests.trainkit import mnist_tiny, one_thread, tiny_train, worker_fault

LONG = 20_000  # steps: a job that runs until the test stops it


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


wait = functools.partial(trainkit.wait, timeout=30.0)  # these jobs are tiny: 30 s is plenty


def submit(m: JobManager, owner: str = "a", **train) -> str:
    return m.submit(mnist_tiny(), tiny_train(**{"steps": LONG, "batch_size": 16, **train}), owner=owner)


def test_pause_resume_stop_act_within_a_second(manager):
    job = manager.get(submit(manager))
    wait(lambda: job.step >= 3)
    job.pause()
    assert job.state == "paused"
    time.sleep(0.5)
    frozen = job.step
    time.sleep(0.5)
    assert job.step == frozen  # nothing trains while paused
    job.resume()
    assert wait(lambda: job.step > frozen) < 1.0
    job.pause()
    time.sleep(0.3)
    assert not job.stopping
    job.stop()  # a stop reaches a paused job too
    assert job.stopping  # asked, and its worker has not answered yet
    assert wait(lambda: job.state == "stopped") < 1.0
    assert not job.stopping
    job.thread.join(2)
    assert not job.thread.is_alive()
    rec = runs.load_run(job.run_dir)
    assert rec.status == "stopped" and rec.damaged is None and len(rec.metrics) > 0


def test_jobs_beyond_k_queue_and_know_their_place(manager):
    ids = [submit(manager, owner=o) for o in ("a", "b", "c")]
    first, second, third = (manager.get(i) for i in ids)
    wait(lambda: first.state == "running" and first.step > 0)
    assert [j.snapshot()["state"] for j in (second, third)] == ["queued", "queued"]
    assert (second.snapshot()["queue_place"], third.snapshot()["queue_place"]) == (1, 2)
    assert first.snapshot()["queue_place"] is None
    first.stop()
    wait(lambda: second.state == "running")
    assert third.snapshot()["queue_place"] == 1
    third.stop()  # stopping a queued job takes it out of the queue at once
    assert third.state == "stopped" and manager.queue_place(third) is None
    second.stop()
    wait(lambda: second.done)


def test_queue_limits_refuse_with_the_limit_named(tmp_path):
    m = JobManager(root=tmp_path, limits=from_env({}, max_queued_per_session=1, max_queued_total=2), max_running=1)
    try:
        submit(m, "a")  # runs
        submit(m, "a")  # waits
        with pytest.raises(LimitError, match="max_queued_per_session.*RESNET_MAX_QUEUED_PER_SESSION"):
            submit(m, "a")
        submit(m, "b")
        with pytest.raises(LimitError, match="max_queued_total.*RESNET_MAX_QUEUED_TOTAL"):
            submit(m, "c")
    finally:
        m.shutdown()


def test_divergence_is_reported_and_the_next_job_still_finishes(manager):
    bad = manager.get(submit(manager, lr=1e6, steps=200))
    good = manager.get(submit(manager, steps=5))
    wait(lambda: good.done)
    assert bad.state == "diverged" and "diverged at step" in bad.message
    assert good.state == "finished", good.message
    assert runs.load_run(bad.run_dir).status == "diverged"


def test_out_of_memory_fails_one_job_and_the_next_runs(manager, monkeypatch):
    worker_fault(monkeypatch, "oom", num_classes=11)  # torch.OutOfMemoryError in that job's forward pass
    oom = manager.get(manager.submit(mnist_tiny(num_classes=11), tiny_train(steps=5, batch_size=16), owner="a"))
    good = manager.get(submit(manager, steps=5))
    wait(lambda: good.done)
    assert oom.state == "failed" and "out of memory" in oom.message
    assert good.state == "finished"


def test_a_job_nobody_polls_is_stopped_and_its_thread_ends(tmp_path):
    m = JobManager(root=tmp_path, limits=from_env({}), max_running=1, idle_s=0.5)
    try:
        job = m.get(submit(m))
        waited = wait(lambda: job.done, timeout=10)
        assert job.state == "stopped" and "nobody looked" in job.message and waited < 3
        assert job.message.count("nobody looked") == 1
        job.thread.join(2)
        assert not job.thread.is_alive()
    finally:
        m.shutdown()


def test_since_returns_only_new_rows(manager):
    job = manager.get(submit(manager, steps=40, log_every=1, eval_every=20))
    seen_m, seen_g, cursor, calls = [], [], None, 0
    while not job.done or calls == 0:
        m, g, cursor = job.since(cursor)
        seen_m.append(m)
        seen_g.append(g)
        calls += 1
        time.sleep(0.01)
    m, g, cursor = job.since(cursor)
    seen_m.append(m)
    seen_g.append(g)
    assert job.state == "finished"
    metrics = pd.concat(seen_m, ignore_index=True)
    grads = pd.concat([g for g in seen_g if len(g)], ignore_index=True)
    assert metrics[metrics.split == "train"]["step"].tolist() == list(range(1, 41))
    assert metrics[metrics.split == "test"]["step"].tolist() == [20, 40]
    assert grads.groupby("step").size().nunique() == 1 and grads["step"].nunique() == 40
    again_m, again_g, same = job.since(cursor)
    assert len(again_m) == len(again_g) == 0 and same == cursor
    rec = runs.load_run(job.run_dir)  # the record on disk holds the same rows
    pd.testing.assert_frame_equal(rec.metrics, metrics, check_dtype=False)
    snap = job.snapshot()
    assert snap["state"] == "finished" and snap["step"] == 40 and snap["run_dir"] == job.run_dir


def test_a_failing_job_does_not_stop_the_manager(manager, tmp_path):
    missing = manager.submit(mnist_tiny(in_channels=3, image_size=32), tiny_train(dataset="cifar10", steps=3),
                             owner="a", data_root=str(tmp_path / "no-data"))
    job = manager.get(missing)
    good = manager.get(submit(manager, steps=3))
    wait(lambda: good.done)
    assert job.state == "failed"
    assert job.message.startswith("CIFAR-10 is not available") and "mnist-5k" in job.message
    assert good.state == "finished"


def test_shutdown_stops_everything(tmp_path):
    m = JobManager(root=tmp_path, limits=from_env({}), max_running=1)
    jobs = [m.get(submit(m, o)) for o in ("a", "b")]
    wait(lambda: jobs[0].step > 0)
    m.shutdown(timeout=5)
    assert all(j.state == "stopped" for j in jobs)
    assert not jobs[0].thread.is_alive()
    with pytest.raises(RuntimeError):
        submit(m)


def test_old_finished_jobs_read_their_history_from_the_record(tmp_path):
    m = JobManager(root=tmp_path, limits=from_env({}), max_running=1, keep_history=0)
    try:
        job = m.get(submit(m, steps=6, eval_every=3))
        job.thread.join(30)
        assert job.state == "finished" and job._released and job._rows == []
        metrics, grads, cursor = job.since()
        assert metrics["step"].tolist() == [1, 2, 3, 3, 4, 5, 6, 6] and grads["step"].nunique() == 6
        assert cursor == (8, 6)
        tail_m, tail_g, _ = job.since((5, 4))  # a page that had seen part of it gets the rest
        assert tail_m["step"].tolist() == [5, 6, 6] and sorted(tail_g["step"].unique()) == [5, 6]
    finally:
        m.shutdown()


def test_the_devices_a_job_may_ask_for_are_its_workers(manager, tmp_path):
    """Checked at submit against the backend's devices (this machine's for worker processes; a Ray
    cluster's own, tests/test_ray.py), so a refusal names what the workers have."""
    from resnet_core import device

    have = device.available()
    assert manager.backend.devices() == have
    for name in ("auto", *have):
        manager.check_device(name)
    with pytest.raises(ValueError, match=r"device='tpu' is not allowed: one of auto, cpu, cuda, mps"):
        manager.check_device("tpu")
    missing = [d for d in ("cuda", "mps") if d not in have]
    for name in missing:
        refused = rf"device='{name}' is not available here: available are {', '.join(have)}"
        with pytest.raises(ValueError, match=refused):
            manager.submit(trainkit.mnist_tiny(), tiny_train(steps=2, device=name))
    assert manager.jobs() == []  # refused: nothing queued

    class Elsewhere(type(manager.backend)):  # workers on machines with a GPU (what a Ray cluster may be)
        def devices(self):
            return ["cuda", "cpu"]

    other = JobManager(root=tmp_path / "other", limits=from_env({}), max_running=1, backend=Elsewhere())
    try:
        other.check_device("cuda")  # this machine's devices do not matter
        with pytest.raises(ValueError, match=r"device='mps' is not available here: available are cuda, cpu"):
            other.check_device("mps")
    finally:
        other.shutdown(timeout=10)
