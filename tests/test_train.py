"""The training loop: learning, reproducibility, callbacks, divergence, limits, out-of-memory."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from resnet_core import data
from resnet_core.config import DATASETS, ConfigError, TrainConfig, make_train_config, preset
from resnet_core.limits import LimitError, from_env
from resnet_core.model import ResNet
from resnet_core.train import DATASET_SHAPES, lr_at, model_for_dataset, train
from tests.trainkit import mnist_tiny, one_thread, synthetic, tiny_model, tiny_train

forward = ResNet.forward


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def run(model_cfg=None, train_cfg=None, ds=None, **kw):
    rows, evals, grads, starts, ends = [], [], [], [], []
    cb = SimpleNamespace(on_log=rows.append, on_eval=evals.append, on_start=starts.append, on_end=ends.append,
                         on_grads=lambda step, values: grads.append((step, values)))
    result = train(model_cfg or tiny_model(), train_cfg or tiny_train(), [cb], dataset=ds or synthetic(), **kw)
    return SimpleNamespace(result=result, rows=rows, evals=evals, grads=grads, start=starts[:1], ends=ends)


@pytest.mark.parametrize("name", ["resnet20", "plain20"])
def test_loss_falls_on_mnist_5k_within_50_steps(name):
    cfg = model_for_dataset(preset(name), "mnist-5k")
    out = run(cfg, make_train_config(steps=50, batch_size=32, device="cpu", eval_every=0, seed=0),
              ds=data.load("mnist-5k"))
    losses = [r["loss"] for r in out.rows]
    assert out.result.status == "finished" and len(losses) == 50
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:5]) / 5, losses


def test_same_seed_same_losses_on_cpu():
    a = [r["loss"] for r in run(train_cfg=tiny_train(seed=3)).rows]
    b = [r["loss"] for r in run(train_cfg=tiny_train(seed=3)).rows]
    c = [r["loss"] for r in run(train_cfg=tiny_train(seed=4)).rows]
    assert a == b
    assert a != c


def test_synthetic_task_is_learned_and_rows_have_every_figure():
    out = run(train_cfg=tiny_train(steps=30, log_every=4, eval_every=10))
    steps = [r["step"] for r in out.rows]
    assert steps == [1, 4, 8, 12, 16, 20, 24, 28, 30]  # first, every 4th, last
    assert [e["step"] for e in out.evals] == [10, 20, 30]
    row = out.rows[-1]
    assert set(row) == {"step", "split", "loss", "accuracy", "lr", "seconds", "samples_per_s"}
    assert row["split"] == "train" and out.evals[-1]["split"] == "test"
    assert out.result.test_accuracy > 0.8 and out.result.train_loss < out.rows[0]["loss"]
    assert [s for s, _ in out.grads] == steps
    start = out.start[0]
    values = out.grads[-1][1]
    assert len(values["weight_grad"]) == len(start["layers"]) == len(values["update_ratio"])
    assert len(values["act_grad"]) == len(start["blocks"]) == 3
    assert all(math.isfinite(v) and v > 0 for v in values["weight_norm"])
    assert out.ends == [out.result]


def test_huge_learning_rate_diverges_and_says_when():
    out = run(train_cfg=tiny_train(lr=1e6, steps=50))
    assert out.result.status == "diverged"
    assert f"diverged at step {out.result.step}" in out.result.message
    assert out.result.step < 50


def test_other_errors_propagate_after_on_end(monkeypatch):
    def bug(self, x):
        if x.device.type != "meta":  # size estimates run the net on the meta device: let those pass
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
        return forward(self, x)

    monkeypatch.setattr(ResNet, "forward", bug)
    ends = []
    with pytest.raises(RuntimeError, match="shapes"):
        train(tiny_model(), tiny_train(), [SimpleNamespace(on_end=ends.append)], dataset=synthetic())
    assert ends[0].status == "failed" and "shapes" in ends[0].message


def test_should_stop_stops():
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 5

    cb = SimpleNamespace(should_stop=should_stop)
    result = train(tiny_model(), tiny_train(), [cb], dataset=synthetic())
    assert result.status == "stopped" and result.step == 5


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"),
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes"),
])
def test_out_of_memory_is_a_failed_result(monkeypatch, error):
    def boom(self, x):
        if x.device.type != "meta":
            raise error
        return forward(self, x)

    monkeypatch.setattr(ResNet, "forward", boom)
    out = run()
    assert out.result.status == "failed"
    assert "out of memory" in out.result.message and "smaller batch" in out.result.message
    assert out.ends and out.ends[0].status == "failed"


def test_limits_are_checked_before_any_work(monkeypatch):
    monkeypatch.setattr(data, "load", lambda *a, **k: pytest.fail("loaded data before checking limits"))
    with pytest.raises(LimitError, match="max_train_memory_mb.*RESNET_MAX_TRAIN_MEMORY_MB"):
        train(mnist_tiny(), tiny_train(batch_size=512), limits=from_env({}, max_train_memory_mb=1))
    with pytest.raises(LimitError, match="RESNET_MAX_STEPS"):
        train(mnist_tiny(), tiny_train(steps=100), limits=from_env({}, max_steps=10))


def test_model_must_fit_the_dataset():
    with pytest.raises(ConfigError, match="in_channels"):
        train(tiny_model(in_channels=3), tiny_train(), dataset=synthetic())
    with pytest.raises(ConfigError, match="num_classes"):
        train(tiny_model(num_classes=2), tiny_train(), dataset=synthetic())


def test_a_different_image_size_is_resized_on_the_device():
    out = run(tiny_model(image_size=16), tiny_train(steps=3))
    assert out.result.status == "finished"


def test_dataset_shapes_match_the_data_module():
    assert set(DATASET_SHAPES) == set(DATASETS) == set(data.DATASETS)
    ds = data.load("mnist-5k")
    assert DATASET_SHAPES["mnist-5k"] == (ds.in_channels, ds.image_size, ds.num_classes)
    for name, spec in data.SPECS.items():
        assert DATASET_SHAPES[name][:2] == (spec.in_channels, spec.image_size)
    cfg = model_for_dataset(preset("resnet20"), "cifar10", keep=("num_classes",))
    assert (cfg.in_channels, cfg.image_size, cfg.num_classes) == (3, 32, 10)


def test_learning_rate_schedules():
    one = TrainConfig(steps=100, lr=1.0, schedule="onecycle")
    assert lr_at(one, 0) == pytest.approx(0.1) and lr_at(one, 20) == pytest.approx(1.0)
    assert lr_at(one, 99) == pytest.approx(0.0125) and max(lr_at(one, s) for s in range(100)) == 1.0
    cos = TrainConfig(steps=100, lr=1.0, schedule="cosine")
    assert lr_at(cos, 0) == 1.0 and lr_at(cos, 50) == pytest.approx(0.5)
    assert lr_at(TrainConfig(steps=100, lr=0.3, schedule="constant"), 77) == 0.3


@pytest.mark.parametrize("field,value", [
    ("optimizer", "rmsprop"), ("schedule", "step"), ("lr", 0), ("lr", "nan"), ("lr", "fast"), ("steps", 0),
    ("batch_size", -1), ("amp", "fp16"), ("device", "tpu"), ("dataset", "imagenet"), ("weight_decay", -1),
    ("log_every", 0), ("nesterov", "maybe"), ("channels_last", "yes"), ("seed", -1), ("colour", "red"),
])
def test_bad_training_values_name_their_field(field, value):
    with pytest.raises(ConfigError) as e:
        make_train_config(**{field: value})
    assert e.value.field == field and field in str(e.value)


def test_training_limits_name_the_limit_and_its_variable():
    with pytest.raises(LimitError, match=r"max_steps.*RESNET_MAX_STEPS"):
        make_train_config(steps=10**6)
    with pytest.raises(LimitError, match=r"max_batch_size.*RESNET_MAX_BATCH_SIZE"):
        make_train_config(batch_size=10**5)
    assert make_train_config(steps=10**6, limits=None).steps == 10**6


def test_train_config_round_trips_through_a_dict():
    cfg = make_train_config(optimizer="adamw", lr="3e-4", nesterov="false", schedule="cosine", seed="7")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg and cfg.lr == 3e-4 and cfg.seed == 7
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(ConfigError):
        TrainConfig.from_dict(["not", "a", "dict"])


_values = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=12), st.lists(st.integers(), max_size=3))


@settings(max_examples=300, deadline=None)
@example({"momentum": 0})
@given(st.dictionaries(st.sampled_from([*TrainConfig.__dataclass_fields__, "junk"]), _values, max_size=6))
def test_any_training_input_is_accepted_or_refused_by_name(d):
    try:
        cfg = TrainConfig.from_dict(d)
    except ConfigError as e:
        assert e.field in d
    else:
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg
