"""Memory layout for a net on a device: channels_last where it is fast and safe, contiguous where it is not.

channels_last makes convolutions faster on CUDA and on x86 CPUs (DESIGN.md), but PyTorch 2.14.1's
oneDNN 3.12 has a bug in one CPU kernel (bench/RESULTS.md, "oneDNN 1x1 stride-2 weight gradient";
the repro and the sweep are bench/onednn_bug.py). The weight gradient of a 1x1 convolution with
stride 2 and 2 to 6 input channels, in channels_last, on the AVX2 kernels (any x86 CPU without
AVX-512, or ONEDNN_MAX_CPU_ISA=AVX2), writes outside its buffers: with one thread it corrupts the
heap and kills the process, with two it silently returns wrong gradients. The contiguous layout
runs other kernels and is correct. Such convolutions are the projection shortcuts (options B and C)
of narrow nets; no preset has one, so the presets keep channels_last and lose nothing.

Every place that runs a backward pass through a net picks its layout here.
"""

from __future__ import annotations

import torch
from torch import nn

# In-channel counts that hit the bug (2-6 seen; 1, 7, 8, 12, 16 fine): below one AVX2 vector of fp32
# lanes. The whole range under 8 is routed, so a neighbour the sweep did not hit is covered too.
RISKY_MAX_IN_CHANNELS = 7


def risky_conv(m: nn.Module) -> bool:
    """Whether `m` is a convolution whose channels_last weight gradient oneDNN computes wrongly on a CPU."""
    return (isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and tuple(m.stride) != (1, 1)
            and m.in_channels <= RISKY_MAX_IN_CHANNELS and m.groups == 1)


def risky_convs(model: nn.Module) -> list[str]:
    """Names of the layers of `model` that must not train in channels_last on a CPU."""
    return [name for name, m in model.named_modules() if risky_conv(m)]


def channels_last_ok(model: nn.Module, device: torch.device | str) -> bool:
    """Whether `model` may train in channels_last on `device`: anywhere but a CPU running a risky conv."""
    return torch.device(device).type != "cpu" or not risky_convs(model)


def memory_format(model: nn.Module, device: torch.device | str, wanted: bool = True) -> torch.memory_format:
    """channels_last when `wanted` and safe for `model` on `device`, else the contiguous layout."""
    return torch.channels_last if wanted and channels_last_ok(model, device) else torch.contiguous_format
