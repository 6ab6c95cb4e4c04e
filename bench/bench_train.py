"""Training benchmarks (issue 3, "Performance"). Prints figures; run from the repository root.

    python bench/bench_train.py throughput [--steps 30 --rounds 3]   # (a) targets: 0.90 (thread), 0.95 (process)
    python bench/bench_train.py accuracy [--steps 600]               # (b) target >= 97% for resnet20

(a) ResNet-20 on mnist-5k, batch 128, CPU: a job (JobManager -> a worker process, the default
    backend, or a thread of this process -> train() with TrainingProbe every step, its rows
    streamed back and the run record written here) against a minimal hand-written loop of the
    same model, optimizer and batches. The three rotate, round by round, so a change in machine
    load hits all; the first `--warmup` steps of every run are not timed. The hand-written loop
    runs in a worker thread as the job does: on this 2-core server under load, the same loop ran
    4-6x slower in the main thread than in a worker thread with 2 intra-op threads (equal with
    1), which would compare threads, not loops.
(b) ResNet-20 and its plain twin on mnist-5k for 600 steps at batch 128, seeded, with the
    default TrainConfig (SGD, Nesterov, one-cycle to 0.1): test accuracy and wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from resnet_core import data  # noqa: E402
from resnet_core.batches import Batches  # noqa: E402
from resnet_core.config import make_train_config, preset  # noqa: E402
from resnet_core.jobs import JobManager, forkserver  # noqa: E402
from resnet_core.limits import from_env  # noqa: E402
from resnet_core.model import build_model  # noqa: E402
from resnet_core.train import make_optimizer, model_for_dataset, train, use_channels_last  # noqa: E402


def hand_loop(model_cfg, train_cfg, ds, warmup: int) -> float:
    """Images/s of the plainest loop a PyTorch user would write for the same model and batches."""
    torch.manual_seed(train_cfg.seed)
    dev = torch.device("cpu")
    cl = use_channels_last(train_cfg, dev)  # same memory format as the job: compare loops, not layouts
    model = build_model(model_cfg).to(memory_format=torch.channels_last if cl else torch.contiguous_format)
    opt = make_optimizer(model, train_cfg)
    batches = iter(Batches(ds, train_cfg.batch_size, train_cfg.seed, dev))
    for step in range(train_cfg.steps):
        if step == warmup:
            t0 = time.perf_counter()
        x, y = next(batches)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # the one figure such a loop prints
    return (train_cfg.steps - warmup) * train_cfg.batch_size / (time.perf_counter() - t0)


def in_thread(fn, *args):
    out: list[float] = []
    worker = threading.Thread(target=lambda: out.append(fn(*args)), name="bench-hand-loop")
    worker.start()
    worker.join()
    return out[0]


def job_loop(model_cfg, train_cfg, root: str, warmup: int, backend: str = "process") -> float:
    """Images/s of a job: probe every step, record written, timed from its own log rows."""
    manager = JobManager(root=root, limits=from_env({}), max_running=1, backend=backend, idle_s=1e6)
    try:
        job = manager.get(manager.submit(model_cfg, train_cfg, owner="bench", label="bench"))
        job.thread.join()
        metrics, grads, _ = job.since()
    finally:
        manager.shutdown()
    assert job.state == "finished", job.message
    assert len(grads), "the probe recorded nothing"
    train_rows = metrics[metrics.split == "train"].set_index("step")
    seconds = train_rows.loc[train_cfg.steps, "seconds"] - train_rows.loc[warmup, "seconds"]
    return (train_cfg.steps - warmup) * train_cfg.batch_size / seconds


def throughput(args: argparse.Namespace) -> None:
    model_cfg = model_for_dataset(preset("resnet20"), "mnist-5k")
    train_cfg = make_train_config(steps=args.steps + args.warmup, batch_size=128, device="cpu", eval_every=0,
                                  schedule="constant", lr=0.05)
    ds = data.load("mnist-5k", "cpu")
    kinds = ("hand", "process", "thread")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    forkserver.shared().wait_ready()  # the server warms it at start-up
    with tempfile.TemporaryDirectory() as root:
        for r in range(args.rounds):
            for kind in kinds[r % 3:] + kinds[:r % 3]:  # each goes first in turn
                rates[kind].append(in_thread(hand_loop, model_cfg, train_cfg, ds, args.warmup) if kind == "hand"
                                   else job_loop(model_cfg, train_cfg, root, args.warmup, kind))
            h, p, t = (rates[k][-1] for k in kinds)
            print(f"round {r + 1}: hand-written {h:7.1f} img/s   process job {p:7.1f} img/s   thread job {t:7.1f} "
                  f"img/s   ratios {p / h:.3f} {t / h:.3f}   load {os.getloadavg()[0]:.1f}", flush=True)
    for kind, target in (("process", 0.95), ("thread", 0.90)):
        ratios = [j / h for j, h in zip(rates[kind], rates["hand"], strict=True)]
        print(f"{kind} job / hand-written throughput, median of {len(ratios)} rounds: {statistics.median(ratios):.3f} "
              f"(target >= {target}); {args.steps} timed steps a run, ResNet-20, batch 128, CPU")


def accuracy(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as root:
        for name in args.nets.split(","):
            model_cfg = model_for_dataset(preset(name), "mnist-5k")
            train_cfg = make_train_config(steps=args.steps, batch_size=128, device="cpu", seed=0,
                                          eval_every=args.steps)
            from resnet_core.recorder import RunWriter

            t0 = time.perf_counter()
            result = train(model_cfg, train_cfg, [RunWriter(model_cfg, train_cfg, root=root)])
            wall = time.perf_counter() - t0
            print(f"{name:<9} {args.steps} steps, batch 128, seed 0: test accuracy {result.test_accuracy:.2%}  "
                  f"train loss {result.train_loss:.4f}  wall {wall:.0f} s  ({result.samples_per_s:.0f} img/s)"
                  + ("   target >= 97%" if name == "resnet20" else ""), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("throughput", "accuracy", "all"))
    p.add_argument("--steps", type=int, default=None, help="timed steps (a: 30) or training steps (b: 600)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--nets", default="resnet20,plain20", help="(b) presets to train, comma-separated")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}", flush=True)
    steps = args.steps
    if args.what in ("throughput", "all"):
        args.steps = steps or 30
        throughput(args)
    if args.what in ("accuracy", "all"):
        args.steps = steps or 600
        accuracy(args)


if __name__ == "__main__":
    main()
