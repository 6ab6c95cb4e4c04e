"""What one redraw of the Train page's live view costs the server, piece by piece.

    python bench/bench_redraw.py [--run RUN_DIR] [--repeats 20]

Without --run it first trains the record to draw (the CLI: ResNet-20 on mnist-5k, 2,000 steps of
batch 8, about a minute), so the history is as long as a class's run is after a few minutes. Then,
from that record, it times what a fragment rerun of the live view does on the server for one net
(ui/train_view.py): the curves, the heatmap of weight gradients with its cursor, and the
architecture diagram coloured by the latest step on the run's whole colour range, each built and
then made into what st.plotly_chart sends (Streamlit validates the figure again and writes its
JSON); and the bytes of each. Prints the median milliseconds of each part and in all, and the
machine. Compare trees by running it from each (`git worktree add`), interleaved.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train_record(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "resnet_core", "train", "--preset", "resnet20", "--dataset", "mnist-5k",
                    "--steps", "2000", "--batch-size", "8", "--out", str(out), "--quiet"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    (run,) = [p for p in out.iterdir() if (p / "config.json").exists()]
    return run


def sent(fig) -> bytes:
    """What st.plotly_chart does with a figure before it goes out: validate it, then its JSON."""
    import plotly.io as pio
    import plotly.tools

    return pio.to_json(plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True),
                       validate=False).encode()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a run record to draw (default: train one first)")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()

    from resnet_core import compare, runs
    from resnet_core.anatomy import describe
    from resnet_core.figures.diagram import architecture_figure
    from resnet_core.figures.training import curves_figure, heatmap_figure
    from ui.live import block_values

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or train_record(Path(tmp))
        rec = runs.load_run(run)
    metrics, grads, cfg = rec.metrics, rec.grads, rec.model
    blocks = list(rec.meta["blocks"])
    layers = [n for n in rec.meta["layers"] if ".bn" not in n and n != "bn1" and "downsample.1" not in n]
    anat = describe(cfg)
    last = int(grads["step"].max())
    zrange = compare.value_range([compare.block_series(grads, "weight_grad", blocks)])

    def diagram():
        at = compare.step_at(grads, "weight_grad", last)
        fig = architecture_figure(cfg, anat, block_values=block_values(grads, "weight_grad", blocks, step=at),
                                  title=f"step {at:,}", value_label="‖∂L/∂W‖ per block")
        return compare.share_diagram_scale(fig, zrange)

    parts = {"curves": lambda: curves_figure(metrics),
             "heatmap": lambda: heatmap_figure(grads, "weight_grad", layers, cursor_step=last),
             "diagram": diagram}
    times: dict[str, list[float]] = {k: [] for k in parts}
    sizes: dict[str, int] = {}
    for _ in range(args.repeats):  # the parts take turns, so a drift in the machine's speed moves each alike
        for name, build in parts.items():
            t0 = time.process_time()
            data = sent(build())
            times[name].append(time.process_time() - t0)
            sizes[name] = len(data)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"one live redraw's figures, {len(grads):,} gradient rows at {last:,} logged steps, "
          f"{len(metrics):,} metric rows (CPU ms, median of {args.repeats}):")
    for name in parts:
        print(f"  {name:8s} {med[name]:6.1f} ms   {sizes[name] / 1024:6.1f} KiB sent")
    print(f"  in all   {sum(med.values()):6.1f} ms   {sum(sizes.values()) / 1024:6.1f} KiB")
    import plotly
    import streamlit

    print(f"{cpu_model()}, {os.cpu_count()} cores; plotly {plotly.__version__}, streamlit {streamlit.__version__}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
