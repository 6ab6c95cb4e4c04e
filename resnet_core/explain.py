"""The numbers behind the Overview page: one SGD step, one residual block on a real digit,
the two kinds of shortcut, basic vs bottleneck blocks, and how ResNet-18 counts its layers.

Everything is measured on the same modules the app trains (model.py); nothing is typed in.
Feature maps are captured with forward hooks that are always removed again, and under a lock,
because the page shares one seeded net between all sessions (a second session's hook on the
same module would otherwise catch the first session's tensors).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .anatomy import describe
from .config import IMAGENET_LAYOUTS, ModelConfig, make_config, preset
from .loop import seeded_model
from .model import BasicBlock, Bottleneck, PadShortcut, ResNet

DEMO_SIDE, DEMO_CHANNELS = 28, 1  # the embedded MNIST digits
_HOOK_LOCK = threading.Lock()

# ---------------------------------------------------------------- one step of gradient descent


@dataclass(frozen=True)
class Update:
    weight: float  # W before the step
    grad: float  # dL/dW
    lr: float  # learning rate
    step: float  # lr * dL/dW, the amount W moves
    new_weight: float  # W - lr * dL/dW, in float64
    new_weight_f32: float  # the same step taken in float32, the precision the net stores W in
    f32_spacing: float  # gap between W and the next float32 number: smaller steps are lost

    @property
    def lost_in_f32(self) -> bool:
        """The step was real but too small for float32 to record: W did not change at all."""
        return self.step != 0 and self.new_weight_f32 == np.float32(self.weight)


def sgd_update(weight: float, grad: float, lr: float) -> Update:
    """W = W - lr * dL/dW, in float64 and in float32."""
    step = lr * grad
    w32 = np.float32(weight)
    new32 = w32 - np.float32(lr) * np.float32(grad)
    return Update(weight=weight, grad=grad, lr=lr, step=step, new_weight=weight - step,
                  new_weight_f32=float(new32), f32_spacing=float(np.spacing(w32)))


# ---------------------------------------------------------------- the demo net and its feature maps


def demo_config(shortcut: str = "A", zero_init_residual: bool = False) -> ModelConfig:
    """He et al.'s CIFAR ResNet-20 resized for the 1x28x28 digits (BatchNorm on, ReLU, post-activation)."""
    return preset("resnet20", in_channels=DEMO_CHANNELS, image_size=DEMO_SIDE, shortcut=shortcut,
                  zero_init_residual=zero_init_residual)


def demo_model(cfg: ModelConfig, seed: int = 0) -> ResNet:
    """`cfg`'s net as initialised by `seed`, in eval mode: BatchNorm uses its running statistics
    (still at their initial mean 0 and variance 1), so one image gives the same maps every time."""
    model = seeded_model(cfg, seed)
    return model.eval()


@contextlib.contextmanager
def _hooks(handles: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _block(model: ResNet, name: str) -> nn.Module:
    blocks = dict(model.blocks())
    if name not in blocks:
        raise ValueError(f"block={name!r} is not allowed: one of {', '.join(blocks)}")
    return blocks[name]


@dataclass(frozen=True)
class BlockView:
    """One residual block at work on one image; every tensor is (C, H, W), batch dimension dropped."""

    name: str  # e.g. "layer1.0"
    x: torch.Tensor  # the block's input
    fx: torch.Tensor  # the residual branch's output F(x): what block.branch_last() returned
    shortcut: torch.Tensor  # what the skip path carries: x itself, or x reshaped by block.downsample
    total: torch.Tensor  # shortcut + F(x): the sum, before the activation that follows it
    out: torch.Tensor  # the block's own output (act(total) for post-activation blocks)
    shortcut_kind: str  # "identity", "zero-pad" or "1x1 conv"

    @property
    def branch_to_input(self) -> float:
        """‖F(x)‖ / ‖shortcut‖: how large the branch's correction is next to what the skip carries."""
        s = float(self.shortcut.norm())
        return float(self.fx.norm()) / s if s else float("inf")


def block_view(model: ResNet, image: torch.Tensor, name: str = "layer1.0") -> BlockView:
    """Run `image` (C, H, W) through `model` and catch block `name`'s input, branch, shortcut and output."""
    block = _block(model, name)
    if not block.skip:
        raise ValueError("a plain net's blocks have no skip path to show")
    caught: dict[str, torch.Tensor] = {}

    def keep(key: str):
        def hook(_m: nn.Module, args: Any, out: Any = None) -> None:
            caught[key] = (args[0] if out is None else out).detach()[0].clone()
        return hook

    with _HOOK_LOCK, torch.no_grad():
        handles = [block.register_forward_pre_hook(keep("x")),
                   block.branch_last().register_forward_hook(keep("fx")),
                   block.register_forward_hook(keep("out"))]
        if block.downsample is not None:
            handles.append(block.downsample.register_forward_hook(keep("shortcut")))
        with _hooks(handles):
            model(image.unsqueeze(0))  # (1, C, H, W)
    shortcut = caught.get("shortcut", caught["x"])
    return BlockView(name=name, x=caught["x"], fx=caught["fx"], shortcut=shortcut,
                     total=shortcut + caught["fx"], out=caught["out"],
                     shortcut_kind=_shortcut_kind(block.downsample))


def _shortcut_kind(ds: nn.Module | None) -> str:
    if ds is None:
        return "identity"
    return "zero-pad" if isinstance(ds, PadShortcut) else "1x1 conv"


def _n_params(m: nn.Module | None) -> int:
    return 0 if m is None else sum(p.numel() for p in m.parameters())


@dataclass(frozen=True)
class ShortcutDemo:
    """Both answers to 'the shapes differ' on the same input: option A and option B."""

    x: torch.Tensor  # the input of the block where the stage changes, e.g. (16, 28, 28)
    fx: torch.Tensor  # that block's residual branch output, e.g. (32, 14, 14): the shape to match
    a: torch.Tensor  # option A: x subsampled by the stride and zero-padded with channels
    b: torch.Tensor  # option B: a 1x1 conv with the stride (and BatchNorm) applied to the same x
    a_params: int  # 0: option A has no weights
    b_params: int  # the 1x1 conv's weights plus its BatchNorm's
    b_conv_params: int
    stride: int
    pad_before: int  # option A's zero channels before the copied ones (the rest come after)

    def a_channel_source(self, c: int) -> int | None:
        """Which input channel option A's output channel `c` is a copy of (None: a zero channel)."""
        src = c - self.pad_before
        return src if 0 <= src < self.x.shape[0] else None


def shortcut_demo(model_a: ResNet, model_b: ResNet, image: torch.Tensor, name: str = "layer2.0") -> ShortcutDemo:
    """Block `name`'s input in `model_a` (an option-A net), run through both nets' shortcuts there."""
    view = block_view(model_a, image, name)
    pad = _block(model_a, name).downsample
    proj = _block(model_b, name).downsample
    if not isinstance(pad, PadShortcut) or not isinstance(proj, nn.Sequential):
        raise ValueError(f"block {name} must reshape: a zero-pad shortcut in model_a, a 1x1 conv in model_b")
    with _HOOK_LOCK, torch.no_grad():  # the lock: model_b's modules are shared by every session too
        b = proj(view.x.unsqueeze(0))[0]
    return ShortcutDemo(x=view.x, fx=view.fx, a=view.shortcut, b=b, a_params=_n_params(pad),
                        b_params=_n_params(proj), b_conv_params=_n_params(proj[0]), stride=pad.stride,
                        pad_before=(pad.out_planes - pad.in_planes) // 2)


# ---------------------------------------------------------------- basic vs bottleneck


@dataclass(frozen=True)
class BlockCost:
    title: str  # e.g. "BasicBlock 64→64"
    kind: str  # "basic" or "bottleneck"
    in_channels: int
    width: int  # channels of the 3x3 conv inside the branch ("planes" in torchvision)
    out_channels: int
    layers: tuple[tuple[str, str, int], ...]  # (module name, what it is, parameters) in data order
    params: int  # sum(p.numel()) of the whole block
    flops: int  # one forward of one `side` x `side` map, 2 FLOPs per multiply-add (PyTorch's counter)
    side: int


def _describe_layer(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0]
        return f"{k}×{k} conv {m.in_channels}→{m.out_channels}"
    if isinstance(m, nn.BatchNorm2d):
        return f"BatchNorm, {m.num_features} ch"  # a scale and a shift per channel
    return type(m).__name__


def block_cost(kind: str, inplanes: int, planes: int, side: int = 56, batchnorm: bool = True) -> BlockCost:
    """A real BasicBlock or Bottleneck (identity shortcut), its parameters by module and its FLOPs."""
    cfg = make_config(ModelConfig(), block=kind, batchnorm=batchnorm)
    cls = Bottleneck if kind == "bottleneck" else BasicBlock
    with torch.device("meta"):  # shapes and counts only: no memory, no arithmetic
        block = cls(cfg, inplanes, planes)
    out_channels = planes * cls.expansion
    if out_channels != inplanes:
        raise ValueError(f"{inplanes} in, {out_channels} out: an identity shortcut needs them equal")
    layers = tuple((n, _describe_layer(m), _n_params(m)) for n, m in block.named_children()
                   if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        block(torch.empty(1, inplanes, side, side, device="meta"))  # (1, C, side, side)
    title = f"{cls.__name__} {inplanes}→{planes}→{out_channels}" if kind == "bottleneck" else \
        f"{cls.__name__} {inplanes}→{out_channels}"
    return BlockCost(title=title, kind=kind, in_channels=inplanes, width=planes, out_channels=out_channels,
                     layers=layers, params=sum(p for _, _, p in layers), flops=counter.get_total_flops(),
                     side=side)


# ---------------------------------------------------------------- counting layers


@dataclass(frozen=True)
class LayerCount:
    name: str  # "ResNet-18"
    block: str  # "basic" or "bottleneck"
    blocks_per_stage: tuple[int, ...]
    convs_per_block: int
    expression: str  # "1 + 16 + 1 = 18", from the anatomy's own count of the modules
    total_params: int
    stages: tuple[dict[str, Any], ...]  # the anatomy's stage rows: name, kind, shapes, params


def layer_count(depth: int = 18) -> LayerCount:
    """How torchvision's ResNet-`depth` gets its name, counted from the modules by anatomy.describe."""
    if depth not in IMAGENET_LAYOUTS:
        raise ValueError(f"depth={depth!r} is not allowed: one of {', '.join(map(str, IMAGENET_LAYOUTS))}")
    cfg = preset(f"resnet{depth}")
    a = describe(cfg)
    return LayerCount(name=f"ResNet-{depth}", block=cfg.block, blocks_per_stage=cfg.layers,
                      convs_per_block=cfg.convs_per_block, expression=a.layer_count_expression,
                      total_params=a.total_params, stages=tuple(dict(r) for r in a.level("stage")))
