"""How fast this machine trains, measured here: the basis of every time estimate the pages give.

A run's cost is counted in training FLOPs: 3x the forward FLOPs of an image (forward and backward)
times the images it trains on, times the nets trained in lockstep (a twin run trains two), plus
the forward FLOPs of its evaluations on the test split. This machine's speed is seconds per
training FLOP, measured, in order of preference, from
  1. a run training now on this server (its own samples/s: today's load included);
  2. the records of earlier runs in the runs folder (their wall seconds over their FLOPs);
  3. a short calibration: the project's own train() on ResNet-20 for a few steps, timed as the
     difference of two lengths so start-up costs cancel, cached on disk per machine.
Only where none of these exists yet does an estimate fall back to a reference CPU, and it says so.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from .config import ModelConfig, TrainConfig

# A 2-core x86 server CPU trained ResNet-20 at ~1.45e11 training FLOP/s with nothing else running
# (DESIGN.md); the slowest honest guess is needed only before anything was measured here.
REFERENCE_SECONDS_PER_FLOP = 1 / 1.45e11
TEST_IMAGES = {"mnist-5k": 1_000, "mnist": 10_000, "fashion-mnist": 10_000, "cifar10": 10_000}
CALIBRATION_STEPS = (2, 8)  # the two lengths timed; their difference is 6 steps of ResNet-20
CALIBRATION_BATCH = 64


@dataclass(frozen=True)
class Speed:
    seconds_per_flop: float  # wall seconds per training FLOP, logging, the gradient probe and pauses' absence included
    source: str  # where the figure comes from, in words a page can show

    def seconds(self, flops: float) -> float:
        return flops * self.seconds_per_flop


REFERENCE = Speed(REFERENCE_SECONDS_PER_FLOP, "a reference 2-core CPU (nothing measured on this machine yet)")


@lru_cache(maxsize=256)
def forward_flops(cfg: ModelConfig) -> int:
    """Forward FLOPs of one image (PyTorch's FLOP counter, as the Architecture page shows)."""
    from .anatomy import describe

    return describe(cfg).total_flops


def evaluations(train: TrainConfig) -> int:
    """How many times the run evaluates on the test split: every eval_every steps and at the end."""
    every = train.eval_every
    return (train.steps // every if every else 0) + (0 if every and train.steps % every == 0 else 1)


def run_flops(model: ModelConfig, train: TrainConfig, nets: int = 1, done_steps: int = 0) -> float:
    """Training FLOPs of the run (of what is left of it after `done_steps`)."""
    f = forward_flops(model)
    steps = max(0, train.steps - done_steps)
    evals = evaluations(train) * max(0.0, steps / max(1, train.steps))
    return nets * (3.0 * f * train.batch_size * steps + f * TEST_IMAGES.get(train.dataset, 10_000) * evals)


def estimate_seconds(model: ModelConfig, train: TrainConfig, speed: Speed, nets: int = 1) -> float:
    return speed.seconds(run_flops(model, train, nets))


# ---------------------------------------------------------------- measurements


def from_rate(model: ModelConfig, samples_per_s: float, nets: int = 1) -> float | None:
    """Seconds per training FLOP of a run going at `samples_per_s` (each of its `nets` sees them all)."""
    if not samples_per_s or samples_per_s != samples_per_s or samples_per_s <= 0:
        return None
    return 1.0 / (samples_per_s * 3.0 * forward_flops(model) * nets)


# A run's time also holds what does not grow with its FLOPs (the worker's start, the data, the first
# step's warm-up): over a few steps it dominates, and a 4-step run of a tiny net timed a 30-step
# ResNet-20 twin run at 8 hours. Records of fewer steps are not timed.
MIN_TIMED_STEPS = 20


def from_records(records: Iterable[Any], newest: int = 12) -> Speed | None:
    """The median speed of the newest finished CPU records (runs.RunRecord) worth timing."""
    figures: list[float] = []
    for rec in sorted(records, key=lambda r: str(r.meta.get("started_at", "")), reverse=True):
        if len(figures) >= newest:
            break
        final = rec.meta.get("final") or {}
        seconds, steps = final.get("seconds"), final.get("step")
        device = str(rec.meta.get("device", "cpu"))
        if rec.damaged or rec.model is None or rec.train is None or rec.status != "finished" \
                or not seconds or not steps or int(steps) < MIN_TIMED_STEPS or seconds < 2 \
                or "cuda" in device or "mps" in device:
            continue
        nets = 2 if rec.meta.get("twin") else 1
        # a run stopped early: the steps it did, with the evaluations of the whole run scaled down
        figures.append(seconds / run_flops(rec.model, rec.train, nets) * rec.train.steps / int(steps))
    if not figures:
        return None
    n = len(figures)
    return Speed(statistics.median(figures), f"{n} earlier run{'s' * (n > 1)} on this server")


def from_jobs(jobs: Iterable[Any]) -> Speed | None:
    """The speed of a run training now (jobs as the manager lists them), today's load included."""
    for job in jobs:
        snap = job.snapshot(touch=False)
        if snap["state"] != "running" or snap["step"] < 10:
            continue
        nets = 2 if snap.get("twin") else 1
        s = from_rate(job.model_cfg, snap["samples_per_s"], nets)
        if s is not None:
            return Speed(s, "the run training now on this server")
    return None


# ---------------------------------------------------------------- calibration


def _machine_key() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu} · {os.cpu_count()} cores · {torch.get_num_threads()} threads · torch {torch.__version__}"


def calibrate() -> float:
    """Seconds per training FLOP of ResNet-20 on mnist-5k here, with this process's torch threads."""
    import torch

    from . import data
    from .config import cifar_config, make_train_config
    from .train import model_for_dataset, train

    model = model_for_dataset(cifar_config(20), "mnist-5k")
    full = data.load("mnist-5k", torch.device("cpu"))  # once: its load is no part of a step
    dataset = replace(full, x_test=full.x_test[:32], y_test=full.y_test[:32])  # the end's evaluation: short
    times = []
    for steps in CALIBRATION_STEPS:
        tcfg = make_train_config(dataset="mnist-5k", steps=steps, batch_size=CALIBRATION_BATCH, eval_every=0,
                                 log_every=1, device="cpu")
        times.append(train(model, tcfg, dataset=dataset).seconds)
    a, b = CALIBRATION_STEPS
    flops = 3.0 * forward_flops(model) * CALIBRATION_BATCH * (b - a)
    return max(times[1] - times[0], 1e-3) / flops


_CACHE_LOCK = threading.Lock()
_calibrated: dict[str, float] = {}


def calibration(cache_file: Path | None, run: bool = True) -> Speed | None:
    """The calibration of this machine: from `cache_file` if it was made here, else measured now
    (when `run`) and written there. None when not measured and `run` is False."""
    key = _machine_key()
    with _CACHE_LOCK:
        if key in _calibrated:
            return Speed(_calibrated[key], "a calibration run on this machine")
        cached = _read(cache_file).get(key)
        if isinstance(cached, float) and 0 < cached < 1 and math.isfinite(cached):
            _calibrated[key] = cached
            return Speed(cached, "a calibration run on this machine")
        if not run:
            return None
        value = calibrate()
        _calibrated[key] = value
        if cache_file is not None:
            try:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({**_read(cache_file), key: value}, indent=1))
                tmp.replace(cache_file)
            except OSError:
                pass  # a read-only cache folder: measured again next time
        return Speed(value, "a calibration run on this machine")


def _read(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def best(jobs: Iterable[Any] = (), records: Iterable[Any] = (), cache_file: Path | None = None) -> Speed:
    """This machine's speed from the best source there is, without ever measuring in the caller's time."""
    return from_jobs(jobs) or from_records(records) or calibration(cache_file, run=False) or REFERENCE


def calibrate_in_background(cache_file: Path | None) -> threading.Thread:
    """Measure the calibration once, in a daemon thread (a few seconds of CPU at start-up)."""
    t = threading.Thread(target=lambda: _safe(calibration, cache_file), name="speed-calibration", daemon=True)
    t.start()
    return t


def _safe(fn: Any, *args: Any) -> None:
    with contextlib.suppress(Exception):  # an estimate must never take the server down
        fn(*args)


def fmt_duration(seconds: float) -> str:
    """'40 s', 'about 4 min', 'about 1 h 10 min': as the pages say a duration."""
    if seconds != seconds:
        return "–"
    if seconds < 90:
        return f"{max(1, round(seconds / 5) * 5 if seconds >= 20 else round(seconds)):.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"
