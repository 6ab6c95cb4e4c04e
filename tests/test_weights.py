"""Weights in the run record: written for every ending, read back exactly, refused when wrong or unsafe."""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save as st_save

from resnet_core import data, loop, runs, weights
from resnet_core.config import preset
from resnet_core.inspect.evaluate import accuracy, predict
from resnet_core.loop import seeded_model
from resnet_core.recorder import RunWriter
from resnet_core.runzip import ImportRefused, export_zip, import_zip
from resnet_core.train import model_for_dataset, train
from resnet_core.twins import link_records, train_twins
from resnet_core.weights import MissingWeights, WeightsError
from tests.trainkit import mnist_tiny, one_thread, synthetic, tiny_model, tiny_train


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def run(tmp_path, model_cfg=None, train_cfg=None, extra=(), ds=None, **writer_kw):
    """Train with a RunWriter; (result, writer, the module trained) — on_start hands the module over."""
    model_cfg, train_cfg = model_cfg or tiny_model(), train_cfg or tiny_train()
    w = RunWriter(model_cfg, train_cfg, root=tmp_path, flush_s=0.0, **writer_kw)
    seen = {}
    cb = SimpleNamespace(on_start=lambda info: seen.update(model=info["model"]))
    result = train(model_cfg, train_cfg, [w, cb, *extra], dataset=ds or synthetic())
    return result, w, seen["model"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def test_round_trip_through_the_record(tmp_path):
    result, w, model = run(tmp_path)
    rec = runs.load_run(w.run_dir)
    assert result.status == "finished" and rec.has_weights and rec.has_initial_weights
    trained = weights.load(w.run_dir)
    assert same(trained, model.state_dict())  # buffers too: BN running stats, num_batches_tracked
    assert int(trained["bn1.num_batches_tracked"]) == 20
    initial = weights.load(w.run_dir, "initial")
    assert same(initial, seeded_model(tiny_model(), 0).state_dict())
    assert not same(initial, trained)
    net, rec2 = weights.load_model(w.run_dir)
    assert not net.training and rec2.model == tiny_model()
    assert same(net.state_dict(), model.state_dict())


def test_rebuilt_net_gives_the_recorded_test_accuracy_exactly(tmp_path):
    ds = data.load("mnist-5k")
    cfg = model_for_dataset(mnist_tiny(), "mnist-5k")
    result, w, _ = run(tmp_path, cfg, tiny_train(steps=40, batch_size=64, optimizer="adam", lr=1e-2), ds=ds)
    recorded = runs.load_run(w.run_dir).meta["final"]["test_accuracy"]
    assert recorded == result.test_accuracy
    net, rec = weights.load_model(w.run_dir)
    p = predict(net, ds.x_test, ds.y_test, rec.train, ds.classes)
    assert accuracy(p) == recorded and len(p.labels) == 1000
    assert 0.15 < recorded < 1.0 and len(set(p.predicted.tolist())) >= 4  # half-trained: one image could flip it


def test_weights_are_written_when_a_run_is_stopped(tmp_path):
    calls = []
    stopper = SimpleNamespace(should_stop=lambda: calls.append(1) or len(calls) > 7)
    result, w, model = run(tmp_path, extra=[stopper])
    assert result.status == "stopped" and result.step == 7
    assert int(weights.load(w.run_dir)["bn1.num_batches_tracked"]) == 7
    assert same(weights.load(w.run_dir), model.state_dict())


def test_a_diverged_run_keeps_its_last_finite_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "SNAPSHOT_S", 0.0)  # a copy at every logged step
    seen, states, net = [], {}, {}

    def on_log(row):
        # The run is made to diverge: the classifier's weights go to inf after step 6, so step 7's loss is
        # not finite. (A learning rate of 50 diverged this net on AVX2 kernels and ended "finished" on
        # AVX-512 ones: which kernels run decides whether a real blow-up happens in 60 steps.)
        if row["step"] == 6:
            with torch.no_grad():
                net["model"].fc.weight.fill_(math.inf)
        states[row["step"]] = loop.cpu_state(net["model"])

    spy = SimpleNamespace(on_weights=lambda which, sd: seen.append((which, sd)),
                          on_start=lambda info: net.update(model=info["model"]), on_log=on_log)
    result, w, model = run(tmp_path, train_cfg=tiny_train(lr=0.05, schedule="constant", steps=60, log_every=1),
                           extra=[spy])
    assert result.status == "diverged" and result.step == 7, (result.status, result.message)
    assert not loop.all_finite(loop.cpu_state(model))  # the net itself blew up ...
    kept = weights.load(w.run_dir)
    # ... the record keeps the last weights that were finite at a logged step: step 5's
    last = max(s for s, sd in states.items() if loop.all_finite(sd))
    assert last == 5 and same(kept, states[last]) and loop.all_finite(kept)
    assert f"the weights kept are those of step {last}" in runs.load_run(w.run_dir).meta["message"]
    assert [which for which, _ in seen] == ["initial", "final"] and same(seen[1][1], kept)


def test_a_failed_run_keeps_its_weights(tmp_path):
    def crash(row):
        if row["step"] == 4:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        run(tmp_path, extra=[SimpleNamespace(on_log=crash)])
    (run_dir,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    rec = runs.load_run(run_dir)
    assert rec.status == "failed" and rec.has_weights
    assert int(weights.load(run_dir)["bn1.num_batches_tracked"]) == 4


def test_twin_lanes_each_keep_initial_and_final_weights(tmp_path):
    # shortcut B: the residual net has projections the plain one lacks (8+ channels: see DESIGN.md's oneDNN bug)
    cfg = tiny_model(shortcut="B", widths=(8, 16, 16))
    residual_w = RunWriter(cfg.residual_twin(), tiny_train(), root=tmp_path, flush_s=0.0)
    plain_w = RunWriter(cfg.plain_twin(), tiny_train(), root=tmp_path, flush_s=0.0)
    link_records(residual_w, plain_w)
    train_twins(cfg, tiny_train(steps=6), [residual_w], [plain_w], dataset=synthetic())
    r0, p0 = weights.load(residual_w.run_dir, "initial"), weights.load(plain_w.run_dir, "initial")
    assert set(p0) < set(r0) and all(torch.equal(p0[k], r0[k]) for k in p0)  # the same start where shared
    r1, p1 = weights.load(residual_w.run_dir), weights.load(plain_w.run_dir)
    assert not torch.equal(r1["fc.weight"], p1["fc.weight"])


def test_initial_weights_are_kept_where_cheap_or_when_asked(tmp_path):
    _, w, _ = run(tmp_path, keep_initial=False)
    assert runs.load_run(w.run_dir).has_weights and not runs.load_run(w.run_dir).has_initial_weights
    big = RunWriter(preset("resnet18"), tiny_train(), root=tmp_path)
    assert not big.keeps("initial") and big.keeps("final")
    big.meta["twin"] = "x"
    assert big.keeps("initial")
    assert RunWriter(preset("resnet56"), tiny_train(), root=tmp_path).keeps("initial")


def test_an_old_record_without_weights_still_loads(tmp_path, trained):
    run_dir = _copy(trained, tmp_path)
    for f in runs.WEIGHTS_FILES.values():
        (run_dir / f).unlink()
    rec = runs.load_run(run_dir)
    assert rec.damaged is None and rec.status == "finished" and not rec.has_weights
    with pytest.raises(MissingWeights, match="no trained weights"):
        weights.load_model(run_dir)


# ---------------------------------------------------------------- refused


def _state(**overrides):
    return seeded_model(tiny_model(**overrides), 0).state_dict()


def _header_only(header: dict, body: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + body


def _bad_files():
    good = _state()
    extra = {**good, "evil.weight": torch.zeros(3)}
    missing = {k: v for k, v in good.items() if k != "fc.bias"}
    half = {k: (v.half() if k == "fc.weight" else v) for k, v in good.items()}
    wide = _state(widths=(4, 8, 16))
    size = {k: v.numel() * v.element_size() for k, v in good.items()}
    header = {k: {"dtype": weights.expected(tiny_model())[k][0], "shape": list(v.shape),
                  "data_offsets": [0, size[k]]} for k, v in good.items()}  # every tensor on the same bytes
    huge = struct.pack("<Q", weights.MAX_HEADER_BYTES + 1) + b"{" + b" " * (weights.MAX_HEADER_BYTES + 1)
    buf = io.BytesIO()
    torch.save(good, buf)
    return {
        "wrong shape": (st_save(wide), "has shape (16, 8, 3, 3); the config needs (8, 8, 3, 3)"),
        "extra tensor": (st_save(extra), "1 tensor(s) the config has no place for: evil.weight"),
        "missing tensor": (st_save(missing), "1 tensor(s) the config needs are missing: fc.bias"),
        "wrong dtype": (st_save(half), "fc.weight has dtype F16; the config needs F32"),
        "oversized header": (huge, "header would be 1,048,577 bytes"),
        "pickle": (pickle.dumps(good), "not a safetensors file"),
        "torch.save": (buf.getvalue(), "not a safetensors file"),
        "truncated": (st_save(good)[:-10], "bytes of"),
        "overlapping": (_header_only(header, b"\0" * max(size.values())), "do not follow"),
        "empty": (b"", "too short"),
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished tiny run, copied by each test that damages it."""
    return run(tmp_path_factory.mktemp("trained"))[1].run_dir


def _copy(run_dir, tmp_path):
    import shutil

    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


@pytest.mark.parametrize("case", list(_bad_files()))
def test_bad_weights_are_refused_naming_what_is_wrong(tmp_path, monkeypatch, trained, case):
    blob, message = _bad_files()[case]
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load"))
    with pytest.raises(WeightsError, match=_re(message)):
        weights.check(blob, tiny_model())
    run_dir = _copy(trained, tmp_path)
    (run_dir / "model.safetensors").write_bytes(blob)  # e.g. a pickle renamed model.safetensors
    with pytest.raises(WeightsError, match=r"model\.safetensors: .*" + _re(message)):
        weights.load_model(run_dir)
    assert runs.load_run(run_dir).damaged is None  # the rest of the record still reads


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_an_oversized_file_is_refused_unread(tmp_path, monkeypatch, trained):
    run_dir = _copy(trained, tmp_path)
    path = run_dir / "model.safetensors"
    with open(path, "ab") as f:
        f.truncate(8 + weights.MAX_HEADER_BYTES + weights.expected_bytes(tiny_model()) + 1)
    monkeypatch.setattr(weights, "check", lambda *a: pytest.fail("read a file too big to be this net's"))
    with pytest.raises(WeightsError, match="weights of this record's net take at most"):
        weights.load(run_dir)


def test_write_weights_checks_bytes_against_its_own_config(tmp_path):
    w = RunWriter(tiny_model(), tiny_train(), root=tmp_path, flush_s=0.0)
    w.on_start({"layers": [], "blocks": [], "device": "cpu"})
    with pytest.raises(WeightsError, match="has shape"):
        w.write_weights("final", weights.to_bytes(_state(widths=(4, 8, 16))))
    assert not (w.run_dir / "model.safetensors").exists()
    good = _state()
    w.write_weights("final", weights.to_bytes(good))
    assert same(weights.load(w.run_dir), good)
    assert [p.name for p in w.run_dir.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_channels_last_weights_are_saved_contiguous_and_equal():
    model = seeded_model(tiny_model(), 0).to(memory_format=torch.channels_last)
    back = weights.check(weights.to_bytes(model.state_dict()), tiny_model())
    assert same(back, model.state_dict()) and all(t.is_contiguous() for t in back.values())


# ---------------------------------------------------------------- zips


def test_zips_carry_the_weights_and_imports_check_them(tmp_path, trained):
    blob = export_zip(trained)
    names = zipfile.ZipFile(io.BytesIO(blob)).namelist()
    assert f"{trained.name}/model.safetensors" in names and f"{trained.name}/model_initial.safetensors" in names
    rec = import_zip(blob, tmp_path / "b")
    assert rec.has_weights and same(weights.load(rec.path), weights.load(trained))

    bad = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith("/model.safetensors"):
                body = st_save(_state(widths=(4, 8, 16)))
            dst.writestr(info.filename, body)
    with pytest.raises(ImportRefused, match=r"model\.safetensors: .*has shape"):
        import_zip(bad.getvalue(), tmp_path / "c")
    assert not (tmp_path / "c").exists() or list((tmp_path / "c").iterdir()) == []


def test_finite_check_sees_inf_and_nan():
    sd = {"a": torch.ones(2), "n": torch.tensor(3)}
    assert loop.all_finite(sd)
    assert not loop.all_finite({**sd, "b": torch.tensor([1.0, math.inf])})
    assert not loop.all_finite({**sd, "b": torch.tensor([math.nan])})


def test_no_weights_are_copied_when_nobody_listens(monkeypatch):
    monkeypatch.setattr(loop, "cpu_state", lambda m: pytest.fail("copied weights nobody asked for"))
    result = train(tiny_model(), tiny_train(steps=3), [SimpleNamespace(on_log=lambda r: None)], dataset=synthetic())
    assert result.status == "finished"
