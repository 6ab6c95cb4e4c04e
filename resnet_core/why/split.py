"""The gradient's two roads at each residual addition.

In a block out = x + F(x) the gradient that reaches x is the sum of two parts: the one that
came through the shortcut and the one that came back through the branch F. `SplitGrads`
measures the norm of each part with forward pre-hooks that hand the shortcut and the branch
their own alias of x (`x.view_as(x)`, no copy) and a tensor hook on each alias: the gradient
arriving at an alias is exactly the part its consumer sends back. Nothing is modified in
place and no full backward hook is used (those refuse in-place ops).

Where the parts are measured (the fork, where the two roads leave from):
- post-activation blocks, and pre-activation blocks with an identity or zero-padding
  shortcut: at the block's input x;
- pre-activation blocks with a projection shortcut (option B/C): at the normalised input
  act(bn(x)), which both the projection and the branch read (He et al. 2016b's layout).
An identity shortcut has no module to hook: its part is the gradient at the addition, read at
the input of the activation after the sum (post) or at the block's output (pre).
In a plain block (no skip) the shortcut's part is 0 and the branch carries it all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from ..hooks import Hooks


def fork_modules(block: nn.Module) -> tuple[nn.Module, nn.Module | None, nn.Module | None]:
    """(branch entry, shortcut entry, sum reader) of one block: modules whose input a hook reads.

    The branch entry and a shortcut module read the fork. An identity shortcut has no module:
    its part is then the gradient at the sum, read at the input of the activation after the
    addition (post: the third item) or at the block's output (pre: the third item is None).
    """
    pre = bool(getattr(block, "pre", False))
    ds = getattr(block, "downsample", None)
    if pre and isinstance(ds, nn.Sequential):  # the projection reads act1(bn1(x)), as the branch does
        return block.conv1, ds, None
    branch = block.bn1 if pre else block.conv1
    if ds is not None or pre:
        return branch, ds, None
    return branch, None, block.act3 if hasattr(block, "act3") else block.act2


class SplitGrads(Hooks):
    """norm(shortcut's part) and norm(branch's part) of the gradient at each block's fork.

    A context manager: its hooks are removed on exit. `norm` maps a gradient to a 0-d tensor
    (kept on the device until read). While `record` is False the hooks return at once.
    """

    def __init__(self, blocks: Sequence[nn.Module], norm: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.blocks = list(blocks)
        self.norm = norm
        self.record = True
        self.shortcut: list[torch.Tensor | None] = [None] * len(self.blocks)
        self.branch: list[torch.Tensor | None] = [None] * len(self.blocks)

    def attach(self) -> None:
        for i, block in enumerate(self.blocks):
            branch, shortcut, sum_reader = fork_modules(block)
            self.keep(branch.register_forward_pre_hook(partial(self._alias, self.branch, i)))
            if not getattr(block, "skip", True):
                continue  # a plain block: no shortcut, its part is 0
            if shortcut is not None:
                self.keep(shortcut.register_forward_pre_hook(partial(self._alias, self.shortcut, i)))
            elif sum_reader is not None:
                self.keep(sum_reader.register_forward_pre_hook(partial(self._on_sum, i)))
            else:
                self.keep(block.register_forward_hook(partial(self._on_output, i)))

    def _live(self, t: Any) -> bool:
        # eval passes under no_grad make tensors without a graph: nothing to hook
        return self.record and self.attached and isinstance(t, torch.Tensor) and t.requires_grad

    def _alias(self, slot: list, i: int, module: nn.Module, args: tuple) -> tuple | None:
        if not args or not self._live(args[0]):
            return None
        x = args[0].view_as(args[0])  # a node of its own: its gradient is this consumer's part alone
        x.register_hook(partial(self._keep, slot, i))
        return (x, *args[1:])

    def _on_sum(self, i: int, module: nn.Module, args: tuple) -> None:
        if args and self._live(args[0]):  # the sum x + F(x), read only by this activation
            args[0].register_hook(partial(self._keep, self.shortcut, i))

    def _on_output(self, i: int, module: nn.Module, args: tuple, out: Any) -> None:
        if self._live(out):  # pre-activation: the block's output is the sum itself
            out.register_hook(partial(self._keep, self.shortcut, i))

    def _keep(self, slot: list, i: int, grad: torch.Tensor) -> None:
        slot[i] = self.norm(grad.detach())  # returning None leaves the gradient as it is

    def values(self, nan: torch.Tensor, zero: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(shortcut norms, branch norms), NaN where not measured, 0 for a plain block's shortcut."""
        plain = [not getattr(b, "skip", True) for b in self.blocks]
        short = [zero if p else (v if v is not None else nan) for v, p in zip(self.shortcut, plain, strict=True)]
        branch = [v if v is not None else nan for v in self.branch]
        return short, branch


def share(shortcut: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """The shortcut's share |g_s| / (|g_s| + |g_b|): 1 all through the shortcut, 0 all through F."""
    return shortcut / (shortcut + branch)
