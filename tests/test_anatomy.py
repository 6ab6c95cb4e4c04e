"""anatomy.describe against oracles: torchvision's counts, sum(p.numel()), FlopCounterMode, a CPU forward."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_core.anatomy import describe
from resnet_core.config import make_config, preset
from resnet_core.model import ResNet

TORCHVISION = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


@pytest.mark.parametrize("depth", sorted(TORCHVISION))
def test_totals_match_torchvision_and_numel(depth):
    a = describe(preset(f"resnet{depth}"))
    with torch.device("meta"):  # counts need no memory
        tv = getattr(tvm, f"resnet{depth}")()
        ours = ResNet(preset(f"resnet{depth}"))
    assert a.total_params == TORCHVISION[depth]
    assert a.total_params == sum(p.numel() for p in tv.parameters())
    assert a.total_params == sum(p.numel() for p in ours.parameters())
    assert a.depth == depth


@pytest.mark.parametrize("name, expr", [
    ("resnet18", "1 + 16 + 1 = 18"), ("resnet50", "1 + 48 + 1 = 50"), ("resnet20", "1 + 18 + 1 = 20"),
    ("resnet152", "1 + 150 + 1 = 152"), ("plain56", "1 + 54 + 1 = 56"),
])
def test_layer_count_expression(name, expr):
    assert describe(preset(name)).layer_count_expression == expr


def test_hierarchy_sums_add_up():
    for name in ("resnet20", "resnet50"):
        a = describe(preset(name))
        stages = a.level("stage")
        assert [r["name"] for r in stages] == ["stem", *[f"layer{i + 1}" for i in range(len(stages) - 2)], "head"]
        assert sum(r["params"] for r in stages) == a.total_params
        assert sum(r["flops"] for r in stages) == a.total_flops
        for b in a.level("block"):
            layers = [r for r in a.level("layer") if r["name"].startswith(b["name"] + ".")]
            assert sum(r["params"] for r in layers) == b["params"]
            assert sum(r["flops"] for r in layers) == b["flops"]


def test_shortcut_descriptions():
    a = describe(preset("resnet20"))  # option A
    assert a.row("layer1.0")["shortcut"] == "identity"
    assert a.row("layer2.0")["shortcut"] == "zero-pad 16→32, subsample /2"
    assert a.row("layer3.0")["shortcut"] == "zero-pad 32→64, subsample /2"
    assert a.row("layer2.0.downsample")["kind"] == "zero-pad shortcut /2"
    assert a.row("layer2.0.downsample")["params"] == 0

    b = describe(preset("resnet18"))  # option B
    assert b.row("layer1.1")["shortcut"] == "identity"
    assert b.row("layer2.0")["shortcut"] == "1x1 conv /2 + BN"
    assert b.row("layer2.0.downsample")["kind"] == "1x1 projection /2"
    assert b.row("layer2.0.downsample")["params"] == 64 * 128 + 2 * 128
    assert describe(preset("resnet50")).row("layer1.0")["shortcut"] == "1x1 conv + BN"  # 64 -> 256, stride 1

    c = describe(preset("resnet20", shortcut="C"))
    assert c.row("layer1.0")["shortcut"] == "1x1 conv + BN"
    assert c.row("layer2.0")["shortcut"] == "1x1 conv /2 + BN"
    assert c.row("layer2.1")["shortcut"] == "1x1 conv + BN"
    assert describe(preset("resnet18", batchnorm=False)).row("layer3.0")["shortcut"] == "1x1 conv /2"

    for name in ("plain20", "plain18"):
        assert {r["shortcut"] for r in describe(preset(name)).level("block")} == {"none (plain)"}


def test_shapes_of_some_rows():
    a = describe(preset("resnet18"))
    assert a.input_shape == (3, 224, 224)
    assert a.row("stem")["output_shape"] == (64, 56, 56)
    assert a.row("conv1")["kind"] == "Conv2d 7x7/2"
    assert a.row("conv1")["output_shape"] == (64, 112, 112)
    assert a.row("maxpool")["kind"] == "MaxPool2d 3x3/2"
    assert a.row("layer2.0")["input_shape"] == (64, 56, 56)
    assert a.row("layer2.0")["output_shape"] == (128, 28, 28)
    assert a.row("layer2.0.conv1")["kind"] == "Conv2d 3x3/2"
    assert a.row("layer4")["output_shape"] == (512, 7, 7)
    assert a.row("fc")["input_shape"] == (512,) and a.row("fc")["output_shape"] == (1000,)
    r50 = describe(preset("resnet50"))
    assert r50.row("layer1.0")["output_shape"] == (256, 56, 56)
    assert r50.row("layer2.0.conv2")["kind"] == "Conv2d 3x3/2"  # stride in the 3x3, as torchvision v1.5
    assert describe(preset("resnet20")).row("layer3")["output_shape"] == (64, 8, 8)


def test_flops_equal_flop_counter_of_a_plain_forward():
    for cfg in (preset("resnet20"), preset("resnet18", image_size=64), preset("resnet50", image_size=64)):
        model = ResNet(cfg).eval()
        x = torch.randn(1, cfg.in_channels, cfg.image_size, cfg.image_size)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x)
        a = describe(cfg)
        assert a.total_flops == fc.get_total_flops() > 0
        # and per module, our attribution equals the counter's own module hierarchy
        counts = fc.get_flop_counts()
        for r in a.level("block") + a.level("layer"):
            assert r["flops"] == sum(counts.get(f"ResNet.{r['name']}", {}).values()), r["name"]


def test_meta_forward_gives_the_shapes_of_a_cpu_forward():
    cfg = preset("resnet20", style="pre")
    a = describe(cfg)
    model = ResNet(cfg).eval()
    seen = {}
    names = {r["name"] for r in a.rows if r["level"] != "stage"}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, (tuple(i[0].shape[1:]),
                                                                             tuple(o.shape[1:]))))
             for n, m in model.named_modules() if n in names]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert seen.keys() == names
    for n, (i, o) in seen.items():
        assert (a.row(n)["input_shape"], a.row(n)["output_shape"]) == (i, o), n


def test_batch_size_scales_flops_not_shapes():
    cfg = preset("resnet20")
    one, four = describe(cfg), describe(cfg, batch_size=4)
    assert four.total_flops == 4 * one.total_flops
    assert [r["output_shape"] for r in four.rows] == [r["output_shape"] for r in one.rows]
    with pytest.raises(ValueError, match="batch_size"):
        describe(cfg, batch_size=0)


def test_pre_activation_and_no_bn_rows():
    a = describe(preset("resnet20", style="pre"))
    assert a.row("layer1.0")["kind"] == "BasicBlock (pre-act)"
    assert a.row("final_norm")["kind"] == "BatchNorm2d"
    assert [r["name"] for r in a.rows[:2]] == ["stem", "conv1"]  # a pre-act stem is the bare conv
    nobn = describe(preset("resnet20", batchnorm=False))
    assert not [r for r in nobn.rows if r["kind"] == "BatchNorm2d"]
    assert nobn.layer_count_expression == "1 + 18 + 1 = 20"


def test_cached_and_json_able():
    cfg = make_config(preset("resnet20"), layers=(1, 2), widths=(8, 16))
    a = describe(cfg)
    assert describe(cfg) is a
    d = a.to_dict()
    assert {"total_params", "total_flops", "layer_count_expression", "rows"} <= d.keys()
    assert json.loads(json.dumps(d)) == d
    d["rows"][0]["name"] = "changed"
    assert describe(cfg).rows[0]["name"] == "stem"  # to_dict hands out a copy
    assert a.layer_count_expression == "1 + 6 + 1 = 8"


def test_describe_leaves_no_hooks_behind():
    cfg = preset("resnet20")
    describe.cache_clear()
    describe(cfg)
    assert not nn.modules.module._global_forward_hooks
    assert not nn.modules.module._global_forward_pre_hooks


def test_a_training_thread_running_meanwhile_changes_nothing():
    """The counter's module tracking is process-wide; our attribution must not see other threads."""
    import threading

    cfgs = [preset("resnet20"), preset("resnet18", image_size=64)]
    describe.cache_clear()
    serial = [describe(c).to_dict() for c in cfgs]
    stop, errors = threading.Event(), []

    def train() -> None:
        model = ResNet(preset("resnet20"))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        try:
            while not stop.is_set():
                loss = model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        except Exception as e:  # noqa: BLE001 - any failure in the thread fails the test
            errors.append(e)

    t = threading.Thread(target=train, daemon=True)
    t.start()
    try:
        for _ in range(3):
            describe.cache_clear()
            assert [describe(c).to_dict() for c in cfgs] == serial
    finally:
        stop.set()
        t.join(30)
    assert not errors
