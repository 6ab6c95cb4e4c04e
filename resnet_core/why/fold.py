"""A faster net for evaluation: each BatchNorm that reads a conv's output folded into that conv.

In eval mode a BatchNorm is a fixed affine map per channel, y = (x - mean) / sqrt(var + eps) * gamma + beta,
so a conv followed by it is one conv with scaled filters and a bias (torch.nn.utils.fusion). The folded
net computes the same function, to float rounding (about 1e-6 relative), with one pass over the
activations fewer per pair: on a 2-core CPU a ResNet-20 pass over 512 digits took 0.83 of the
time (bench/bench_why.py, figures in bench/RESULTS.md). The analyses that evaluate one net many
times (the lesion study, the landscape) use it; nothing that trains does.

Only a conv whose output feeds nothing but a BatchNorm2d is folded, found in the net's traced graph
(torch.fx); a pre-activation block's first BatchNorm reads the block's input, not a conv, and stays.
The module tree keeps its names and shape: a folded BatchNorm becomes an nn.Identity in its place,
so code that walks the blocks (the lesion study) runs unchanged on the folded copy.
"""

from __future__ import annotations

import copy
import operator

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, BatchNorm name) for each BatchNorm2d that reads only a Conv2d's output;
    [] if the net cannot be traced."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - a net fx cannot trace is evaluated as it is
        return []
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(modules.get(src.target), nn.Conv2d)
                and len(src.users) == 1):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def folded(model: nn.Module, pairs: list[tuple[str, str]] | None = None, inplace: bool = False) -> nn.Module:
    """A copy of `model` in eval mode with each pair's BatchNorm folded into its conv; `model` is untouched.

    With `inplace`, the ReLUs that `inplace_safe` finds also work in place: safe for the net's own forward
    pass, in inference, but not for code that calls its modules on other inputs (the lesion study)."""
    pairs = foldable_pairs(model) if pairs is None else pairs
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv, bn = out.get_submodule(conv_name), out.get_submodule(bn_name)
            fused = fuse_conv_bn_eval(conv, bn)
            fused.weight.data = fused.weight.data.contiguous(memory_format=_format(conv.weight))
            _set(out, conv_name, fused)
            _set(out, bn_name, nn.Identity())
    for name in inplace_safe(out) if inplace else ():
        out.get_submodule(name).inplace = True
    return out


def folded_shift(model: nn.Module, delta: list[torch.Tensor], pairs: list[tuple[str, str]] | None = None,
                 base: nn.Module | None = None) -> list[torch.Tensor]:
    """How the folded net's parameters move when `model`'s parameters move by `delta` (in model.parameters()
    order) and its BatchNorms' statistics stay: folding is linear in a conv's weights, so the folded net of
    the moved weights is folded(model) + this, to float rounding. `base`: folded(model, pairs), if the
    caller has it already."""
    pairs = foldable_pairs(model) if pairs is None else pairs
    base = folded(model, pairs) if base is None else base
    moved = copy.deepcopy(model)
    with torch.no_grad():
        torch._foreach_add_(list(moved.parameters()), delta)
    return [b.detach() - a.detach() for a, b in zip(base.parameters(), folded(moved, pairs).parameters(), strict=True)]


_FRESH = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)  # modules whose output is a new tensor, never a view


def inplace_safe(model: nn.Module) -> list[str]:
    """ReLU / LeakyReLU modules, each called once, whose input is a fresh tensor (a conv's, a norm's, a sum)
    read by nothing else, looking through Identity modules: computing them in place changes nothing else."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001
        return []
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    out = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), (nn.ReLU, nn.LeakyReLU)) \
                or calls[str(node.target)] != 1 or not node.args:
            continue
        src, ok = node.args[0], True
        while isinstance(src, fx.Node) and src.op == "call_module" and isinstance(modules.get(src.target), nn.Identity):
            ok = ok and len(src.users) == 1
            src = src.args[0] if src.args else None
        fresh = isinstance(src, fx.Node) and (
            (src.op == "call_module" and isinstance(modules.get(src.target), _FRESH))
            or (src.op == "call_function" and src.target in (operator.add, torch.add)))
        if ok and fresh and len(src.users) == 1:
            out.append(str(node.target))
    return out


def _format(w: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if w.dim() == 4 and w.is_contiguous(memory_format=torch.channels_last) \
        and not w.is_contiguous() else torch.contiguous_format
