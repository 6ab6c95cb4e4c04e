"""Jobs as Ray actors on a real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster:
a head and a worker node of 1 CPU each, a small object store, no dashboard), one per module.

Without Ray installed these tests skip; under CI=true that is a failure. tests/run.sh installs
requirements-ray.txt. Ray's start is slow on a busy machine: one cluster and one job manager
serve every test here, and everything they started is stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resnet_core.limits import from_env
from resnet_core.runs import load_run
from tests.trainkit import mnist_tiny, tiny_train, wait

try:
    import ray
    from ray.cluster_utils import Cluster
except ImportError:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("Ray is not installed (pip install -r requirements-ray.txt); CI=true makes this a failure",
                    pytrace=False)
    pytest.skip("Ray is not installed (pip install -r requirements-ray.txt)", allow_module_level=True)

from resnet_core.jobs import JobManager  # noqa: E402
from resnet_core.jobs.ray_backend import RayBackend  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]  # Ray on a busy 2-core machine is slow
ROOT = Path(__file__).resolve().parents[1]
NODE = {"num_cpus": 1, "object_store_memory": 100 * 1024**2}
# A removed node is declared dead after 4 missed health checks 0.5 s apart (Ray's default: 5 x 3 s)
FAST_HEALTH = {"health_check_period_ms": 500, "health_check_failure_threshold": 4, "health_check_initial_delay_ms": 0}
LONG = 20_000  # steps: a job that trains until it is stopped


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, shutdown_at_exit=False,
                head_node_args={**NODE, "include_dashboard": False, "_system_config": FAST_HEALTH})
    try:
        c.add_node(**NODE)
        c.wait_for_nodes()
        assert c.address.startswith("127.0.0.1:"), f"the test cluster is not on loopback: {c.address}"
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def manager(cluster, tmp_path_factory):
    m = JobManager(root=tmp_path_factory.mktemp("runs"), limits=from_env({}), max_running=3,
                   backend=RayBackend(cluster.address, warm=2))
    yield m
    m.shutdown(timeout=20)
    assert not [j for j in m.jobs() if j.thread is not None and j.thread.is_alive()], "a relay outlived shutdown"


def node_ids(cluster) -> set[str]:
    return {n.node_id for n in [cluster.head_node, *cluster.worker_nodes]}


def config(job) -> dict:
    return json.loads((Path(job.run_dir) / "config.json").read_text())


def test_the_cli_trains_its_one_job_on_the_cluster(cluster, tmp_path):
    """First: the module's job manager, once made, keeps warm actors that hold both nodes' CPUs."""
    env = {k: v for k, v in os.environ.items() if k != "RESNET_RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "resnet_core", "train", "--ray", cluster.address, "--preset", "resnet20",
         "--blocks", "1,1,1", "--widths", "4,8,8", "--steps", "12", "--batch-size", "8", "--log-every", "1",
         "--device", "cpu", "--out", str(tmp_path), "--label", "on-ray", "--quiet", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "finished" and out["steps"] == 12 and out["final_train_loss"] > 0
    rec = load_run(out["run_dir"])
    assert rec.meta["where"]["backend"] == "ray" and rec.meta["where"]["node"] in node_ids(cluster)
    train = rec.metrics[rec.metrics["split"] == "train"]
    assert rec.meta["label"] == "on-ray" and list(train["step"]) == list(range(1, 13))


def test_jobs_land_on_both_nodes_twins_share_one_actor_and_records_say_where(cluster, manager):
    train = tiny_train(steps=LONG, batch_size=8)
    residual, plain = (manager.get(i) for i in manager.submit_twins(mnist_tiny(), train))
    single = manager.get(manager.submit(mnist_tiny(), train))
    jobs = [residual, plain, single]
    wait(lambda: all(j.step >= 3 for j in jobs), timeout=600, every=0.2)  # training at the same time
    for job in (residual, single):
        job.stop("the test is done")
    wait(lambda: all(j.done for j in jobs), timeout=120, every=0.2)
    assert [j.state for j in jobs] == ["stopped"] * 3, [j.message for j in jobs]
    where = [config(j)["where"] for j in jobs]
    for w in where:
        assert w["backend"] == "ray" and w["device"] == "cpu" and w["ip"] and isinstance(w["pid"], int)
        assert w["node"] in node_ids(cluster)
    assert where[0] == where[1], "twins train in lockstep on one actor"
    assert {where[0]["node"], where[2]["node"]} == node_ids(cluster), "each node has one CPU: one job on each"
    for job in jobs:  # the record holds every row the actor streamed
        rec = load_run(job.run_dir)
        metrics, grads, _ = job.since()
        train_steps = list(rec.metrics["step"][rec.metrics["split"] == "train"])
        assert rec.meta["status"] == "stopped" and train_steps == list(range(1, job.step + 1))
        assert len(rec.metrics) == len(metrics) and rec.grads["step"].nunique() == grads["step"].nunique() == job.step
    assert config(residual)["twin"] == Path(plain.run_dir).name


def test_pause_resume_and_stop_reach_the_actor(manager):
    job = manager.get(manager.submit(mnist_tiny(), tiny_train(steps=LONG, batch_size=8)))
    try:
        wait(lambda: job.step >= 3, timeout=300, every=0.1)
        job.pause()
        time.sleep(1.0)  # the relay passes it on within 0.1 s; the steps already made still arrive
        held = job.step
        time.sleep(2.0)
        assert job.step == held and job.snapshot()["state"] == "paused"
        job.resume()
        wait(lambda: job.step > held + 3, timeout=120, every=0.1)
    finally:
        job.stop("the test is done")
    wait(lambda: job.done, timeout=60, every=0.1)
    assert job.state == "stopped" and "the test is done" in job.message
    assert config(job)["status"] == "stopped"


def test_a_removed_node_fails_its_job_clearly_and_the_server_goes_on(cluster, manager):
    doomed = cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    train = tiny_train(steps=LONG, batch_size=8)
    jobs = [manager.get(manager.submit(mnist_tiny(), train, owner=f"s{i}")) for i in range(3)]
    after = manager.get(manager.submit(mnist_tiny(), tiny_train(steps=20, batch_size=8), owner="s3"))
    assert manager.queue_place(after) == 1
    wait(lambda: all(j.step >= 2 for j in jobs), timeout=600, every=0.2)
    lost = next(j for j in jobs if j.where["node"] == doomed.node_id)  # 3 jobs, 3 nodes of 1 CPU
    others = [j for j in jobs if j is not lost]
    cluster.remove_node(doomed, allow_graceful=False)
    try:
        wait(lambda: lost.done, timeout=120, every=0.2)
    finally:
        # Its actor's process outlives its node's raylet on this machine (Ray ends it a minute or two later):
        # end it now, as the machine's loss would
        pid = lost.where["pid"]
        with contextlib.suppress(OSError):
            if b"JobActor" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
    assert lost.state == "failed"
    assert lost.message.startswith("the Ray node running this job was lost"), lost.message
    assert doomed.node_id[:12] in lost.message
    # the record is complete: every row that reached the server, and how it ended
    rec = load_run(lost.run_dir)
    assert rec.meta["status"] == "failed" and rec.meta["message"] == lost.message
    assert rec.meta["where"]["node"] == doomed.node_id
    metrics, grads, _ = lost.since()
    assert len(rec.metrics) == len(metrics) > 0 and rec.grads["step"].nunique() == grads["step"].nunique()
    # the others train on, and once a slot is free the queued job starts and finishes
    steps = [j.step for j in others]
    wait(lambda: all(j.step > s + 2 for j, s in zip(others, steps, strict=True)), timeout=120, every=0.2)
    assert all(j.state == "running" for j in others)
    for j in others:
        j.stop("the test is done")
    wait(lambda: after.done, timeout=600, every=0.2)
    assert after.state == "finished", after.message
    assert [j.state for j in others] == ["stopped", "stopped"]


def test_cuda_is_the_clusters_to_offer_not_the_servers(cluster, manager):
    """A server without a GPU sends cuda jobs to a cluster whose nodes have GPUs; on a cluster without,
    a cuda job is refused at submit, saying where. (Last in this file: it adds a node that declares a
    GPU, which would make the other tests' "auto" jobs ask for one.)"""
    with pytest.raises(ValueError, match=r"device='cuda' is not available on the Ray cluster: available are cpu"):
        manager.submit(mnist_tiny(), tiny_train(steps=2, device="cuda"))
    assert manager.backend.devices() == ["cpu"]
    gpu_node = cluster.add_node(num_cpus=0, num_gpus=1, object_store_memory=100 * 1024**2)  # a GPU declared
    try:
        cluster.wait_for_nodes()
        wait(lambda: ray.cluster_resources().get("GPU", 0) >= 1, timeout=60, every=0.2)
        assert manager.backend.devices() == ["cuda", "cpu"]
        manager.check_device("cuda")  # accepted: Ray would place it on the GPU node
        manager.check_device("cpu")
    finally:
        cluster.remove_node(gpu_node)
    wait(lambda: ray.cluster_resources().get("GPU", 0) == 0, timeout=60, every=0.2)
