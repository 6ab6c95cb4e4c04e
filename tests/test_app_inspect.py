"""The Inspect page through AppTest: several runs (one without weights, one with damaged weights, a twin
pair), the recorded accuracy reproduced, a digit by link, a drawing by link, bad links."""

from __future__ import annotations

import functools
import pickle
import shutil

import pytest
import torch

from resnet_core import data, runs, weights
from resnet_core.inspect import drawing
from resnet_core.inspect.forward import trace
from resnet_core.recorder import RunWriter
from resnet_core.train import model_for_dataset, train
from resnet_core.twins import link_records, train_twins
from tests import apptest
from tests.apptest import charts
from tests.trainkit import mnist_tiny, one_thread, tiny_train

open_page = functools.partial(apptest.open_page, "inspect", timeout=120)
CFG = model_for_dataset(mnist_tiny(), "mnist-5k")
TRAIN = tiny_train(steps=8, batch_size=32, optimizer="adam", lr=3e-3)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """A runs folder: a single run, a twin pair, a copy without weights and a copy with a pickle for weights."""
    root = tmp_path_factory.mktemp("runs")
    ds = data.load("mnist-5k")
    with one_thread():
        single = RunWriter(CFG, TRAIN, root=root, label="single", flush_s=0.0)
        train(CFG, TRAIN, [single], dataset=ds)
        res = RunWriter(CFG.residual_twin(), TRAIN, root=root, label="twin-res", flush_s=0.0)
        plain = RunWriter(CFG.plain_twin(), TRAIN, root=root, label="twin-plain", flush_s=0.0)
        link_records(res, plain)
        train_twins(CFG, TRAIN, [res], [plain], dataset=ds)
    old = root / "old-run"
    shutil.copytree(single.run_dir, old)
    for f in runs.WEIGHTS_FILES.values():
        (old / f).unlink()
    _relabel(old, "old")
    fresh = root / "no-initial-run"  # trained weights but no initial ones (a big net's record)
    shutil.copytree(single.run_dir, fresh)
    (fresh / runs.WEIGHTS_FILES["initial"]).unlink()
    _relabel(fresh, "no-initial")
    evil = root / "evil-run"
    shutil.copytree(single.run_dir, evil)
    (evil / "model.safetensors").write_bytes(pickle.dumps({"fc.weight": torch.zeros(2)}))
    _relabel(evil, "evil")
    return {"root": root, "single": single.run_dir.name, "res": res.run_dir.name, "plain": plain.run_dir.name,
            "old": "old-run", "evil": "evil-run", "fresh": "no-initial-run"}


def _relabel(path, label):
    import json

    meta = json.loads((path / "config.json").read_text())
    meta["label"] = label
    (path / "config.json").write_text(json.dumps(meta))


@pytest.fixture
def root(records, monkeypatch):
    monkeypatch.setenv("RESNET_RUNS_DIR", str(records["root"]))
    return records


def texts(at, kind: str) -> str:
    return " ".join(e.value for e in getattr(at, kind))


def test_a_run_opens_with_the_recorded_accuracy_and_every_part(root):
    at = open_page(ins_run=root["single"])
    rec = runs.load_run(root["root"] / root["single"])
    assert at.selectbox(key="ins_run").value == root["single"]
    acc = rec.meta["final"]["test_accuracy"]
    assert at.metric[0].value == f"{acc:.1%}" and "— the same." in texts(at, "caption")
    drawn = charts(at)
    for key in ("ins_pred_0_confusion", "ins_pred_0_per_class", "ins_digit_0_probs", "ins_digit_0_block",
                "ins_digit_0_norms", "ins_digit_0_saliency", "ins_change_0_change"):
        assert key in drawn, key
    assert {t["name"] for t in drawn["ins_change_0_change"]["data"]} == {"at initialisation", "trained"}
    options = at.selectbox(key="ins_run").options
    assert any(o.endswith("· no weights") and o.startswith("old") for o in options)
    assert at.query_params["ins_run"] == root["single"]


def test_no_runs_yet_says_where_they_come_from(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path))
    at = open_page()
    assert "No finished runs yet" in texts(at, "info") and not charts(at)


def test_a_record_without_weights_opens_with_a_note(root):
    at = open_page(ins_run=root["old"])
    assert "old has no saved weights" in texts(at, "info").replace("`", "").replace("  ", " ")
    assert not at.error and not charts(at) and not at.metric


def test_without_initial_weights_only_the_trained_net_is_compared_and_the_page_says_why(root):
    at = open_page(ins_run=root["fresh"])
    change = charts(at)["ins_change_0_change"]
    assert [t["name"] for t in change["data"]] == ["trained"]
    assert "kept no initial weights" in texts(at, "caption")


def test_damaged_weights_are_refused_naming_what_is_wrong(root):
    at = open_page(ins_run=root["evil"])
    err = texts(at, "error")
    assert "cannot be inspected" in err and "not a safetensors file" in err and "never loaded" in err
    assert not charts(at)


def test_a_twin_run_shows_both_nets_side_by_side(root):
    at = open_page(ins_run=root["plain"])  # either half opens the pair, residual first
    assert [s.value for s in at.subheader][:2] == ["residual net · twin-res", "plain net · twin-plain"]
    drawn = charts(at)
    assert {"ins_pred_0_confusion", "ins_pred_1_confusion", "ins_digit_0_block", "ins_digit_1_block",
            "ins_change_0_change", "ins_change_1_change"} <= set(drawn)
    # the plain net's blocks have no sum to draw: two rows of maps, the residual net's three
    assert drawn["ins_digit_0_block"]["layout"]["title"]["text"].startswith("Block layer1.0: what skips")
    assert "(no skip)" in drawn["ins_digit_1_block"]["layout"]["title"]["text"]


def test_a_digit_by_link_is_that_test_image_and_its_prediction(root):
    at = open_page(ins_run=root["single"], ins_idx="17", ins_block="layer2.0")
    ds = data.load("mnist-5k")
    model, _ = weights.load_model(root["root"] / root["single"])
    t = trace(model, ds.x_test[17])
    label = ds.classes[int(ds.y_test[17])]
    assert f'caption: "test image #17: a {label}"' in str(at.get("image")[-1].proto)
    pred = next(m.value for m in at.markdown if m.value.startswith("**Prediction"))
    assert f"` {ds.classes[t.predicted]} `" in pred and f"{float(t.probabilities[t.predicted]):.1%}" in pred
    assert charts(at)["ins_digit_0_block"]["layout"]["title"]["text"].startswith("Block layer2.0")
    at.number_input(key="ins_idx").set_value(18).run()
    assert at.query_params["ins_idx"] == "18"


def test_a_drawing_by_link_is_predicted_as_drawn(root):
    ds = data.load("mnist-5k")
    digit = ds.x_test[3]
    code = drawing.encode(digit, ds.mean[0], ds.std[0])
    at = open_page(ins_run=root["single"], ins_src="draw", ins_draw=code)
    model, _ = weights.load_model(root["root"] / root["single"])
    t = trace(model, drawing.decode(code, ds.mean[0], ds.std[0]))
    pred = next(m.value for m in at.markdown if m.value.startswith("**Prediction"))
    assert f"` {ds.classes[t.predicted]} `" in pred and f"{float(t.probabilities[t.predicted]):.1%}" in pred
    assert at.query_params["ins_draw"] == code


def test_an_empty_drawing_gets_a_note_not_a_prediction(root):
    at = open_page(ins_run=root["single"], ins_src="draw")
    assert "The canvas is empty" in texts(at, "info")
    assert not any(m.value.startswith("**Prediction") for m in at.markdown)
    assert "ins_digit_0_probs" not in charts(at)


def test_bad_links_fall_back_with_a_note(root):
    at = open_page(ins_run="no-such-run", ins_src="draw", ins_draw="zz", ins_n="7")
    warn = texts(at, "warning")
    assert "ins_run='no-such-run' was ignored" in warn and "ins_n='7' was ignored" in warn
    assert "ins_draw='zz' was ignored (allowed: 784 hex digits 0-9a-f)" in warn
    box = at.selectbox(key="ins_run")  # the fallback: the newest run with weights (all here share one second)
    assert box.value in (root["single"], root["res"], root["plain"], root["fresh"])
    assert box.options[box.index] == next(o for o in box.options if not o.endswith("no weights"))
    at = open_page(ins_run=root["single"], ins_idx="5000", ins_block="layer9.9")
    warn = texts(at, "warning")
    assert "ins_idx='5000' was ignored (allowed: a test image from 0 to 999); using 999" in warn
    assert "ins_block='layer9.9' was ignored" in warn and at.query_params["ins_block"] == "layer1.0"


def test_a_cifar_run_shows_colour_images_and_class_names_and_no_canvas(tmp_path, monkeypatch):
    """A CIFAR-10 record, opened with a stand-in for CIFAR-10's files (3x32x32 images, its class names)."""
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, 32, 32, generator=g), torch.arange(40) % 10
    fake = data.TensorDataset("cifar10", x, y, x[:20], y[:20], 3, 32, 10, names, (0.49, 0.48, 0.45),
                              (0.25, 0.24, 0.26))
    monkeypatch.setattr(data, "load", lambda *a, **k: fake)
    cfg = model_for_dataset(mnist_tiny(), "cifar10")
    train_cfg = tiny_train(steps=3, batch_size=8, dataset="cifar10")
    w = RunWriter(cfg, train_cfg, root=tmp_path, label="cifar", flush_s=0.0)
    with one_thread():
        train(cfg, train_cfg, [w], dataset=fake)
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path))
    at = open_page(ins_src="draw")  # a link asking for the canvas on a CIFAR run gets the test images
    assert at.radio(key="ins_src").options == ["a test image"] and at.radio(key="ins_src").value == "test"
    assert not any("canvas" in i.value for i in at.info)
    assert 'caption: "test image #0: a airplane"' in str(at.get("image")[-1].proto)
    drawn = charts(at)
    assert drawn["ins_pred_0_confusion"]["data"][0]["x"] == list(names)
    assert [t for t in drawn["ins_digit_0_probs"]["data"][0]["y"]] == list(names)
