"""probe.py against oracles: DESIGN.md's table, p.grad.norm() and retain_grad() by hand, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resnet_core import layout
from resnet_core.config import cifar_config, preset
from resnet_core.model import build_model, weighted_layers
from resnet_core.probe import GradFlow, TrainingProbe, gradflow

ROOT = Path(__file__).resolve().parents[1]


def mnist_like(depth: int, **kw) -> object:
    """DESIGN.md's measuring conditions: CIFAR layout on 1x28x28 inputs."""
    return cifar_config(depth, in_channels=1, image_size=28, **kw)


# ---------------------------------------------------------------- gradflow: DESIGN.md's table


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_without_bn_plain_gradient_vanishes_and_skips_carry_it(seed):
    assert gradflow(mnist_like(20, batchnorm=False, skip=False), seed=seed).ratio < 1e-4
    assert gradflow(mnist_like(20, batchnorm=False, skip=True), seed=seed).ratio > 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_with_bn_plain_gradient_explodes_and_skips_keep_it_mild(seed):
    assert gradflow(mnist_like(56, batchnorm=True, skip=False), seed=seed).ratio > 100
    assert 1 < gradflow(mnist_like(56, batchnorm=True, skip=True), seed=seed).ratio < 100


def test_sigmoid_needs_pre_activation_for_a_clean_skip_path():
    assert gradflow(mnist_like(20, batchnorm=False, activation="sigmoid", style="post")).ratio < 1e-3
    assert gradflow(mnist_like(20, batchnorm=False, activation="sigmoid", style="pre")).ratio > 0.1


def test_same_seed_same_numbers_other_seed_other_numbers():
    cfg = mnist_like(20, batchnorm=False)
    a, b, c = gradflow(cfg, seed=3), gradflow(cfg, seed=3), gradflow(cfg, seed=4)
    assert a == b
    assert a.to_dict() == b.to_dict()
    assert a.blocks != c.blocks


def test_gradflow_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    gradflow(mnist_like(8), seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_names_are_in_network_order_and_match_the_model():
    cfg = mnist_like(20)
    g = gradflow(cfg)
    model = build_model(cfg)
    assert [n for n, _ in g.blocks] == [n for n, _ in model.blocks()]
    assert [n for n, _ in g.layers] == [n for n, _ in weighted_layers(model)]
    assert g.layers[0][0] == "conv1" and g.layers[-1][0] == "fc"
    assert g.layer_kinds[0] == "conv" and g.layer_kinds[-1] == "fc" and "bn" in g.layer_kinds
    assert "bn" not in gradflow(mnist_like(20, batchnorm=False)).layer_kinds


def test_block_norms_equal_retain_grad_by_hand_in_float64():
    cfg = mnist_like(14, batchnorm=False, skip=False)
    seed = 5
    g = gradflow(cfg, seed=seed, batch_size=8)
    torch.manual_seed(seed)
    model = build_model(cfg).train()
    # the same memory layout as gradflow's pass: the two layouts run different kernels, whose fp32 rounding
    # differs by up to ~4e-4 relative in this vanishing plain net on the AVX2 kernels (CPUs without AVX-512)
    fmt = layout.memory_format(model, "cpu")
    model = model.to(memory_format=fmt)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 1, 28, 28, generator=gen).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (8,), generator=gen)
    outs: list[torch.Tensor] = []
    handles = [b.register_forward_hook(partial(keep_grad, outs)) for _, b in model.blocks()]
    F.cross_entropy(model(x), y).backward()
    for h in handles:
        h.remove()
    expected = [o.grad.double().norm().item() for o in outs]
    np.testing.assert_allclose([v for _, v in g.blocks], expected, rtol=1e-4)
    np.testing.assert_allclose([v for _, v in g.layers],
                               [m.weight.grad.double().norm().item() for _, m in weighted_layers(model)],
                               rtol=1e-4)
    assert g.ratio == pytest.approx(expected[0] / expected[-1], rel=1e-4)


def test_a_real_batch_can_be_given():
    cfg = mnist_like(8)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    g = gradflow(cfg, x=x, y=y)
    assert g.batch_size == 4 and all(v > 0 for _, v in g.blocks)
    with pytest.raises(ValueError, match="both"):
        gradflow(cfg, x=x)
    with pytest.raises(ValueError, match="shape"):
        gradflow(cfg, x=torch.rand(4, 3, 28, 28), y=y)
    with pytest.raises(ValueError, match="batch_size"):
        gradflow(cfg, batch_size=0)


def test_to_dict_is_json_and_complete():
    cfg = mnist_like(8)
    d = json.loads(json.dumps(gradflow(cfg, seed=2).to_dict()))
    assert {"blocks", "layers", "ratio", "config", "seed"} <= set(d)
    assert d["seed"] == 2 and d["config"] == cfg.to_dict()
    assert set(d["blocks"][0]) == {"name", "norm"} and {"name", "norm"} <= set(d["layers"][0])
    split = gradflow(cfg, seed=2, split=True).to_dict()["blocks"][0]
    assert set(split) == {"name", "norm", "shortcut", "branch"} and split["shortcut"] > 0 < split["branch"]
    assert d["ratio"] == pytest.approx(d["blocks"][0]["norm"] / d["blocks"][-1]["norm"])


def test_ratio_of_zero_gradients_is_not_a_division_error():
    g = GradFlow(config=mnist_like(8), seed=0, batch_size=1, loss=0.0,
                 blocks=(("a", 0.0), ("b", 0.0)), layers=(), layer_kinds=())
    assert math.isnan(g.ratio)
    assert GradFlow(**{**g.__dict__, "blocks": (("a", 1.0), ("b", 0.0))}).ratio == math.inf
    assert GradFlow(**{**g.__dict__, "blocks": (("a", 0.0), ("b", 2.0))}).ratio == 0.0


# ---------------------------------------------------------------- TrainingProbe


def small_model(**kw):
    torch.manual_seed(0)
    return build_model(cifar_config(8, image_size=16, **kw)).train()


def batch(n=6, c=3, side=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, side, side, generator=g), torch.randint(0, 10, (n,), generator=g)


def keep_grad(outs, module, args, out):
    out.retain_grad()
    outs.append(out)


def no_hooks_left(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


@pytest.mark.parametrize("kw", [{}, {"batchnorm": False, "skip": False}, {"style": "pre"}])
def test_probe_equals_hand_computation(kw):
    model = small_model(**kw)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    layers = weighted_layers(model)
    with TrainingProbe(model) as probe:
        assert probe.layer_names == [n for n, _ in layers]
        assert probe.block_names == [n for n, _ in model.blocks()]
        for step in range(2):  # the second step also checks the reused weight buffer
            x, y = batch(seed=step)
            outs: list[torch.Tensor] = []
            hand = [b.register_forward_hook(partial(keep_grad, outs)) for _, b in model.blocks()]
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            for h in hand:
                h.remove()
            probe.after_backward()
            probe.before_step()
            before = [m.weight.detach().clone() for _, m in layers]
            grads = [m.weight.grad.norm().item() for _, m in layers]
            opt.step()
            probe.after_step()
            r = probe.read()
            assert {k: v.shape for k, v in r.items()} == {
                "weight_grad": (len(layers),), "weight_norm": (len(layers),),
                "update_ratio": (len(layers),), "act_grad": (len(outs),), "shortcut_share": (len(outs),)}
            np.testing.assert_allclose(r["weight_grad"], grads, rtol=1e-5)
            np.testing.assert_allclose(r["act_grad"], [o.grad.norm().item() for o in outs], rtol=1e-5)
            np.testing.assert_allclose(r["weight_norm"], [m.weight.norm().item() for _, m in layers], rtol=1e-5)
            ratios = [((m.weight - w0).norm() / w0.norm()).item() for (_, m), w0 in zip(layers, before, strict=True)]
            np.testing.assert_allclose(r["update_ratio"], ratios, rtol=1e-4)
    assert no_hooks_left(model)


def test_probe_before_any_measurement_reads_nan():
    model = small_model()
    with TrainingProbe(model) as probe:
        r = probe.read()
        assert all(np.isnan(v).all() for v in r.values())
        x, y = batch()
        F.cross_entropy(model(x), y).backward()
        probe.after_step()  # no before_step: weight norms, but no update ratio
        r = probe.read()
        assert np.isfinite(r["act_grad"]).all() and np.isfinite(r["weight_norm"]).all()
        assert np.isnan(r["update_ratio"]).all() and np.isnan(r["weight_grad"]).all()


def test_record_false_skips_the_block_hooks():
    model = small_model()
    with TrainingProbe(model) as probe:
        probe.record = False
        x, y = batch()
        F.cross_entropy(model(x), y).backward()
        assert np.isnan(probe.read()["act_grad"]).all()
        probe.record = True
        F.cross_entropy(model(x), y).backward()
        assert np.isfinite(probe.read()["act_grad"]).all()


def test_eval_under_no_grad_is_ignored():
    model = small_model()
    with TrainingProbe(model) as probe, torch.no_grad():
        model.eval()(batch()[0])
        assert np.isnan(probe.read()["act_grad"]).all()


def test_activations_false_registers_nothing():
    model = small_model()
    with TrainingProbe(model, activations=False) as probe:
        assert no_hooks_left(model)
        x, y = batch()
        F.cross_entropy(model(x), y).backward()
        probe.after_backward()
        r = probe.read()
        assert probe.block_names == [] and r["act_grad"].shape == (0,)
        assert np.isfinite(r["weight_grad"]).all()


def test_hooks_removed_even_when_the_block_raises():
    model = small_model()
    with pytest.raises(RuntimeError, match="boom"), TrainingProbe(model):
        assert not no_hooks_left(model)  # the hooks are really there inside
        raise RuntimeError("boom")
    assert no_hooks_left(model)
    x, y = batch()
    F.cross_entropy(model(x), y).backward()  # and nothing fires after exit


def test_frozen_layer_reads_nan_not_an_error():
    model = small_model()
    model.conv1.weight.requires_grad_(False)
    with TrainingProbe(model) as probe:
        x, y = batch()
        F.cross_entropy(model(x), y).backward()
        probe.after_backward()
        wg = probe.read()["weight_grad"]
        assert np.isnan(wg[0]) and np.isfinite(wg[1:]).all()


def test_zero_initialised_layers_have_an_infinite_update_ratio():
    model = small_model(zero_init_residual=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with TrainingProbe(model) as probe:
        x, y = batch()
        F.cross_entropy(model(x), y).backward()
        probe.before_step()
        opt.step()
        probe.after_step()
        r = probe.read()
    zeroed = [i for i, n in enumerate(probe.layer_names) if n.endswith(".bn2")]
    assert zeroed and all(r["weight_norm"][i] > 0 for i in zeroed)
    assert all(np.isinf(r["update_ratio"][i]) for i in zeroed)


# ---------------------------------------------------------------- CLI


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resnet_core", "gradflow", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_gradflow_json_residual_and_plain():
    r = cli("--preset", "resnet20", "--no-bn", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    model = build_model(preset("resnet20", batchnorm=False, in_channels=1, image_size=28))
    assert [b["name"] for b in d["blocks"]] == [n for n, _ in model.blocks()]
    assert [x["name"] for x in d["layers"]] == [n for n, _ in weighted_layers(model)]
    assert d["ratio"] > 0.1
    assert d["config"]["in_channels"] == 1 and d["config"]["image_size"] == 28
    r = cli("--preset", "resnet20", "--no-bn", "--no-skip", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ratio"] < 1e-4


def test_cli_gradflow_text_and_bad_flags():
    # each run imports torch (seconds), so one good run and three kinds of bad flag
    r = cli("--preset", "resnet20", "--seed", "1")
    assert r.returncode == 0 and "first block / last block" in r.stdout
    for bad in (["--bogus"], ["--activation", "swish"], ["--batch-size", "0"]):
        r = cli(*bad)
        assert r.returncode == 2, bad
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to check for device syncs")
def test_probe_does_not_sync_cuda_before_read():
    model = small_model().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = (t.cuda() for t in batch())
    with TrainingProbe(model) as probe:
        for _ in range(2):  # the second step reuses the weight buffer
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")  # any host sync in the probe now raises
            try:
                probe.after_backward()
                probe.before_step()
                opt.step()
                probe.after_step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            r = probe.read()
            assert all(np.isfinite(v).all() for v in r.values())
