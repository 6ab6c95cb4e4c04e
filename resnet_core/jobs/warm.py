"""Imported once by the worker processes' forkserver (process_backend.PRELOAD), so every worker
is a fork of an interpreter that has torch and the training code imported and the embedded
mnist-5k read: a job's process starts in milliseconds, not in the 2-3 s of torch's import.

What runs here runs on one thread: OpenMP's thread pool does not survive a fork, so the pool is
made in each worker, after it has set its own thread count.
"""

from __future__ import annotations

import contextlib

import torch  # noqa: F401 - the point of this module

from .. import config, data, layout, loop, model, probe, size, train, twins, weights  # noqa: F401
from . import protocol, worker  # noqa: F401

torch.set_num_threads(1)
with contextlib.suppress(Exception):  # a job that needs it reports the error itself
    data.load(data.DEFAULT, "cpu")  # cached raw tensors; each worker normalises its own copy
# The first size estimate (a net run on the meta device, as the limits check does) takes seconds
# in a fresh process: torch sets up its meta kernels then. Pay it here, once.
size.estimate(train.model_for_dataset(config.ModelConfig(layers=(1, 1, 1)), data.DEFAULT))
