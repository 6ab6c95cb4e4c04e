"""`python -m resnet_core train`: the JSON contract, one-line errors, and a SIGKILL mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resnet_core import runs
from resnet_core.cli import main
from tests.trainkit import one_thread

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--blocks", "1,1,1", "--widths", "4,8,8", "--batch-size", "16", "--device", "cpu", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # see trainkit.one_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "resnet_core", "train", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_json_last_line_and_a_readable_record(tmp_path):
    proc = cli("--preset", "resnet20", *TINY, "--steps", "4", "--eval-every", "2", "--out", str(tmp_path), "--json")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    for key in ("run_dir", "final_train_loss", "test_accuracy", "steps", "samples_per_s", "device"):
        assert key in result
    assert result["steps"] == 4 and result["device"] == "cpu" and 0 <= result["test_accuracy"] <= 1
    rec = runs.load_run(result["run_dir"])
    assert rec.damaged is None and rec.status == "finished"
    assert (rec.model.in_channels, rec.model.image_size, rec.model.num_classes) == (1, 28, 10)  # from mnist-5k
    assert rec.metrics[rec.metrics.split == "test"]["step"].tolist() == [2, 4]


def test_sigkill_mid_run_leaves_a_record_read_up_to_its_last_flush(tmp_path):
    proc = cli(*TINY, "--steps", "20000", "--out", str(tmp_path))
    try:
        deadline = time.time() + 120
        while not list(tmp_path.glob("*/metrics-00002.parquet")):  # two flushes, ~4 s of training
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "no flush within 120 s"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rec = runs.load_run(run_dir)
    assert rec.damaged is None
    assert rec.status == "interrupted" and "ended without finishing" in rec.meta["message"]
    assert len(rec.metrics) > 0 and len(rec.grads) > 0
    assert rec.metrics["step"].max() >= rec.meta["final"]["step"] > 0
    assert runs.load_run(run_dir).status == "interrupted"  # and it stays so


@pytest.mark.parametrize("args,flag", [
    (["--steps", "0"], "--steps"),
    (["--steps", "500", "--max-steps", "10"], "--steps"),
    (["--batch-size", "5000"], "--batch-size"),
    (["--batch-size", "64", "--max-batch-size", "32"], "--batch-size"),
    (["--batch-size", "512", "--max-train-memory-mb", "1"], "--batch-size"),
    (["--lr", "-3"], "--lr"),
    (["--lr", "abc"], "--lr"),
    (["--momentum", "2"], "--momentum"),
    (["--optimizer", "rmsprop"], "--optimizer"),
    (["--device", "tpu"], "--device"),
    (["--widths", "4,8"], "--widths"),
    (["--eval-every", "-1"], "--eval-every"),
])
def test_bad_values_exit_2_with_one_line_naming_the_flag(args, flag, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train", *args, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert len(err.strip().splitlines()) == 1 and flag in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_missing_dataset_exits_1_with_its_message(capsys, tmp_path):
    code = main(["train", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"), "--steps", "2",
                 "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "CIFAR-10 is not available" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_divergence_exits_1_and_is_recorded(capsys, tmp_path):
    code = main(["train", *TINY, "--lr", "1e6", "--steps", "50", "--out", str(tmp_path), "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and result["status"] == "diverged" and "diverged at step" in result["message"]
    assert runs.load_run(result["run_dir"]).status == "diverged"
