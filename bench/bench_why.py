"""Benchmarks of the "Why it works" analyses (issue 12); prints measured figures and the load average.

    python bench/bench_why.py [--parts lesion,landscape,paths] [--grids 11,21] [--device cpu|cuda]

- lesion: the study (single deletions + k random, 3 draws) of ResNet-20 on the 1,000 mnist-5k test digits,
  and of ResNet-56, beside n + 1 full forward passes measured interleaved in the same process (the ratio
  holds under load). Weights are a fresh initialisation: the cost does not depend on their values.
- landscape: an N x N grid of ResNet-20 on 512 digits, beside N x N bare forward passes of the same images
  by the BatchNorm-folded net the grid evaluates (efficiency = bare / landscape), interleaved with N x N
  passes of the net as it is (folded / unfolded: what the fold saves).
- paths: ResNet-110 at initialisation, batch 16, one path per length.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from resnet_core import data  # noqa: E402
from resnet_core.config import cifar_config  # noqa: E402
from resnet_core.model import build_model  # noqa: E402
from resnet_core.why.fold import folded  # noqa: E402
from resnet_core.why.landscape import landscape, mean_loss  # noqa: E402
from resnet_core.why.lesion import correct_counts, lesion_study  # noqa: E402
from resnet_core.why.paths import at_init  # noqa: E402


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def net(depth: int, dev: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_model(cifar_config(depth, in_channels=1, image_size=28)).eval().to(dev)
    return m.to(memory_format=torch.channels_last) if dev.type == "cpu" else m


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def full_passes(m, x, count: int, batch: int, dev) -> float:
    t = time.perf_counter()
    with torch.inference_mode():
        for _ in range(count):
            for s in range(0, len(x), batch):
                m(x[s:s + batch])
    sync(dev)
    return time.perf_counter() - t


def bench_lesion(ds, dev) -> None:
    x = ds.x_test.to(dev)
    x = x.contiguous(memory_format=torch.channels_last) if dev.type == "cpu" else x
    y = ds.y_test.to(dev)
    for depth in (20, 56):
        m = net(depth, dev)
        n = len(m.blocks())
        lesion_study(m, x[:64], y[:64], draws=1)  # warm-up
        sync(dev)
        t = time.perf_counter()
        r = lesion_study(m, x, y, draws=3)
        sync(dev)
        study = time.perf_counter() - t
        full = full_passes(m, x, n + 1, 500, dev)
        t = time.perf_counter()
        correct_counts(m, x, y, [frozenset()] + [frozenset({i}) for i in range(n)])
        sync(dev)
        single = time.perf_counter() - t
        print(f"lesion ResNet-{depth} ({n} blocks) on {len(y):,} test digits: whole study (singles + k random, "
              f"{sum(len(d) for d in r.random_draws)} random lesions) {study:.2f} s; single deletions + baseline "
              f"{single:.2f} s = {single / full:.2f} of n+1 = {n + 1} full passes ({full:.2f} s); "
              f"whole study = {study / full:.2f} of n+1 passes | {load()}", flush=True)


def bench_landscape(ds, dev, grids) -> None:
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(ds.y_train), generator=g)[:512]
    x, y = ds.x_train[idx].to(dev), ds.y_train[idx].to(dev)
    x = x.contiguous(memory_format=torch.channels_last) if dev.type == "cpu" else x
    m = net(20, dev)
    fast = folded(m, inplace=True)  # what the grid evaluates
    mean_loss(m, x, y)  # warm-up
    mean_loss(fast, x, y)
    for grid in grids:
        t = time.perf_counter()
        steps = []
        landscape(m, x, y, grid=grid, progress=steps.append)
        sync(dev)
        took = time.perf_counter() - t
        n = grid * grid
        bare, plain = 0.0, 0.0
        for _ in range(n):  # bare passes of the folded net and of the net as it is, interleaved
            t = time.perf_counter()
            mean_loss(fast, x, y)
            sync(dev)
            bare += time.perf_counter() - t
            t = time.perf_counter()
            mean_loss(m, x, y)
            sync(dev)
            plain += time.perf_counter() - t
        print(f"landscape ResNet-20, {grid}x{grid} on 512 digits: {took:.1f} s ({len(steps)} progress reports); "
              f"{n} bare passes of the folded net {bare:.1f} s: efficiency {bare / took:.3f}; "
              f"{n} passes of the unfolded net {plain:.1f} s: folded / unfolded {bare / plain:.3f} | {load()}",
              flush=True)


def bench_paths(dev) -> None:
    cfg = cifar_config(110, in_channels=1, image_size=28)
    t = time.perf_counter()
    p = at_init(cfg, batch_size=16, samples=1)
    took = time.perf_counter() - t
    a, b = p.central(0.9)
    print(f"paths ResNet-110 at init (batch 16, 1 path per length, 55 lengths): {took:.1f} s; 90% of the total "
          f"gradient from lengths {a}-{b} | {load()}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="lesion,landscape,paths")
    ap.add_argument("--grids", default="11,21")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {dev} | {load()}", flush=True)
    ds = data.load("mnist-5k")
    parts = args.parts.split(",")
    if "lesion" in parts:
        bench_lesion(ds, dev)
    if "landscape" in parts:
        bench_landscape(ds, dev, [int(g) for g in args.grids.split(",")])
    if "paths" in parts:
        bench_paths(dev)


if __name__ == "__main__":
    main()
