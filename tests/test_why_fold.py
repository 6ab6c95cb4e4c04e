"""BatchNorm folded into convs (why/fold.py): the folded copy computes the net's function, folds exactly
the BatchNorms that read a conv, leaves the net alone, works in place only where nothing else reads the
input, and moves along the folded directions as the net moves along its own."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnet_core.config import cifar_config, make_config
from resnet_core.model import build_model
from resnet_core.why.fold import foldable_pairs, folded, folded_shift, inplace_safe

KINDS = {"post-A": {}, "pre-B": {"style": "pre", "shortcut": "B"}, "plain": {"skip": False},
         "post-C": {"shortcut": "C"}, "bottleneck": {"block": "bottleneck"}, "sigmoid": {"activation": "sigmoid"},
         "no-BN": {"batchnorm": False}, "pre-no-BN": {"style": "pre", "batchnorm": False}}


def net(**kw):
    torch.manual_seed(0)
    model = build_model(make_config(cifar_config(8, in_channels=1, image_size=12), widths=(8, 16, 16), **kw))
    model.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics far from 0 and 1, so a wrong fold shows
            model(3 * torch.randn(16, 1, 12, 12) + 1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("kw", KINDS.values(), ids=KINDS.keys())
def test_the_folded_copy_is_the_same_function_and_the_net_is_untouched(kw):
    model = net(**kw)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 1, 12, 12)
    x_kept = x.clone()
    fast = folded(model, inplace=True)
    with torch.no_grad():
        want, got = model(x), fast(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(x, x_kept)  # in place never reaches the caller's input
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    pairs = foldable_pairs(model)
    left = [m for m in fast.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(left) == len(bns) - len(pairs)  # each pair's BatchNorm is gone from the copy, the others stay
    for conv, bn in pairs:
        assert isinstance(model.get_submodule(conv), nn.Conv2d) and isinstance(model.get_submodule(bn), nn.BatchNorm2d)
        assert isinstance(fast.get_submodule(bn), nn.Identity) and fast.get_submodule(conv).bias is not None


def test_which_batchnorms_fold():
    post, pre = net(), net(style="pre", shortcut="B")
    blocks = len(post.blocks())
    # post-activation: the stem's and both of each block's BatchNorms read a conv
    assert len(foldable_pairs(post)) == 1 + 2 * blocks
    # pre-activation: a block's first BatchNorm reads the block's input (a sum), so only its second folds,
    # and the projections (conv then BatchNorm) of the blocks that change shape
    projections = sum(isinstance(b.downsample, nn.Sequential) for _, b in pre.blocks())
    assert projections == 2 and len(foldable_pairs(pre)) == blocks + projections
    assert all(not bn.endswith(".bn1") for _, bn in foldable_pairs(pre))
    assert foldable_pairs(net(batchnorm=False)) == []


def test_in_place_only_where_nothing_else_reads_the_input():
    # pre-activation without BatchNorm: act1 reads the block's input itself (bn1 is an Identity), which the
    # shortcut reads too, so act1 must not work in place; act2 reads conv1's output alone
    names = inplace_safe(net(style="pre", batchnorm=False))
    assert not any(n.endswith("act1") for n in names) and any(n.endswith("act2") for n in names)
    assert inplace_safe(net(activation="sigmoid")) == []  # no in-place form
    fast = folded(net(), inplace=False)
    assert not any(getattr(m, "inplace", False) for m in fast.modules())


def test_the_folded_net_moves_along_the_folded_directions():
    model = net()
    params = list(model.parameters())
    g = torch.Generator().manual_seed(0)
    delta = [torch.randn(p.shape, generator=g) if p.dim() > 1 else torch.zeros_like(p) for p in params]
    shift = folded_shift(model, delta)
    base = folded(model)
    moved = build_model(model.cfg)
    moved.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p, d in zip(moved.parameters(), delta, strict=True):
            p.add_(d, alpha=0.5)
        for p, s in zip(base.parameters(), shift, strict=True):
            p.add_(s, alpha=0.5)
    x = torch.randn(8, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(base(x), moved.eval()(x), rtol=1e-4, atol=1e-5)
    # the folded biases do not move: only conv and linear weights do, and BatchNorm stays still
    for (name, p), s in zip(folded(model).named_parameters(), shift, strict=True):
        if p.dim() == 1:
            assert torch.count_nonzero(s) == 0, name
