"""Looking inside a trained net: confusion matrix, block images, saliency, drawings, `evaluate` on the CLI."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from resnet_core import weights
from resnet_core.cli import main
from resnet_core.inspect import drawing
from resnet_core.inspect.evaluate import confident_mistakes, confusion_matrix, evaluate, per_class, predict
from resnet_core.inspect.forward import top_channels, trace
from resnet_core.inspect.saliency import saliency
from resnet_core.inspect.training_change import block_norms, training_change
from resnet_core.loop import seeded_model
from resnet_core.recorder import RunWriter
from resnet_core.train import train
from tests.trainkit import one_thread, synthetic, tiny_model, tiny_train


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """A finished tiny run on the synthetic task, with its weights."""
    w = RunWriter(tiny_model(), tiny_train(steps=12), root=tmp_path_factory.mktemp("runs"), flush_s=0.0)
    train(tiny_model(), tiny_train(steps=12), [w], dataset=synthetic())
    return w.run_dir


def test_confusion_matrix_agrees_with_a_hand_count():
    ds = synthetic()
    model = seeded_model(tiny_model(), 3).eval()  # untrained: mistakes in every row
    p = predict(model, ds.x_test, ds.y_test, tiny_train(), ds.classes)
    with torch.no_grad():  # channels_last as predict() runs it on a CPU, so the same kernels decide each argmax
        by_hand = model(ds.x_test.contiguous(memory_format=torch.channels_last)).argmax(1).tolist()
    counts = [[0] * 4 for _ in range(4)]
    for t, q in zip(ds.y_test.tolist(), by_hand, strict=True):
        counts[t][q] += 1
    m = confusion_matrix(p.labels, p.predicted, 4)
    assert m.tolist() == counts and m.sum() == 64
    rows = per_class(m, ds.classes)
    for c in range(4):
        n = sum(counts[c])
        assert rows[c]["count"] == n and rows[c]["correct"] == counts[c][c]
        assert rows[c]["accuracy"] == (counts[c][c] / n if n else rows[c]["accuracy"])
    mistakes = confident_mistakes(p, 5)
    probs = torch.softmax(model(ds.x_test), 1).detach()
    wrong = [i for i, (t, q) in enumerate(zip(ds.y_test.tolist(), by_hand, strict=True)) if t != q]
    best = sorted(wrong, key=lambda i: -float(probs[i, by_hand[i]]))[:5]
    assert [d["index"] for d in mistakes] == best
    assert all(d["true"] != d["predicted"] for d in mistakes)
    assert mistakes[0]["probability"] == pytest.approx(float(probs[best[0], by_hand[best[0]]]), rel=1e-5)


def _branch_by_hand(block, x):
    """F(x) and the shortcut of a post-activation BasicBlock, written out from its layers."""
    f = block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x)))))
    s = block.downsample(x) if block.downsample is not None else x
    return f, s


@pytest.mark.parametrize("shortcut", ["A", "C"])
def test_block_images_agree_with_each_blocks_own_forward(shortcut):
    model = seeded_model(tiny_model(shortcut=shortcut, widths=(8, 16, 16)), 0).eval()
    image = synthetic().x_test[0]  # (1, 8, 8)
    t = trace(model, image)
    x = image.unsqueeze(0)
    with torch.no_grad():
        x = model.maxpool(model.act(model.bn1(model.conv1(x))))
        for (name, block), bt in zip(model.blocks(), t.blocks, strict=True):
            f, s = _branch_by_hand(block, x)
            out = block(x)
            assert bt.name == name
            assert torch.equal(bt.x, x[0]) and torch.allclose(bt.fx, f[0], atol=1e-6)
            assert torch.allclose(bt.shortcut, s[0], atol=1e-6) and torch.allclose(bt.total, (f + s)[0], atol=1e-6)
            assert torch.equal(bt.out, out[0]) and torch.allclose(bt.out, block.act2(f + s)[0], atol=1e-6)
            assert bt.norms["fx"] == pytest.approx(float(f.norm()), rel=1e-5)
            x = out
        assert torch.equal(t.logits, model(image.unsqueeze(0))[0])
    kinds = [b.shortcut_kind for b in t.blocks]
    assert kinds == (["identity", "zero-pad", "zero-pad"] if shortcut == "A" else ["1x1 conv"] * 3)
    assert t.probabilities.sum() == pytest.approx(1.0) and t.predicted == int(t.logits.argmax())


def test_a_plain_nets_blocks_have_no_sum():
    model = seeded_model(tiny_model(skip=False), 0).eval()
    t = trace(model, synthetic().x_test[0])
    assert all(b.shortcut is None and b.total is None and b.shortcut_kind == "none" for b in t.blocks)
    assert "total" not in t.blocks[0].norms and t.blocks[0].norms["x"] == pytest.approx(float(t.blocks[0].x.norm()))


def test_top_channels_are_the_largest_in_channel_order():
    t = torch.zeros(6, 2, 2)
    for c, v in enumerate([1, 5, 2, 9, 0, 3]):
        t[c] = v
    assert top_channels(t, 3) == [1, 3, 5]


def test_saliency_agrees_with_autograd_by_hand():
    model = seeded_model(tiny_model(), 1).eval()
    image = synthetic().x_test[5]
    s = saliency(model, image)
    x = image.clone().unsqueeze(0).requires_grad_(True)
    logits = model(x)[0]
    k = int(logits.argmax())
    (g,) = torch.autograd.grad(logits[k], x)
    assert s.target == k and torch.equal(s.grad, g[0])
    assert torch.equal(s.map, g[0].abs().amax(0)) and s.map.shape == (8, 8)
    other = saliency(model, image, target=(k + 1) % 4)
    assert not torch.equal(other.grad, s.grad)
    assert all(p.grad is None for p in model.parameters())  # weights untouched: only the input's gradient


def test_training_change_compares_initial_and_trained_on_the_same_images(record):
    trained, _ = weights.load_model(record)
    initial, _ = weights.load_model(record, "initial")
    images = synthetic().x_test[:16]
    before = {k: v.clone() for k, v in initial.state_dict().items()}
    change = training_change(trained, images, initial)
    assert set(change) == {"trained", "initial"} and len(change["trained"]) == len(change["initial"]) == 3
    assert all(torch.equal(before[k], v) for k, v in initial.state_dict().items())  # batch stats on a copy
    assert not initial.training
    # the trained figures are those of the eval-mode net, by hand for the first block
    with torch.no_grad():
        x = trained.act(trained.bn1(trained.conv1(images)))
        f, s = _branch_by_hand(trained.layer1[0], x)
    first = change["trained"][0]
    assert first.fx == pytest.approx(float(f.flatten(1).norm(dim=1).mean()), rel=1e-5)
    assert first.x == pytest.approx(float(s.flatten(1).norm(dim=1).mean()), rel=1e-5)
    assert change["initial"][0].fx != pytest.approx(first.fx, rel=1e-3)
    assert training_change(trained, images)["trained"] == change["trained"]
    assert block_norms(trained, images) == change["trained"]


def test_evaluate_reports_the_record_figure_and_per_class_rows(record):
    model, rec = weights.load_model(record)
    ev = evaluate(model, synthetic(), rec.train, recorded=rec.meta["final"]["test_accuracy"])
    d = ev.to_dict()
    assert d["test_accuracy"] == d["recorded_test_accuracy"] and d["images"] == 64
    assert [r["count"] for r in d["per_class"]] == np.bincount(synthetic().y_test.numpy(), minlength=4).tolist()
    assert sum(r["correct"] for r in d["per_class"]) == round(d["test_accuracy"] * 64)
    json.dumps(d)  # JSON as it stands: no NaN, no numpy types


# ---------------------------------------------------------------- drawings


def _canvas(draw) -> np.ndarray:
    img = np.zeros((200, 200, 4), np.uint8)
    draw(img)
    return img


def test_an_empty_drawing_is_none_and_a_stroke_is_an_mnist_style_digit():
    assert drawing.to_mnist(_canvas(lambda a: None), 0.13, 0.31) is None
    assert drawing.to_mnist(None, 0.13, 0.31) is None

    def bar(a):  # a tall white bar near the top left, opaque
        a[10:110, 20:40] = 255

    x = drawing.to_mnist(_canvas(bar), 0.13, 0.31)
    assert x.shape == (1, 28, 28)
    pix = x[0] * 0.31 + 0.13  # back to [0, 1]
    assert float(pix.min()) == pytest.approx(0.0, abs=1e-6) and float(pix.max()) == pytest.approx(1.0, abs=1e-6)
    rows = torch.nonzero(pix > 0.5)[:, 0]
    assert int(rows.max() - rows.min()) + 1 == 20  # the longer side scaled to 20 pixels
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    cy, cx = float((pix * ys).sum() / pix.sum()), float((pix * xs).sum() / pix.sum())
    assert abs(cy - 13.5) <= 0.5 and abs(cx - 13.5) <= 0.5  # centred by its centre of mass
    # transparent strokes are background whatever their colour
    assert drawing.to_mnist(_canvas(lambda a: a.__setitem__((slice(0, 100), slice(0, 100), slice(0, 3)), 255)),
                            0.13, 0.31) is None


# ---------------------------------------------------------------- the CLI


def test_evaluate_cli_json_last_line(record, capsys, monkeypatch):
    from resnet_core import data

    monkeypatch.setattr(data, "load", lambda *a, **k: synthetic())
    assert main(["evaluate", str(record), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    d = json.loads(out[-1])
    assert d["test_accuracy"] == d["recorded_test_accuracy"] and len(d["per_class"]) == 4
    assert main(["evaluate", str(record)]) == 0
    text = capsys.readouterr().out
    assert f"test accuracy {d['test_accuracy']:.4f} on 64 test images" in text


@pytest.mark.parametrize("case", ["pickle", "missing", "wrong shape"])
def test_evaluate_cli_refuses_bad_weights_in_one_line(record, tmp_path, capsys, case):
    import shutil

    run_dir = shutil.copytree(record, tmp_path / "r")
    target = run_dir / "model.safetensors"
    if case == "pickle":
        target.write_bytes(pickle.dumps(nn.Linear(2, 2).state_dict()))
    elif case == "missing":
        target.unlink()
    else:
        target.write_bytes(weights.to_bytes(seeded_model(tiny_model(widths=(4, 8, 16)), 0).state_dict()))
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(run_dir)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert {"pickle": "not a safetensors file", "missing": "no trained weights",
            "wrong shape": "has shape (16, 8, 3, 3)"}[case] in err


def test_images_go_back_to_pixels_in_grey_and_in_colour():
    from resnet_core.inspect.images import as_input, to_pixels

    pix = torch.randint(0, 256, (3, 5, 5), generator=torch.Generator().manual_seed(0)).float()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    x = (pix / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)  # as data.load does
    rgb = to_pixels(x, mean, std)
    assert rgb.shape == (5, 5, 3) and rgb.dtype == np.uint8 and (rgb == pix.permute(1, 2, 0).numpy()).all()
    grey = to_pixels(x[:1], mean[:1], std[:1])
    assert grey.shape == (5, 5) and (grey == pix[0].numpy()).all()
    assert as_input(x, 5) is x and as_input(x, 8).shape == (3, 8, 8)


def test_a_drawing_survives_its_link():
    x = drawing.to_mnist(_canvas(lambda a: a.__setitem__((slice(30, 170), slice(90, 110)), 255)), 0.13, 0.31)
    code = drawing.encode(x, 0.13, 0.31)
    assert len(code) == 784 and set(code) <= set("0123456789abcdef")
    back = drawing.decode(code, 0.13, 0.31)
    assert torch.equal(drawing.quantised(x, 0.13, 0.31), back)
    assert float((back - x).abs().max()) <= 0.5 / 15 / 0.31 + 1e-6  # half a grey level, normalised
    for bad in ("", "g" * 784, "0" * 783):
        with pytest.raises(ValueError, match="784 hex digits"):
            drawing.decode(bad, 0.13, 0.31)
