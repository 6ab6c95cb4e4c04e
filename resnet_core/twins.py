"""Twin runs: a residual net and its plain twin trained in lockstep, so that the skips are the only difference.

Lockstep means:
- the same initial weights wherever the two nets have the same layers: the residual net is built
  from the seed, and its state dict is loaded into the plain net (strict=False, because projection
  shortcuts, options B and C, have no plain counterpart; with option A the nets are identical);
- the same batches in the same order: one batch iterator, one batch handed to both nets each step;
- the same clock: one Clock, so both report the same training time and their rates add up.
Each net keeps its own optimizer, probe and callbacks (so its own job and its own record).

A net that diverges ends alone ("diverged at step N") and its twin trains on: that the plain net
blows up where the residual one does not is worth seeing. A stop or a pause asked by either side's
callbacks halts both, because the loop asks every live net's callbacks before each step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import torch

from .batches import Batches
from .config import ModelConfig, TrainConfig, check_model_limits, check_train_limits
from .limits import LIMITS, LimitError
from .loop import Clock, Diverged, Loop, Stopped, TrainResult, seeded_model
from .probe import TrainingProbe
from .size import estimate
from .train import load_for


def twin_configs(cfg: ModelConfig) -> tuple[ModelConfig, ModelConfig]:
    """(residual, plain): `cfg` with the skips on, and off."""
    return cfg.residual_twin(), cfg.plain_twin()


def check_twin_limits(cfg: ModelConfig, train_cfg: TrainConfig, limits: Any = LIMITS) -> None:
    """As train.check_limits, with the memory of both nets counted: they train side by side."""
    for c in twin_configs(cfg):
        check_model_limits(c, limits)
    check_train_limits(train_cfg, limits)
    mb = sum(estimate(c).train_memory_bytes(train_cfg.batch_size) for c in twin_configs(cfg)) / 2**20
    if mb > limits.max_train_memory_mb:
        raise LimitError("max_train_memory_mb", f"~{mb:,.0f}", f"{limits.max_train_memory_mb:,}",
                         " MiB (both twins together)")


def twin_models(cfg: ModelConfig, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(residual, plain) nets that start from the same weights wherever they share a layer."""
    residual_cfg, plain_cfg = twin_configs(cfg)
    residual = seeded_model(residual_cfg, seed)
    plain = seeded_model(plain_cfg, seed)  # its own draw is overwritten below wherever a layer is shared
    missing, _ = plain.load_state_dict(residual.state_dict(), strict=False)
    if missing:  # the plain net is the residual one minus shortcuts: it never has a layer of its own
        raise RuntimeError(f"the plain twin has layers the residual net lacks: {', '.join(missing[:5])}")
    return residual, plain


def link_records(residual_writer: Any, plain_writer: Any) -> None:
    """Each record's config.json names the other's folder under "twin" (RunWriters, before on_start)."""
    residual_writer.meta["twin"] = plain_writer.run_dir.name
    plain_writer.meta["twin"] = residual_writer.run_dir.name


def train_twins(model_cfg: ModelConfig, train_cfg: TrainConfig, residual_callbacks: Sequence[Any] = (),
                plain_callbacks: Sequence[Any] = (), *, dataset: Any = None, device: str | torch.device | None = None,
                limits: Any = LIMITS, data_root: str | None = None, download: bool = False,
                progress: Any = None) -> tuple[TrainResult, TrainResult]:
    """Train `model_cfg`'s residual and plain versions in lockstep; (residual result, plain result).

    Arguments and errors as train.train(); each side's callbacks see only its own net.
    """
    check_twin_limits(model_cfg, train_cfg, limits)
    residual_cfg, plain_cfg = twin_configs(model_cfg)
    dataset, dev = load_for(residual_cfg, train_cfg, dataset=dataset, device=device, data_root=data_root,
                            download=download, progress=progress, max_download_mb=limits.max_download_mb)
    clock = Clock()
    lanes = [Loop(residual_cfg, train_cfg, residual_callbacks, dataset, dev, clock),
             Loop(plain_cfg, train_cfg, plain_callbacks, dataset, dev, clock)]
    return _Lockstep(lanes, clock).run()


class _Lockstep:
    def __init__(self, lanes: list[Loop], clock: Clock):
        self.lanes, self.clock = lanes, clock
        self.live = list(lanes)  # lanes still training; a diverged one leaves

    def run(self) -> tuple[TrainResult, TrainResult]:
        try:
            self._train()
        except BaseException as e:
            # a stop, an out-of-memory error or a crash ends every lane still training, the same way
            propagate = [not lane.settle(e) for lane in self.live]
            for lane in self.live:
                lane.finish()
            if any(propagate):
                raise
            return self.results()
        for lane in self.live:
            lane.finish()
        return self.results()

    def results(self) -> tuple[TrainResult, TrainResult]:
        return self.lanes[0].result, self.lanes[1].result

    def _train(self) -> None:
        residual_lane = self.lanes[0]
        cfg = residual_lane.cfg
        for lane, model in zip(self.lanes, twin_models(residual_lane.model_cfg, cfg.seed), strict=True):
            lane.setup(model)
        batches = iter(Batches(residual_lane.ds, cfg.batch_size, cfg.seed, residual_lane.dev))
        with contextlib.ExitStack() as probes:
            for lane in self.lanes:
                lane.begin(probes.enter_context(TrainingProbe(lane.model)))
            self.clock.reset()
            for step in range(1, cfg.steps + 1):
                if self._should_stop():
                    raise Stopped
                batch = next(batches)  # (x, y): the one batch both nets train on this step
                for lane in list(self.live):
                    try:
                        lane.step(step, batch)
                    except Diverged:
                        self.live.remove(lane)
                        lane.finish()
                if not self.live:
                    return

    def _should_stop(self) -> bool:
        # one clock for both: the time either side spends paused is taken out of both
        t = time.perf_counter()
        stop = any(lane.asks_stop() for lane in self.live)
        self.clock.paused_s += time.perf_counter() - t
        return stop
