"""The builder against its oracles: torchvision's ResNets and He et al.'s CIFAR figures."""

import pytest
import torch
import torchvision
from torch import nn

from resnet_core.config import PRESETS, preset
from resnet_core.model import BasicBlock, PadShortcut, build_model, weighted_layers
from resnet_core.size import estimate

TORCHVISION_COUNTS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
CIFAR_COUNTS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth", sorted(TORCHVISION_COUNTS))
def test_imagenet_presets_match_torchvision(depth):
    ours = build_model(preset(f"resnet{depth}"))
    theirs = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    assert n_params(ours) == n_params(theirs) == TORCHVISION_COUNTS[depth]
    assert estimate(preset(f"resnet{depth}")).params == TORCHVISION_COUNTS[depth]


def test_resnet18_is_torchvision_resnet18_weight_for_weight():
    """Same names, same shapes, same function: torchvision's weights load and give its logits."""
    torch.manual_seed(0)
    theirs = torchvision.models.resnet18(weights=None).eval()
    ours = build_model(preset("resnet18")).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("depth", sorted(CIFAR_COUNTS))
def test_cifar_presets_match_he_et_al(depth):
    residual = n_params(build_model(preset(f"resnet{depth}")))
    plain = n_params(build_model(preset(f"plain{depth}")))
    assert residual == plain == CIFAR_COUNTS[depth]


def test_plain_twin_with_projection_shortcuts_drops_only_the_projections():
    res = build_model(preset("resnet18"))
    plain = build_model(preset("plain18"))
    projections = sum(n_params(m) for n, m in res.named_modules() if n.endswith("downsample"))
    assert projections > 0
    assert n_params(plain) == n_params(res) - projections


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_every_preset_gives_logits(name, channels, size):
    overrides = {"in_channels": channels, "image_size": size}
    if PRESETS[name].stem == "imagenet":
        overrides["stem"] = "small"
    cfg = preset(name, **overrides)
    model = build_model(cfg)
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, cfg.num_classes)
    assert torch.isfinite(out).all()


def test_skip_off_removes_only_the_addition():
    """Same seed: plain and residual nets have the same weights; outputs differ by the skips."""
    torch.manual_seed(3)
    res = build_model(preset("resnet20"))
    torch.manual_seed(3)
    plain = build_model(preset("plain20"))
    a, b = res.state_dict(), plain.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(res.eval()(x), plain.eval()(x))


def test_option_a_pads_with_zeros_and_subsamples():
    pad = PadShortcut(16, 32, 2)
    x = torch.randn(2, 16, 8, 8)
    y = pad(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


@pytest.mark.parametrize("shortcut,expect", [("A", PadShortcut), ("B", nn.Sequential)])
def test_shortcut_options_where_the_shape_changes(shortcut, expect):
    model = build_model(preset("resnet20", shortcut=shortcut))
    assert isinstance(model.layer2[0].downsample, expect)
    assert model.layer2[1].downsample is None  # shapes match: plain identity
    assert model.layer1[0].downsample is None


def test_option_c_projects_on_every_block():
    model = build_model(preset("resnet20", shortcut="C"))
    assert all(isinstance(b.downsample, nn.Sequential) for _, b in model.blocks())


def test_zero_init_residual_makes_each_block_start_as_identity():
    cfg = preset("resnet20", zero_init_residual=True)
    model = build_model(cfg).eval()
    block = model.layer1[1]
    x = torch.randn(2, 16, 8, 8).relu()  # a post-ReLU input, as inside the net
    torch.testing.assert_close(block(x), x)
    no_bn = build_model(preset("resnet20", zero_init_residual=True, batchnorm=False))
    assert no_bn.layer3[2].conv2.weight.abs().sum() == 0  # without BN the last conv is zeroed


def test_no_inplace_ops_and_backward_hooks_work_everywhere():
    cfgs = (preset("resnet20"), preset("resnet50", stem="small", image_size=32), preset("resnet20", style="pre"))
    for cfg in cfgs:
        model = build_model(cfg)
        assert not any(getattr(m, "inplace", False) for m in model.modules())
        seen = []
        handles = [m.register_full_backward_hook(lambda m, gi, go, seen=seen: seen.append(1)) for m in model.modules()
                   if not list(m.children())]
        model(torch.randn(2, 3, 32, 32)).sum().backward()
        for h in handles:
            h.remove()
        assert len(seen) > 20


def test_pre_activation_block_has_no_activation_after_the_addition():
    cfg = preset("resnet20", style="pre", batchnorm=False, activation="sigmoid")
    block = build_model(cfg).layer1[0]
    assert isinstance(block, BasicBlock) and block.pre
    x = torch.randn(1, 16, 8, 8) * 10
    out = block(x)
    assert out.min() < 0 or out.max() > 1  # not squashed into (0, 1) by a final sigmoid


def test_weighted_layers_are_in_network_order():
    names = [n for n, _ in weighted_layers(build_model(preset("resnet20")))]
    assert names[:2] == ["conv1", "bn1"]
    assert names[2:6] == ["layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2", "layer1.0.bn2"]
    assert names[-1] == "fc"
    pre = [n for n, _ in weighted_layers(build_model(preset("resnet20", style="pre")))]
    assert pre[1:3] == ["layer1.0.bn1", "layer1.0.conv1"]
