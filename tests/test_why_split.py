"""The gradient's split at each addition (why/split.py) against torch.autograd.grad by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resnet_core.config import cifar_config, make_config
from resnet_core.model import build_model
from resnet_core.probe import TrainingProbe, gradflow
from resnet_core.why.split import SplitGrads

ROOT = Path(__file__).resolve().parents[1]


def exact(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.detach().double())


def branch_of(block, x):
    """F(x) of a BasicBlock, written out by hand from its modules (the oracle's own forward)."""
    if block.pre:
        out = block.act1(block.bn1(x))
        return block.conv2(block.act2(block.bn2(block.conv1(out)))), out
    return block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x))))), x


def hand_split(model, x, y):
    """Per block (shortcut part, branch part, total) of dL/d(fork) by torch.autograd.grad alone."""
    blocks = [b for _, b in model.blocks()]
    ins: list[torch.Tensor] = []
    handles = [b.register_forward_pre_hook(lambda m, a: ins.append(a[0])) for b in blocks]
    loss = F.cross_entropy(model(x), y)
    for h in handles:
        h.remove()
    out = []
    for block, xin in zip(blocks, ins, strict=True):
        x0 = xin.detach().requires_grad_()
        f, fork_src = branch_of(block, x0)  # recomputed from a leaf copy of the block's input
        ds = block.downsample
        projected = block.pre and isinstance(ds, torch.nn.Sequential)
        identity = ds(fork_src if projected else x0) if ds is not None else x0
        s = f + identity
        # the gradient at the sum, from the real graph: block output (pre) or the input of act2 (post)
        summed = []
        hook = (block.register_forward_hook(lambda m, a, o, keep=summed: keep.append(o)) if block.pre
                else block.act2.register_forward_pre_hook(lambda m, a, keep=summed: keep.append(a[0])))
        loss2 = F.cross_entropy(model(x), y)
        hook.remove()
        (g,) = torch.autograd.grad(loss2, summed[0])
        fork = fork_src if projected else x0
        (branch,) = torch.autograd.grad(f, fork, g, retain_graph=True)
        (short,) = torch.autograd.grad(identity, fork, g, retain_graph=True)
        (total,) = torch.autograd.grad(s, fork, g)
        out.append((short, branch, total))
    return loss, out


CASES = {
    "post-bn-A": {},
    "pre-nobn-sigmoid-A": {"style": "pre", "batchnorm": False, "activation": "sigmoid"},
    "post-B": {"shortcut": "B"},
    "pre-B": {"style": "pre", "shortcut": "B"},
}


@pytest.mark.parametrize("kw", CASES.values(), ids=CASES)
def test_parts_add_up_to_the_total_and_match_the_probe(kw):
    torch.manual_seed(0)
    cfg = make_config(cifar_config(8, in_channels=1, image_size=12), widths=(8, 16, 16), **kw)
    model = build_model(cfg).double().train()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 1, 12, 12, generator=gen, dtype=torch.float64), torch.randint(0, 10, (5,), generator=gen)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    _, hand = hand_split(model, x, y)
    model.load_state_dict(state)  # the hand passes moved BatchNorm's running stats: not the batch statistics
    with SplitGrads([b for _, b in model.blocks()], exact) as split:
        F.cross_entropy(model(x), y).backward()
    nan, zero = torch.tensor(float("nan"), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    short, branch = split.values(nan, zero)
    for i, (s, b, t) in enumerate(hand):
        torch.testing.assert_close(s + b, t, rtol=1e-10, atol=1e-14)  # the two parts add up to the total
        assert float(short[i]) == pytest.approx(float(s.norm()), rel=1e-9), i
        assert float(branch[i]) == pytest.approx(float(b.norm()), rel=1e-9), i
        assert float(s.norm()) > 0 and float(b.norm()) > 0


def test_total_at_the_block_input_is_full_backprop():
    """At the input of a post-activation block both parts meet: their sum is dL/dx as autograd gives it."""
    torch.manual_seed(0)
    model = build_model(cifar_config(8, in_channels=1, image_size=12)).double().train()
    x, y = torch.randn(4, 1, 12, 12, dtype=torch.float64), torch.tensor([1, 2, 3, 4])
    block = model.layer1[0]
    ins = []
    h = block.register_forward_pre_hook(lambda m, a: ins.append(a[0]))
    loss = F.cross_entropy(model(x), y)
    h.remove()
    (full,) = torch.autograd.grad(loss, ins[0])
    _, hand = hand_split(model, x, y)
    torch.testing.assert_close(hand[0][0] + hand[0][1], full, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("style", ["post", "pre"])
def test_zero_init_residual_block_gets_it_all_through_the_shortcut(style):
    g = gradflow(cifar_config(20, in_channels=1, image_size=16, zero_init_residual=True, style=style),
                 batch_size=8, split=True)
    assert all(b == 0.0 for _, b in g.split)
    assert all(s > 0 for s, _ in g.split) and all(v == 1.0 for v in g.shares)


def test_plain_net_has_no_shortcut_part():
    g = gradflow(cifar_config(8, in_channels=1, image_size=16, skip=False), batch_size=4, split=True)
    assert all(s == 0.0 and b > 0 for s, b in g.split) and all(v == 0.0 for v in g.shares)


def test_training_probe_logs_the_shortcut_share():
    torch.manual_seed(0)
    model = build_model(cifar_config(8, in_channels=1, image_size=12)).train()
    x, y = torch.randn(6, 1, 12, 12), torch.randint(0, 10, (6,))
    with SplitGrads([b for _, b in model.blocks()], exact) as split:
        F.cross_entropy(model(x), y).backward()
    want = [float(s / (s + b)) for s, b in zip(*split.values(torch.tensor(0.0), torch.tensor(0.0)), strict=True)]
    model.zero_grad()
    with TrainingProbe(model) as probe:
        probe.record = False
        F.cross_entropy(model(x), y).backward()
        assert np.isnan(probe.read()["shortcut_share"]).all()  # a step not logged measures nothing
        probe.record = True
        F.cross_entropy(model(x), y).backward()
        got = probe.read()["shortcut_share"]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert ((got > 0) & (got < 1)).all()
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_cli_split_adds_shortcut_and_branch():
    out = subprocess.run([sys.executable, "-m", "resnet_core", "gradflow", "--blocks", "1,1,1", "--split",
                          "--zero-init-residual", "--batch-size", "4", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert [set(b) for b in d["blocks"]] == [{"name", "norm", "shortcut", "branch"}] * 3
    assert all(b["branch"] == 0 and b["shortcut"] > 0 for b in d["blocks"])
