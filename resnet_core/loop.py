"""The training loop of one net, in steps a driver can interleave (twins.py drives two at once).

A callback is any object with some of these methods (minGPT's trigger_callbacks, duck-typed):

    on_start(info)          layers, blocks, device, params, steps, model (the module, initial weights)
    on_log(row)             {"step", "split": "train", "loss", "accuracy", "lr", "seconds", "samples_per_s"}
    on_grads(step, values)  TrainingProbe.read(): per-layer and per-block norms of that step
    on_eval(row)            the same keys, split "test", every eval_every steps and at the end
    should_stop() -> bool   asked every step; a job blocks in it while paused
    on_weights(which, sd)   which "initial" (in begin, before step 1) or "final" (in finish, before on_end,
                            for every ending); sd: detached contiguous CPU copies of the state dict (read-only)
    on_end(result)          the TrainResult, whatever happened (also before an exception propagates)
    stop_reason             (an attribute) why it asked to stop, added to a stopped run's message

The dataset lives on the device and batches are indexed from it. Per-step loss and accuracy
stay on the device and are copied to the host once per logged step, together with the probe's
figures, so on CUDA nothing syncs in between. Loss is averaged over the steps since the last
log; a NaN/inf anywhere in them ends the run as "diverged at step N", N being the first bad step.

The "final" weights are the net's weights when it ended, or, when they are not finite or the run
diverged, the last finite copy: one is taken at a logged step at most every SNAPSHOT_S seconds
(only while a callback listens to on_weights), so a diverged run keeps weights from at most that
long before its last finite logged step, and the initial weights if it diverged sooner.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from . import layout
from .config import ModelConfig, TrainConfig
from .model import build_model

_SEED_LOCK = threading.Lock()  # torch.manual_seed is process-wide: one job initialises at a time
SNAPSHOT_S = 1.0  # at most one CPU copy of the weights a second: ResNet-18's are 45 MB


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies of `model`'s state dict (copies even when it lives on the CPU)."""
    return {k: t.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
            for k, t in model.state_dict().items()}


def all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


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


def seeded_model(cfg: ModelConfig, seed: int) -> torch.nn.Module:
    """`cfg`'s net with the initial weights `seed` gives, whatever other threads do meanwhile."""
    with _SEED_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(cfg)


class Diverged(Exception):
    pass


class Stopped(Exception):
    pass


class Clock:
    """Training time with pauses and evaluations taken out; twins share one, so both count the same time."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0, self.paused_s = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 - self.paused_s


class Loop:
    """One net's training. run() drives it alone; twins.py drives two through setup/begin/step/settle/finish."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, callbacks: Sequence[Any], ds: Any,
                 dev: torch.device, clock: Clock | None = None):
        self.model_cfg, self.cfg, self.callbacks, self.ds, self.dev = model_cfg, cfg, list(callbacks), ds, dev
        self.result = TrainResult("finished", f"trained {cfg.steps} steps", 0, cfg.steps, str(dev))
        self.clock = clock or Clock()
        self.weights_wanted = any(hasattr(cb, "on_weights") for cb in self.callbacks)
        self.last_finite: dict[str, torch.Tensor] | None = None  # CPU copy of the last finite weights seen
        self.last_finite_step = 0  # the step they are from
        self.t_snapshot = -math.inf

    def emit(self, name: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, name, None)
            if fn is not None:
                fn(*args)

    def asks_stop(self) -> bool:
        """Whether a callback wants the run stopped; a paused job blocks in here."""
        return any(cb.should_stop() for cb in self.callbacks if hasattr(cb, "should_stop"))

    def should_stop(self) -> bool:
        t = time.perf_counter()
        stop = self.asks_stop()
        self.clock.paused_s += time.perf_counter() - t
        return stop

    def elapsed(self) -> float:
        return self.clock.elapsed()

    def run(self) -> TrainResult:
        try:
            self._train()
        except BaseException as e:
            if not self.settle(e):
                self.finish()
                raise
        return self.finish()

    def settle(self, e: BaseException) -> bool:
        """Set the result from the exception that ended training; False if it must propagate."""
        r = self.result
        if isinstance(e, Diverged):
            return True  # _check_finite has written the result
        if isinstance(e, Stopped):  # a callback may say why (a job: who stopped it, or the idle rule)
            why = "; ".join(filter(None, (getattr(cb, "stop_reason", "") for cb in self.callbacks)))
            r.status, r.message = "stopped", f"stopped at step {r.step} of {self.cfg.steps}"
            r.message += f": {why}" if why else ""
            return True
        if isinstance(e, (torch.OutOfMemoryError, RuntimeError)):
            # MPS and the CPU allocator raise plain RuntimeErrors; only their wording tells
            oom = isinstance(e, torch.OutOfMemoryError) or any(
                w in str(e) for w in ("out of memory", "can't allocate memory"))
            r.status = "failed"
            if not oom:
                r.message = f"{type(e).__name__}: {str(e)[:300]}"
                return False
            r.message = (f"out of memory on {self.dev} at step {r.step + 1} with batch {self.cfg.batch_size}: "
                         "try a smaller batch or a smaller model")
            return True
        r.status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        r.message = "interrupted" if r.status == "interrupted" else f"{type(e).__name__}: {str(e)[:300]}"
        return False

    def finish(self) -> TrainResult:
        r = self.result
        if r.status == "failed" and self.dev.type == "cuda":
            torch.cuda.empty_cache()  # the failed job's tensors died with its frames: hand the memory back
        r.seconds = self.elapsed()
        try:
            state = self.final_weights()
            if state is not None:
                self.emit("on_weights", "final", state)
        except Exception as e:  # noqa: BLE001 - a record without weights beats one without its ending
            r.message += f"; the weights were not saved: {type(e).__name__}: {str(e)[:200]}"
        self.emit("on_end", r)
        return r

    def final_weights(self) -> dict[str, torch.Tensor] | None:
        """The weights to keep as the run's outcome (module docstring); None before the net existed."""
        model = getattr(self, "model", None)
        if model is None or not self.weights_wanted:
            return None
        r = self.result
        if r.status != "diverged":
            state = cpu_state(model)
            if all_finite(state):
                return state
        if self.last_finite is not None:
            r.message += (f"; the weights kept are those of step {self.last_finite_step}, the last finite ones seen"
                          if self.last_finite_step else "; the weights kept are the initial ones")
        return self.last_finite

    def _train(self) -> None:
        from .batches import Batches
        from .probe import TrainingProbe

        self.setup(seeded_model(self.model_cfg, self.cfg.seed))
        batches = iter(Batches(self.ds, self.cfg.batch_size, self.cfg.seed, self.dev))
        with TrainingProbe(self.model) as probe:
            self.begin(probe)
            self.clock.reset()
            for step in range(1, self.cfg.steps + 1):
                if self.should_stop():
                    raise Stopped
                self.step(step, next(batches))

    def setup(self, model: torch.nn.Module) -> None:
        """Move `model` to the device, make its optimizer and the per-interval buffers."""
        cfg, dev = self.cfg, self.dev
        # and only where oneDNN computes its weight gradients right (layout.py)
        self.cl = use_channels_last(cfg, dev) and layout.channels_last_ok(model, dev)
        self.model = model.to(dev, memory_format=torch.channels_last if self.cl else torch.contiguous_format)
        self.opt = make_optimizer(self.model, cfg)
        self.amp = autocast_for(cfg, dev)
        width = min(cfg.log_every, cfg.steps) + 1
        self.losses = torch.zeros(width, device=dev)  # per-step figures of this log interval, on the device
        self.correct = torch.zeros(width, device=dev)
        self.k = self.samples = self.total_samples = 0
        self.t_log = 0.0

    def begin(self, probe: Any) -> None:
        """Announce the run (on_start); the model's weights are still the initial ones."""
        self.probe = probe
        model = self.model
        self.emit("on_start", {"layers": probe.layer_names, "blocks": probe.block_names, "device": str(self.dev),
                               "params": sum(p.numel() for p in model.parameters()), "steps": self.cfg.steps,
                               "model": model})
        if self.weights_wanted:
            state = cpu_state(model)
            self.last_finite, self.t_snapshot = state, time.monotonic()
            self.emit("on_weights", "initial", state)

    def step(self, step: int, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """One optimisation step on `batch`; logs, evaluates and raises Diverged as the config says."""
        cfg, r, probe, model, opt = self.cfg, self.result, self.probe, self.model, self.opt
        lr = lr_at(cfg, step - 1)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = self._prepare(batch)
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
        self.losses[self.k], self.correct[self.k] = loss.detach(), (out.argmax(1) == y).sum()
        k, samples = self.k + 1, self.samples + len(y)  # steps and images in this log interval so far
        self.k, self.samples = k, samples
        r.step = step
        if logged:
            host = torch.cat([self.losses[:k], self.correct[:k]]).cpu()  # the one sync of this interval
            self._check_finite(host[:k], step - k + 1)
            now = self.elapsed()
            self.total_samples += samples
            r.train_loss, r.train_accuracy = float(host[:k].mean()), float(host[k:].sum()) / samples
            r.samples_per_s = self.total_samples / max(now, 1e-9)
            self.emit("on_log", {"step": step, "split": "train", "loss": r.train_loss,
                                 "accuracy": r.train_accuracy, "lr": lr, "seconds": now,
                                 "samples_per_s": samples / max(now - self.t_log, 1e-9)})
            self.emit("on_grads", step, probe.read())
            self.k = self.samples = 0
            if self.weights_wanted and time.monotonic() - self.t_snapshot >= SNAPSHOT_S:
                state = cpu_state(model)
                self.t_snapshot = time.monotonic()
                if all_finite(state):
                    self.last_finite, self.last_finite_step = state, step
        if step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0):
            clock = self.clock
            t, paused = time.perf_counter(), clock.paused_s
            self._evaluate(model, probe, lr)
            clock.paused_s = paused + time.perf_counter() - t  # evaluation is not training time
        if logged:
            self.t_log = self.elapsed()
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
            raise Diverged

    def _evaluate(self, model: torch.nn.Module, probe: Any, lr: float) -> None:
        from .batches import eval_batches

        model.eval()
        probe.record = False
        total, right = torch.zeros((), device=self.dev), torch.zeros((), device=self.dev)
        with torch.no_grad(), self.amp:
            for batch in eval_batches(self.ds, 2 * self.cfg.batch_size, self.dev):
                if self.should_stop():  # a big test split on a CPU takes seconds: stay stoppable
                    raise Stopped
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
