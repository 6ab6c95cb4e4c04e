"""One image through a trained net, block by block: what each block receives, what its branch adds,
and the sum, with their norms; and the class probabilities at the end.

One forward pass with hooks on every block (always removed again). Models may be shared between
browser sessions (the page caches them), so the hooks are placed under a lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..model import PadShortcut, ResNet

HOOK_LOCK = threading.RLock()  # re-entrant: training_change copies a model under it


@dataclass(frozen=True)
class BlockTrace:
    """One block on one image; tensors are (C, H, W). A plain net's block has no shortcut and no sum."""

    name: str  # e.g. "layer2.0"
    x: torch.Tensor  # the block's input
    fx: torch.Tensor  # the residual branch's output F(x) (block.branch_last()'s output)
    shortcut: torch.Tensor | None  # what the skip path adds: x, or x reshaped (zero-pad or 1x1 conv)
    total: torch.Tensor | None  # shortcut + F(x), before any activation that follows the addition
    out: torch.Tensor  # the block's output
    shortcut_kind: str  # "identity", "zero-pad", "1x1 conv" or "none" (plain net)

    @property
    def carried(self) -> torch.Tensor:
        """What F(x) is measured against: the skip path's tensor, or a plain block's input."""
        return self.shortcut if self.shortcut is not None else self.x

    @property
    def norms(self) -> dict[str, float]:
        d = {"x": float(self.carried.norm()), "fx": float(self.fx.norm()), "out": float(self.out.norm())}
        if self.total is not None:
            d["total"] = float(self.total.norm())
        return d


@dataclass(frozen=True)
class Trace:
    blocks: list[BlockTrace]
    logits: torch.Tensor  # (K,)

    @property
    def probabilities(self) -> torch.Tensor:  # (K,)
        return torch.softmax(self.logits.float(), 0)

    @property
    def predicted(self) -> int:
        return int(self.logits.argmax())


@contextlib.contextmanager
def block_hooks(model: ResNet, on: Any) -> Iterator[None]:
    """Call on(block name, part, tensor) for part in x, fx, shortcut, out of every block, during forwards."""
    handles = []
    for name, block in model.blocks():
        def keep(part: str, name: str = name):
            def hook(_m: nn.Module, args: Any, out: Any = None) -> None:
                on(name, part, args[0] if out is None else out)
            return hook

        handles += [block.register_forward_pre_hook(keep("x")), block.branch_last().register_forward_hook(keep("fx")),
                    block.register_forward_hook(keep("out"))]
        if block.skip and block.downsample is not None:
            handles.append(block.downsample.register_forward_hook(keep("shortcut")))
    with HOOK_LOCK:
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def shortcut_kind(block: nn.Module) -> str:
    if not block.skip:
        return "none"
    if block.downsample is None:
        return "identity"
    return "zero-pad" if isinstance(block.downsample, PadShortcut) else "1x1 conv"


def trace(model: ResNet, image: torch.Tensor) -> Trace:
    """`image` (C, H, W), already normalised as the dataset's, through `model` (in eval mode)."""
    caught: dict[tuple[str, str], torch.Tensor] = {}

    def on(name: str, part: str, t: torch.Tensor) -> None:
        caught[(name, part)] = t.detach()[0].float().cpu()

    dev = next(model.parameters()).device
    with block_hooks(model, on), torch.no_grad():
        logits = model(image.unsqueeze(0).to(dev))[0].float().cpu()  # (K,)
    blocks = []
    for name, block in model.blocks():
        x, fx = caught[(name, "x")], caught[(name, "fx")]
        shortcut = caught.get((name, "shortcut"), x) if block.skip else None
        blocks.append(BlockTrace(name, x, fx, shortcut, None if shortcut is None else shortcut + fx,
                                 caught[(name, "out")], shortcut_kind(block)))
    return Trace(blocks, logits)


def top_channels(t: torch.Tensor, n: int = 4) -> list[int]:
    """The `n` channels of `t` (C, H, W) with the largest norms, in channel order: the ones worth drawing."""
    norms = t.flatten(1).norm(dim=1)
    return sorted(torch.argsort(norms, descending=True, stable=True)[:n].tolist())
