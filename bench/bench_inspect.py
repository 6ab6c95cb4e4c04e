"""What the Inspect page costs the server, on a ResNet-20 run of the embedded digits.

1. Opening a run through to its confusion matrix over 1,000 test digits: load and check the weights,
   rebuild the net, evaluate the test split as the loop does, count the confusion matrix, per-class
   figures and the most confident mistakes, and build the confusion-matrix figure (target <= 1.5 s).
   Timed with the dataset already in memory (the page keeps it for every session) and, once, cold.
2. One digit through the net: every block's x, F(x), x + F(x) (one forward pass with hooks), the
   saliency map (one backward pass), and the figures of every block's maps, the norms, the
   probabilities and the saliency (target <= 0.5 s).

Each figure is the median of --repeats runs, as wall time and as this process's CPU time (all its
threads): on a machine shared with other work the wall time stretches, the CPU time much less, and an
idle 2-core machine would take between CPU time / 2 and CPU time. The load average is printed with them.

    python bench/bench_inspect.py [--run RUN_DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_core import data, weights  # noqa: E402
from resnet_core.config import make_train_config, preset  # noqa: E402
from resnet_core.figures import inspect as figs  # noqa: E402
from resnet_core.inspect.evaluate import evaluate  # noqa: E402
from resnet_core.inspect.forward import trace  # noqa: E402
from resnet_core.inspect.saliency import saliency  # noqa: E402
from resnet_core.recorder import RunWriter  # noqa: E402
from resnet_core.train import model_for_dataset, train  # noqa: E402


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_run(root: Path) -> Path:
    """A ResNet-20 record with weights: 2 steps are enough, the bench times reading, not learning."""
    cfg = model_for_dataset(preset("resnet20"), "mnist-5k")
    train_cfg = make_train_config(steps=2, batch_size=32, device="cpu", eval_every=0)
    w = RunWriter(cfg, train_cfg, root=root, label="bench-inspect")
    train(cfg, train_cfg, [w])
    return w.run_dir


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(t: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - t[0], time.process_time() - t[1]


def open_run(run_dir: Path) -> tuple[float, float]:
    t = clocks()
    model, rec = weights.load_model(run_dir)
    ds = data.load(rec.train.dataset, "cpu")
    ev = evaluate(model, ds, rec.train, limit=1000)
    figs.confusion_figure(ev.confusion, ds.classes)
    return since(t)


def one_digit(model, ds, index: int, every_block_figure: bool = False) -> tuple[float, float]:
    """What the page does for one digit and one net: all blocks' maps and norms, the saliency, and the
    figures it draws (the chosen block's maps; with `every_block_figure`, all of them)."""
    t = clocks()
    image = ds.x_test[index]
    tr = trace(model, image)
    sal = saliency(model, image)
    for bt in tr.blocks if every_block_figure else tr.blocks[:1]:
        figs.block_figure(bt)
    figs.norms_figure(tr.blocks)
    figs.probabilities_figure(tr.probabilities, ds.classes)
    figs.saliency_figure(image, sal.map, "saliency")
    return since(t)


def summary(runs: list[tuple[float, float]]) -> str:
    wall, cpu = [w for w, _ in runs], [c for _, c in runs]
    return (f"median wall {statistics.median(wall):.3f} s (min {min(wall):.3f}), "
            f"median CPU {statistics.median(cpu):.3f} s (min {min(cpu):.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a ResNet-20 run record (default: one made here, 2 steps)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="PyTorch intra-op threads (default: its own choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or make_run(Path(tmp))
        print(f"run {run_dir.name}; torch {torch.__version__}, {torch.get_num_threads()} threads; load {load()}")
        data.clear_cache()
        cold = open_run(run_dir)
        warm = [open_run(run_dir) for _ in range(args.repeats)]
        print(f"open -> confusion matrix, 1,000 digits: cold (dataset read from disk) wall {cold[0]:.2f} s, "
              f"CPU {cold[1]:.2f} s; warm: {summary(warm)}; target <= 1.5 s; load {load()}")
        model, rec = weights.load_model(run_dir)
        ds = data.load(rec.train.dataset, "cpu")
        one_digit(model, ds, 0)  # first call: hooks and autograd set-up
        times = [one_digit(model, ds, i) for i in range(1, args.repeats + 1)]
        print(f"one digit, {len(model.blocks())} blocks' maps and norms + saliency + the page's figures (one block's "
              f"maps): {summary(times)}; target <= 0.5 s; load {load()}")
        times = [one_digit(model, ds, i, True) for i in range(1, args.repeats + 1)]
        print(f"the same with a maps figure for every block: {summary(times)}; load {load()}")


if __name__ == "__main__":
    main()
