"""resnet_core.hooks: hooks on while inside the block, none left after it, and none after a failure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnet_core.hooks import Hooks


class Counting(Hooks):
    """Counts forward calls of each module; raises while attaching the module at `fail_at`."""

    def __init__(self, modules, fail_at: int | None = None):
        super().__init__()
        self.modules, self.fail_at, self.calls = list(modules), fail_at, [0] * len(modules)

    def attach(self) -> None:
        for i, m in enumerate(self.modules):
            if i == self.fail_at:
                raise ValueError(f"cannot hook module {i}")
            self.keep(m.register_forward_hook(lambda *_, i=i: self.calls.__setitem__(i, self.calls[i] + 1)))


def net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))


def live_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_count_inside_and_are_gone_after():
    model, x = net(), torch.randn(4, 3)
    with Counting(model) as h:
        assert h.attached and live_hooks(model) == 3
        model(x)
        model(x)
    assert h.calls == [2, 2, 2]
    assert not h.attached and live_hooks(model) == 0
    model(x)
    assert h.calls == [2, 2, 2]  # nothing records once outside


def test_a_failure_while_attaching_leaves_no_hook_behind():
    model = net()
    h = Counting(model, fail_at=2)
    with pytest.raises(ValueError, match="cannot hook module 2"), h:
        pass
    assert not h.attached and live_hooks(model) == 0  # the two registered before the failure are removed
