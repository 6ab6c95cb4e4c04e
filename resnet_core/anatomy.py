"""Per-stage, per-block and per-layer anatomy of a net: shapes, parameters, FLOPs, layer count.

Nothing here is computed by hand. Shapes come from forward hooks on the net's
own forward pass of `batch_size` images (on the meta device); FLOPs come from PyTorch's own counter
(`torch.utils.flop_counter.FlopCounterMode`, 2 FLOPs per multiply-add, counting
convolutions and matrix products); parameters from `p.numel()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import ModelConfig
from .model import PadShortcut, ResNet

Shape = tuple[int, ...]
LEVELS = ("stage", "block", "layer")


@dataclass(frozen=True)
class Anatomy:
    rows: list[dict[str, Any]]  # network order; shared by every caller of the cache: read, don't mutate
    total_params: int  # sum(p.numel()) over the whole net
    total_flops: int  # FlopCounterMode's total for one forward of `batch_size` images
    layer_count_expression: str  # "1 + 16 + 1 = 18": stem conv + convs in blocks + fc
    depth: int  # weighted layers on the main path, the number in "ResNet-18"
    batch_size: int = 1
    input_shape: Shape = ()  # one image, (C, H, W)

    def level(self, level: str) -> list[dict[str, Any]]:
        """The rows of one level: "stage", "block" or "layer"."""
        if level not in LEVELS:
            raise ValueError(f"level={level!r}: one of {', '.join(LEVELS)}")
        return [r for r in self.rows if r["level"] == level]

    def row(self, name: str) -> dict[str, Any]:
        for r in self.rows:
            if r["name"] == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy: shapes become lists, nothing is shared with the cache."""
        rows = [{k: list(v) if isinstance(v, tuple) else v for k, v in r.items()} for r in self.rows]
        return {
            "total_params": self.total_params,
            "total_flops": self.total_flops,
            "layer_count_expression": self.layer_count_expression,
            "depth": self.depth,
            "batch_size": self.batch_size,
            "input_shape": list(self.input_shape),
            "rows": rows,
        }


# ---------------------------------------------------------------- naming what each module is


def layer_kind(m: nn.Module) -> str:
    """A short description of one layer, e.g. "Conv2d 3x3/2", "1x1 projection /2"."""
    if isinstance(m, nn.Conv2d):
        k, s = m.kernel_size[0], m.stride[0]
        return f"Conv2d {k}x{m.kernel_size[1]}" + (f"/{s}" if s > 1 else "")
    if isinstance(m, nn.MaxPool2d):
        return f"MaxPool2d {m.kernel_size}x{m.kernel_size}/{m.stride}"
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return "global avg pool"
    if isinstance(m, PadShortcut):
        return "zero-pad shortcut" + (f" /{m.stride}" if m.stride > 1 else "")
    if isinstance(m, nn.Sequential):  # the only Sequential inside a block is a projection shortcut
        s = m[0].stride[0]
        return "1x1 projection" + (f" /{s}" if s > 1 else "")
    return type(m).__name__


def shortcut_text(block: nn.Module) -> str:
    """What the skip path of a block is, in the words of He et al. 2016."""
    if not block.skip:
        return "none (plain)"
    ds = block.downsample
    if ds is None:
        return "identity"
    if isinstance(ds, PadShortcut):
        parts = []
        if ds.out_planes != ds.in_planes:
            parts.append(f"zero-pad {ds.in_planes}→{ds.out_planes}")
        if ds.stride > 1:
            parts.append(f"subsample /{ds.stride}")
        return ", ".join(parts) or "identity"
    s = ds[0].stride[0]
    has_bn = isinstance(ds[1], nn.BatchNorm2d)
    return "1x1 conv" + (f" /{s}" if s > 1 else "") + (" + BN" if has_bn else "")


def _block_kind(cfg: ModelConfig) -> str:
    name = "Bottleneck" if cfg.block == "bottleneck" else "BasicBlock"
    return name + (" (pre-act)" if cfg.style == "pre" else "")


def _is_layer(m: nn.Module) -> bool:
    """Modules shown as rows of their own: weights, pools and shortcuts, not activations."""
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.MaxPool2d, nn.AdaptiveAvgPool2d, PadShortcut)
    return isinstance(m, kinds)


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------- measuring


def _layout(model: ResNet) -> list[tuple[str, str, list[tuple[str, nn.Module]]]]:
    """(stage name, stage kind, [(row name, module), ...]) in network order."""
    cfg = model.cfg
    stem = [(n, m) for n, m in (("conv1", model.conv1), ("bn1", model.bn1), ("maxpool", model.maxpool))
            if _is_layer(m)]
    out = [("stem", "stem", stem)]
    for i, stage in enumerate(model.stages):
        members: list[tuple[str, nn.Module]] = []
        for j, block in enumerate(stage):
            name = f"layer{i + 1}.{j}"
            members.append((name, block))
            for child, m in block.named_children():
                if _is_layer(m) or child == "downsample" and m is not None:
                    members.append((f"{name}.{child}", m))
        out.append((f"layer{i + 1}", f"{len(stage)} × {_block_kind(cfg)}", members))
    head = [(n, m) for n, m in (("final_norm", model.final_norm), ("avgpool", model.avgpool), ("fc", model.fc))
            if _is_layer(m)]
    out.append(("head", "pool + fc", head))
    return out


def _meta_model(cfg: ModelConfig) -> ResNet:
    """The net on PyTorch's meta device: real modules and forward, no memory, no arithmetic.

    Shapes and the counter's FLOPs depend only on shapes, so this gives the same
    figures as a CPU forward (tests/test_anatomy.py checks it) at a fraction of
    the cost, however busy the CPU is: ResNet-152 needs no 240 MB of weights.
    """
    with torch.device("meta"):
        model = ResNet(cfg)
    return model.eval()  # eval: BatchNorm must not need more than one value per channel


@lru_cache(maxsize=64)
def describe(cfg: ModelConfig, batch_size: int = 1) -> Anatomy:
    """The anatomy of `cfg`'s net, measured on one forward pass of `batch_size` images."""
    if not isinstance(batch_size, int) or not 1 <= batch_size <= 1024:
        raise ValueError(f"batch_size={batch_size!r}: a whole number from 1 to 1024")
    model = _meta_model(cfg)
    layout = _layout(model)
    counter = FlopCounterMode(display=False)
    measured: dict[str, dict[str, Any]] = {}

    # Attribute FLOPs by the counter's running total before and after each module,
    # rather than by its module-name table: that table is fed by process-wide hooks,
    # so a training thread running its own ResNet at the same time would pollute it.
    def pre(name: str):
        def hook(_m: nn.Module, _inp: Any) -> None:
            measured[name] = {"flops0": counter.get_total_flops()}
        return hook

    def post(name: str):
        def hook(_m: nn.Module, inp: Any, out: torch.Tensor) -> None:
            rec = measured[name]
            rec["flops"] = counter.get_total_flops() - rec.pop("flops0")
            rec["input_shape"] = tuple(inp[0].shape[1:])  # drop the batch dimension
            rec["output_shape"] = tuple(out.shape[1:])
        return hook

    handles = []
    try:
        for _, _, members in layout:
            for name, m in members:
                handles.append(m.register_forward_pre_hook(pre(name)))
                handles.append(m.register_forward_hook(post(name)))
        x = torch.empty(batch_size, cfg.in_channels, cfg.image_size, cfg.image_size, device="meta")
        with torch.no_grad(), counter:
            logits = model(x)
    finally:
        for h in handles:
            h.remove()

    rows: list[dict[str, Any]] = []
    for stage, stage_kind, members in layout:
        stage_row = {"level": "stage", "name": stage, "kind": stage_kind, "input_shape": (),
                     "output_shape": (), "params": 0, "flops": 0, "shortcut": None}
        rows.append(stage_row)
        for name, m in members:
            is_block = name.count(".") == 1 and name.startswith("layer")
            rec = measured[name]
            row = {"level": "block" if is_block else "layer", "name": name,
                   "kind": _block_kind(cfg) if is_block else layer_kind(m),
                   "input_shape": rec["input_shape"], "output_shape": rec["output_shape"],
                   "params": _n_params(m), "flops": rec["flops"],
                   "shortcut": shortcut_text(m) if is_block else None}
            rows.append(row)
            if is_block or stage in ("stem", "head"):  # block rows already hold their layers
                stage_row["params"] += row["params"]
                stage_row["flops"] += row["flops"]
        first, last = members[0][0], members[-1][0]
        if stage.startswith("layer"):
            last = f"{stage}.{len(getattr(model, stage)) - 1}"
        stage_row["input_shape"] = measured[first]["input_shape"]
        stage_row["output_shape"] = measured[last]["output_shape"]
    assert tuple(logits.shape[1:]) == rows[-1]["output_shape"]

    stem_convs = sum(isinstance(m, nn.Conv2d) for _, m in layout[0][2])
    block_convs = sum(isinstance(m, nn.Conv2d) for _, b in model.blocks()
                      for c, m in b.named_children() if c != "downsample")
    fcs = sum(isinstance(m, nn.Linear) for _, m in layout[-1][2])
    depth = stem_convs + block_convs + fcs
    return Anatomy(
        rows=rows,
        total_params=_n_params(model),
        total_flops=counter.get_total_flops(),
        layer_count_expression=f"{stem_convs} + {block_convs} + {fcs} = {depth}",
        depth=depth,
        batch_size=batch_size,
        input_shape=(cfg.in_channels, cfg.image_size, cfg.image_size),
    )
