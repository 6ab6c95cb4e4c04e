"""Path lengths (Veit, Wilber, Belongie 2016, section 5 and Fig. 6).

A residual net of n blocks unrolls into 2^n paths from its input to its loss: at each block a
path takes either the shortcut or the branch, and a path through k branches has length k; there
are C(n, k) of them. Veit et al. measured how much gradient a path of length k carries: one
forward pass, then backward passes that go through the branch of k randomly chosen blocks and
only through the shortcut of the others, and the norm of the gradient that arrives at the input.

`Tape` keeps each block's tensors from one forward pass, and its backward goes block by block
through the branch or the shortcut alone, so every path shares that forward pass (the Jacobians
of every layer stay those of that forward point) and the gradient at the last block's output is
computed once. Backpropagation at a fixed forward point is linear in the gradient it carries, so
the gradient vectors of all 2^n paths add up exactly to the full gradient; their norms do not.
"Total gradient by length" is, as in the paper, count × mean norm of one path's gradient.
The gradient is read at the input of the first block, where every path through the blocks ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..hooks import Hooks

BRANCH, SHORTCUT = "branch", "shortcut"


@dataclass
class _Taped:
    x: torch.Tensor | None = None  # the block's input
    f: torch.Tensor | None = None  # the branch's output F(x)
    s: torch.Tensor | None = None  # the shortcut module's output; None for an identity shortcut
    z: torch.Tensor | None = None  # the sum x + F(x)
    out: torch.Tensor | None = None  # the block's output: act(z) after a post-activation block, else z


def _keep_input(t: _Taped, name: str, module: nn.Module, args: tuple) -> None:
    setattr(t, name, args[0])


def _keep_output(t: _Taped, name: str, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
    setattr(t, name, out)


def _branch_end(block: nn.Module) -> nn.Module:
    """The last module of the branch: its output is F(x)."""
    if getattr(block, "pre", False):
        return block.conv3 if hasattr(block, "conv3") else block.conv2
    return block.bn3 if hasattr(block, "bn3") else block.bn2


class Tape(Hooks):
    """Keeps, from one forward pass, each block's input, branch output, shortcut output and sum, so
    that a backward pass can be run block by block along any path (a context manager: hooks removed)."""

    def __init__(self, blocks: Sequence[nn.Module]):
        super().__init__()
        self.blocks = list(blocks)
        self.taped = [_Taped() for _ in self.blocks]

    def attach(self) -> None:
        for block, t in zip(self.blocks, self.taped, strict=True):
            if not getattr(block, "skip", True):
                raise ValueError("path lengths need a residual net: a plain net has a single path")
            pre = bool(getattr(block, "pre", False))
            hooks = [(block, "pre", "x"), (_branch_end(block), "fwd", "f"), (block, "fwd", "out")]
            if block.downsample is not None:
                hooks.append((block.downsample, "fwd", "s"))
            if pre:  # nothing follows the addition: the output is the sum
                hooks.append((block, "fwd", "z"))
            else:
                hooks.append((block.act3 if hasattr(block, "act3") else block.act2, "pre", "z"))
            for module, kind, name in hooks:
                if kind == "pre":
                    self.keep(module.register_forward_pre_hook(partial(_keep_input, t, name)))
                else:
                    self.keep(module.register_forward_hook(partial(_keep_output, t, name)))

    def backward(self, grad_out: torch.Tensor, modes: Sequence[str]) -> torch.Tensor:
        """dL/d(first block's input) along the paths `modes` pick (each block: "branch" or "shortcut"),
        given dL/d(last block's output). Only the chosen road's vector-Jacobian product is computed."""
        g = grad_out
        for t, mode in zip(reversed(self.taped), reversed(list(modes)), strict=True):
            if t.z is not t.out:  # post-activation: back through the activation after the sum first
                (g,) = torch.autograd.grad(t.out, t.z, g, retain_graph=True)
            if mode == BRANCH:
                (g,) = torch.autograd.grad(t.f, t.x, g, retain_graph=True)
            elif t.s is not None:
                (g,) = torch.autograd.grad(t.s, t.x, g, retain_graph=True)
            # an identity shortcut passes g on unchanged
        return g


@dataclass(frozen=True)
class PathLengths:
    config: ModelConfig
    lengths: tuple[int, ...]  # 0 … n
    count: tuple[int, ...]  # C(n, k) paths of length k
    gradient: tuple[float, ...]  # mean norm of one length-k path's gradient at the first block's input
    samples: int  # random paths measured per length (one where there is only one path)
    batch_size: int
    seed: int
    source: str  # "initialisation" or the run record it was measured on

    @property
    def total(self) -> tuple[float, ...]:
        """count × gradient: the gradient carried by all paths of each length (Veit et al.'s Fig. 6c)."""
        return tuple(c * g for c, g in zip(self.count, self.gradient, strict=True))

    def share_up_to(self, k: int) -> float:
        t = np.array(self.total)
        return float(t[: k + 1].sum() / t.sum()) if t.sum() > 0 else math.nan

    def central(self, mass: float = 0.9) -> tuple[int, int]:
        """The shortest range of lengths holding `mass` of the total gradient (Veit et al.: 10-34 of 54 for 0.9)."""
        t = np.array(self.total)
        if t.sum() <= 0:
            return 0, 0
        best = (0, len(t) - 1)
        for a in range(len(t)):
            run = np.cumsum(t[a:]) / t.sum()
            hit = np.flatnonzero(run >= mass - 1e-12)
            if len(hit) and hit[0] < best[1] - best[0]:
                best = (a, a + int(hit[0]))
        return best

    def to_dict(self) -> dict[str, Any]:
        return {"lengths": list(self.lengths), "count": list(self.count), "gradient": list(self.gradient),
                "total": list(self.total), "blocks": len(self.lengths) - 1, "samples": self.samples,
                "batch_size": self.batch_size, "seed": self.seed, "source": self.source,
                "config": self.config.to_dict()}


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: int = 2, seed: int = 0,
            progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Mean norm of one length-k path's gradient, k = 0 … n (n blocks): one forward pass, many backward."""
    blocks = [b for _, b in model.blocks()]
    n = len(blocks)
    rng = np.random.default_rng(seed)
    out = np.zeros(n + 1)
    with torch.enable_grad(), Tape(blocks) as tape:
        loss = F.cross_entropy(model(x), y)
        (g_last,) = torch.autograd.grad(loss, tape.taped[-1].out, retain_graph=True)  # shared by every path
        for k in range(n + 1):
            norms = []
            for _ in range(1 if k in (0, n) else samples):  # one path of length 0 and one of length n
                chosen = set(rng.choice(n, size=k, replace=False).tolist())
                g = tape.backward(g_last, [BRANCH if i in chosen else SHORTCUT for i in range(n)])
                norms.append(float(torch.linalg.vector_norm(g.detach().double())))
            out[k] = float(np.mean(norms))
            if progress is not None:
                progress((k + 1) / (n + 1))
    return out


def path_lengths(model: nn.Module, cfg: ModelConfig, x: torch.Tensor, y: torch.Tensor, samples: int = 2,
                 seed: int = 0, source: str = "initialisation",
                 progress: Callable[[float], None] | None = None) -> PathLengths:
    """Veit et al.'s measurement on `model` (kept in train mode: BatchNorm uses the batch's statistics)."""
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples={samples!r} is not allowed: a whole number >= 1")
    model.train()
    grads = measure(model, x, y, samples=samples, seed=seed, progress=progress)
    n = len(grads) - 1
    return PathLengths(config=cfg, lengths=tuple(range(n + 1)), count=tuple(math.comb(n, k) for k in range(n + 1)),
                       gradient=tuple(float(v) for v in grads), samples=samples, batch_size=int(x.shape[0]),
                       seed=seed, source=source)


def at_init(cfg: ModelConfig, seed: int = 0, batch_size: int = 16, samples: int = 2,
            progress: Callable[[float], None] | None = None) -> PathLengths:
    """Path lengths of a freshly initialised `cfg` net on a random batch, as gradflow() draws it."""
    from ..model import build_model
    from ..probe import _SEED_LOCK

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen)
    y = torch.randint(0, cfg.num_classes, (batch_size,), generator=gen)
    with _SEED_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg)
    return path_lengths(model, cfg, x, y, samples=samples, seed=seed, progress=progress)


def paths_run(run_dir: Any, batch_size: int = 16, samples: int = 1, seed: int = 0, data_root: str | None = None,
              progress: Callable[[float], None] | None = None) -> PathLengths:
    """Path lengths of a record's trained net on `batch_size` of its training images (drawn with `seed`)."""
    from .common import record_data, record_net

    model, rec = record_net(run_dir)
    x, y = record_data(rec, "train", limit=batch_size, seed=seed, data_root=data_root)
    return path_lengths(model, rec.model, x, y, samples=samples, seed=seed,
                        source="the trained weights of the run", progress=progress)
