"""Recordings and quick budgets (issue 13, "Demos that finish in front of the room").

- The shipped recordings load through the ordinary record reader and pass its checks, and say
  what made them; their demos' captions are true of them.
- The player's arithmetic: recorded time, offsets, speeds, steps visible.
- Each training demo's quick budget shows what its quick caption says, measured at that budget.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from resnet_core import data, experiments, playback, runs
from resnet_core.runs import RunRecord
from ui.classroom import DEMOS, degradation_budget, train_budget

BY_KEY = {d.key: d for d in DEMOS}
SHIPPED = playback.root()


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the app's server gives a job on 2 cores
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- the shipped recordings


def test_every_training_demo_with_a_recording_ships_it():
    names = playback.list_recordings()
    assert {"twin56", "degradation"} <= set(names)
    assert {d.recording for d in DEMOS if d.recording} <= set(names)
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 5e6  # a few MB in all
    assert not list(SHIPPED.rglob("*.safetensors"))


@pytest.mark.parametrize("name", ["twin56", "degradation"])
def test_a_recording_is_ordinary_run_records_that_pass_the_readers_checks(name):
    folder = SHIPPED / name
    info = json.loads((folder / playback.INFO_FILE).read_text())
    for key in ("machine", "made_at", "settings", "command", "runs", "title"):
        assert info.get(key), key
    assert info["command"].startswith("python3 bench/make_recordings.py")
    listed = runs.list_runs(folder)  # the Compare page's reader, footers checked
    assert sorted(r.name for r in listed) == sorted(info["runs"])
    for run_name in info["runs"]:
        rec = runs.load_run(folder / run_name)
        assert rec.damaged is None and rec.status == "finished", run_name
        assert rec.train.steps == info["settings"]["steps"] and rec.train.batch_size == info["settings"]["batch_size"]
        final = rec.meta["final"]
        assert final["step"] == rec.train.steps and int(rec.metrics["step"].max()) == rec.train.steps
        assert set(rec.grads["step"]) == set(rec.metrics[rec.metrics["split"] == "train"]["step"])
    rec = playback.load_recording(folder)
    assert rec.damaged is None and rec.duration_s > 60
    assert info["machine"] in rec.made_on and info["made_at"][:10] in rec.made_on


def test_the_twin_recording_is_a_lockstep_pair_and_its_demo_holds():
    rec = playback.load_recording(SHIPPED / "twin56")
    residual, plain = rec.runs
    assert residual.model.skip and not plain.model.skip and rec.offsets == [0.0, 0.0]
    assert residual.meta["twin"] == plain.name and plain.meta["twin"] == residual.name
    assert residual.model.depth == plain.model.depth == 56
    demo = BY_KEY["twin56"]
    model, tcfg = train_budget(demo.query)
    assert residual.train == replace(tcfg, device="cpu") and residual.model == model  # the demo's own settings
    # "watch which one learns": the residual net ends well below the plain twin
    loss_r, err_r = experiments.final_figures(residual.metrics)
    loss_p, err_p = experiments.final_figures(plain.metrics)
    assert loss_r < 0.5 * loss_p and err_r < err_p


def test_the_degradation_recording_is_the_demos_experiment_and_its_caption_holds():
    rec = playback.load_recording(SHIPPED / "degradation")
    exp = degradation_budget(BY_KEY["degradation"].query)
    assert sorted((r.model.depth, r.model.skip) for r in rec.runs) == sorted(
        (p.depth, p.family == "residual") for p in experiments.plan(exp))
    assert all(b > a for a, b in zip(rec.offsets, rec.offsets[1:], strict=False))  # one after another
    loss = {(r.model.skip, r.model.depth): experiments.final_figures(r.metrics)[0] for r in rec.runs}
    plain = [loss[False, d] for d in sorted(exp.depths)]
    assert plain == sorted(plain)  # "the plain nets' training loss rises with depth"
    assert loss[False, 56] > 2 * loss[True, 56]  # "plain-56 ends far above residual-56"


# ---------------------------------------------------------------- the player


def _run(name: str, seconds: list[float], twin: str = "", started: str = "2026-01-01T00:00:00+00:00") -> RunRecord:
    steps = list(range(1, len(seconds) + 1))
    metrics = pd.DataFrame({"step": steps, "split": "train", "loss": 1.0, "accuracy": 0.5, "lr": 0.1,
                            "seconds": seconds, "samples_per_s": 10.0})
    grads = pd.DataFrame({"step": np.repeat(steps, 2), "layer": ["conv1", "fc"] * len(steps),
                          "kind": "weight_grad", "value": 1.0})
    meta = {"started_at": started, **({"twin": twin} if twin else {})}
    return RunRecord(path=Path(name), meta=meta, metrics=metrics, grads=grads)


def test_runs_one_after_another_start_where_the_one_before_ended():
    a, b = _run("a", [2.0 * s for s in range(1, 11)]), _run("b", [1.0, 2.0, 3.0], started="2026-01-01T00:05:00+00:00")
    rec = playback.Recording(Path("x"), runs=[a, b], offsets=playback.timeline([a, b]))
    assert rec.offsets == [0.0, 20.0] and rec.duration_s == 23.0
    assert playback.visible_steps(rec, 0.0) == [0, 0]
    assert playback.visible_steps(rec, 7.0) == [3, 0]  # logged at 2, 4, 6 s
    assert playback.visible_steps(rec, 21.0) == [10, 1]
    assert playback.states(rec, 21.0) == [("finished", 10), ("running", 1)]
    assert playback.states(rec, 10.0) == [("running", 5), ("queued", 0)]
    m, g = playback.visible(rec, 7.0)[0]
    assert list(m["step"]) == [1, 2, 3] and sorted(set(g["step"])) == [1, 2, 3] and len(g) == 6


def test_twins_share_one_clock():
    a, b = _run("r", [1.0, 2.0, 3.0], twin="p"), _run("p", [1.0, 2.0, 3.0], twin="r")
    assert playback.timeline([a, b]) == [0.0, 0.0]


def test_speeds_positions_and_ticks():
    assert playback.factor("10x", 600) == 10 and playback.factor("1x", 600) == 1
    assert playback.factor("fit", 1200) == 1200 / playback.FIT_S == 40  # 20 minutes in 30 seconds
    assert playback.factor("fit", 10) == 1  # never slower than real time
    assert playback.position(3.0, "fit", 1200) == 120 and playback.position(100.0, "fit", 1200) == 1200
    assert playback.wall_seconds("40x", 1200) == 30
    assert playback.advance(5.0, 100.0, 100.5, "40x", 1000) == 25.0
    assert playback.advance(5.0, 100.0, 160.0, "40x", 1000) == 5.0  # asleep for a minute: resume, do not jump
    assert playback.advance(995.0, 100.0, 101.0, "40x", 1000) == 1000.0  # capped at the end
    assert playback.advance(5.0, None, 101.0, "40x", 1000) == 5.0  # the first tick plays nothing
    with pytest.raises(ValueError, match="speed"):
        playback.factor("fast", 10)


def test_a_damaged_recording_says_what_is_wrong(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / playback.INFO_FILE).write_text(json.dumps({"runs": ["../etc"]}))
    assert "not a folder name" in playback.load_recording(tmp_path / "bad").damaged
    (tmp_path / "none").mkdir()
    assert playback.INFO_FILE in playback.load_recording(tmp_path / "none").damaged
    assert playback.list_recordings(tmp_path) == ["bad"]


# ---------------------------------------------------------------- the quick budgets, measured


def _small_test_split():
    """The embedded data with a short test split: the quick captions speak of training only, and a
    test split's evaluation never changes the weights or the batches."""
    full = data.load("mnist-5k", torch.device("cpu"))
    return replace(full, x_test=full.x_test[:16], y_test=full.y_test[:16])


class _Rows:
    def __init__(self):
        self.rows, self.grads = [], []

    def on_log(self, row):
        self.rows.append(row)

    def on_grads(self, step, values):
        self.grads.append((step, {k: np.asarray(v, float) for k, v in values.items()}))


def test_twin56_quick_budget_shows_the_gradients_its_caption_describes():
    from resnet_core.twins import train_twins

    demo = BY_KEY["twin56"]
    model, tcfg = train_budget(demo.quick_query())
    assert (tcfg.steps, tcfg.batch_size) == (10, 16)
    res, pla = _Rows(), _Rows()
    train_twins(model, tcfg, [res], [pla], dataset=_small_test_split(), device="cpu")
    median = {}
    for name, side in (("plain", pla), ("residual", res)):
        ratios = [g["weight_grad"][0] / g["weight_grad"][-1] for step, g in side.grads if step >= 3]
        assert len(ratios) == tcfg.steps - 2
        median[name] = float(np.median(ratios))  # first conv over output layer, typically
    first = pla.grads[0][1]["weight_grad"]
    assert first[0] / first[-1] > 100  # "at the first step ... hundreds of times"
    assert median["plain"] < 1e-2 and median["residual"] > 5e-2, median  # "about a thousandth", "about a tenth"
    assert median["residual"] > 20 * median["plain"], median


def test_degradation_quick_budget_shows_what_its_caption_says():
    from resnet_core.train import train

    exp = replace(degradation_budget(BY_KEY["degradation"].quick_query()), device="cpu")
    assert (exp.depths, exp.steps, exp.batch_size) == ((8, 20), 30, 16)
    dataset = _small_test_split()
    loss = {}
    for p in experiments.plan(exp):
        rows = _Rows()
        train(p.model, p.train, [rows], dataset=dataset)
        loss[p.family, p.depth] = experiments.final_figures(pd.DataFrame(rows.rows))[0]
    assert loss["residual", 20] < loss["residual", 8] and loss["residual", 20] < loss["plain", 20], loss
    assert loss["plain", 20] >= loss["plain", 8], loss
