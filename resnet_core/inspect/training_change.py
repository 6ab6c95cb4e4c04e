"""What training changed, block by block: on the same images, how large each block's branch output
F(x) is next to what the skip path carries (x), in the net as initialised and as trained.

The initial net is run with BatchNorm normalising by the images' own statistics, as it did on the
first training step: its running statistics are still the untouched mean 0 / variance 1, which in
eval mode would make BatchNorm do nothing at all. The trained net runs in eval mode, as it is used.
A copy of the initial net is switched to train mode, so a shared (cached) model is never changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .forward import HOOK_LOCK, block_hooks


@dataclass(frozen=True)
class BlockNorms:
    name: str
    x: float  # mean over the images of ||x|| (the skip path's tensor; a plain block's input)
    fx: float  # mean over the images of ||F(x)||

    @property
    def ratio(self) -> float:
        return self.fx / self.x if self.x else float("inf")


def block_norms(model: nn.Module, images: torch.Tensor, batch_statistics: bool = False) -> list[BlockNorms]:
    """Per-block mean per-image norms of x and F(x) for `images` (N, C, H, W)."""
    if batch_statistics:
        with HOOK_LOCK:  # never copy another session's hooks along with the net
            model = copy.deepcopy(model).train()
    sums: dict[tuple[str, str], torch.Tensor] = {}

    def on(name: str, part: str, t: torch.Tensor) -> None:
        sums[(name, part)] = t.detach().float().flatten(1).norm(dim=1).mean().cpu()  # per-image norms, averaged

    dev = next(model.parameters()).device
    with block_hooks(model, on), torch.no_grad():
        model(images.to(dev))
    out = []
    for name, block in model.blocks():
        carried = sums.get((name, "shortcut"), sums[(name, "x")]) if block.skip else sums[(name, "x")]
        out.append(BlockNorms(name, float(carried), float(sums[(name, "fx")])))
    return out


def training_change(trained: nn.Module, images: torch.Tensor,
                    initial: nn.Module | None = None) -> dict[str, list[BlockNorms]]:
    """{"trained": ..., "initial": ... (only when the initial net is given)} on the same `images`."""
    result = {"trained": block_norms(trained, images)}
    if initial is not None:
        result["initial"] = block_norms(initial, images, batch_statistics=True)
    return result
