"""Gradient magnitudes per block and per layer: at initialisation and during training.

`gradflow(cfg)` builds a fresh net, runs one forward and backward pass on one
batch and returns the norm of dL/dh at every block's output and of dL/dW for
every weighted layer: the numbers behind the Gradient flow page and
`python -m resnet_core gradflow`.

`TrainingProbe` reads the same kinds of numbers inside a training loop. It is a
context manager that always removes its hooks (fastai's Hook/Hooks pattern); the
loop calls it at fixed points (minGPT-style callbacks, no edits to the loop):

    with TrainingProbe(model) as probe:
        for step in ...:
            probe.record = logged            # block-output hooks only fire on logged steps
            loss = loss_fn(model(x), y)
            loss.backward()
            if logged: probe.after_backward(); probe.before_step()
            opt.step()
            if logged: probe.after_step(); figures = probe.read()   # the one host transfer

Everything stays on the device until `read()`, so on CUDA nothing syncs before it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import layout
from .config import ModelConfig
from .hooks import Hooks
from .model import build_model, weighted_layers
from .why.split import SplitGrads, share

# ---------------------------------------------------------------- block-output hooks


class _OutputGrads(Hooks):
    """Keeps norm(dL/dh) for the output h of each module in `modules`, as a device tensor.

    A forward hook registers a tensor hook on the output, so the norm is taken of
    the gradient summed over all of h's consumers (the next block's branch and its
    shortcut). Nothing is modified in place, unlike full backward hooks, which
    refuse in-place ops. While `record` is False the forward hook returns at once.
    """

    def __init__(self, modules: Sequence[nn.Module], norm: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.modules = list(modules)
        self.norm = norm
        self.record = True
        self.values: list[torch.Tensor | None] = [None] * len(self.modules)

    def attach(self) -> None:
        for i, m in enumerate(self.modules):
            self.keep(m.register_forward_hook(partial(self._on_forward, i)))

    def _on_forward(self, i: int, module: nn.Module, args: Any, out: Any) -> None:
        # eval passes under no_grad produce outputs without a graph: nothing to hook
        if self.record and self.attached and isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(partial(self._on_grad, i))

    def _on_grad(self, i: int, grad: torch.Tensor) -> None:
        self.values[i] = self.norm(grad.detach())  # 0-d, on grad's device; returning None keeps grad


def _fast_norm(t: torch.Tensor) -> torch.Tensor:
    # fp32 on the device: a few microseconds. Gradients below ~1e-19 per element square to
    # zero in fp32, so such layers read 0; gradflow() uses _exact_norm where that matters.
    return torch.linalg.vector_norm(t, dtype=torch.float32)


def _exact_norm(t: torch.Tensor) -> torch.Tensor:
    # in float64 on the CPU: a plain-56 net's early gradients are ~1e-25 per element, which
    # fp32 holds but whose squares underflow, so an fp32 norm would say 0 where the value is not
    return torch.linalg.vector_norm(t.detach().to("cpu", torch.float64))


# ---------------------------------------------------------------- at initialisation

# torch.manual_seed sets process-wide state; the lock keeps two sessions' gradflow calls
# from interleaving their seeding and their initialisation.
_SEED_LOCK = threading.Lock()


@dataclass(frozen=True)
class GradFlow:
    config: ModelConfig
    seed: int
    batch_size: int
    loss: float  # cross-entropy of the batch at initialisation (ln 10 ~ 2.30 for 10 random classes)
    blocks: tuple[tuple[str, float], ...]  # (block name, |dL/dh| at its output), network order
    layers: tuple[tuple[str, float], ...]  # (layer name, |dL/dW|), every conv, BN and fc, network order
    layer_kinds: tuple[str, ...]  # "conv", "bn" or "fc" for each entry of `layers`
    # (|shortcut's part|, |branch's part|) of the gradient at each block's fork (why/split.py); None unless asked
    split: tuple[tuple[float, float], ...] | None = None

    @property
    def shares(self) -> tuple[float, ...]:
        """The shortcut's share |g_s| / (|g_s| + |g_b|) at each block (NaN where both are 0)."""
        return tuple(s / (s + b) if s + b > 0 else math.nan for s, b in self.split or ())

    @property
    def ratio(self) -> float:
        """|dL/dh| at the first block's output over that at the last block's output."""
        return _ratio(self.blocks[0][1], self.blocks[-1][1]) if self.blocks else math.nan

    @property
    def weight_ratio(self) -> float:
        """|dL/dW| of the first conv (the stem) over that of the last conv before the classifier."""
        convs = [n for (_, n), k in zip(self.layers, self.layer_kinds, strict=True) if k == "conv"]
        return _ratio(convs[0], convs[-1]) if convs else math.nan

    def to_dict(self) -> dict[str, Any]:
        blocks = [{"name": n, "norm": v} for n, v in self.blocks]
        for entry, (short, branch) in zip(blocks, self.split or (), strict=False):
            entry.update(shortcut=short, branch=branch)
        return {
            "blocks": blocks,
            "layers": [{"name": n, "norm": v, "kind": k}
                       for (n, v), k in zip(self.layers, self.layer_kinds, strict=True)],
            "ratio": self.ratio,
            "weight_ratio": self.weight_ratio,
            "loss": self.loss,
            "config": self.config.to_dict(),
            "seed": self.seed,
            "batch_size": self.batch_size,
        }


def _ratio(first: float, last: float) -> float:
    if last == 0:
        return math.nan if first == 0 else math.inf
    return first / last


def _kind(module: nn.Module) -> str:
    return "conv" if isinstance(module, nn.Conv2d) else "bn" if isinstance(module, nn.BatchNorm2d) else "fc"


def gradflow(cfg: ModelConfig, seed: int = 0, batch_size: int = 32,
             x: torch.Tensor | None = None, y: torch.Tensor | None = None, split: bool = False) -> GradFlow:
    """Gradient norms of a freshly initialised `cfg` net after one forward and backward pass.

    The net is built under `torch.manual_seed(seed)` (the same weights a training run with
    that seed starts from) and kept in train mode, so BatchNorm uses the batch's statistics.
    Without `x, y` the batch is standard-normal images and uniform labels drawn from a
    generator seeded with `seed`; with them, it is that (real) batch, on its device.
    With `split`, also the norms of the shortcut's and the branch's parts of the gradient at
    each block's fork (see why/split.py).
    """
    if (x is None) != (y is None):
        raise ValueError("give both x and y (a real batch) or neither (a random batch)")
    if x is None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not allowed: a whole number >= 1")
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(batch_size, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen)
        y = torch.randint(0, cfg.num_classes, (batch_size,), generator=gen)
    elif x.dim() != 4 or x.shape[1] != cfg.in_channels:
        raise ValueError(f"x has shape {tuple(x.shape)}; expected (N, {cfg.in_channels}, H, W)")
    with _SEED_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg)
    # channels_last: ~1.5x faster convolutions on the CPU, same numbers up to rounding, where safe (layout.py)
    fmt = layout.memory_format(model, x.device)
    model = model.to(device=x.device, memory_format=fmt).train()
    x = x.contiguous(memory_format=fmt)
    layers = weighted_layers(model)
    blocks = [b for _, b in model.blocks()]
    with torch.enable_grad(), _OutputGrads(blocks, _exact_norm) as outs, SplitGrads(blocks if split else [],
                                                                                   _exact_norm) as parts:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    nan, zero = torch.tensor(math.nan, dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    split_norms = tuple((float(a), float(b)) for a, b in zip(*parts.values(nan, zero), strict=True)) if split else None
    block_norms = [float(v) if v is not None else math.nan for v in outs.values]
    return GradFlow(
        config=cfg,
        seed=seed,
        batch_size=int(x.shape[0]),
        loss=float(loss.detach()),
        blocks=tuple((name, v) for (name, _), v in zip(model.blocks(), block_norms, strict=True)),
        layers=tuple((name, float(_exact_norm(m.weight.grad)) if m.weight.grad is not None else math.nan)
                     for name, m in layers),
        layer_kinds=tuple(_kind(m) for _, m in layers),
        split=split_norms,
    )


# ---------------------------------------------------------------- during training


class TrainingProbe:
    """Per-layer weight-gradient norms, weight norms, update-to-weight ratios, per-block
    activation-gradient norms and the shortcut's share of the gradient at each block's fork
    (why/split.py) for a training loop; see the module docstring for the call order.

    All figures stay on the model's device as 0-d/1-d tensors (fp32 norms via
    `torch._foreach_norm`, no `.item()`) until `read()` copies them to the host at once.
    A figure not yet measured (or a layer without a gradient) reads NaN. A layer whose weights
    were exactly zero before the step (zero_init_residual) has an update ratio of inf, or NaN
    if it did not move.
    """

    def __init__(self, model: nn.Module, activations: bool = True):
        self.model = model
        layers = weighted_layers(model)
        self.layer_names: list[str] = [n for n, _ in layers]
        self._weights: list[torch.Tensor] = [m.weight for _, m in layers]
        blocks = model.blocks() if callable(getattr(model, "blocks", None)) else []
        self.block_names: list[str] = [n for n, _ in blocks] if activations else []
        self._outs = _OutputGrads([b for _, b in blocks] if activations else [], _fast_norm)
        self._split = SplitGrads([b for _, b in blocks] if activations else [], _fast_norm)
        self._grad_norm: torch.Tensor | None = None  # (L,)
        self._weight_norm: torch.Tensor | None = None  # (L,)
        self._update_ratio: torch.Tensor | None = None  # (L,)
        self._before: list[torch.Tensor] | None = None  # copy of the weights before the step
        self._before_norm: torch.Tensor | None = None  # (L,)
        self._armed = False  # before_step ran since the last after_step

    # the loop sets this False on steps it will not log, so their forward passes skip the hooks
    @property
    def record(self) -> bool:
        return self._outs.record

    @record.setter
    def record(self, value: bool) -> None:
        self._outs.record = self._split.record = bool(value)

    def __enter__(self) -> TrainingProbe:
        self._outs.__enter__()
        try:
            self._split.__enter__()
        except BaseException:
            self._outs.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._outs.remove()
        self._split.remove()
        self._before = None  # a whole copy of the weights: give the memory back

    def after_backward(self) -> None:
        """Norm of every layer's weight gradient, from the gradients now in `.grad`."""
        grads = [w.grad for w in self._weights]
        with torch.no_grad():
            if all(g is not None for g in grads):
                self._grad_norm = torch.stack(torch._foreach_norm(grads))
            else:  # frozen or unused layers: NaN in their slots, the rest measured
                present = [i for i, g in enumerate(grads) if g is not None]
                norms = dict(zip(present, torch._foreach_norm([grads[i] for i in present]), strict=True))
                nan = self._nan(())
                self._grad_norm = torch.stack([norms.get(i, nan) for i in range(len(grads))])

    def before_step(self) -> None:
        """Copy the weights (into a buffer reused across steps) so after_step can measure the update."""
        with torch.no_grad():
            if self._before is None:
                self._before = [w.detach().clone() for w in self._weights]
            else:
                torch._foreach_copy_(self._before, self._weights)
            self._before_norm = torch.stack(torch._foreach_norm(self._before))
        self._armed = True

    def after_step(self) -> None:
        """||W_new - W_old|| / ||W_old|| for every layer, and ||W_new||."""
        with torch.no_grad():
            self._weight_norm = torch.stack(torch._foreach_norm(self._weights))
            if not self._armed or self._before is None:
                return
            torch._foreach_sub_(self._before, self._weights)  # the buffer now holds W_old - W_new
            self._update_ratio = torch.stack(torch._foreach_norm(self._before)) / self._before_norm
        self._armed = False

    def read(self) -> dict[str, np.ndarray]:
        """The latest figures, copied to the host in one transfer."""
        n_layers, n_blocks = len(self.layer_names), len(self.block_names)
        parts = [t if t is not None else self._nan((n_layers,))
                 for t in (self._grad_norm, self._weight_norm, self._update_ratio)]
        if n_blocks:
            nan = self._nan(())
            parts.append(torch.stack([v if v is not None else nan for v in self._outs.values]))
            short, branch = self._split.values(nan, torch.zeros_like(nan))
            parts.append(share(torch.stack(short), torch.stack(branch)))
        flat = torch.cat([p.to(torch.float32) for p in parts]).cpu().numpy()
        names = ("weight_grad", "weight_norm", "update_ratio")
        out = {name: flat[i * n_layers:(i + 1) * n_layers] for i, name in enumerate(names)}
        at = 3 * n_layers
        out["act_grad"] = flat[at:at + n_blocks] if n_blocks else np.zeros(0, np.float32)
        out["shortcut_share"] = flat[at + n_blocks:at + 2 * n_blocks] if n_blocks else np.zeros(0, np.float32)
        return out

    def _nan(self, shape: tuple[int, ...]) -> torch.Tensor:
        device = self._weights[0].device if self._weights else torch.device("cpu")
        return torch.full(shape, math.nan, device=device)
