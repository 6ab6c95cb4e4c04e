"""Where the net looks: the gradient of the predicted class's score (its logit) with respect to the
input pixels (Simonyan, Vedaldi, Zisserman 2014, "Deep Inside Convolutional Networks"), written
out in a few lines of autograd rather than taken from a library."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Saliency:
    grad: torch.Tensor  # (C, H, W): d logit[target] / d input
    target: int  # the class whose score was differentiated

    @property
    def map(self) -> torch.Tensor:
        """(H, W): the largest |gradient| over the colour channels, the usual picture of it."""
        return self.grad.abs().amax(0)


def saliency(model: torch.nn.Module, image: torch.Tensor, target: int | None = None) -> Saliency:
    """`image` (C, H, W), normalised as the dataset's; `target` defaults to the predicted class."""
    dev = next(model.parameters()).device
    x = image.detach().to(dev, torch.float32).unsqueeze(0).requires_grad_(True)  # (1, C, H, W)
    with torch.enable_grad():
        logits = model(x)[0]  # (K,)
        k = int(logits.argmax()) if target is None else target
        (grad,) = torch.autograd.grad(logits[k], x)
    return Saliency(grad[0].detach().cpu(), k)
