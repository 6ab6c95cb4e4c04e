"""What TrainingProbe costs a training step: ResNet-20, batch 128, 3x32x32 random data, SGD.

Steps with the probe fully on (block hooks recording, after_backward, before_step,
after_step and read() every step) are interleaved with steps it does not log
(record=False, none of its methods called: what an unlogged step of the train
loop costs), in alternating order so that drift in a shared machine's speed
falls on both alike. Prints the median step time of each and their ratio (target: <= 1.05).

    python bench/bench_probe.py [--pairs 8] [--device cpu] [--no-channels-last]
"""

from __future__ import annotations

import argparse
import statistics
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=8, help="timed (on, off) step pairs after 2 warm-up pairs")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                    help="keep NCHW (channels_last is ~1.3x faster on CPUs, as the train loop uses)")
    args = ap.parse_args()
    device = torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format

    torch.manual_seed(0)
    model = build_model(preset("resnet20")).to(device=device, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, generator=gen).to(device=device, memory_format=fmt)
    y = torch.randint(0, 10, (args.batch_size,), generator=gen).to(device)

    def step(probe: TrainingProbe | None) -> float:
        sync(device)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        if probe is not None:
            probe.after_backward()
            probe.before_step()
        opt.step()
        if probe is not None:
            probe.after_step()
            probe.read()  # the host transfer is part of the cost (on CUDA it is the one sync)
        sync(device)
        return time.perf_counter() - t

    times: dict[str, list[float]] = {"on": [], "off": []}
    with TrainingProbe(model) as probe:
        for i in range(args.pairs + 2):
            order = ("on", "off") if i % 2 == 0 else ("off", "on")
            for arm in order:
                probe.record = arm == "on"
                dt = step(probe if arm == "on" else None)
                if i >= 2:
                    times[arm].append(dt)
        # The probe's own calls timed alone: less exposed to a shared machine's noise than the
        # difference of two whole-step timings (block-hook norms are not included here).
        calls = []
        for _ in range(20):
            sync(device)
            t = time.perf_counter()
            probe.after_backward()
            probe.before_step()
            probe.after_step()
            probe.read()
            calls.append(time.perf_counter() - t)
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch_size} "
          f"channels_last={args.channels_last} pairs={args.pairs}")
    print(f"step, probe off:   median {off * 1e3:.1f} ms (min {min(times['off']) * 1e3:.1f})")
    print(f"step, probe on:    median {on * 1e3:.1f} ms (min {min(times['on']) * 1e3:.1f})")
    print(f"ratio on/off: {on / off:.3f} (median), {min(times['on']) / min(times['off']):.3f} (min)")
    call = statistics.median(calls)
    print(f"after_backward + before_step + after_step + read alone: {call * 1e3:.2f} ms "
          f"({call / off:.1%} of a step without the probe)")


if __name__ == "__main__":
    main()
