"""Training throughput on CIFAR-shaped data: ResNet-20 and ResNet-56, bf16 autocast, channels-last.

Meant for a CUDA GPU (bench/gpu.sh); `--device cpu --steps 3` smoke-tests it anywhere.
Prints images/s for each net, through the same TrainingProbe the app uses, probe on and off.

    python bench/bench_gpu.py [--device cuda] [--batch-size 512] [--steps 50]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_core.config import preset  # noqa: E402
from resnet_core.model import build_model  # noqa: E402
from resnet_core.probe import TrainingProbe  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(name: str, device: torch.device, batch: int, steps: int, probe_on: bool) -> float:
    torch.manual_seed(0)
    model = build_model(preset(name)).to(device=device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    amp = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda"
           else contextlib.nullcontext())
    with TrainingProbe(model) as probe:
        probe.record = probe_on

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with amp:
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            if probe_on:
                probe.after_backward()
                probe.before_step()
            opt.step()
            if probe_on:
                probe.after_step()

        for _ in range(5):  # warm-up: cuDNN autotuning, allocator
            step()
        sync(device)
        t = time.perf_counter()
        for i in range(steps):
            step()
            if probe_on and i % 2 == 0:
                probe.read()  # the app reads once per UI refresh; every 2nd step is harsher
        sync(device)
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    else:
        print(f"device: cpu ({torch.get_num_threads()} threads), torch {torch.__version__}")
    for name in ("resnet20", "resnet56"):
        off = images_per_s(name, device, args.batch_size, args.steps, probe_on=False)
        on = images_per_s(name, device, args.batch_size, args.steps, probe_on=True)
        print(f"{name}: {off:,.0f} images/s probe off, {on:,.0f} probe on; "
              f"step time on/off = {off / on:.3f} (batch {args.batch_size})")


if __name__ == "__main__":
    main()
