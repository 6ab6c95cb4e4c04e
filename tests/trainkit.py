"""Small nets and a synthetic in-memory dataset for the training, run-record and job tests.

Everything here is tiny on purpose: the tests share two CPU cores with everyone else.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch

from resnet_core.config import ModelConfig, make_config, make_train_config
from resnet_core.data import TensorDataset


def tiny_model(**overrides) -> ModelConfig:
    """Three one-block stages of 4/8/8 channels on 1x8x8 images, 4 classes."""
    base = ModelConfig(layers=(1, 1, 1), widths=(4, 8, 8), in_channels=1, image_size=8, num_classes=4)
    return make_config(base, **overrides)


def mnist_tiny(**overrides) -> ModelConfig:
    """The same tiny net on mnist-5k's 1x28x28 digits, 10 classes."""
    return tiny_model(**{"image_size": 28, "num_classes": 10, **overrides})


def tiny_train(**overrides):
    values = {"steps": 20, "batch_size": 32, "device": "cpu", "eval_every": 0, "lr": 0.05}
    return make_train_config(**{**values, **overrides})


def synthetic(n_train: int = 256, n_test: int = 64, size: int = 8, classes: int = 4, seed: int = 0) -> TensorDataset:
    """Each class is a fixed random pattern plus noise: learnable in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(classes, 1, size, size, generator=g)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=g)
        return patterns[y] + 0.5 * torch.randn(n, 1, size, size, generator=g), y  # (N, 1, S, S), (N,)

    (xtr, ytr), (xte, yte) = split(n_train), split(n_test)
    return TensorDataset("synthetic", xtr, ytr, xte, yte, 1, size, classes, tuple(map(str, range(classes))),
                         (0.0,), (1.0,))


def wait(predicate: Callable[[], object], timeout: float = 60.0, every: float = 0.02) -> float:
    """Seconds until `predicate()` holds, polled every `every` s; AssertionError after `timeout`."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached in time")
        time.sleep(every)
    return time.monotonic() - t0


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Intra-op threads = 1. On two cores shared by several busy processes, OpenMP's spinning
    threads made a tiny BatchNorm 30-50x slower than one thread (measured); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def worker_fault(monkeypatch, kind: str, step: int = 1, **match) -> None:
    """Jobs started from now on (in this test) meet `kind` in their worker process, from the
    `step`-th training forward pass of a net whose config has `match`'s fields: see
    resnet_core/jobs/faults.py. The way a test reaches into a worker, which shares no memory
    with it (a monkeypatch here would not)."""
    import json

    from resnet_core.jobs import faults

    monkeypatch.setenv(faults.ENV, json.dumps({"kind": kind, "step": step, "match": match}))


def tiny_twin_records(root, steps: int = 30, **labels: str):
    """A finished residual/plain twin pair of tiny MNIST nets in `root`, trained in lockstep as the
    app trains them (adam, lr 1e-2, batch 64): the two RunWriters. `labels`: residual=, plain=."""
    from resnet_core import data
    from resnet_core.recorder import RunWriter
    from resnet_core.train import model_for_dataset
    from resnet_core.twins import link_records, train_twins

    cfg = model_for_dataset(mnist_tiny(), "mnist-5k")
    train_cfg = tiny_train(steps=steps, batch_size=64, optimizer="adam", lr=1e-2)
    a = RunWriter(cfg, train_cfg, root=root, flush_s=0.0, label=labels.get("residual", ""))
    b = RunWriter(cfg.plain_twin(), train_cfg, root=root, flush_s=0.0, label=labels.get("plain", ""))
    link_records(a, b)
    with one_thread():
        train_twins(cfg, train_cfg, [a], [b], dataset=data.load("mnist-5k"))
    return a, b
