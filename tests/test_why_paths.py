"""Path lengths (why/paths.py): binomial counts, k = 0 against a detached-branch oracle, and the
gradient vectors of every path of a 2-block net adding up to full backpropagation."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from resnet_core.config import ModelConfig, cifar_config, make_config
from resnet_core.model import build_model
from resnet_core.why.paths import BRANCH, SHORTCUT, Tape, _branch_end, at_init, measure

ROOT = Path(__file__).resolve().parents[1]


def two_blocks(**kw) -> ModelConfig:
    return make_config(ModelConfig(layers=(1, 1), widths=(8, 16), in_channels=1, image_size=12), **kw)


def net_and_batch(cfg, seed=0):
    torch.manual_seed(seed)
    model = build_model(cfg).double().train()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(6, 1, cfg.image_size, cfg.image_size, generator=gen, dtype=torch.float64)
    return model, x, torch.randint(0, 10, (6,), generator=gen)


def test_counts_are_binomial_and_totals_are_count_times_gradient():
    p = at_init(cifar_config(20, in_channels=1, image_size=12), batch_size=4, samples=1)
    n = 9
    assert p.lengths == tuple(range(n + 1)) and p.count == tuple(math.comb(n, k) for k in range(n + 1))
    assert sum(p.count) == 2 ** n
    assert p.total == pytest.approx([c * g for c, g in zip(p.count, p.gradient, strict=True)])
    assert all(g > 0 for g in p.gradient) and p.share_up_to(n) == pytest.approx(1.0)
    a, b = p.central(0.9)
    assert 0 <= a <= b <= n and sum(p.total[a:b + 1]) >= 0.9 * sum(p.total) - 1e-12


@pytest.mark.parametrize("kw", [{}, {"style": "pre", "batchnorm": False}, {"shortcut": "B"}], ids=["post", "pre", "B"])
def test_every_path_of_a_two_block_net_adds_up_to_full_backprop(kw):
    model, x, y = net_and_batch(two_blocks(**kw))
    blocks = [b for _, b in model.blocks()]
    with Tape(blocks) as tape:
        loss = F.cross_entropy(model(x), y)
        x0 = tape.taped[0].x
        (full,) = torch.autograd.grad(loss, x0, retain_graph=True)  # ordinary backpropagation
        (g_last,) = torch.autograd.grad(loss, tape.taped[-1].out, retain_graph=True)
        paths = [tape.backward(g_last, modes) for modes in itertools.product((BRANCH, SHORTCUT), repeat=2)]
    torch.testing.assert_close(sum(paths), full, rtol=1e-10, atol=1e-15)
    norms = [float(p.norm()) for p in paths]
    assert all(v > 0 for v in norms) and sum(norms) > float(full.norm())  # vectors add up; norms do not


def test_length_zero_is_the_shortcut_only_gradient():
    cfg = cifar_config(14, in_channels=1, image_size=12)
    model, x, y = net_and_batch(cfg)
    blocks = [b for _, b in model.blocks()]
    # the oracle: the same forward values, each branch's output detached, so the gradient takes shortcuts only
    ins = []
    hooks = [blocks[0].register_forward_pre_hook(lambda m, a: ins.append(a[0]))]
    hooks += [_branch_end(b).register_forward_hook(lambda m, a, o: o.detach()) for b in blocks]
    loss = F.cross_entropy(model(x), y)
    (oracle,) = torch.autograd.grad(loss, ins[0])
    for h in hooks:
        h.remove()
    got = measure(model, x, y, samples=1)
    assert got[0] == pytest.approx(float(oracle.norm()), rel=1e-9)
    assert got[0] != pytest.approx(got[len(blocks)], rel=1e-3)  # the all-branch path differs


def test_plain_net_is_refused():
    model, x, y = net_and_batch(two_blocks(skip=False))
    with pytest.raises(ValueError, match="residual"):
        measure(model, x, y)


def test_cli_paths_preset_json():
    out = subprocess.run([sys.executable, "-m", "resnet_core", "paths", "--preset", "resnet20", "--blocks", "1,1,1",
                          "--batch-size", "4", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["lengths"] == [0, 1, 2, 3] and d["count"] == [1, 3, 3, 1]
    assert d["total"] == pytest.approx([c * g for c, g in zip(d["count"], d["gradient"], strict=True)])
    bad = subprocess.run([sys.executable, "-m", "resnet_core", "paths", "--preset", "plain20", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "residual" in bad.stderr and "Traceback" not in bad.stderr
