"""Time estimates against measured time (issue 13, "Honest time"). Prints figures; run from the repo root.

    python bench/bench_estimates.py [--twin-steps 40] [--degradation-steps 150] [--skip-default]
    python bench/bench_estimates.py twin-factor [--steps 20]

For each of the default run (ResNet-20, mnist-5k, 300 steps, batch 128, as the Train page starts
it), a twin-56 run (the "Plain vs residual at 56 layers" demo with --twin-steps steps; 200 in the
demo) and the default degradation experiment (8 nets, 150 steps each), it prints
  - the estimate from a fresh calibration (what a new server shows before any run),
  - the estimate from the record-based speed of the runs already done in this bench (what the
    server shows once earlier runs exist: the default run's own speed for the later two),
  - the measured wall time of the project's own train() / train_twins() called as a job calls it
    (dataset already loaded, as the app keeps it), with PyTorch threads = cores - 1 as in the app.
twin-factor: wall time per step of a twin-20 run over a single ResNet-20 run, interleaved.
Every figure is printed with the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from resnet_core import data, experiments, speed  # noqa: E402
from resnet_core.config import cifar_config, make_train_config  # noqa: E402
from resnet_core.train import model_for_dataset, train  # noqa: E402
from resnet_core.twins import train_twins  # noqa: E402


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def page_train_config(steps: int, batch: int, lr: float = 0.1):
    """As pages/train.py builds it."""
    import math

    return make_train_config(dataset="mnist-5k", steps=steps, batch_size=batch, lr=lr, device="cpu",
                             log_every=max(1, math.ceil(steps / 2000)), eval_every=max(10, steps // 10))


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def row(name: str, est_cal: float, est_rec: float | None, actual: float) -> None:
    rec = f"{est_rec:7.1f} s ({(est_rec / actual - 1) * 100:+5.0f}%)" if est_rec else "      –        "
    print(f"{name:34s} calibration {est_cal:7.1f} s ({(est_cal / actual - 1) * 100:+5.0f}%)   records {rec}   "
          f"actual {actual:7.1f} s   {load()}", flush=True)


def estimates(args) -> None:
    ds = data.load("mnist-5k", torch.device("cpu"))
    cal = speed.Speed(speed.calibrate(), "calibration")
    print(f"calibration: {1 / cal.seconds_per_flop / 1e9:.1f} GFLOP/s training, threads {torch.get_num_threads()}, "
          f"{load()}", flush=True)
    recorded: speed.Speed | None = None

    if not args.skip_default:
        model = model_for_dataset(cifar_config(20), "mnist-5k")
        tc = page_train_config(300, 128)
        est = speed.estimate_seconds(model, tc, cal)
        t = timed(lambda: train(model, tc, dataset=ds))
        row("default run (ResNet-20, 300 x 128)", est, None, t)
        recorded = speed.Speed(t / speed.run_flops(model, tc), "this bench's default run")

    model = model_for_dataset(cifar_config(56), "mnist-5k")
    tc = page_train_config(args.twin_steps, 64)
    est = speed.estimate_seconds(model, tc, cal, nets=2)
    est_rec = speed.estimate_seconds(model, tc, recorded, nets=2) if recorded else None
    t = timed(lambda: train_twins(model, tc, dataset=ds))
    row(f"twin-56 ({args.twin_steps} x 64)", est, est_rec, t)

    exp = experiments.Degradation(device="cpu", steps=args.degradation_steps)
    est = experiments.estimate_seconds(exp, cal)
    est_rec = experiments.estimate_seconds(exp, recorded) if recorded else None
    t = timed(lambda: [train(p.model, p.train, dataset=ds) for p in experiments.plan(exp)])
    row(f"degradation (8 nets x {exp.steps} x {exp.batch_size})", est, est_rec, t)


def twin_factor(args) -> None:
    ds = data.load("mnist-5k", torch.device("cpu"))
    model = model_for_dataset(cifar_config(20), "mnist-5k")
    tc = make_train_config(dataset="mnist-5k", steps=args.steps, batch_size=128, device="cpu", eval_every=0)
    single, twin = [], []
    for _ in range(args.rounds):
        single.append(train(model, tc, dataset=ds).seconds)
        twin.append(train_twins(model, tc, dataset=ds)[0].seconds)
    print(f"twin-20 / ResNet-20 training seconds, {args.steps} steps x 128, {args.rounds} rounds interleaved: "
          f"single {sum(single):.1f} s, twin {sum(twin):.1f} s, factor {sum(twin) / sum(single):.2f}   {load()}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", nargs="?", default="estimates", choices=("estimates", "twin-factor"))
    p.add_argument("--twin-steps", type=int, default=40)
    p.add_argument("--degradation-steps", type=int, default=150)
    p.add_argument("--skip-default", action="store_true")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))  # as ui/live.py sets it for the app's jobs
    print(f"bench_estimates {args.what}: {os.cpu_count()} cores, torch {torch.__version__}, {load()}", flush=True)
    (estimates if args.what == "estimates" else twin_factor)(args)


if __name__ == "__main__":
    main()
