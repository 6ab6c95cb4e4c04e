"""Faults for the tests, injected into a worker process: never reachable from a page.

The server reads RESNET_TEST_WORKER_FAULT (JSON) when a job starts and passes it in the job's
spec; the worker process installs it before training, in its own process only (the thread
backend ignores it). A fault, or a list of them: {"kind": K, "step": N, "match": {model field:
value}}: from the N-th training forward pass (default 1) of a net whose ModelConfig has those
fields (lists compare as tuples), do K:

    sigkill  kill the process with SIGKILL, as the out-of-memory killer does
    abort    os.abort(), as a heap corruption caught by glibc does
    hang     sleep forever in the training loop: nothing more is sent, heartbeats included
    oom      raise torch.OutOfMemoryError
    inf      the net's logits become -max and +max (float32's largest) for its last class, so the loss
             overflows to +inf wherever the label is another class
    nan      the net's output becomes NaN
A fault of kind "refuse-downloads" (no step) points torchvision's download mirrors at a closed
port on loopback, so a download fails at once with a real network error.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import Any

ENV = "RESNET_TEST_WORKER_FAULT"
KINDS = ("sigkill", "abort", "hang", "oom", "inf", "nan", "refuse-downloads")


def from_env() -> list[dict[str, Any]] | None:
    raw = os.environ.get(ENV, "")
    if not raw:
        return None
    found = json.loads(raw)
    found = found if isinstance(found, list) else [found]
    if not all(isinstance(f, dict) and f.get("kind") in KINDS for f in found):
        raise ValueError(f"{ENV} must be a JSON object, or a list of them, whose kind is one of {', '.join(KINDS)}")
    return found


def install(found: list[dict[str, Any]]) -> None:
    """Patch this worker process so that the faults happen; see the module docstring."""
    for fault in found:
        _install(fault)


def _install(fault: dict[str, Any]) -> None:
    kind = fault["kind"]
    if kind == "refuse-downloads":
        import torchvision.datasets as tvd

        for cls in (tvd.MNIST, tvd.FashionMNIST):
            cls.mirrors = ["http://127.0.0.1:1/"]
        tvd.CIFAR10.url = "http://127.0.0.1:1/cifar-10-python.tar.gz"
        return
    import torch

    from ..model import ResNet

    forward, after = ResNet.forward, int(fault.get("step", 1))
    match = {k: tuple(v) if isinstance(v, list) else v for k, v in fault.get("match", {}).items()}
    calls: dict[int, int] = {}

    def faulty(self: ResNet, x: torch.Tensor) -> torch.Tensor:
        hit = x.device.type != "meta" and self.training and all(getattr(self.cfg, k) == v for k, v in match.items())
        if hit:
            calls[id(self)] = n = calls.get(id(self), 0) + 1
            hit = n >= after
        if hit and kind == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if hit and kind == "abort":
            os.abort()
        if hit and kind == "hang":
            while True:
                time.sleep(3600)
        if hit and kind == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB (a test's fault)")
        out = forward(self, x)  # (B, classes)
        if hit and kind == "inf":
            big = torch.finfo(out.dtype).max
            far = torch.full_like(out, -big)
            far[:, -1] = big
            out = out * 0 + far  # still in the graph, so backward runs as for any loss
        if hit and kind == "nan":
            out = out * math.nan
        return out

    ResNet.forward = faulty
