"""Remake the shipped recordings (recordings/<name>/): real runs, trained and recorded by the app itself.

    python bench/make_recordings.py                       # every recording, at the demos' full settings
    python bench/make_recordings.py twin56 --steps 60     # a shorter twin-56 recording
    python bench/make_recordings.py degradation --steps 40 --depths 8,56

Each run goes through the app's own path: a JobManager (the one the Train and Degradation pages
use, with its worker processes and RunWriter), the same configs the pages build, the same record
files. The records are then copied into recordings/<name>/ without their weights (the player
needs none, and they would make the repository heavy), beside a recording.json that says what
it is: the machine (CPU, cores, PyTorch threads), the date, the settings, the command and the
load average while it was made. The player (resnet_core/playback.py) reads it; the pages show it.

PyTorch threads: cores - 1, as the app's server gives its jobs (RESNET_TORCH_THREADS overrides).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resnet_core import experiments, playback, runs  # noqa: E402
from resnet_core.config import make_train_config, net_label, preset  # noqa: E402
from resnet_core.jobs import JobManager  # noqa: E402
from resnet_core.train import model_for_dataset  # noqa: E402

TWIN_DEFAULTS = {"preset": "resnet56", "steps": 200, "batch": 64}  # the "Plain vs residual at 56 layers" demo
DEGRADATION_DEFAULTS = {"steps": experiments.Degradation.steps, "batch": experiments.Degradation.batch_size,
                        "depths": experiments.DEFAULT_DEPTHS}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def page_train_config(steps: int, batch: int, seed: int = 0):
    """As pages/train.py builds it from the demo's settings."""
    import math

    return make_train_config(dataset="mnist-5k", steps=steps, batch_size=batch, lr=0.1, schedule="onecycle",
                             optimizer="sgd", seed=seed, device="cpu",
                             log_every=max(1, math.ceil(steps / 2000)), eval_every=max(10, steps // 10))


def wait(manager: JobManager, ids: list[str], what: str) -> None:
    jobs = [manager.get(i) for i in ids]
    last = 0.0
    while not all(j.done for j in jobs):
        for j in jobs:
            j.snapshot()  # being looked at: the idle rule leaves them alone
        if time.monotonic() - last > 30:
            now = next((j for j in jobs if not j.done), jobs[-1])
            print(f"  {what}: {now.label}: {now.state}, step {now.step}/{now.train_cfg.steps}, "
                  f"{now.samples_per_s:.1f} samples/s, load {load()}", flush=True)
            last = time.monotonic()
        time.sleep(1.0)
    for j in jobs:
        if j.state != "finished":
            raise SystemExit(f"{j.label} ended {j.state}: {j.message}")


def store(name: str, run_dirs: list[str], out: Path, info: dict) -> Path:
    """Copy the records (without weights) into out/name and write recording.json."""
    dest = out / name
    tmp = out / f".{name}.new"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for d in run_dirs:
        shutil.copytree(d, tmp / Path(d).name, ignore=shutil.ignore_patterns("*.safetensors"))
    (tmp / playback.INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    rec = playback.load_recording(dest)
    if rec.damaged:
        raise SystemExit(f"the recording {dest} does not load: {rec.damaged}")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"wrote {dest} ({size / 1e6:.2f} MB, {len(rec.runs)} records, {rec.duration_s:.0f} s recorded)",
          flush=True)
    return dest


def twin56(manager: JobManager, args: argparse.Namespace) -> tuple[list[str], dict]:
    steps, batch = args.steps or TWIN_DEFAULTS["steps"], args.batch or TWIN_DEFAULTS["batch"]
    cfg = model_for_dataset(preset(TWIN_DEFAULTS["preset"]), "mnist-5k")
    tcfg = page_train_config(steps, batch)
    label = f"{net_label(cfg)} · {tcfg.dataset} · {tcfg.steps} steps · seed {tcfg.seed}"
    ids = list(manager.submit_twins(cfg, tcfg, labels=(f"{label} · twin", f"{net_label(cfg.plain_twin())} · "
                                                       f"{tcfg.dataset} · {tcfg.steps} steps · seed 0 · twin")))
    wait(manager, ids, "twin56")
    settings = {"preset": TWIN_DEFAULTS["preset"], "twin": True, "dataset": tcfg.dataset, "steps": steps,
                "batch_size": batch, "optimizer": "sgd", "lr": 0.1, "schedule": "onecycle", "seed": 0}
    return [manager.get(i).run_dir for i in ids], settings


def degradation(manager: JobManager, args: argparse.Namespace) -> tuple[list[str], dict]:
    depths = tuple(int(d) for d in args.depths.split(",")) if args.depths else DEGRADATION_DEFAULTS["depths"]
    exp = experiments.Degradation(depths=depths, steps=args.steps or DEGRADATION_DEFAULTS["steps"],
                                  batch_size=args.batch or DEGRADATION_DEFAULTS["batch"], device="cpu")
    ids = experiments.submit(manager, exp)
    wait(manager, ids, "degradation")
    settings = {"depths": list(exp.depths), "families": list(exp.families), "dataset": exp.dataset,
                "steps": exp.steps, "batch_size": exp.batch_size, "lr": exp.lr, "seed": exp.seed}
    return [manager.get(i).run_dir for i in ids], settings


MAKERS = {"twin56": twin56, "degradation": degradation}
TITLES = {"twin56": "Plain vs residual at 56 layers", "degradation": "Degradation: plain and residual nets by depth"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", default=[], metavar="NAME",
                   help=f"which recordings ({', '.join(MAKERS)}; default all)")
    p.add_argument("--steps", type=int, help="steps per net (default: the demo's own)")
    p.add_argument("--batch", type=int, help="batch size (default: the demo's own)")
    p.add_argument("--depths", help="degradation depths, e.g. 8,20,32,56 (default: the page's)")
    p.add_argument("--out", type=Path, default=ROOT / "recordings")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in MAKERS]
    if unknown:
        p.error(f"unknown recording {unknown[0]!r}: allowed {', '.join(MAKERS)}")
    import torch

    threads = int(os.environ.get("RESNET_TORCH_THREADS") or max(1, (os.cpu_count() or 2) - 1))
    torch.set_num_threads(threads)  # the job manager hands its workers this process's thread count
    for name in args.names or list(MAKERS):
        with tempfile.TemporaryDirectory() as tmp:
            manager = JobManager(root=tmp, idle_s=1e6, max_running=1)
            started, load_before = time.time(), load()
            print(f"{name}: training, load {load_before}", flush=True)
            try:
                run_dirs, settings = MAKERS[name](manager, args)
            finally:
                manager.shutdown()
            info = {"name": name, "title": TITLES[name], "made_at": runs.now_iso(),
                    "machine": playback.machine(), "threads": threads, "settings": settings,
                    "wall_s": round(time.time() - started, 1), "load_before": load_before, "load_after": load(),
                    "command": " ".join(["python3 bench/make_recordings.py",
                                         *(argv if argv is not None else sys.argv[1:])]),
                    "runs": sorted(Path(d).name for d in run_dirs)}
            store(name, run_dirs, args.out, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
