"""A Ray-actor job over a worker-process job, on one node (issue 10, part 4: target >= 0.95).

    python bench/bench_ray.py [--rounds 4 --steps 60 --batch-size 32]

Starts a one-node Ray cluster on this machine (ray.cluster_utils.Cluster: 1 CPU, 100 MB object
store, no dashboard) and two job managers in this process: one with the Ray backend (the job in
a warm actor), one with the default process backend (the job in a worker process forked by the
warm forkserver). Both train the same job (ResNet-20 on mnist-5k, CPU, one PyTorch thread each,
gradient norms every step, the run record written by the manager), one after the other, round
by round, so a change in machine load hits both. A job's samples/s is its TrainResult's (the
loop's own timing, warm-up steps included for both). On a shared machine that figure moves
with everyone else's load, so each job's images per CPU second of the process that trains it
(all its threads, read from /proc) are printed too: what the backend's own overhead changes and
the load does not. Prints each round's figures, the medians and their ratios, and the machine's
load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.load_test import cpu_seconds  # noqa: E402
from resnet_core.config import make_train_config, preset  # noqa: E402
from resnet_core.jobs import JobManager  # noqa: E402
from resnet_core.limits import from_env  # noqa: E402


def run_job(manager: JobManager, model_cfg, train_cfg) -> tuple[float, float, float]:
    """(samples/s, seconds from submit to the first step the server received, samples per CPU
    second of the process that trained it, from its 2nd step to the last step seen while it ran:
    what the machine's load does not change)."""
    t = time.monotonic()
    job = manager.get(manager.submit(model_cfg, train_cfg))
    first = float("nan")
    start = last = None  # (step, CPU seconds)
    while not job.done:
        job.touch()
        if first != first and job.step >= 1:
            first = time.monotonic() - t
        pid, step = job.where.get("pid"), job.step
        if pid and step >= 2:
            cpu = cpu_seconds(pid)
            if cpu == cpu:
                start = start or (step, cpu)
                last = (step, cpu)
        time.sleep(0.02)
    if job.state != "finished":
        raise SystemExit(f"a {manager.backend.name} job ended {job.state}: {job.message}")
    per_cpu = float("nan")
    if start and last and last[1] > start[1]:
        per_cpu = (last[0] - start[0]) * train_cfg.batch_size / (last[1] - start[1])
    return job.samples_per_s, first, per_cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every node on 127.0.0.1 (conftest.py)
    import ray
    from ray.cluster_utils import Cluster

    from resnet_core.jobs.ray_backend import RayBackend

    torch.set_num_threads(1)  # the process backend's workers take the server's thread count: 1, as an actor's
    model_cfg = preset("resnet20", in_channels=1, image_size=28, num_classes=10)
    train_cfg = make_train_config(steps=args.steps, batch_size=args.batch_size, device="cpu", eval_every=0)
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    t = time.monotonic()
    cluster = Cluster(initialize_head=True, shutdown_at_exit=False, head_node_args={
        "num_cpus": 1, "object_store_memory": 100 * 1024**2, "include_dashboard": False})
    try:
        on_ray = JobManager(root=root / "ray", limits=from_env({}), max_running=1,
                            backend=RayBackend(cluster.address, warm=1))
        in_process = JobManager(root=root / "process", limits=from_env({}), max_running=1, backend="process")
        print(f"one-node Ray cluster and both managers up in {time.monotonic() - t:.1f} s; "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        _, cold, _ = run_job(on_ray, model_cfg, train_cfg)  # the first job of each pays its start
        _, cold_process, _ = run_job(in_process, model_cfg, train_cfg)
        print(f"submit to first step, the first job, submitted as the managers start: Ray {cold:.1f} s (its actor "
              f"imports torch meanwhile), worker process {cold_process:.2f} s; load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        ray_rates, process_rates, ray_first, process_first, ray_cpu, process_cpu = [], [], [], [], [], []
        for r in range(args.rounds):
            first_ray = r % 2 == 0  # alternate which goes first
            for manager in (on_ray, in_process) if first_ray else (in_process, on_ray):
                rate, first, per_cpu = run_job(manager, model_cfg, train_cfg)
                (ray_rates if manager is on_ray else process_rates).append(rate)
                (ray_first if manager is on_ray else process_first).append(first)
                (ray_cpu if manager is on_ray else process_cpu).append(per_cpu)
            print(f"round {r + 1}: Ray actor {ray_rates[-1]:.1f} img/s, worker process {process_rates[-1]:.1f} "
                  f"img/s, ratio {ray_rates[-1] / process_rates[-1]:.3f}; per CPU second {ray_cpu[-1]:.1f} and "
                  f"{process_cpu[-1]:.1f} img; load average {os.getloadavg()[0]:.2f}",
                  flush=True)
        ratio = statistics.median(ray_rates) / statistics.median(process_rates)
        pairs = [a / b for a, b in zip(ray_rates, process_rates, strict=True)]
        print(f"ResNet-20, mnist-5k, batch {args.batch_size}, {args.steps} steps, {args.rounds} rounds: "
              f"Ray actor median {statistics.median(ray_rates):.1f} img/s, worker process median "
              f"{statistics.median(process_rates):.1f} img/s")
        cpu_ratio = statistics.median(ray_cpu) / statistics.median(process_cpu)
        print(f"images per CPU second of the training process (all its threads): Ray actor median "
              f"{statistics.median(ray_cpu):.1f}, worker process median {statistics.median(process_cpu):.1f}, "
              f"ratio {cpu_ratio:.3f}")
        print(f"submit to first step, warm: Ray actor median {statistics.median(ray_first):.2f} s, worker process "
              f"median {statistics.median(process_first):.2f} s")
        print(f"RATIO Ray actor / worker process: {ratio:.3f} (median of the rounds' ratios "
              f"{statistics.median(pairs):.3f}; target >= 0.95); "
              f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
        on_ray.shutdown()
        in_process.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
