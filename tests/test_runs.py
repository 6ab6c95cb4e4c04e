"""Run records: round-trip, appending in parts, damage reported not raised, interrupted runs, zips."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resnet_core import recorder, runs
from resnet_core.limits import from_env
from resnet_core.recorder import RunWriter
from resnet_core.runzip import ImportRefused, export_zip, import_zip
from resnet_core.train import TrainResult
from tests.trainkit import tiny_model, tiny_train

LAYERS, BLOCKS = ["conv1", "bn1", "fc"], ["layer1.0", "layer2.0"]


def write_record(root: Path, steps: int = 6, flush_s: float = 0.0, status: str = "finished",
                 end: bool = True) -> RunWriter:
    """A record written through the writer's callbacks, as train() would call them."""
    w = RunWriter(tiny_model(), tiny_train(steps=steps), root=root, label="t", flush_s=flush_s)
    w.on_start({"layers": LAYERS, "blocks": BLOCKS, "device": "cpu"})
    for s in range(1, steps + 1):
        w.on_log({"step": s, "split": "train", "loss": 2.0 / s, "accuracy": s / 10, "lr": 0.1, "seconds": s * 0.5,
                  "samples_per_s": 64.0})
        w.on_grads(s, {"weight_grad": np.full(3, s, np.float32), "weight_norm": np.ones(3, np.float32),
                       "update_ratio": np.full(3, 1e-3, np.float32), "act_grad": np.array([s, 2 * s], np.float32),
                       "shortcut_share": np.array([0.5, 0.25], np.float32)})
    w.on_eval({"step": steps, "split": "test", "loss": 0.5, "accuracy": 0.9, "lr": 0.1, "seconds": 3.0,
               "samples_per_s": float("nan")})
    if end:
        w.on_end(TrainResult(status, "done", steps, steps, "cpu", 2.0 / steps, 0.6, 0.5, 0.9, 3.0, 64.0))
    return w


def test_record_round_trip(tmp_path):
    w = write_record(tmp_path)
    rec = runs.load_run(w.run_dir)
    assert rec.damaged is None and rec.status == "finished"
    assert rec.model == tiny_model() and rec.train == tiny_train(steps=6)
    assert list(rec.metrics.columns) == runs.METRICS_SCHEMA.names
    assert rec.metrics["step"].tolist() == [1, 2, 3, 4, 5, 6, 6]
    assert rec.metrics["split"].tolist() == ["train"] * 6 + ["test"]
    assert rec.metrics["loss"].iloc[1] == 1.0 and np.isnan(rec.metrics["samples_per_s"].iloc[-1])
    g = rec.grads
    assert len(g) == 6 * (3 * len(LAYERS) + 2 * len(BLOCKS)) and set(g["kind"]) == set(runs.KINDS)
    act = g[(g.kind == "act_grad") & (g.step == 4)]
    assert act["layer"].tolist() == BLOCKS and act["value"].tolist() == [4.0, 8.0]
    assert rec.meta["final"]["test_accuracy"] == 0.9 and rec.meta["layers"] == LAYERS
    assert sorted(p.name for p in w.run_dir.iterdir()) == ["config.json", "grads.parquet", "metrics.parquet"]


def test_parts_merge_without_duplicates_even_after_a_crash_mid_merge(tmp_path, monkeypatch):
    monkeypatch.setattr(recorder, "COMPACT_EVERY", 4)
    w = write_record(tmp_path, steps=10, end=False)  # flush_s=0: a part per row
    names = sorted(p.name for p in w.run_dir.iterdir())
    assert "metrics.parquet" in names and any(n.startswith("metrics-") for n in names)
    assert runs.load_run(w.run_dir).metrics["step"].tolist() == list(range(1, 11)) + [10]
    # a crash after the merged file was replaced but before its parts were deleted
    backup = tmp_path / "backup"
    backup.mkdir()
    merged_parts = [p for p in w.run_dir.iterdir() if p.name.startswith("metrics-")]
    for p in merged_parts:
        shutil.copy(p, backup / p.name)
    runs.compact(w.run_dir, "metrics")
    for p in backup.iterdir():
        shutil.copy(p, w.run_dir / p.name)
    assert runs.load_run(w.run_dir).metrics["step"].tolist() == list(range(1, 11)) + [10]


def test_truncated_or_corrupt_files_are_reported_and_the_rest_still_load(tmp_path):
    good = write_record(tmp_path).run_dir
    bad = {}
    for case in ("truncated", "garbage-parquet", "bad-json", "bad-model", "extra-column", "unknown-kind",
                 "no-config"):
        bad[case] = write_record(tmp_path).run_dir
    p = bad["truncated"] / "metrics.parquet"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    (bad["garbage-parquet"] / "grads.parquet").write_bytes(os.urandom(500))
    (bad["bad-json"] / "config.json").write_text('{"format": "resnet-explainer-run", ')
    meta = json.loads((bad["bad-model"] / "config.json").read_text())
    meta["model"]["block"] = "triangle"
    (bad["bad-model"] / "config.json").write_text(json.dumps(meta))
    frame = pd.DataFrame({"step": [1], "split": ["train"], "loss": [1.0], "accuracy": [0.1], "lr": [0.1],
                          "seconds": [1.0], "samples_per_s": [1.0], "evil": [1]})
    frame.to_parquet(bad["extra-column"] / "metrics.parquet")
    pd.DataFrame({"step": [1], "layer": ["x"], "kind": ["bogus"], "value": [1.0]}).to_parquet(
        bad["unknown-kind"] / "grads.parquet", index=False)
    (bad["no-config"] / "config.json").unlink()
    for case, path in bad.items():
        rec = runs.load_run(path)
        assert rec.damaged, case
        assert rec.status == "damaged"
    listed = {r.path.name: r for r in runs.list_runs(tmp_path)}
    assert listed[good.name].damaged is None
    for case in ("truncated", "garbage-parquet", "bad-json", "bad-model", "extra-column", "no-config"):
        assert listed[bad[case].name].damaged, case  # found from the footers alone, rows unread
    assert "triangle" in runs.load_run(bad["bad-model"]).damaged


def test_running_record_of_a_dead_process_is_interrupted_but_a_live_one_is_not(tmp_path):
    live = write_record(tmp_path, end=False)
    assert runs.load_run(live.run_dir).status == "running"  # its writer is open in this process
    live.flush()
    meta = json.loads((live.run_dir / "config.json").read_text())
    dead = tmp_path / "dead"
    shutil.copytree(live.run_dir, dead)
    meta["pid"] = 2**22 + 12345  # above the default pid_max: no such process
    (dead / "config.json").write_text(json.dumps(meta))
    rec = runs.load_run(dead)
    assert rec.status == "interrupted" and "step 6" in rec.meta["message"]
    assert json.loads((dead / "config.json").read_text())["status"] == "interrupted"  # marked on disk
    assert len(rec.metrics) == 7 and rec.damaged is None


# ---------------------------------------------------------------- zips


def make_zip(members: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = ((stat.S_IFLNK if name in links else stat.S_IFREG) | 0o644) << 16
            zf.writestr(info, data)
    return buf.getvalue()


@pytest.fixture
def record_files(tmp_path) -> dict[str, bytes]:
    w = write_record(tmp_path / "src")
    return {f"run/{p.name}": p.read_bytes() for p in w.run_dir.iterdir()}


def test_good_zip_round_trips(tmp_path):
    w = write_record(tmp_path / "src")
    blob = export_zip(w.run_dir)
    rec = import_zip(blob, tmp_path / "dst")
    original = runs.load_run(w.run_dir)
    assert rec.damaged is None and rec.path.parent == tmp_path / "dst" and rec.path.name == w.run_dir.name
    pd.testing.assert_frame_equal(rec.metrics, original.metrics)
    pd.testing.assert_frame_equal(rec.grads, original.grads)
    assert import_zip(io.BytesIO(blob), tmp_path / "dst").path != rec.path  # a second import: new name


def test_importing_a_running_record_marks_it_interrupted(tmp_path):
    w = write_record(tmp_path / "src", end=False)
    w.flush()
    rec = import_zip(export_zip(w.run_dir), tmp_path / "dst")
    assert rec.status == "interrupted" and len(rec.metrics) == 7


BAD_ZIPS = {
    "zip-slip": ({"../evil/config.json": b"{}"}, (), "outside"),
    "absolute": ({"/etc/config.json": b"{}"}, (), "absolute"),
    "windows": ({"C:\\\\x\\\\config.json": b"{}"}, (), "absolute"),
    "symlink": ({"run/config.json": b"/etc/passwd"}, ("run/config.json",), "link"),
    "unknown": ({"run/notes.txt": b"hi"}, (), "not part of a run record"),
    "pickle-name": ({"run/model.pkl": pickle.dumps({"a": 1})}, (), "not part of a run record"),
    "nested": ({"a/b/config.json": b"{}"}, (), "nested"),
    "no-config": ({"run/metrics.parquet": b"PAR1PAR1"}, (), "no config.json"),
}


@pytest.mark.parametrize("case", BAD_ZIPS)
def test_bad_names_are_refused_before_anything_is_written(tmp_path, case):
    members, links, message = BAD_ZIPS[case]
    with pytest.raises(ImportRefused, match=message):
        import_zip(make_zip(members, links), tmp_path / "dst")
    assert not (tmp_path / "dst").exists() and not (tmp_path / "evil").exists()


def test_bad_contents_are_refused(tmp_path, record_files):
    dst = tmp_path / "dst"
    pickled = {**record_files, "run/metrics.parquet": pickle.dumps(pd.DataFrame({"x": [1]}))}
    with pytest.raises(ImportRefused, match="not a parquet file"):
        import_zip(make_zip(pickled), dst)
    meta = json.loads(record_files["run/config.json"])
    meta["train"]["optimizer"] = "rmsprop"
    with pytest.raises(ImportRefused, match="optimizer"):
        import_zip(make_zip({**record_files, "run/config.json": json.dumps(meta).encode()}), dst)
    sink = io.BytesIO()
    pd.DataFrame({"step": [1], "oops": [2.0]}).to_parquet(sink)
    with pytest.raises(ImportRefused, match="grads"):
        import_zip(make_zip({**record_files, "run/grads.parquet": sink.getvalue()}), dst)
    with pytest.raises(ImportRefused, match="not a zip"):
        import_zip(b"this is not a zip", dst)
    assert not dst.exists() or not any(dst.iterdir())


def test_size_and_member_limits(tmp_path, record_files):
    one_mb, dst = from_env({}, max_upload_mb=1), tmp_path / "dst"
    with pytest.raises(ImportRefused, match="max_upload_mb.*RESNET_MAX_UPLOAD_MB"):
        import_zip(make_zip({**record_files, "run/grads-00001.parquet": os.urandom(2 << 20)}), dst, one_mb)
    bomb = make_zip({**record_files, "run/grads-00001.parquet": bytes(8 << 20)})  # zeros: tiny when packed
    assert len(bomb) < 1 << 20
    with pytest.raises(ImportRefused, match="unpacked"):
        import_zip(bomb, dst, one_mb)
    many = {f"run/metrics-{i:05d}.parquet": b"PAR1" for i in range(1, 400)}
    with pytest.raises(ImportRefused, match="members"):
        import_zip(make_zip({**record_files, **many}), dst)
    assert not dst.exists()


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from(["config.json", "metrics.parquet", "grads-00001.parquet",
                                                  "../x", "a/b/c", "metrics.pkl"]))
def test_random_uploads_are_refused_never_raised_otherwise(tmp_path_factory, blob, name):
    dst = tmp_path_factory.mktemp("fuzz")
    for upload in (blob, make_zip({name: blob}), make_zip({"config.json": b"{}", name: blob})):
        with contextlib.suppress(ImportRefused):  # refused is fine; anything else fails the test
            import_zip(upload, dst)
    assert not any(p.name.startswith(".import") for p in dst.iterdir())
