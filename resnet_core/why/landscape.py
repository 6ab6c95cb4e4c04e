"""Loss landscape (Li, Xu, Taylor, Studer, Goldstein 2018, "Visualizing the Loss Landscape of Neural Nets").

The loss of the trained net moved along random directions: L(w + a·d1 + b·d2) on a grid of (a, b),
and along d1 alone (the grid's row b = 0). The directions are filter-normalised as in the paper:
each filter of a direction (an output channel of a conv, a row of the linear layer) is scaled to
the norm of the matching filter of the weights, and biases and BatchNorm parameters are left
unperturbed (their code's default); buffers (BatchNorm's running statistics) are never moved.
The loss is the mean cross-entropy on a fixed, seeded subset, with the net in eval mode.

Where the record keeps its initial weights, `interpolation` gives the loss along the straight
line from the initial weights (t = 0) to the trained ones (t = 1); there every parameter moves,
BatchNorm's included, and the running statistics stay the trained net's.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cores import across_cores, helpers_for
from .fold import foldable_pairs, folded, folded_shift

MAX_GRID = 51


def check_grid(grid: int) -> None:
    if not isinstance(grid, int) or not 3 <= grid <= MAX_GRID or grid % 2 == 0:
        raise ValueError(f"grid={grid!r} is not allowed: an odd number from 3 to {MAX_GRID} "
                         "(odd, so that the trained weights are a grid point)")


def moved(p: nn.Parameter) -> bool:
    """Conv and linear weights move; biases and BatchNorm's parameters (1-D) stay."""
    return p.dim() > 1


def filter_normalized_direction(model: nn.Module, gen: torch.Generator) -> list[torch.Tensor]:
    """A random direction per parameter: Gaussian, each filter scaled to its weight filter's norm; 0 for 1-D."""
    out = []
    for p in model.parameters():
        if not moved(p):
            out.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.device, p.dtype)
        w = p.detach().reshape(p.shape[0], -1)  # (filters, the rest)
        dv = d.reshape(p.shape[0], -1)
        scale = w.norm(dim=1, keepdim=True) / (dv.norm(dim=1, keepdim=True) + 1e-10)
        out.append((dv * scale).reshape(p.shape))
    return out


def mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128) -> float:
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    with torch.inference_mode():
        for start in range(0, len(y), batch_size):
            out = model(x[start:start + batch_size])
            total += F.cross_entropy(out.float(), y[start:start + batch_size], reduction="sum").double()
    return float(total) / len(y)


@dataclass(frozen=True)
class Landscape:
    alphas: tuple[float, ...]
    betas: tuple[float, ...]
    loss: tuple[tuple[float, ...], ...]  # loss[i][j] at (alphas[i], betas[j])
    samples: int
    seed: int
    interpolation_t: tuple[float, ...] = ()
    interpolation_loss: tuple[float, ...] = ()

    @property
    def centre(self) -> float:
        return self.loss[len(self.alphas) // 2][len(self.betas) // 2]

    @property
    def line(self) -> tuple[float, ...]:
        """The loss along d1 alone: the grid's row at beta = 0."""
        j = len(self.betas) // 2
        return tuple(row[j] for row in self.loss)

    def to_dict(self) -> dict[str, Any]:
        d = {"alphas": list(self.alphas), "betas": list(self.betas), "loss": [list(r) for r in self.loss],
             "samples": self.samples, "seed": self.seed}
        if self.interpolation_t:
            d["interpolation"] = {"t": list(self.interpolation_t), "loss": list(self.interpolation_loss)}
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Landscape:
        """Back from a cached file: shapes and numbers checked; ValueError says what is wrong."""
        try:
            alphas, betas = tuple(float(v) for v in d["alphas"]), tuple(float(v) for v in d["betas"])
            loss = tuple(tuple(float(v) for v in row) for row in d["loss"])
            interp = d.get("interpolation") or {}
            t, il = tuple(float(v) for v in interp.get("t", ())), tuple(float(v) for v in interp.get("loss", ()))
            out = Landscape(alphas, betas, loss, int(d["samples"]), int(d["seed"]), t, il)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a landscape: {e}") from None
        if len(loss) != len(alphas) or any(len(r) != len(betas) for r in loss) or len(t) != len(il):
            raise ValueError("not a landscape: the loss grid does not match its axes")
        return out


def landscape(model: nn.Module, x: torch.Tensor, y: torch.Tensor, grid: int = 21, span: float = 1.0, seed: int = 0,
              initial: Sequence[torch.Tensor] | None = None, batch_size: int = 128,
              progress: Callable[[float], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> Landscape:
    """The loss on a grid x grid of (alpha, beta) in [-span, span]^2 around `model`'s weights, and the
    initial->trained line if `initial` (the initial parameters, in model.parameters() order) is given.

    The grid is evaluated on a copy of the net with its BatchNorms folded into their convs (why/fold.py):
    the same function in eval mode, to float rounding, and faster (bench/RESULTS.md). The BatchNorms stay
    still on the grid, so the folded copy moves along the folded directions as the net moves along d1, d2.
    The line moves BatchNorm's parameters too, so it is evaluated on the net itself. On a CPU two threads
    share the grid points (why/cores.py), each with its own copy.
    `model` is never changed: its weights are restored afterwards, whatever happens."""
    check_grid(grid)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters()]
    d1 = filter_normalized_direction(model, gen)
    d2 = filter_normalized_direction(model, gen)
    pairs = foldable_pairs(model)
    fast = folded(model, pairs, inplace=True)
    f1, f2 = (folded_shift(model, d, pairs, base=fast) for d in (d1, d2))
    centre = [p.detach().clone() for p in fast.parameters()]
    axis = np.linspace(-span, span, grid)
    axis[grid // 2] = 0.0  # exactly: the centre is the trained weights themselves
    n_line = grid if initial is not None else 0  # plus t = 0 and 1 where the even steps miss them
    total = grid * grid + (len(np.union1d(np.linspace(-0.25, 1.25, n_line), [0.0, 1.0])) if n_line else 0)
    done = 0
    trained = [p.detach().clone() for p in params]
    loss = np.zeros((grid, grid))
    try:
        with torch.no_grad():
            points = [(i, j, float(a), float(b)) for i, a in enumerate(axis) for j, b in enumerate(axis)]

            def at(net: nn.Module, a: float, b: float) -> float:
                ps = list(net.parameters())
                torch._foreach_copy_(ps, centre)
                if a:
                    torch._foreach_add_(ps, f1, alpha=a)
                if b:
                    torch._foreach_add_(ps, f2, alpha=b)
                return mean_loss(net, x, y, batch_size)

            helpers = helpers_for(x.device)
            copies = [fast] + [copy.deepcopy(fast) for _ in range(helpers - 1)]  # each helper moves its own
            for k, value in across_cores(len(points), lambda h, k: at(copies[h], *points[k][2:]), helpers,
                                         should_stop):
                loss[points[k][0], points[k][1]] = value
                done += 1
                if progress is not None:
                    progress(done / total)
            ts, line = (), ()
            if initial is not None:
                ts = tuple(float(t) for t in np.union1d(np.linspace(-0.25, 1.25, n_line), [0.0, 1.0]))
                start = [t.to(p.device, p.dtype) for t, p in zip(initial, params, strict=True)]
                line_vals = []
                for t in ts:
                    if should_stop is not None and should_stop():
                        raise InterruptedError("stopped")
                    for p, w0, w1 in zip(params, start, trained, strict=True):
                        p.copy_(w0 + t * (w1 - w0))
                    line_vals.append(mean_loss(model, x, y, batch_size))
                    done += 1
                    if progress is not None:
                        progress(done / total)
                line = tuple(line_vals)
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, trained)
    return Landscape(tuple(float(v) for v in axis), tuple(float(v) for v in axis),
                     tuple(tuple(float(v) for v in row) for row in loss), samples=len(y), seed=seed,
                     interpolation_t=ts, interpolation_loss=line)


# ---------------------------------------------------------------- a record's landscape, cached beside it


def cache_name(grid: int, samples: int) -> str:
    return f"landscape_{grid}_{samples}.json"


def cached(run_dir: str | os.PathLike, grid: int, samples: int) -> Landscape | None:
    path = Path(run_dir) / cache_name(grid, samples)
    try:
        raw = path.read_bytes()
        if len(raw) > 4 << 20:
            return None
        return Landscape.from_dict(json.loads(raw))
    except (OSError, ValueError):
        return None


def landscape_run(run_dir: str | os.PathLike, grid: int = 21, samples: int = 512, seed: int = 0,
                  data_root: str | None = None, device: str = "cpu", use_cache: bool = True,
                  progress: Callable[[float], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> Landscape:
    """A record's landscape on `samples` training images drawn with `seed`, cached in the record."""
    from ..loop import use_channels_last
    from ..runs import atomic_write
    from ..weights import MissingWeights, load
    from .common import record_data, record_net

    check_grid(grid)
    if not isinstance(samples, int) or not 1 <= samples <= 10_000:
        raise ValueError(f"samples={samples!r} is not allowed: a whole number from 1 to 10,000")
    if use_cache and (hit := cached(run_dir, grid, samples)) is not None and hit.seed == seed:
        return hit
    model, rec = record_net(run_dir, device=device)
    x, y = record_data(rec, "train", limit=samples, seed=seed, data_root=data_root, device=device)
    if use_channels_last(rec.train, torch.device(device)):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        state = load(run_dir, "initial", rec.model)
        initial = [state[name] for name, _ in model.named_parameters()]
    except MissingWeights:
        initial = None
    result = landscape(model, x, y, grid=grid, seed=seed, initial=initial, progress=progress,
                       should_stop=should_stop)
    with contextlib.suppress(OSError):  # a read-only record: the result is still returned
        atomic_write(Path(run_dir) / cache_name(grid, samples), json.dumps(result.to_dict()).encode())
    return result


def finite_max(*grids: Sequence[Sequence[float]]) -> float:
    vals = [v for g in grids for row in g for v in row if math.isfinite(v)]
    return max(vals) if vals else 1.0
