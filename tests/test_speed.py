"""Time estimates from this machine's measured speed (resnet_core/speed.py), and where the pages show them."""

from __future__ import annotations

import json

import pytest

from resnet_core import experiments, runs, speed
from resnet_core.config import make_train_config, preset
from resnet_core.train import model_for_dataset
from tests.apptest import follow_link
from tests.test_exports import write_record
from tests.trainkit import tiny_model, tiny_train
from ui.classroom import DEMOS


def test_a_records_own_run_is_estimated_at_its_measured_time(tmp_path):
    path = write_record(tmp_path, "r", skip=True)  # 20 steps in 10 s of training (the writer's figures)
    rec = runs.load_run(path, tables=False)
    machine = speed.from_records([rec])
    assert machine is not None and "1 earlier run" in machine.source
    assert speed.estimate_seconds(rec.model, rec.train, machine) == pytest.approx(10.0)
    assert speed.estimate_seconds(rec.model, rec.train, machine, nets=2) == pytest.approx(20.0)  # a twin run
    # ten times the steps, one evaluation of 1,000 test digits at the end either way, in image-passes:
    # 3 x 32 x 20 + 1,000 = 2,920 took 10 s, so 3 x 32 x 200 + 1,000 = 20,200 take 69.2 s
    longer = tiny_train(steps=200)
    assert speed.estimate_seconds(rec.model, longer, machine) == pytest.approx(10 * 20_200 / 2_920)


def test_costs_count_training_evaluation_and_nets():
    model, train = tiny_model(), tiny_train(steps=100, eval_every=10)
    f = speed.forward_flops(model)
    assert speed.evaluations(train) == 10 and speed.evaluations(tiny_train(steps=95, eval_every=10)) == 10
    assert speed.evaluations(tiny_train(eval_every=0)) == 1  # once, at the end
    expected = 3 * f * 32 * 100 + f * speed.TEST_IMAGES["mnist-5k"] * 10
    assert speed.run_flops(model, train) == pytest.approx(expected)
    assert speed.run_flops(model, train, nets=2) == pytest.approx(2 * expected)


def test_unfinished_and_gpu_records_are_not_timed(tmp_path, monkeypatch):
    monkeypatch.setattr(speed, "_calibrated", {})  # no calibration an earlier test's server made in this process
    stopped = runs.load_run(write_record(tmp_path, "s", status="stopped"), tables=False)
    assert speed.from_records([stopped]) is None
    assert speed.best(records=[stopped]) is speed.REFERENCE


def test_a_run_of_a_few_steps_is_not_timed(tmp_path):
    """Its fixed start-up cost would pass for slowness: 20 steps in 10 s is timed, 4 steps in 10 s is not."""
    rec = runs.load_run(write_record(tmp_path, "r", skip=True), tables=False)
    assert speed.from_records([rec]) is not None and int(rec.meta["final"]["step"]) == speed.MIN_TIMED_STEPS
    short = runs.load_run(write_record(tmp_path, "short", skip=True), tables=False)
    short.meta["final"] = {**short.meta["final"], "step": 4}
    assert speed.from_records([short]) is None
    assert speed.from_records([short, rec]).seconds_per_flop == speed.from_records([rec]).seconds_per_flop


def test_calibration_is_read_back_from_its_cache_for_this_machine_only(tmp_path, monkeypatch):
    cache = tmp_path / "speed.json"
    monkeypatch.setattr(speed, "_calibrated", {})
    assert speed.calibration(cache, run=False) is None
    cache.write_text(json.dumps({"another machine": 1e-11, speed._machine_key(): 2e-11}))
    got = speed.calibration(cache, run=False)
    assert got is not None and got.seconds_per_flop == 2e-11 and "calibration" in got.source


def test_the_degradation_estimate_is_the_sum_of_its_runs():
    exp = experiments.Degradation(device="cpu")
    machine = speed.Speed(1e-10, "test")
    total = sum(speed.estimate_seconds(p.model, p.train, machine) for p in experiments.plan(exp))
    assert experiments.estimate_seconds(exp, machine) == pytest.approx(total) and total > 0


def test_the_train_page_warns_from_the_measured_speed(tmp_path, monkeypatch):
    """A record says this machine is slow: the twin-56 demo's estimate follows it and the warning fires."""
    monkeypatch.setenv("RESNET_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("RESNET_DATA_DIR", str(tmp_path / "data"))
    rec = runs.load_run(write_record(tmp_path, "slow", skip=True), tables=False)
    machine = speed.from_records([rec])
    demo = next(d for d in DEMOS if d.key == "twin56")
    model = model_for_dataset(preset("resnet56"), "mnist-5k")
    q = demo.query
    train = make_train_config(dataset="mnist-5k", steps=int(q["tr_steps"]), batch_size=int(q["tr_batch_size"]),
                              lr=float(q["tr_lr"]), eval_every=max(10, int(q["tr_steps"]) // 10), device="cpu")
    expected = speed.estimate_seconds(model, train, machine, nets=2)
    at = follow_link("train", demo.query)
    warning = [w.value for w in at.warning if "would take" in w.value]
    assert warning and speed.fmt_duration(expected) in warning[0] and "1 earlier run on this server" in warning[0]
