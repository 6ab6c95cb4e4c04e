"""Loss landscape (why/landscape.py) on in-memory nets: filter-normalised directions, BN and biases
still, the centre is the trained loss, the weights restored."""

from __future__ import annotations

import pytest
import torch

from resnet_core.config import cifar_config, make_config
from resnet_core.model import build_model
from resnet_core.why.landscape import Landscape, filter_normalized_direction, landscape, mean_loss


def net(**kw):
    torch.manual_seed(0)
    model = build_model(make_config(cifar_config(8, in_channels=1, image_size=12), widths=(8, 16, 16), **kw))
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 1, 12, 12))  # running statistics that are not 0 and 1
    return model.eval()


def data(n=40):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 1, 12, 12, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_every_direction_filter_has_its_weight_filters_norm_and_bn_and_bias_get_zero():
    model = net()
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    seen = 0
    for (name, p), di in zip(model.named_parameters(), d, strict=True):
        if p.dim() == 1:  # BatchNorm's weight and bias, the classifier's bias
            assert torch.count_nonzero(di) == 0, name
            continue
        for w_f, d_f in zip(p.detach(), di, strict=True):  # each filter (output channel / fc row)
            assert float(d_f.norm()) == pytest.approx(float(w_f.norm()), rel=1e-5), name
            seen += 1
        assert not torch.allclose(di, p.detach())  # a random direction, not the weights themselves
    assert seen > 50


def test_centre_is_the_trained_loss_and_nothing_else_moves():
    model = net()
    x, y = data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    want = mean_loss(model, x, y)
    seen = []
    result = landscape(model, x, y, grid=5, seed=1, progress=seen.append)
    assert result.alphas == result.betas == (-1.0, -0.5, 0.0, 0.5, 1.0)
    # the grid point (0, 0) is the net itself, evaluated with its BatchNorms folded: equal to float rounding
    assert result.centre == pytest.approx(want, rel=1e-6)
    assert len(result.loss) == 5 and all(len(r) == 5 for r in result.loss)
    assert max(max(r) for r in result.loss) > want  # moving away raises the loss somewhere
    assert seen[-1] == 1.0 and len(seen) == 25 and seen == sorted(seen)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights restored, buffers never moved


def test_bn_and_bias_are_not_moved_at_any_grid_point():
    model = net()
    x, y = data(8)
    still = {n: p.detach().clone() for n, p in model.named_parameters() if p.dim() == 1}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    checks = []

    def check(_):
        checks.append(all(torch.equal(p.detach(), still[n]) for n, p in model.named_parameters() if p.dim() == 1)
                      and all(torch.equal(b, buffers[n]) for n, b in model.named_buffers()))

    landscape(model, x, y, grid=3, progress=check)
    assert checks == [True] * 9


def test_interpolation_ends_at_the_trained_loss_and_cache_round_trip():
    model = net()
    x, y = data()
    initial = [p.detach() + 0.1 * torch.randn_like(p) for p in model.parameters()]
    r = landscape(model, x, y, grid=3, initial=initial)
    t = list(r.interpolation_t)
    assert 0.0 in t and 1.0 in t and t == sorted(t)
    assert r.interpolation_loss[t.index(1.0)] == pytest.approx(r.centre, rel=1e-5)
    assert r.interpolation_loss[t.index(0.0)] != pytest.approx(r.centre, rel=1e-3)
    assert Landscape.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="grid"):
        landscape(model, x, y, grid=4)
    with pytest.raises(ValueError, match="landscape"):
        Landscape.from_dict({"alphas": [0], "betas": [0], "loss": [[1, 2]], "samples": 1, "seed": 0})


def test_an_off_centre_point_is_the_net_moved_along_both_directions():
    model = net()
    x, y = data()
    result = landscape(model, x, y, grid=5, seed=1)
    gen = torch.Generator().manual_seed(1)  # the directions the grid drew, in its order
    d1, d2 = filter_normalized_direction(model, gen), filter_normalized_direction(model, gen)
    moved = build_model(model.cfg)
    moved.load_state_dict(model.state_dict())
    for i, j in ((0, 4), (3, 1)):
        a, b = result.alphas[i], result.betas[j]
        moved.load_state_dict(model.state_dict())
        with torch.no_grad():
            for p, u, v in zip(moved.parameters(), d1, d2, strict=True):
                p.add_(a * u + b * v)
        want = mean_loss(moved.eval(), x, y)  # the net itself, unfolded, at (a, b)
        assert result.loss[i][j] == pytest.approx(want, rel=1e-5)
        assert abs(want - result.centre) > 1e-3  # a point that really moved
