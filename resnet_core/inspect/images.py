"""Dataset images as a person sees them, and as a net expects them."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MNIST_FAMILY = ("mnist-5k", "mnist", "fashion-mnist")  # 1x28x28 drawings make sense only for these


def to_pixels(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """A normalised image (C, H, W) back to uint8: (H, W) for grey, (H, W, 3) for colour."""
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    p = ((x.detach().float().cpu() * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
    return p[0].numpy() if p.shape[0] == 1 else p.permute(1, 2, 0).numpy()


def as_input(image: torch.Tensor, image_size: int) -> torch.Tensor:
    """`image` (C, H, W) resized to the net's image size the way the training loop resizes batches."""
    if image.shape[-1] == image_size:
        return image
    return F.interpolate(image.unsqueeze(0), size=(image_size, image_size), mode="bilinear",
                         align_corners=False)[0]
