"""Twin runs: lockstep (same batches, same starting weights), linked records, one-sided divergence, controls."""

from __future__ import annotations

import math
import time

import pytest
import torch

from resnet_core import runs, twins
from resnet_core.jobs import JobManager
from resnet_core.limits import LimitError, from_env
from resnet_core.twins import train_twins
from tests.trainkit import mnist_tiny, one_thread, synthetic, tiny_model, tiny_train, wait, worker_fault

LONG = 20_000  # steps: a run that goes on until the test stops it


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


class Watch:
    """Keeps the initial weights and a checksum of every training batch the net really saw."""

    def __init__(self):
        self.initial: dict[str, torch.Tensor] = {}
        self.batches: list[tuple[float, float, int]] = []
        self.rows, self.ends = [], []

    def on_start(self, info):
        model = info["model"]
        self.initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.register_forward_pre_hook(self._saw)

    def _saw(self, module, args):
        if module.training:  # evaluation passes run the test split, not training batches
            x = args[0]  # (B, C, H, W)
            weights = torch.arange(x.numel(), dtype=torch.float64).reshape(x.shape)  # order-sensitive
            self.batches.append((float(x.double().sum()), float((x.double() * weights).sum()), len(x)))

    def on_log(self, row):
        self.rows.append(row)

    def on_end(self, result):
        self.ends.append(result)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_twins_see_the_same_batches_and_start_from_the_same_weights(shortcut):
    r, p = Watch(), Watch()
    res_result, plain_result = train_twins(tiny_model(shortcut=shortcut), tiny_train(steps=12, eval_every=5),
                                           [r], [p], dataset=synthetic())
    assert res_result.status == plain_result.status == "finished"
    assert len(r.batches) == 12 and r.batches == p.batches  # the same batch, in the same order, every step
    assert len(set(r.batches)) > 1  # and the batches do change from step to step
    shared = set(r.initial) & set(p.initial)
    assert set(p.initial) <= set(r.initial)  # the plain net is the residual one minus shortcuts
    if shortcut == "A":
        assert set(r.initial) == set(p.initial)  # option A: the very same layers
    else:
        assert any("downsample" in k for k in set(r.initial) - shared)  # B: projections only in the residual
    for key in shared:
        assert torch.equal(r.initial[key], p.initial[key]), key
    # same start, same data, different nets: their losses part from the first step on
    assert [row["step"] for row in r.rows] == [row["step"] for row in p.rows]
    assert r.rows[-1]["loss"] != p.rows[-1]["loss"]
    assert r.ends == [res_result] and p.ends == [plain_result]
    assert res_result.seconds == pytest.approx(plain_result.seconds, rel=0.2)  # one clock for both


def test_the_residual_twin_trains_like_a_run_on_its_own():
    """The lockstep loop is the ordinary loop twice: the residual side's losses equal a single run's."""
    from resnet_core.train import train

    cfg, tcfg, ds = tiny_model(), tiny_train(steps=8, seed=5), synthetic()
    alone, twin = Watch(), Watch()
    train(cfg, tcfg, [alone], dataset=ds)
    train_twins(cfg, tcfg, [twin], [], dataset=ds)
    assert [row["loss"] for row in twin.rows] == pytest.approx([row["loss"] for row in alone.rows], rel=1e-5)


def poison(monkeypatch, after: int) -> None:
    """The plain twin's output becomes NaN from its `after`-th training forward pass on."""
    real = twins.twin_models

    def models(cfg, seed):
        residual, plain = real(cfg, seed)
        calls = []

        def hook(module, args, out):
            if module.training:
                calls.append(1)
                if len(calls) >= after:
                    return out * math.nan
            return None

        plain.register_forward_hook(hook)
        return residual, plain

    monkeypatch.setattr(twins, "twin_models", models)


def test_a_diverging_plain_twin_ends_alone_and_the_residual_one_trains_on(monkeypatch):
    poison(monkeypatch, after=4)
    r, p = Watch(), Watch()
    res_result, plain_result = train_twins(tiny_model(), tiny_train(steps=10), [r], [p], dataset=synthetic())
    assert plain_result.status == "diverged" and plain_result.step == 4
    assert "diverged at step 4" in plain_result.message
    assert res_result.status == "finished" and res_result.step == 10
    assert len(r.batches) == 10 and r.batches[:4] == p.batches  # lockstep for as long as both trained
    assert p.ends == [plain_result] and r.ends == [res_result]


def test_twin_jobs_have_linked_records(manager):
    res_id, plain_id = manager.submit_twins(mnist_tiny(), tiny_train(steps=6, batch_size=16, eval_every=3),
                                            labels=("resnet-tiny", "plain-tiny"))
    res, plain = manager.get(res_id), manager.get(plain_id)
    assert res.twin == plain_id and plain.twin == res_id
    assert res.model_cfg.skip and not plain.model_cfg.skip
    wait(lambda: res.done and plain.done)
    assert res.state == plain.state == "finished", (res.message, plain.message)
    a, b = runs.load_run(res.run_dir), runs.load_run(plain.run_dir)
    assert a.damaged is None and b.damaged is None
    assert a.meta["twin"] == b.name and b.meta["twin"] == a.name
    assert a.label == "resnet-tiny" and b.label == "plain-tiny"
    assert list(a.metrics["step"]) == list(b.metrics["step"])
    for job in (res, plain):  # each Job's history works as for a job on its own
        metrics, grads, cursor = job.since()
        assert len(metrics) == 6 + 2  # six train rows, evaluations at steps 3 and 6
        assert set(grads["kind"]) == {"weight_grad", "weight_norm", "update_ratio", "act_grad", "shortcut_share"}
        assert job.since(cursor)[0].empty
        assert job.snapshot()["twin"] == job.twin


def test_a_bad_twin_name_makes_a_record_damaged(tmp_path, manager):
    res_id, _ = manager.submit_twins(mnist_tiny(), tiny_train(steps=2, batch_size=16))
    res = manager.get(res_id)
    wait(lambda: res.done)
    rec = runs.load_run(res.run_dir)
    for bad in ("../etc", "/abs", 3, "", ".hidden"):
        rec.meta["twin"] = bad
        with pytest.raises(ValueError, match="twin"):
            runs.check_config(rec.meta)


def test_pause_resume_stop_of_either_twin_act_on_both(manager):
    res_id, plain_id = manager.submit_twins(mnist_tiny(), tiny_train(steps=LONG, batch_size=16))
    res, plain = manager.get(res_id), manager.get(plain_id)
    wait(lambda: res.step >= 2 and plain.step >= 2)
    plain.pause()
    assert res.state == plain.state == "paused"
    time.sleep(0.5)
    frozen = (res.step, plain.step)
    time.sleep(0.5)
    assert (res.step, plain.step) == frozen
    res.resume()
    assert res.state == plain.state == "running"
    wait(lambda: plain.step > frozen[1] + 1, timeout=10)
    plain.stop("test")
    wait(lambda: res.done and plain.done, timeout=5)
    assert res.state == plain.state == "stopped"
    assert abs(res.step - plain.step) <= 1  # lockstep: stopped together


def test_a_diverging_twin_job_is_marked_and_the_manager_goes_on(manager, monkeypatch):
    worker_fault(monkeypatch, "nan", step=3, skip=False)  # the plain twin's output, in the worker, as poison()
    res_id, plain_id = manager.submit_twins(mnist_tiny(), tiny_train(steps=6, batch_size=16))
    res, plain = manager.get(res_id), manager.get(plain_id)
    wait(lambda: res.done and plain.done)
    assert plain.state == "diverged" and "diverged at step 3" in plain.message
    assert res.state == "finished" and res.step == 6
    assert runs.load_run(plain.run_dir).meta["status"] == "diverged"
    # both diverge: both are marked, and the next job still runs
    res_id, plain_id = manager.submit_twins(mnist_tiny(), tiny_train(steps=6, batch_size=16, lr=1e6))
    wait(lambda: manager.get(res_id).done and manager.get(plain_id).done)
    assert {manager.get(res_id).state, manager.get(plain_id).state} == {"diverged"}
    after = manager.get(manager.submit(mnist_tiny(), tiny_train(steps=2, batch_size=16)))
    wait(lambda: after.done)
    assert after.state == "finished"


def test_twins_queue_as_one_entry_and_a_group_counts_as_one_request(tmp_path):
    m = JobManager(root=tmp_path, limits=from_env({"RESNET_MAX_QUEUED_PER_SESSION": "1"}), max_running=1)
    try:
        first = m.get(m.submit(mnist_tiny(), tiny_train(steps=LONG, batch_size=16), owner="a"))
        res_id, plain_id = m.submit_twins(mnist_tiny(), tiny_train(steps=4, batch_size=16), owner="b")
        assert m.get(res_id).state == m.get(plain_id).state == "queued"
        assert m.queue_place(m.get(plain_id)) == m.queue_place(m.get(res_id)) == 1
        group = m.submit_group([(mnist_tiny(), tiny_train(steps=2, batch_size=16), f"g{i}") for i in range(4)],
                               owner="a")  # four jobs, one request: within a limit of one
        assert len(group) == 4 and {m.get(i).group for i in group} == {group[0]}
        with pytest.raises(LimitError, match="max_queued_per_session"):
            m.submit(mnist_tiny(), tiny_train(steps=2, batch_size=16), owner="a")
        m.get(plain_id).stop()  # stopping the queued plain twin takes its residual partner out of the queue too
        assert m.get(res_id).state == m.get(plain_id).state == "stopped"
        assert m.queue_place(m.get(res_id)) is None
        first.stop()
        wait(lambda: all(m.get(i).done for i in group))
        assert [m.get(i).state for i in group] == ["finished"] * 4
    finally:
        m.shutdown(timeout=10)
