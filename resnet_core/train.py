"""Training: one function; the CLI, the jobs and the tests watch it through callbacks.

The loop itself, and the callbacks it calls (on_start, on_log, on_grads, on_eval, should_stop,
on_end), are in loop.py; this module checks a request, loads its data and runs the loop.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from . import layout
from .config import ConfigError, ModelConfig, TrainConfig, check_model_limits, check_train_limits
from .device import resolve
from .limits import LIMITS, LimitError
from .loop import Loop, TrainResult, autocast_for, lr_at, make_optimizer, seeded_model, use_channels_last
from .model import build_model
from .size import estimate

__all__ = ["DATASET_SHAPES", "TrainResult", "autocast_for", "check_limits", "load_for", "lr_at", "make_optimizer",
           "model_for_dataset", "seeded_model", "train", "use_channels_last"]

# in_channels, image_size, classes of each dataset, known without loading it
DATASET_SHAPES = {"mnist-5k": (1, 28, 10), "mnist": (1, 28, 10), "fashion-mnist": (1, 28, 10),
                  "cifar10": (3, 32, 10)}


def model_for_dataset(cfg: ModelConfig, dataset: str, keep: Sequence[str] = ()) -> ModelConfig:
    """`cfg` with input channels, image size and classes taken from `dataset`, except those in `keep`."""
    c, s, k = DATASET_SHAPES[dataset]
    fit = {name: v for name, v in (("in_channels", c), ("image_size", s), ("num_classes", k)) if name not in keep}
    return replace(cfg, **fit)


def check_limits(model_cfg: ModelConfig, train_cfg: TrainConfig, limits: Any = LIMITS) -> None:
    """Model size, steps, batch and estimated training memory against `limits`, before any work."""
    check_model_limits(model_cfg, limits)  # again: the model was validated against the default limits
    check_train_limits(train_cfg, limits)
    mb = estimate(model_cfg).train_memory_bytes(train_cfg.batch_size) / 2**20
    if mb > limits.max_train_memory_mb:
        raise LimitError("max_train_memory_mb", f"~{mb:,.0f}", f"{limits.max_train_memory_mb:,}", " MiB")


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, callbacks: Sequence[Any] = (), *,
          dataset: Any = None, device: str | torch.device | None = None, limits: Any = LIMITS,
          data_root: str | None = None, download: bool = False, progress: Any = None) -> TrainResult:
    """Train `model_cfg` as `train_cfg` says. Limits are checked before anything else.

    `dataset` (a data.TensorDataset, or any object with its attributes) skips loading;
    `device` overrides train_cfg.device (the job manager hands each job its GPU).
    Raises LimitError, ConfigError, data.DatasetUnavailable before training starts; afterwards
    an out-of-memory error becomes a "failed" result and other errors propagate after on_end.
    """
    check_limits(model_cfg, train_cfg, limits)
    dataset, dev = load_for(model_cfg, train_cfg, dataset=dataset, device=device, data_root=data_root,
                            download=download, progress=progress, max_download_mb=limits.max_download_mb)
    return Loop(model_cfg, train_cfg, callbacks, dataset, dev).run()


def load_for(model_cfg: ModelConfig, train_cfg: TrainConfig, *, dataset: Any = None,
             device: str | torch.device | None = None, data_root: str | None = None, download: bool = False,
             progress: Any = None, max_download_mb: int | None = None) -> tuple[Any, torch.device]:
    """The device and the dataset (loaded unless given) for a run, checked to fit `model_cfg`."""
    dev = torch.device(device) if device is not None else resolve(train_cfg.device)
    if dataset is None:
        from . import data

        dataset = data.load(train_cfg.dataset, dev, root=data_root, download=download, progress=progress,
                            max_download_mb=max_download_mb)
    if model_cfg.in_channels != dataset.in_channels:
        raise ConfigError("in_channels", model_cfg.in_channels,
                          f"{dataset.in_channels}, the channels of {train_cfg.dataset}'s images")
    if model_cfg.num_classes < dataset.num_classes:
        raise ConfigError("num_classes", model_cfg.num_classes,
                          f"at least {dataset.num_classes} for {train_cfg.dataset}")
    return dataset, dev


_WARMED: set[tuple[str, str]] = set()


def warm_up(dataset: str = "mnist-5k", device: str = "auto") -> threading.Thread | None:
    """Load `dataset` and run one tiny training step in a daemon thread, once per process, so
    that the first run a user starts does not pay PyTorch's first-call set-up and the dataset's
    load (~2.7 s on a 2-core CPU; bench/RESULTS.md). Errors are ignored: a real run reports them."""
    if (dataset, device) in _WARMED:
        return None
    _WARMED.add((dataset, device))

    def work() -> None:
        try:
            from . import data

            dev = resolve(device)
            ds = data.load(dataset, dev)
            cfg = model_for_dataset(ModelConfig(layers=(1, 1, 1)), dataset)
            model = build_model(cfg)
            fmt = layout.memory_format(model, dev)
            model = model.to(device=dev, memory_format=fmt)
            x = ds.x_train[:4].contiguous(memory_format=fmt)
            torch.nn.functional.cross_entropy(model(x), ds.y_train[:4]).backward()
        except Exception:  # noqa: BLE001 - a warm-up must never take the server down
            pass

    thread = threading.Thread(target=work, name="warm-up", daemon=True)
    thread.start()
    return thread
