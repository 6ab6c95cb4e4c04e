"""Lesion study (Veit, Wilber, Belongie 2016): delete blocks of a trained net at test time.

Deleting a residual block removes its branch and keeps its shortcut: the block then computes
what it would if F(x) were 0, i.e. act(shortcut(x)) in a post-activation block and shortcut(x)
in a pre-activation one (a zero-padding or projection shortcut where the block changes shape).
In a plain net there is no shortcut: a block whose input and output shapes match is replaced by
the identity, and a block that changes shape cannot be deleted.

Every lesion to evaluate is a set of deleted blocks. The sets are walked as a trie, block by
block, batch by batch: lesions that agree on the first j blocks share those blocks' activations,
so a single deletion at block i costs only the blocks from i on, and the study of n single
deletions costs about half of n + 1 full passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .cores import across_cores, helpers_for
from .fold import folded


def removable(block: nn.Module, x_shape: Sequence[int], out_shape: Sequence[int]) -> bool:
    """A residual block always (its shortcut stays); a plain block only if it keeps the shape."""
    return bool(getattr(block, "skip", True)) or tuple(x_shape) == tuple(out_shape)


def deleted(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block with its branch removed: the shortcut alone (the identity in a plain net)."""
    if not getattr(block, "skip", True):
        return x
    pre = bool(getattr(block, "pre", False))
    ds = block.downsample
    if ds is None:
        s = x
    elif pre and isinstance(ds, nn.Sequential):  # the projection reads the normalised input
        s = ds(block.act1(block.bn1(x)))
    else:
        s = ds(x)
    if pre:
        return s
    return (block.act3 if hasattr(block, "act3") else block.act2)(s)


def _stem(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.maxpool(model.act(model.bn1(model.conv1(x))))


def _head(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    h = model.final_act(model.final_norm(h))
    return model.fc(torch.flatten(model.avgpool(h), 1))


def correct_counts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lesions: Sequence[frozenset[int]],
                   batch_size: int = 500, progress: Callable[[float], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, helpers: int = 1) -> np.ndarray:
    """Right answers of the net with each set of blocks in `lesions` deleted, on (x, y); the batches
    shared by `helpers` threads (why/cores.py), which only read the net."""
    blocks = [b for _, b in model.blocks()]
    n = len(blocks)
    member = np.array([[i in s for i in range(n)] for s in lesions], bool).reshape(len(lesions), n)
    starts = list(range(0, len(y), batch_size))

    def walk(j: int, h: torch.Tensor, rows: np.ndarray, yb: torch.Tensor, counts: np.ndarray) -> None:
        if j == n:
            right = int((_head(model, h).argmax(1) == yb).sum())
            counts[rows] += right
            return
        gone = member[rows, j]
        for rows_here, delete in ((rows[~gone], False), (rows[gone], True)):
            if len(rows_here):
                walk(j + 1, deleted(blocks[j], h) if delete else blocks[j](h), rows_here, yb, counts)

    def batch(_helper: int, b: int) -> np.ndarray:
        counts = np.zeros(len(lesions), np.int64)
        with torch.inference_mode():
            xb, yb = x[starts[b]:starts[b] + batch_size], y[starts[b]:starts[b] + batch_size]
            walk(0, _stem(model, xb), np.arange(len(lesions)), yb, counts)
        return counts

    total = np.zeros(len(lesions), np.int64)
    for done, (_, counts) in enumerate(across_cores(len(starts), batch, helpers, should_stop), start=1):
        total += counts
        if progress is not None:
            progress(done / len(starts))
    return total


@dataclass(frozen=True)
class Lesion:
    names: tuple[str, ...]  # blocks in network order
    removable: tuple[bool, ...]
    baseline_accuracy: float  # no block deleted
    single: tuple[float | None, ...]  # accuracy with that one block deleted (None: cannot be deleted)
    random_k: tuple[int, ...]  # k = 1 … number of removable blocks
    random_mean: tuple[float, ...]  # mean accuracy over the draws of k random removable blocks
    random_draws: tuple[tuple[float, ...], ...]  # each draw's accuracy, per k
    images: int
    draws: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"baseline_accuracy": self.baseline_accuracy,
                "blocks": [{"name": n, "accuracy": a, "removable": r}
                           for n, a, r in zip(self.names, self.single, self.removable, strict=True)],
                "random": [{"k": k, "mean_accuracy": m, "accuracies": list(d)}
                           for k, m, d in zip(self.random_k, self.random_mean, self.random_draws, strict=True)],
                "images": self.images, "draws": self.draws, "seed": self.seed}


def lesion_study(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int = 3, seed: int = 0,
                 batch_size: int = 500, progress: Callable[[float], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Lesion:
    """Accuracy with no block, each block alone, and k random blocks (k = 1 … n, `draws` seeded draws) deleted.
    Evaluated on a copy with its BatchNorms folded into their convs (why/fold.py): the same function, faster;
    on a CPU two threads share the batches (why/cores.py)."""
    if not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws={draws!r} is not allowed: a whole number >= 1")
    model = folded(model.eval())
    named = model.blocks()
    shapes = _shapes(model, x[:1])
    can = tuple(removable(b, *shapes[i]) for i, (_, b) in enumerate(named))
    ok = [i for i, c in enumerate(can) if c]
    rng = np.random.default_rng(seed)
    lesions: list[frozenset[int]] = [frozenset()] + [frozenset({i}) for i in ok]
    plan: list[tuple[int, list[int]]] = []  # (k, indices into lesions)
    for k in range(1, len(ok) + 1):
        if k == 1:  # every single deletion is already measured: their mean is the exact expectation
            plan.append((k, list(range(1, len(ok) + 1))))
            continue
        rows = []
        for _ in range(1 if k == len(ok) else draws):  # one way to delete them all
            lesions.append(frozenset(rng.choice(ok, size=k, replace=False).tolist()))
            rows.append(len(lesions) - 1)
        plan.append((k, rows))
    counts = correct_counts(model, x, y, lesions, batch_size, progress, should_stop, helpers=helpers_for(x.device))
    acc = counts / len(y)
    single: list[float | None] = [None] * len(named)
    for r, i in enumerate(ok, start=1):
        single[i] = float(acc[r])
    return Lesion(names=tuple(n for n, _ in named), removable=can, baseline_accuracy=float(acc[0]),
                  single=tuple(single), random_k=tuple(k for k, _ in plan),
                  random_mean=tuple(float(np.mean(acc[rows])) for _, rows in plan),
                  random_draws=tuple(tuple(float(acc[r]) for r in rows) for _, rows in plan),
                  images=len(y), draws=draws, seed=seed)


def _shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input shape, output shape) of each block, per image, from one image."""
    out = []
    with torch.inference_mode():
        h = _stem(model, x)
        for _, b in model.blocks():
            o = b(h)
            out.append((tuple(h.shape[1:]), tuple(o.shape[1:])))
            h = o
    return out


def lesion_run(run_dir: Any, draws: int = 3, seed: int = 0, limit: int | None = None, data_root: str | None = None,
               device: str = "cpu", progress: Callable[[float], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> tuple[Lesion, Any]:
    """The study of a record's trained net on its test split, evaluated as its training loop evaluated
    (batches of twice its batch size, its channels_last setting), so no deletion reproduces its test accuracy."""
    from ..loop import use_channels_last
    from .common import record_data, record_net

    model, rec = record_net(run_dir, device=device)
    x, y = record_data(rec, "test", limit=limit, data_root=data_root, device=device)
    dev = torch.device(device)
    if use_channels_last(rec.train, dev):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return lesion_study(model, x, y, draws=draws, seed=seed, batch_size=2 * rec.train.batch_size,
                        progress=progress, should_stop=should_stop), rec
