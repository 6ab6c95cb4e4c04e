"""The training loop: one function; the CLI, the jobs and the tests watch it through callbacks.

A callback is any object with some of these methods (minGPT's trigger_callbacks, duck-typed):

    on_start(info)          layers, blocks, device, params: before the first step
    on_log(row)             {"step", "split": "train", "loss", "accuracy", "lr", "seconds", "samples_per_s"}
    on_grads(step, values)  TrainingProbe.read(): per-layer and per-block norms of that step
    on_eval(row)            the same keys, split "test", every eval_every steps and at the end
    should_stop() -> bool   asked every step; a job blocks in it while paused
    on_end(result)          the TrainResult, whatever happened (also before an exception propagates)

The dataset lives on the device and batches are indexed from it. Per-step loss and accuracy
stay on the device and are copied to the host once per logged step, together with the probe's
figures, so on CUDA nothing syncs in between. Loss is averaged over the steps since the last
log; a NaN/inf anywhere in them ends the run as "diverged at step N", N being the first bad step.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from .config import ConfigError, ModelConfig, TrainConfig, check_train_limits
from .device import resolve
from .limits import LIMITS, LimitError
from .model import build_model
from .size import estimate

# in_channels, image_size, classes of each dataset, known without loading it
DATASET_SHAPES = {"mnist-5k": (1, 28, 10), "mnist": (1, 28, 10), "fashion-mnist": (1, 28, 10),
                  "cifar10": (3, 32, 10)}
_SEED_LOCK = threading.Lock()  # torch.manual_seed is process-wide: one job initialises at a time


@dataclass
class TrainResult:
    status: str  # finished, stopped, diverged, failed, interrupted
    message: str
    step: int  # steps completed
    steps: int
    device: str
    train_loss: float = math.nan  # mean over the last log interval
    train_accuracy: float = math.nan
    test_loss: float = math.nan
    test_accuracy: float = math.nan
    seconds: float = 0.0  # training time, pauses excluded
    samples_per_s: float = math.nan

    def figures(self) -> dict[str, Any]:
        keys = ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds", "samples_per_s")
        return {k: getattr(self, k) for k in keys}


def model_for_dataset(cfg: ModelConfig, dataset: str, keep: Sequence[str] = ()) -> ModelConfig:
    """`cfg` with input channels, image size and classes taken from `dataset`, except those in `keep`."""
    c, s, k = DATASET_SHAPES[dataset]
    fit = {name: v for name, v in (("in_channels", c), ("image_size", s), ("num_classes", k)) if name not in keep}
    return replace(cfg, **fit)


def check_limits(model_cfg: ModelConfig, train_cfg: TrainConfig, limits: Any = LIMITS) -> None:
    """Steps, batch and estimated training memory against the server's limits, before any work."""
    check_train_limits(train_cfg, limits)
    mb = estimate(model_cfg).train_memory_bytes(train_cfg.batch_size) / 2**20
    if mb > limits.max_train_memory_mb:
        raise LimitError("max_train_memory_mb", f"~{mb:,.0f}", f"{limits.max_train_memory_mb:,}", " MiB")


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for 0-based `step`. onecycle: linear from lr/10 up to lr over the first 20%, then to 0."""
    t = step / cfg.steps
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "onecycle":
        return cfg.lr * (0.1 + 0.9 * t / 0.2 if t < 0.2 else (1 - t) / 0.8)
    return cfg.lr


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov and cfg.momentum > 0)


def autocast_for(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    # faster on CUDA and, measured, on x86 CPUs too (DESIGN.md); MPS support is patchy
    return cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type in ("cuda", "cpu"))


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, callbacks: Sequence[Any] = (), *,
          dataset: Any = None, device: str | torch.device | None = None, limits: Any = LIMITS,
          data_root: str | None = None, download: bool = False, progress: Any = None) -> TrainResult:
    """Train `model_cfg` as `train_cfg` says. Limits are checked before anything else.

    `dataset` (a data.TensorDataset, or any object with its attributes) skips loading;
    `device` overrides train_cfg.device (the job manager hands each job its GPU).
    Raises LimitError, ConfigError, data.DatasetUnavailable before training starts; afterwards
    an out-of-memory error becomes a "failed" result and other errors propagate after on_end.
    """
    check_limits(model_cfg, train_cfg, limits)
    dev = torch.device(device) if device is not None else resolve(train_cfg.device)
    if dataset is None:
        from . import data

        dataset = data.load(train_cfg.dataset, dev, root=data_root, download=download, progress=progress)
    if model_cfg.in_channels != dataset.in_channels:
        raise ConfigError("in_channels", model_cfg.in_channels,
                          f"{dataset.in_channels}, the channels of {train_cfg.dataset}'s images")
    if model_cfg.num_classes < dataset.num_classes:
        raise ConfigError("num_classes", model_cfg.num_classes,
                          f"at least {dataset.num_classes} for {train_cfg.dataset}")
    return _Loop(model_cfg, train_cfg, callbacks, dataset, dev).run()


class _Diverged(Exception):
    pass


class _Stopped(Exception):
    pass


class _Loop:
    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, callbacks: Sequence[Any], ds: Any,
                 dev: torch.device):
        self.model_cfg, self.cfg, self.callbacks, self.ds, self.dev = model_cfg, cfg, list(callbacks), ds, dev
        self.result = TrainResult("finished", f"trained {cfg.steps} steps", 0, cfg.steps, str(dev))
        self.paused_s = 0.0  # time spent inside should_stop (paused), kept out of every timing
        self.t0 = time.perf_counter()

    def emit(self, name: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, name, None)
            if fn is not None:
                fn(*args)

    def should_stop(self) -> bool:
        t = time.perf_counter()
        stop = any(cb.should_stop() for cb in self.callbacks if hasattr(cb, "should_stop"))
        self.paused_s += time.perf_counter() - t
        return stop

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 - self.paused_s

    def run(self) -> TrainResult:
        r = self.result
        try:
            self._train()
        except _Diverged:
            pass
        except _Stopped:
            r.status, r.message = "stopped", f"stopped at step {r.step} of {self.cfg.steps}"
        except (torch.OutOfMemoryError, RuntimeError) as e:
            # MPS and the CPU allocator raise plain RuntimeErrors; only their wording tells
            oom = isinstance(e, torch.OutOfMemoryError) or any(
                w in str(e) for w in ("out of memory", "can't allocate memory"))
            if not oom:
                r.status, r.message = "failed", f"{type(e).__name__}: {str(e)[:300]}"
                self.emit("on_end", r)
                raise
            r.status = "failed"
            r.message = (f"out of memory on {self.dev} at step {r.step + 1} with batch {self.cfg.batch_size}: "
                         "try a smaller batch or a smaller model")
        except BaseException as e:
            r.status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            r.message = "interrupted" if r.status == "interrupted" else f"{type(e).__name__}: {str(e)[:300]}"
            self.emit("on_end", r)
            raise
        if r.status == "failed" and self.dev.type == "cuda":
            torch.cuda.empty_cache()  # the failed job's tensors died with its frames: hand the memory back
        r.seconds = self.elapsed()
        self.emit("on_end", r)
        return r

    def _train(self) -> None:
        from .batches import Batches
        from .probe import TrainingProbe

        cfg, dev, r = self.cfg, self.dev, self.result
        with _SEED_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = build_model(self.model_cfg)
        self.cl = use_channels_last(cfg, dev)
        model = model.to(dev, memory_format=torch.channels_last if self.cl else torch.contiguous_format)
        opt = make_optimizer(model, cfg)
        self.amp = autocast_for(cfg, dev)
        batches = iter(Batches(self.ds, cfg.batch_size, cfg.seed, dev))
        width = min(cfg.log_every, cfg.steps) + 1
        losses = torch.zeros(width, device=dev)  # per-step figures of this log interval, on the device
        correct = torch.zeros(width, device=dev)
        k, samples, t_log, total_samples = 0, 0, 0.0, 0
        with TrainingProbe(model) as probe:
            self.emit("on_start", {"layers": probe.layer_names, "blocks": probe.block_names, "device": str(dev),
                                   "params": sum(p.numel() for p in model.parameters()), "steps": cfg.steps})
            self.t0, self.paused_s = time.perf_counter(), 0.0
            for step in range(1, cfg.steps + 1):
                if self.should_stop():
                    raise _Stopped
                lr = lr_at(cfg, step - 1)
                for group in opt.param_groups:
                    group["lr"] = lr
                x, y = self._prepare(next(batches))
                logged = step == 1 or step % cfg.log_every == 0 or step == cfg.steps
                probe.record = logged
                with self.amp:
                    out = model(x)  # (B, classes)
                    loss = F.cross_entropy(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if logged:
                    probe.after_backward()
                    probe.before_step()
                opt.step()
                if logged:
                    probe.after_step()
                losses[k] = loss.detach()
                correct[k] = (out.argmax(1) == y).sum()
                k, samples = k + 1, samples + len(y)
                r.step = step
                if logged:
                    host = torch.cat([losses[:k], correct[:k]]).cpu()  # the one sync of this interval
                    self._check_finite(host[:k], step - k + 1)
                    now = self.elapsed()
                    total_samples += samples
                    r.train_loss, r.train_accuracy = float(host[:k].mean()), float(host[k:].sum()) / samples
                    r.samples_per_s = total_samples / max(now, 1e-9)
                    self.emit("on_log", {"step": step, "split": "train", "loss": r.train_loss,
                                         "accuracy": r.train_accuracy, "lr": lr, "seconds": now,
                                         "samples_per_s": samples / max(now - t_log, 1e-9)})
                    self.emit("on_grads", step, probe.read())
                    k, samples = 0, 0
                if step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0):
                    t, paused = time.perf_counter(), self.paused_s
                    self._evaluate(model, probe, lr)
                    self.paused_s = paused + time.perf_counter() - t  # evaluation is not training time
                if logged:
                    t_log = self.elapsed()

    def _prepare(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch  # (B, C, H, W), (B,)
        size = self.model_cfg.image_size
        if x.shape[-1] != size:  # the model was asked for another size than the data's: resize on the device
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return (x.contiguous(memory_format=torch.channels_last) if self.cl else x), y

    def _check_finite(self, losses: torch.Tensor, first_step: int) -> None:
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            r = self.result
            r.step = first_step + int(bad[0])
            r.status = "diverged"
            r.message = (f"diverged at step {r.step}: the loss became {float(losses[int(bad[0])])} "
                         f"(learning rate {self.cfg.lr:g}); try a smaller learning rate")
            raise _Diverged

    def _evaluate(self, model: torch.nn.Module, probe: Any, lr: float) -> None:
        from .batches import eval_batches

        model.eval()
        probe.record = False
        total, right = torch.zeros((), device=self.dev), torch.zeros((), device=self.dev)
        with torch.no_grad(), self.amp:
            for batch in eval_batches(self.ds, 2 * self.cfg.batch_size, self.dev):
                if self.should_stop():  # a big test split on a CPU takes seconds: stay stoppable
                    raise _Stopped
                x, y = self._prepare(batch)
                out = model(x)
                total += F.cross_entropy(out.float(), y, reduction="sum")
                right += (out.argmax(1) == y).sum()
        model.train()
        host = torch.stack([total, right]).cpu()
        n = len(self.ds.y_test)
        r = self.result
        r.test_loss, r.test_accuracy = float(host[0]) / n, float(host[1]) / n
        self.emit("on_eval", {"step": r.step, "split": "test", "loss": r.test_loss, "accuracy": r.test_accuracy,
                              "lr": lr, "seconds": self.elapsed(), "samples_per_s": math.nan})
