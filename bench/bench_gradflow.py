"""How long one gradflow() takes: a 110-layer CIFAR ResNet on 1x28x28 inputs, batch 32, CPU.

The Gradient flow page runs it for the residual net and its plain twin on every
new setting, so this is the wait a user sees (budget: 1.5 s a net on 2 cores).

    python bench/bench_gradflow.py [--repeats 3] [--depth 110]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_core.config import cifar_config  # noqa: E402
from resnet_core.probe import gradflow  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--depth", type=int, default=110)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    print(f"threads={torch.get_num_threads()} depth={args.depth} batch={args.batch_size} 1x28x28")
    for skip, bn in ((True, True), (False, True), (True, False), (False, False)):
        cfg = cifar_config(args.depth, in_channels=1, image_size=28, skip=skip, batchnorm=bn)
        gradflow(cfg, batch_size=args.batch_size)  # warm-up: first conv calls pick their kernels
        times = []
        for seed in range(args.repeats):
            t = time.perf_counter()
            g = gradflow(cfg, seed=seed, batch_size=args.batch_size)
            times.append(time.perf_counter() - t)
        print(f"{'residual' if skip else 'plain':<8} BN={'on ' if bn else 'off'} "
              f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}); "
              f"first/last {g.ratio:.3g}")


if __name__ == "__main__":
    main()
