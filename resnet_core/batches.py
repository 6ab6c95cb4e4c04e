"""A dataset as tensors on the device (TensorDataset, which data.py loads), the batches indexed
from it, and CIFAR's crop-and-flip done on the device.

With the whole dataset on the device a batch is one index operation, so no DataLoader, workers or
pinned memory are needed. Every random draw comes from a CPU `torch.Generator` seeded from
(seed, epoch): the same seed gives the same batches on the CPU, CUDA and MPS, and any epoch can be
replayed on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

Batch = tuple[torch.Tensor, torch.Tensor]  # x (B, C, H, W) float32, y (B,) int64


@dataclass(frozen=True)
class TensorDataset:
    """One dataset, both splits, already on the device and normalised (float32, mean 0 std 1 on train)."""

    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor  # (M, C, H, W) float32
    y_test: torch.Tensor  # (M,) int64
    in_channels: int
    image_size: int
    num_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, of pixels in [0, 1], computed from the training split
    std: tuple[float, ...]

    @property
    def device(self) -> torch.device:
        return self.x_train.device



def augment(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop back to the input size from a zero-padded copy, then a random horizontal flip.

    The standard CIFAR-10 augmentation (He et al. 2016), batched: one pad and one gather, no loop
    over images. Zero padding happens after normalisation, so the border is the dataset's mean
    colour rather than black (torchvision's RandomCrop pads the raw image with black).
    """
    b, _, h, w = x.shape  # (B, C, H, W)
    dev = generator.device
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev).to(x.device)
    flip = torch.randint(0, 2, (b,), generator=generator, device=dev).to(x.device).bool()
    xp = F.pad(x, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    hp, wp = h + 2 * padding, w + 2 * padding
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy[:, None] + ar_h  # (B, H)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # (B, W), reversed if flipped
    # One gather on the flattened planes: ~4x faster on a CPU than 4-tensor advanced indexing.
    flat = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w)  # (B, 1, H*W)
    out = xp.reshape(b, -1, hp * wp).gather(2, flat.expand(b, x.shape[1], h * w))  # (B, C, H*W)
    return out.view(b, -1, h, w)  # (B, C, H, W)


def _generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    # SeedSequence mixes (seed, epoch, stream) so nearby seeds give unrelated permutations.
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _spans(n: int, batch_size: int) -> list[tuple[int, int]]:
    spans = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] == 1:
        # BatchNorm cannot normalise a batch of one in training: give that sample to the batch before.
        spans[-2] = (spans[-2][0], n)
        spans.pop()
    return spans


class Batches:
    """Seeded training batches of `ds`: each epoch a fresh permutation that covers every sample once.

    Iterating never ends (training is counted in steps); `epoch(i)` gives one epoch alone and
    `epoch_index` says which epoch the endless iteration is in.
    """

    def __init__(self, ds: TensorDataset, batch_size: int, seed: int = 0,
                 device: torch.device | str | None = None, augment: bool | None = None):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not allowed: a whole number >= 1")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed={seed!r} is not allowed: a whole number >= 0")
        self.ds = ds
        self.batch_size = batch_size
        self.seed = seed
        self.device = torch.device(device) if device is not None else ds.x_train.device
        self.augment = ds.name == "cifar10" if augment is None else augment  # CIFAR training only
        self.epoch_index = 0

    @property
    def steps_per_epoch(self) -> int:
        return len(_spans(len(self.ds.y_train), self.batch_size))

    def epoch(self, index: int) -> Iterator[Batch]:
        x, y = self.ds.x_train, self.ds.y_train  # (N, C, H, W), (N,) on the dataset's device
        perm = torch.randperm(len(y), generator=_generator(self.seed, index, 0)).to(x.device)  # (N,)
        aug = _generator(self.seed, index, 1)
        for start, stop in _spans(len(y), self.batch_size):
            idx = perm[start:stop]  # (B,)
            xb = x[idx].to(self.device, non_blocking=True)
            if self.augment:
                xb = augment(xb, aug)
            yield xb, y[idx].to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[Batch]:
        index = 0
        while True:
            self.epoch_index = index
            yield from self.epoch(index)
            index += 1


def batch_iterator(ds: TensorDataset, batch_size: int, seed: int = 0, device: torch.device | str | None = None,
                   epochs: int | None = None, augment: bool | None = None) -> Iterator[Batch]:
    """Training batches for `epochs` epochs (None: endless), reproducible from `seed`."""
    batches = Batches(ds, batch_size, seed, device, augment)
    if epochs is None:
        yield from batches
        return
    for index in range(epochs):
        batches.epoch_index = index
        yield from batches.epoch(index)


def eval_batches(ds: TensorDataset, batch_size: int,
                 device: torch.device | str | None = None) -> Iterator[Batch]:
    """The test split in order, never augmented."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not allowed: a whole number >= 1")
    device = torch.device(device) if device is not None else ds.x_test.device
    for start in range(0, len(ds.y_test), batch_size):
        stop = start + batch_size
        yield (ds.x_test[start:stop].to(device, non_blocking=True),
               ds.y_test[start:stop].to(device, non_blocking=True))
