"""Blocks and the network builder, in torchvision's vocabulary. Imports only torch.

Differences from torchvision's resnet.py, all switchable by `ModelConfig`:
skip connections can be removed (the plain twin), BatchNorm can be removed,
the activation can be swapped, blocks can be pre-activation (He et al. 2016b),
and shortcuts follow option A, B or C of He et al. 2016. No operation is
in-place, so backward hooks work on every layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # the type of `cfg` alone: at run time this module imports only torch (config -> size -> model)
    from .config import ModelConfig

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def norm(cfg: ModelConfig, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if cfg.batchnorm else nn.Identity()


def act(cfg: ModelConfig) -> nn.Module:
    return _ACTIVATIONS[cfg.activation]()


def _add_in_order(block: nn.Module, pre: bool, pairs: list[tuple[str, nn.Module]]) -> None:
    """Register (conv, norm) pairs as conv-then-norm (post) or norm-then-conv (pre)."""
    for conv, bn in zip(pairs[0::2], pairs[1::2], strict=True):
        for name, module in ((bn, conv) if pre else (conv, bn)):
            block.add_module(name, module)


class PadShortcut(nn.Module):
    """Option A: identity, subsampled by `stride` and zero-padded to `out_planes` channels."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_planes - self.in_planes
        if extra:  # new channels are zeros, split either side as in He et al.'s code
            x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_planes}->{self.out_planes}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 convs. post: conv-bn-act-conv-bn (+x) act. pre: bn-act-conv-bn-act-conv (+x)."""

    expansion = 1

    def __init__(self, cfg: ModelConfig, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.skip, self.pre = cfg.skip, cfg.style == "pre"
        # registered in the order data flows, so named_modules() is network order
        _add_in_order(self, self.pre, [
            ("conv1", conv3x3(inplanes, planes, stride)), ("bn1", norm(cfg, inplanes if self.pre else planes)),
            ("conv2", conv3x3(planes, planes)), ("bn2", norm(cfg, planes)),
        ])
        self.act1, self.act2 = act(cfg), act(cfg)
        self.downsample = downsample

    def branch_last(self) -> nn.Module:
        """The layer zeroed by zero_init_residual."""
        return self.conv2 if self.pre or isinstance(self.bn2, nn.Identity) else self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        if self.pre:
            out = self.act1(self.bn1(x))
            if isinstance(self.downsample, nn.Sequential):  # projections see the normalised input
                identity = self.downsample(out)
            elif self.downsample is not None:
                identity = self.downsample(x)
            out = self.conv1(out)
            out = self.conv2(self.act2(self.bn2(out)))
            if self.skip:
                out = out + identity
            return out
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        if self.skip:
            out = out + identity
        return self.act2(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, as torchvision's v1.5), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, cfg: ModelConfig, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.skip, self.pre = cfg.skip, cfg.style == "pre"
        out_planes = planes * self.expansion
        _add_in_order(self, self.pre, [
            ("conv1", conv1x1(inplanes, planes)), ("bn1", norm(cfg, inplanes if self.pre else planes)),
            ("conv2", conv3x3(planes, planes, stride)), ("bn2", norm(cfg, planes)),
            ("conv3", conv1x1(planes, out_planes)), ("bn3", norm(cfg, planes if self.pre else out_planes)),
        ])
        self.act1, self.act2, self.act3 = act(cfg), act(cfg), act(cfg)
        self.downsample = downsample

    def branch_last(self) -> nn.Module:
        return self.conv3 if self.pre or isinstance(self.bn3, nn.Identity) else self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        if self.pre:
            out = self.act1(self.bn1(x))
            if isinstance(self.downsample, nn.Sequential):
                identity = self.downsample(out)
            elif self.downsample is not None:
                identity = self.downsample(x)
            out = self.conv1(out)
            out = self.conv2(self.act2(self.bn2(out)))
            out = self.conv3(self.act3(self.bn3(out)))
            if self.skip:
                out = out + identity
            return out
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        if self.skip:
            out = out + identity
        return self.act3(out)


class ResNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        block = Bottleneck if cfg.block == "bottleneck" else BasicBlock
        self.inplanes = cfg.widths[0]
        pre = cfg.style == "pre"
        if cfg.stem == "imagenet":
            self.conv1 = nn.Conv2d(cfg.in_channels, self.inplanes, kernel_size=7, stride=2,
                                   padding=3, bias=False)
        else:
            self.conv1 = conv3x3(cfg.in_channels, self.inplanes)
        # pre-activation nets normalise at the start of each block, so the stem is a bare conv
        self.bn1 = nn.Identity() if pre else norm(cfg, self.inplanes)
        self.act = nn.Identity() if pre else act(cfg)
        self.maxpool = (nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
                        if cfg.stem == "imagenet" else nn.Identity())
        for i, (planes, blocks) in enumerate(zip(cfg.widths, cfg.layers, strict=True)):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", self._make_layer(block, planes, blocks, stride))
        out_channels = cfg.widths[-1] * block.expansion
        self.final_norm = norm(cfg, out_channels) if pre else nn.Identity()
        self.final_act = act(cfg) if pre else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(out_channels, cfg.num_classes)
        self._init_weights()

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        cfg = self.cfg
        out_planes = planes * block.expansion
        layers = []
        for b in range(blocks):
            s = stride if b == 0 else 1
            downsample = None
            if cfg.skip:
                reshapes = s != 1 or self.inplanes != out_planes
                if cfg.shortcut == "C" or (cfg.shortcut == "B" and reshapes):
                    downsample = nn.Sequential(conv1x1(self.inplanes, out_planes, s),
                                               norm(cfg, out_planes))
                elif reshapes:
                    downsample = PadShortcut(self.inplanes, out_planes, s)
            layers.append(block(cfg, self.inplanes, planes, s, downsample))
            self.inplanes = out_planes
        return nn.Sequential(*layers)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.cfg.layers))]

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """(name, block) in network order, e.g. ("layer1.0", BasicBlock)."""
        return [(f"layer{i + 1}.{j}", b) for i, stage in enumerate(self.stages) for j, b in enumerate(stage)]

    def _init_weights(self) -> None:
        if self.cfg.init == "kaiming":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        if self.cfg.zero_init_residual:
            for _, b in self.blocks():
                nn.init.zeros_(b.branch_last().weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W)
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = stage(x)
        x = self.final_act(self.final_norm(x))
        x = torch.flatten(self.avgpool(x), 1)  # (N, C)
        return self.fc(x)  # (N, classes)


def build_model(cfg: ModelConfig) -> ResNet:
    return ResNet(cfg)


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv, Linear and BatchNorm layers with weights, in network (registration) order."""
    kinds = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]
