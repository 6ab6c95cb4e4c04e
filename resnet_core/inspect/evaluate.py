"""A trained net on the test split: predictions, accuracy, the confusion matrix, per-class figures
and the most confident mistakes.

predict() evaluates exactly as the training loop's own evaluation does (batches of twice the
training batch, channels_last and autocast as the run's TrainConfig says, inputs resized to the
net's image size), so a net rebuilt from a record reproduces the test accuracy the record states,
to the last image, on the same device and data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..loop import autocast_for, use_channels_last


@dataclass(frozen=True)
class Predictions:
    logits: np.ndarray  # (N, K) float32
    labels: np.ndarray  # (N,) int64, the true classes
    classes: tuple[str, ...]  # names of the K classes

    @property
    def predicted(self) -> np.ndarray:  # (N,)
        return self.logits.argmax(1)

    @property
    def probabilities(self) -> np.ndarray:  # (N, K), softmax of the logits
        z = self.logits - self.logits.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)


def predict(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, train_cfg: TrainConfig,
            classes: tuple[str, ...], device: torch.device | str | None = None) -> Predictions:
    """`model`'s logits for images `x` (N, C, H, W) with labels `y`, computed as the loop evaluates."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    cl = use_channels_last(train_cfg, dev)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = model.to(dev, memory_format=fmt).eval()
    size = model.cfg.image_size
    outs = []
    batch = 2 * train_cfg.batch_size  # the loop's evaluation batch: results depend on it in the last bits
    with torch.no_grad(), autocast_for(train_cfg, dev):
        for start in range(0, len(y), batch):
            xb = x[start:start + batch].to(dev)
            if xb.shape[-1] != size:
                xb = F.interpolate(xb, size=(size, size), mode="bilinear", align_corners=False)
            outs.append(model(xb.contiguous(memory_format=fmt) if cl else xb).float().cpu())
    logits = torch.cat(outs).numpy() if outs else np.zeros((0, model.cfg.num_classes), np.float32)
    return Predictions(logits, y.cpu().numpy().astype(np.int64), tuple(classes))


def accuracy(p: Predictions) -> float:
    return float((p.predicted == p.labels).sum()) / len(p.labels) if len(p.labels) else float("nan")
