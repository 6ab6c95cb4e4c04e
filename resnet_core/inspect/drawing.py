"""A digit drawn on the page's canvas, made into the kind of image the MNIST family's nets were trained on.

MNIST's digits are white on black, size-normalised so the longer side of the ink is 20 pixels
(aspect kept, anti-aliased), and centred by their centre of mass in a 28x28 frame (LeCun et al.'s
description of the dataset). A drawing goes through the same steps, then the same normalisation
data.load applies: pixels in [0, 1], minus the training split's mean, over its std.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SIDE, BOX = 28, 20
MIN_PIXELS = 30  # a drawing with fewer inked pixels than this (a stray click) is empty


def ink(rgba: np.ndarray) -> np.ndarray:
    """(H, W) ink in [0, 1] from the canvas's (H, W, 4) uint8 RGBA: light strokes on a dark or clear ground."""
    a = rgba.astype(np.float32) / 255.0
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"a drawing must be an (H, W, 3 or 4) image; got shape {tuple(a.shape)}")
    light = a[..., :3].mean(-1)
    alpha = a[..., 3] if a.shape[-1] == 4 else np.ones_like(light)
    return light * alpha  # transparent pixels are background


def is_empty(rgba: np.ndarray | None) -> bool:
    if rgba is None:
        return True
    return int((ink(rgba) > 0.1).sum()) < MIN_PIXELS


def to_mnist(rgba: np.ndarray, mean: float, std: float) -> torch.Tensor | None:
    """(1, 28, 28) normalised like the dataset's images; None for an empty drawing."""
    if is_empty(rgba):
        return None
    m = torch.from_numpy(ink(rgba))
    rows, cols = torch.nonzero(m > 0.1, as_tuple=True)
    crop = m[int(rows.min()):int(rows.max()) + 1, int(cols.min()):int(cols.max()) + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = F.interpolate(crop[None, None], size=(nh, nw), mode="area" if scale < 1 else "bilinear",
                          **({} if scale < 1 else {"align_corners": False}))[0, 0].clamp(0, 1)
    # centre of mass to the frame's centre, as MNIST was made
    ys, xs = torch.arange(nh, dtype=torch.float32), torch.arange(nw, dtype=torch.float32)
    total = float(small.sum())
    cy, cx = float((small.sum(1) * ys).sum()) / total, float((small.sum(0) * xs).sum()) / total
    top = int(round(SIDE / 2 - 0.5 - cy))
    left = int(round(SIDE / 2 - 0.5 - cx))
    top, left = min(max(top, 0), SIDE - nh), min(max(left, 0), SIDE - nw)
    frame = torch.zeros(SIDE, SIDE)
    frame[top:top + nh, left:left + nw] = small
    return ((frame - mean) / std).unsqueeze(0)


LEVELS = 16  # a drawing in a link: 28x28 pixels at 16 grey levels, one hex digit each (784 characters)


def encode(x: torch.Tensor, mean: float, std: float) -> str:
    """A normalised (1, 28, 28) digit as 784 hex digits, for the page's URL."""
    pix = (x[0] * std + mean).clamp(0, 1)
    q = (pix * (LEVELS - 1)).round().to(torch.int64).flatten().tolist()
    return "".join("0123456789abcdef"[v] for v in q)


def decode(code: str, mean: float, std: float) -> torch.Tensor:
    """encode's inverse, normalised; ValueError for anything but 784 hex digits."""
    if len(code) != SIDE * SIDE or any(c not in "0123456789abcdef" for c in code):
        raise ValueError(f"{SIDE * SIDE} hex digits 0-9a-f")
    pix = torch.tensor([int(c, 16) for c in code], dtype=torch.float32).view(1, SIDE, SIDE) / (LEVELS - 1)
    return (pix - mean) / std


def quantised(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """`x` as a link carries it: what the page predicts on, so a shared link shows the same prediction."""
    return decode(encode(x, mean, std), mean, std)
