"""The analyses on real run records: a residual net and its plain twin trained briefly on mnist-5k."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from resnet_core import runs
from resnet_core.why.common import record_data, record_net
from resnet_core.why.landscape import cache_name, mean_loss
from tests.trainkit import tiny_twin_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    a, b = tiny_twin_records(root, steps=40)
    return a.run_dir, b.run_dir


def cli(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "resnet_core", *args, "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_lesion_of_no_block_is_the_recorded_test_accuracy(records):
    res, plain = records
    d = cli("lesion", str(res), "--draws", "2")
    recorded = runs.load_run(res, tables=False).meta["final"]["test_accuracy"]
    assert d["baseline_accuracy"] == recorded and 0.15 < recorded < 1
    assert [b["name"] for b in d["blocks"]] == ["layer1.0", "layer2.0", "layer3.0"]
    assert all(b["removable"] and 0 <= b["accuracy"] <= 1 for b in d["blocks"])
    assert [r["k"] for r in d["random"]] == [1, 2, 3]
    p = cli("lesion", str(plain))
    assert p["baseline_accuracy"] == runs.load_run(plain, tables=False).meta["final"]["test_accuracy"]
    assert [b["removable"] for b in p["blocks"]] == [True, False, False]  # 4->8 and 8->8 at stride 2 change shape
    assert [b["accuracy"] is None for b in p["blocks"]] == [False, True, True] and len(p["random"]) == 1


def test_landscape_centre_is_the_trained_loss_on_the_same_subset_and_is_cached(records):
    res, _ = records
    d = cli("landscape", str(res), "--grid", "5", "--samples", "64")
    assert d["alphas"] == d["betas"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    model, rec = record_net(res)
    x, y = record_data(rec, "train", limit=64, seed=0)
    assert d["loss"][2][2] == pytest.approx(mean_loss(model, x, y), rel=1e-5)  # BatchNorm folded: to rounding
    assert "interpolation" in d and 1.0 in d["interpolation"]["t"]  # twins keep their initial weights
    assert (res / cache_name(5, 64)).exists()
    assert runs.load_run(res).damaged is None  # the cache beside the record does not damage it


def test_paths_of_a_record(records):
    res, plain = records
    d = cli("paths", str(res), "--batch-size", "8")
    assert d["lengths"] == [0, 1, 2, 3] and d["count"] == [1, 3, 3, 1] and all(g > 0 for g in d["gradient"])
    bad = subprocess.run([sys.executable, "-m", "resnet_core", "lesion", str(res / "nope")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
