"""The degradation experiment: its plan, its run through the job queue, its table and its figure."""

from __future__ import annotations

import math
import time

import pytest

from resnet_core import experiments, runs
from resnet_core.config import ConfigError
from resnet_core.experiments import Degradation
from resnet_core.figures.degradation import PAPER_NAME, degradation_figure, points
from resnet_core.jobs import JobManager
from resnet_core.limits import from_env
from tests.trainkit import one_thread

TINY = Degradation(depths=(8, 14), steps=3, batch_size=16, device="cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def test_plan_is_one_run_per_family_and_depth_with_one_budget():
    planned = experiments.plan(Degradation())
    assert [(p.family, p.depth) for p in planned] == [(f, d) for f in ("plain", "residual") for d in (8, 20, 32, 56)]
    assert {p.train for p in planned} == {planned[0].train}  # the same steps, batch, lr and seed for all
    for p in planned:
        assert p.model.depth == p.depth and p.model.skip == (p.family == "residual")
        assert p.model.layers == ((p.depth - 2) // 6,) * 3 and p.model.widths == (16, 32, 64)
        assert (p.model.in_channels, p.model.image_size) == (1, 28)  # fitted to mnist-5k
        assert p.model.shortcut == "A"  # so both families have exactly the same parameters
    with pytest.raises(ConfigError, match="depths"):
        Degradation(depths=(8, 21))
    with pytest.raises(ConfigError, match="depths"):
        Degradation(depths=())


def test_final_figures_average_the_last_tenth_and_take_the_last_evaluation():
    import pandas as pd

    rows = [{"step": s, "split": "train", "loss": 10.0 if s <= 90 else 1.0, "accuracy": 0.5} for s in range(1, 101)]
    rows += [{"step": 50, "split": "test", "loss": 1.0, "accuracy": 0.5},
             {"step": 100, "split": "test", "loss": 1.0, "accuracy": 0.9}]
    loss, error = experiments.final_figures(pd.DataFrame(rows))
    assert loss == pytest.approx(1.0) and error == pytest.approx(0.1)
    assert all(math.isnan(v) for v in experiments.final_figures(pd.DataFrame(columns=["step", "split"])))


def test_tiny_experiment_through_the_queue_gives_a_point_per_family_and_depth(tmp_path):
    # a per-session limit of one queued request: the group of four is one request
    m = JobManager(root=tmp_path, limits=from_env({"RESNET_MAX_QUEUED_PER_SESSION": "1"}), max_running=1)
    try:
        ids = experiments.submit(m, TINY, owner="s")
        assert len(ids) == 4
        deadline = time.monotonic() + 120
        while not all(m.get(i).done for i in ids):
            assert time.monotonic() < deadline, [m.get(i).snapshot() for i in ids]
            time.sleep(0.05)
        table = experiments.results(experiments.job_row(m.get(i)) for i in ids)
    finally:
        m.shutdown()
    assert experiments.progress(table) == (4, 4)
    assert list(zip(table["family"], table["depth"], strict=True)) == [
        ("plain", 8), ("plain", 14), ("residual", 8), ("residual", 14)]
    assert (table["state"] == "finished").all() and (table["step"] == 3).all()
    assert table["train_loss"].between(0, 10).all() and table["test_error"].between(0, 1).all()

    # the records give the same table: the results survive the jobs
    again = experiments.results(experiments.record_row(runs.load_run(d)) for d in table["run_dir"])
    assert again[["family", "depth", "train_loss", "test_error"]].equals(
        table[["family", "depth", "train_loss", "test_error"]])

    fig = degradation_figure(table, steps=TINY.steps)
    drawn = points(fig)
    for family in ("plain", "residual"):
        rows = table[table["family"] == family]
        for column, scale in (("train_loss", 1), ("test_error", 100)):
            xs, ys = zip(*drawn[(family, column)], strict=True)
            assert list(xs) == list(rows["depth"])
            assert list(ys) == pytest.approx(list(rows[column] * scale))
    assert drawn[("paper", "test_error")] == [(20, 8.75), (32, 7.51), (44, 7.17), (56, 6.97), (110, 6.43)]
    assert any(t.name == PAPER_NAME and "not ours" in t.name for t in fig.data)


def test_unfinished_runs_have_no_point():
    table = experiments.results([
        {"family": "plain", "depth": 8, "state": "running", "step": 1, "steps": 3, "train_loss": math.nan,
         "test_error": math.nan, "job": "", "run_dir": ""}])
    drawn = points(degradation_figure(table))
    assert ("plain", "train_loss") not in drawn and ("paper", "test_error") in drawn
    assert experiments.progress(table) == (0, 1)
