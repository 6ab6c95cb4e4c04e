"""The degradation experiment (He et al. 2016, section 4.2), small enough for a laptop's CPU.

Plain and residual nets of the CIFAR layout (6n+2 layers, 16/32/64 channels, option A) at several
depths, each trained on the same data with the same short budget (steps, batch, learning rate,
seed), then compared by their final training loss and test error. He et al. saw deeper plain nets
do worse even on the training set, where deeper residual nets do better: the gap is what to look at.

The experiment goes through the job queue like any run (`submit`), so it shares the server fairly
and shows up on the Compare page; `results` turns its jobs or their records into one table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .config import ConfigError, ModelConfig, TrainConfig, cifar_config, make_train_config, net_label
from .train import model_for_dataset

FAMILIES = ("plain", "residual")
DEFAULT_DEPTHS = (8, 20, 32, 56)
DEPTH_CHOICES = (8, 14, 20, 26, 32, 44, 56, 110)  # 6n+2; what the page offers
# He et al. 2016, "Deep Residual Learning for Image Recognition", Table 6: CIFAR-10 test error (%) of
# their ResNets (the 110-layer figure is their best of 5 runs). Their plain nets appear only as training
# curves (Fig. 6), so there is no number to quote for them.
PAPER_RESNET_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}
COLUMNS = ("family", "depth", "state", "step", "steps", "train_loss", "test_error", "job", "run_dir")
DONE = ("finished", "stopped", "failed", "diverged", "interrupted")


@dataclass(frozen=True)
class Degradation:
    depths: tuple[int, ...] = DEFAULT_DEPTHS  # CIFAR layout depths, 6n+2
    # The same budget for every net. 150 x 32 took 6 minutes for the eight default nets on a 2-core CPU
    # shared with other work (one training thread) and showed plain nets' training loss rising with
    # depth (0.17, 0.27, 0.51, 2.1) where residual nets' stayed low (0.18, 0.14, 0.24, 0.34).
    steps: int = 150
    batch_size: int = 32
    dataset: str = "mnist-5k"  # embedded: runs with no network
    lr: float = 0.1  # SGD + Nesterov momentum, one-cycle schedule: the app's training defaults
    seed: int = 0  # the same seed for every net, so every net sees the same batches in the same order
    device: str = "auto"
    families: tuple[str, ...] = field(default=FAMILIES)

    def __post_init__(self) -> None:
        if not self.depths or len(set(self.depths)) != len(self.depths):
            raise ConfigError("depths", self.depths, "one or more different depths")
        for d in self.depths:
            if not isinstance(d, int) or d < 8 or (d - 2) % 6:
                raise ConfigError("depths", d, "6n+2 for n >= 1 (8, 14, 20, ... 110, ...)")
        if not self.families or not set(self.families) <= set(FAMILIES):
            raise ConfigError("families", self.families, "plain, residual or both")


@dataclass(frozen=True)
class Planned:
    family: str
    depth: int
    model: ModelConfig
    train: TrainConfig
    label: str


def plan(exp: Degradation) -> list[Planned]:
    """One run per (family, depth), plain first, shallow first: the order they are queued in."""
    train = make_train_config(
        dataset=exp.dataset, steps=exp.steps, batch_size=exp.batch_size, lr=exp.lr, seed=exp.seed,
        device=exp.device,
        log_every=max(1, exp.steps // 200),  # enough points for the curves on the Compare page
        eval_every=0,  # the test split once, at the end: the budget goes to training
    )
    out = []
    for family in exp.families:
        for depth in sorted(exp.depths):
            model = model_for_dataset(cifar_config(depth, skip=family == "residual"), exp.dataset)
            label = f"{net_label(model)} · degradation · {exp.steps} steps"
            out.append(Planned(family, depth, model, train, label))
    return out


def submit(manager: Any, exp: Degradation, owner: str = "local") -> list[str]:
    """Queue every run of `exp` on the JobManager; their job ids, in plan order.

    Submitted as one group: eight jobs from one click are one request, so the per-session queue
    limit (max_queued_per_session, 3 by default) does not refuse the experiment, while each job
    still counts against the server's max_queued_total and trains in its turn like any other.
    Feeding jobs one by one as slots free up would need the page to stay open to feed them.
    """
    return manager.submit_group([(p.model, p.train, p.label) for p in plan(exp)], owner=owner)


def estimate_seconds(exp: Degradation, machine: Any = None) -> float:
    """Wall time of the whole experiment at `machine`'s measured speed (a speed.Speed; the
    reference CPU's if None); 0 where a GPU will train it."""
    from . import speed
    from .device import available

    if exp.device in ("cuda", "mps") or (exp.device == "auto" and available()[0] != "cpu"):
        return 0.0
    machine = machine or speed.REFERENCE
    return sum(speed.estimate_seconds(p.model, p.train, machine) for p in plan(exp))


# ---------------------------------------------------------------- results


def final_figures(metrics: pd.DataFrame, tail: float = 0.1) -> tuple[float, float]:
    """(training loss, test error) at the end of a run; NaN where not yet known.

    The training loss is the mean over the last `tail` of the steps (at least the last logged one):
    one batch's loss is too noisy to rank nets by. The test error is 1 - accuracy of the last evaluation.
    """
    if metrics is None or not len(metrics):
        return math.nan, math.nan
    train = metrics[metrics["split"] == "train"]
    loss = math.nan
    if len(train):
        last = int(train["step"].max())
        recent = train[train["step"] > last * (1 - tail)]["loss"].to_numpy(float)
        recent = recent[np.isfinite(recent)]
        loss = float(recent.mean()) if len(recent) else math.nan
    test = metrics[metrics["split"] == "test"]
    error = 1.0 - float(test.sort_values("step")["accuracy"].iloc[-1]) if len(test) else math.nan
    return loss, error


def result_row(model: ModelConfig, steps: int, state: str, step: int, metrics: pd.DataFrame,
               job: str = "", run_dir: str = "") -> dict[str, Any]:
    """One row of the results table; a run that did not finish has no figures (NaN)."""
    loss, error = final_figures(metrics) if state == "finished" else (math.nan, math.nan)
    return {"family": "residual" if model.skip else "plain", "depth": model.depth, "state": state, "step": step,
            "steps": steps, "train_loss": loss, "test_error": error, "job": job, "run_dir": run_dir}


def job_row(job: Any) -> dict[str, Any]:
    """A row from a live or finished Job (see jobs.py)."""
    metrics = job.since(None)[0] if job.state == "finished" else None  # the rows only matter once done
    return result_row(job.model_cfg, job.train_cfg.steps, job.state, job.step, metrics, job.id, job.run_dir)


def record_row(rec: Any, job: str = "") -> dict[str, Any] | None:
    """A row from a saved RunRecord (runs.load_run); None for a damaged one."""
    if rec.damaged or rec.model is None or rec.train is None:
        return None
    step = int((rec.meta.get("final") or {}).get("step") or 0)
    return result_row(rec.model, rec.train.steps, rec.status, step, rec.metrics, job, str(rec.path))


def results(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The table, sorted by family then depth."""
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    return frame.sort_values(["family", "depth"], kind="stable").reset_index(drop=True)


def progress(table: pd.DataFrame) -> tuple[int, int]:
    """(runs ended, runs in all)."""
    return int(table["state"].isin(DONE).sum()), len(table)
