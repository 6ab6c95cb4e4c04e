"""What the analyses share: a record's net and its data, on the device, as its training loop saw them."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ..runs import RunRecord


def record_net(run_dir: str | os.PathLike, which: str = "final",
               device: str | torch.device = "cpu") -> tuple[torch.nn.Module, RunRecord]:
    """The record's net with its `which` weights (checked, never unpickled), in eval mode."""
    from ..weights import load_model

    return load_model(run_dir, which, device=device)


def fit(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """Images resized to the net's input size, as the training loop resizes them."""
    if x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x


def record_data(rec: RunRecord, split: str = "test", limit: int | None = None, seed: int | None = None,
                data_root: str | None = None, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of the record's dataset split, resized for its net: the first `limit` images, or, with a
    `seed`, `limit` images drawn without replacement by a generator seeded with it (a fixed subset)."""
    from ..data import load

    ds = load(rec.train.dataset, device=device, root=data_root)
    x, y = (ds.x_test, ds.y_test) if split == "test" else (ds.x_train, ds.y_train)
    if limit is not None and limit < len(y):
        if seed is None:
            x, y = x[:limit], y[:limit]
        else:
            idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:limit].to(x.device)
            x, y = x[idx], y[idx]
    return fit(x, rec.model.image_size), y
