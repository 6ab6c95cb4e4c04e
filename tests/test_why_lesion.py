"""Lesion study (why/lesion.py): no deletion is the net itself, deletions agree with a hand-written
forward pass, and a deleted block's output comes from its shortcut alone."""

from __future__ import annotations

import pytest
import torch

from resnet_core.config import cifar_config, make_config
from resnet_core.model import build_model
from resnet_core.why.lesion import deleted, lesion_study


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = make_config(cifar_config(14, in_channels=1, image_size=12), widths=(8, 16, 16), **kw)
    model = build_model(cfg)
    model.train()
    with torch.no_grad():  # a few batches through train mode: BatchNorm's running statistics are not trivial
        for _ in range(3):
            model(torch.randn(16, 1, 12, 12))
    return model.eval()


def batch(model, n=64, seed=1):
    x = torch.randn(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(x).argmax(1)  # the net's own answers: it scores 100% undamaged
    return x, y


@pytest.mark.parametrize("kw", [{}, {"style": "pre", "shortcut": "B"}, {"skip": False}],
                         ids=["post-A", "pre-B", "plain"])
def test_no_deletion_is_the_net_and_each_deletion_matches_a_hand_forward(kw):
    model = tiny(**kw)
    x, y = batch(model)
    result = lesion_study(model, x, y, draws=2, batch_size=20)
    assert result.baseline_accuracy == 1.0
    blocks = [b for _, b in model.blocks()]
    for i in range(len(blocks)):
        if not result.removable[i]:
            assert result.single[i] is None and not kw.get("skip", True)
            continue
        with torch.no_grad():  # by hand: the net's own forward with block i swapped for its shortcut
            h = model.maxpool(model.act(model.bn1(model.conv1(x))))
            for j, b in enumerate(blocks):
                h = deleted(b, h) if j == i else b(h)
            logits = model.fc(torch.flatten(model.avgpool(model.final_act(model.final_norm(h))), 1))
        assert result.single[i] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert result.random_k == tuple(range(1, sum(result.removable) + 1))
    assert result.random_mean[0] == pytest.approx(sum(a for a in result.single if a is not None)
                                                  / sum(result.removable))
    assert len(result.random_draws[-1]) == 1 and all(len(d) == 2 for d in result.random_draws[1:-1])
    if kw.get("skip", True):
        assert all(result.removable)
    else:  # plain: the blocks that change shape (first of stages 2 and 3) cannot be deleted
        assert [n for n, r in zip(result.names, result.removable, strict=True) if not r] == ["layer2.0", "layer3.0"]


@pytest.mark.parametrize("kw", [{}, {"style": "pre"}, {"style": "pre", "shortcut": "B"}, {"shortcut": "B"}],
                         ids=["post-A", "pre-A", "pre-B", "post-B"])
def test_deleted_block_output_comes_from_the_shortcut_alone(kw):
    model = tiny(**kw)
    x = torch.randn(4, 1, 12, 12)
    blocks = [b for _, b in model.blocks()]
    with torch.no_grad():
        h = model.maxpool(model.act(model.bn1(model.conv1(x))))
        for b in blocks:
            # the oracle: the block's own forward with its branch's output replaced by zeros
            last = (b.conv2 if b.pre else b.bn2)
            hook = last.register_forward_hook(lambda m, a, o: torch.zeros_like(o))
            want = b(h)
            hook.remove()
            torch.testing.assert_close(deleted(b, h), want)
            assert not torch.equal(deleted(b, h), b(h))
            h = b(h)


def test_random_draws_are_seeded():
    model = tiny()
    x, y = batch(model)
    a, b = lesion_study(model, x, y, seed=3), lesion_study(model, x, y, seed=3)
    assert a == b
    d = lesion_study(model, x, y, draws=1).to_dict()
    assert {"baseline_accuracy", "blocks", "random"} <= set(d)
    assert set(d["blocks"][0]) == {"name", "accuracy", "removable"} and {"k", "mean_accuracy"} <= set(d["random"][0])
