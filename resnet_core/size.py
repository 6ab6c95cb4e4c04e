"""Size estimates without allocating: the net is built and run on PyTorch's meta device."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from torch import nn

from .model import ResNet

if TYPE_CHECKING:  # the type alone: config.py calls this module (lazily, keeping torch out of its import)
    from .config import ModelConfig


@dataclass(frozen=True)
class SizeEstimate:
    params: int  # exact trainable parameter count
    forward_bytes_per_sample: int  # fp32 outputs of every leaf module for one image

    def train_memory_bytes(self, batch_size: int, optimizer_states: int = 2) -> int:
        """Weights, grads, optimizer states and the activations kept for backward."""
        weights = self.params * 4 * (2 + optimizer_states)
        return weights + batch_size * self.forward_bytes_per_sample


@lru_cache(maxsize=256)
def estimate(cfg: ModelConfig) -> SizeEstimate:
    with torch.device("meta"):
        model = ResNet(cfg).eval()  # eval: BN on a 1-image, 1x1 map is fine
        x = torch.empty(1, cfg.in_channels, cfg.image_size, cfg.image_size)
    params = sum(p.numel() for p in model.parameters())
    total = 0

    def count(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * 4

    handles = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return SizeEstimate(params=params, forward_bytes_per_sample=total)
