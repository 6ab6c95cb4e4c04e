"""What the oneDNN route (resnet_core/layout.py) costs: training-step time with the route over without it.

For each preset, the training loop's own setup (loop.Loop.setup, which asks layout.channels_last_ok) is
timed against the same setup with the check taken out, interleaved in rounds in one process, on batches of
the preset's dataset shape. No preset has a risky convolution, so both sides run channels_last and the
ratio should be 1 within noise; `--narrow` adds the net the route exists for (widths 4,8,16, shortcut B),
whose contiguous steps are compared with channels_last ones under ONEDNN_MAX_CPU_ISA=AVX, where the
channels_last kernel is correct (run it with that variable set; on the AVX2 kernels it would crash).

    python bench/bench_layout.py [--rounds 5] [--steps 20] [--narrow]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from resnet_core import layout  # noqa: E402
from resnet_core.config import ModelConfig, TrainConfig, preset  # noqa: E402
from resnet_core.loop import Loop, seeded_model  # noqa: E402
from resnet_core.train import model_for_dataset  # noqa: E402


def step_time(model_cfg: ModelConfig, batch: int, steps: int, route: bool) -> float:
    """Median seconds of one forward+backward+step after the loop's own setup, route on or off."""
    saved = layout.channels_last_ok
    if not route:
        layout.channels_last_ok = lambda model, device: True
    try:
        cfg = TrainConfig(dataset="mnist-5k", steps=steps, batch_size=batch)
        loop = Loop(model_cfg, cfg, [], None, torch.device("cpu"))
        loop.setup(seeded_model(model_cfg, 0))
    finally:
        layout.channels_last_ok = saved
    fmt = torch.channels_last if loop.cl else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, model_cfg.in_channels, model_cfg.image_size, model_cfg.image_size, generator=gen)
    x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, model_cfg.num_classes, (batch,), generator=gen)
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        loss = F.cross_entropy(loop.model(x), y)
        loop.opt.zero_grad(set_to_none=True)
        loss.backward()
        loop.opt.step()
        if i >= 2:  # the first steps pay oneDNN's kernel set-up
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--narrow", action="store_true", help="also the narrow shortcut-B net (set ONEDNN_MAX_CPU_ISA=AVX)")
    a = ap.parse_args()
    nets = {"resnet20 (mnist)": model_for_dataset(preset("resnet20"), "mnist-5k"),
            "plain20 (mnist)": model_for_dataset(preset("plain20"), "mnist-5k"),
            "resnet56 (cifar)": model_for_dataset(preset("resnet56"), "cifar10"),
            "resnet18 small stem (cifar)": model_for_dataset(
                ModelConfig(layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), stem="small"), "cifar10")}
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads,"
          f" ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(default)')}, load {os.getloadavg()}")
    for name, cfg in nets.items():
        batch = 32 if "resnet18" in name else a.batch
        on, off = [], []
        for _ in range(a.rounds):  # interleaved: both sides see the same machine
            on.append(step_time(cfg, batch, a.steps, route=True))
            off.append(step_time(cfg, batch, a.steps, route=False))
        ratios = [b / c for b, c in zip(on, off, strict=True)]
        print(f"{name:28s} batch {batch:3d}: route {statistics.median(on) * 1e3:7.1f} ms/step, "
              f"without {statistics.median(off) * 1e3:7.1f} ms/step, ratio {statistics.median(ratios):.3f} "
              f"(rounds {min(ratios):.3f}-{max(ratios):.3f})", flush=True)
    if a.narrow:
        cfg = model_for_dataset(ModelConfig(layers=(3, 3, 3), widths=(4, 8, 16), shortcut="B"), "mnist-5k")
        on = [step_time(cfg, a.batch, a.steps, route=True) for _ in range(a.rounds)]
        off = [step_time(cfg, a.batch, a.steps, route=False) for _ in range(a.rounds)]
        print(f"narrow 4,8,16 shortcut B: contiguous {statistics.median(on) * 1e3:.1f} ms/step, channels_last "
              f"{statistics.median(off) * 1e3:.1f} ms/step, ratio {statistics.median(on) / statistics.median(off):.3f}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
